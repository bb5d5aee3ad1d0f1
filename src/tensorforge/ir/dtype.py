"""Element types of tensors, with their numpy and ONNX equivalents."""

from __future__ import annotations

import enum

import ml_dtypes  # registers numpy's "bfloat16" (and the float8 types); installed with onnx
import numpy as np


class DType(enum.Enum):
    # value: (short name, numpy dtype name, ONNX TensorProto code)
    BOOL = ("bool", "bool", 9)
    I8 = ("i8", "int8", 3)
    I16 = ("i16", "int16", 5)
    I32 = ("i32", "int32", 6)
    I64 = ("i64", "int64", 7)
    U8 = ("u8", "uint8", 2)
    U16 = ("u16", "uint16", 4)
    U32 = ("u32", "uint32", 12)
    U64 = ("u64", "uint64", 13)
    F16 = ("f16", "float16", 10)
    BF16 = ("bf16", "bfloat16", 16)
    F32 = ("f32", "float32", 1)
    F64 = ("f64", "float64", 11)

    @property
    def short(self) -> str:
        return self.value[0]

    @property
    def np(self) -> np.dtype:
        return np.dtype(self.value[1])

    @property
    def onnx(self) -> int:
        return self.value[2]

    @property
    def itemsize(self) -> int:
        return self.np.itemsize

    @property
    def bits(self) -> int:
        return 1 if self is DType.BOOL else 8 * self.itemsize

    @property
    def is_float(self) -> bool:
        return self in (DType.F16, DType.BF16, DType.F32, DType.F64)

    @property
    def is_int(self) -> bool:
        return not self.is_float and self is not DType.BOOL

    @property
    def is_signed(self) -> bool:
        return self.is_float or self in (DType.I8, DType.I16, DType.I32, DType.I64)

    @property
    def compute(self) -> DType:
        """The type arithmetic is done in: float16 and bfloat16 compute in float32."""
        return DType.F32 if self in (DType.F16, DType.BF16) else self

    def __repr__(self) -> str:
        return f"DType.{self.name}"

    def __str__(self) -> str:
        return self.short

    @staticmethod
    def from_numpy(dt) -> DType:
        dt = np.dtype(dt)
        try:
            return _FROM_NP[dt]
        except KeyError:
            raise TypeError(f"numpy dtype {dt} has no tensorforge equivalent") from None

    @staticmethod
    def from_onnx(code: int) -> DType:
        try:
            return _FROM_ONNX[code]
        except KeyError:
            raise TypeError(f"ONNX element type {code} is not supported") from None

    @staticmethod
    def parse(name: str) -> DType:
        for d in DType:
            if name in (d.short, d.value[1], d.name.lower()):
                return d
        raise TypeError(f"unknown dtype name {name!r}")


def is_float_dtype(dt) -> bool:
    """Whether numpy dtype ``dt`` holds real floating-point numbers, bfloat16 and the float8 family
    included. numpy reports most of ml_dtypes' floats (bfloat16 among them) with ``kind == "V"``, so a
    ``kind == "f"`` test takes them for integers; ``ml_dtypes.finfo`` knows them all (and refuses its
    int4 and the other non-floats)."""
    dt = np.dtype(dt)
    if dt.kind != "V":
        return dt.kind == "f"
    try:
        ml_dtypes.finfo(dt)
    except ValueError:
        return False
    return True


_FROM_NP = {d.np: d for d in DType}
_FROM_ONNX = {d.onnx: d for d in DType}
