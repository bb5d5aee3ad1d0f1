"""LLVM types of kernel-IR dtypes (in registers and in memory), constants and small value helpers."""

from __future__ import annotations

import llvmlite.ir as ir

from ...ir.dtype import DType

PTR = ir.PointerType()
I1 = ir.IntType(1)
I8 = ir.IntType(8)
I16 = ir.IntType(16)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
VOID = ir.VoidType()

_SCALAR = {
    DType.BOOL: I1,
    DType.I8: I8, DType.U8: I8,
    DType.I16: ir.IntType(16), DType.U16: ir.IntType(16),
    DType.I32: I32, DType.U32: I32,
    DType.I64: I64, DType.U64: I64,
    DType.F16: ir.FloatType(),  # computed in f32
    DType.BF16: ir.FloatType(),  # computed in f32, stored as the high 16 bits of a float
    DType.F32: ir.FloatType(),
    DType.F64: ir.DoubleType(),
}  # fmt: skip
_MEM = {**_SCALAR, DType.BOOL: I8, DType.F16: ir.HalfType(), DType.BF16: ir.IntType(16)}


def llty(dtype: DType, lanes: int = 1) -> ir.Type:
    t = _SCALAR[dtype]
    return ir.VectorType(t, lanes) if lanes > 1 else t


def memty(dtype: DType, lanes: int = 1) -> ir.Type:
    t = _MEM[dtype]
    return ir.VectorType(t, lanes) if lanes > 1 else t


def suffix(t: ir.Type) -> str:
    """The type suffix of overloaded intrinsics (``f32``, ``v8f32``, ``i64``)."""

    def one(s):
        if isinstance(s, ir.FloatType):
            return "f32"
        if isinstance(s, ir.DoubleType):
            return "f64"
        if isinstance(s, ir.HalfType):
            return "f16"
        if isinstance(s, ir.IntType):
            return f"i{s.width}"
        raise TypeError(s)

    if isinstance(t, ir.VectorType):
        return f"v{t.count}{one(t.element)}"
    return one(t)


def const_value(value, dtype: DType, lanes: int = 1) -> ir.Constant:
    t = _SCALAR[dtype]
    if dtype is DType.BOOL:
        v = int(bool(value))
    elif dtype.is_float:
        v = float(value)
    else:
        v = int(value)
        bits = t.width
        v &= (1 << bits) - 1  # two's complement for negatives / unsigned
        if v >= 1 << (bits - 1):
            v -= 1 << bits
    if lanes > 1:
        return ir.Constant(ir.VectorType(t, lanes), [v] * lanes)
    return ir.Constant(t, v)


def gep(b: ir.IRBuilder, base: ir.Value, indices, source_etype) -> ir.Value:
    """getelementptr whose result is an opaque ``ptr`` (so vector and scalar accesses share it)."""
    g = b.gep(base, indices, source_etype=source_etype)
    g.type = PTR
    return g


def ivec(bits: int, n: int) -> ir.Type:
    t = ir.IntType(bits)
    return ir.VectorType(t, n) if n > 1 else t


def iconst(bits: int, v: int, n: int) -> ir.Constant:
    return ir.Constant(ivec(bits, n), [v] * n if n > 1 else v)


def lanes_of(x: ir.Value) -> int:
    return x.type.count if isinstance(x.type, ir.VectorType) else 1


def element_type(t: ir.Type) -> ir.Type:
    return t.element if isinstance(t, ir.VectorType) else t


def fwidth(t: ir.Type) -> int:
    return 64 if isinstance(element_type(t), ir.DoubleType) else 32


def et_align(dt: DType) -> int:
    return 1 if dt is DType.BOOL else dt.itemsize


def splat(b: ir.IRBuilder, x: ir.Value, lanes: int) -> ir.Value:
    """A vector of ``lanes`` copies of the scalar ``x``."""
    vt = ir.VectorType(x.type, lanes)
    v = b.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(I32, 0))
    return b.shuffle_vector(v, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(I32, lanes), [0] * lanes))
