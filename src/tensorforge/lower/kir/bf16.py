"""Kernel-IR nodes of the bf16 kernels (``lower/bf16_gemm.py``), as extension nodes (``operands`` /
``with_operands`` / ``format``, so every walk, substitution and printer handles them; their LLVM emitters are
in ``codegen/llvm/bf16dot.py``).

bf16 operands live in memory as their 16 bits, in ``u16`` buffers: the kernel IR's ``bf16`` dtype is a storage
type computed in float32 registers, while these values are only ever converted (``ToBF16``) or multiplied
(``BfDot``, ``BfTileDot``) as bits, so they never pass through a float register.

* ``ToBF16(a)``: float32 lanes rounded to the nearest bfloat16 (ties to even) as u16 bits (``vcvtneps2bf16``);
  ``ToBF16(a, b)``: two float32 vectors interleaved as pairs ``a0 b0 a1 b1 ...`` (``vcvtne2ps2bf16`` and one
  permute): two k of one column, the VNNI-2 layout of a ``vdpbf16ps`` / ``tdpbf16ps`` operand.
* ``BfDot(acc, a, b)``: ``acc[i] + a[2i] b[2i] + a[2i+1] b[2i+1]`` in float32 (``vdpbf16ps``), ``a`` and ``b``
  loads of ``2 * lanes`` bf16 (or of one pair, the same for every lane: the broadcast operand).
* ``BfTileDot(acc, a, b, a_stride, b_stride)``: AMX ``tdpbf16ps`` on a 16x16 float32 tile (256 lanes,
  row-major): ``acc[m][n] + sum_k A[m][k] B[k//2][n][k%2]`` over 32 k; A's 16 rows of 32 bf16 at ``a``,
  ``a_stride`` elements apart, B's 16 rows of 16 pairs at ``b``, ``b_stride`` apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...ir.dtype import DType
from .nodes import Expr, Load

F32, U16 = DType.F32, DType.U16


def _check_bits(x: Expr, what: str) -> None:
    if x.dtype not in (U16, DType.I16):
        raise TypeError(f"{what}: bf16 operands are u16 bits, got {x.dtype}")


@dataclass(frozen=True, eq=False, slots=True)
class ToBF16(Expr):
    a: Expr
    b: Expr | None = None
    dtype: DType = field(init=False)
    lanes: int = field(init=False)

    def __post_init__(self):
        if self.a.dtype is not F32 or (
            self.b is not None and (self.b.dtype is not F32 or self.b.lanes != self.a.lanes)
        ):
            raise TypeError("ToBF16 converts float32 vectors (two of the same width when paired)")
        object.__setattr__(self, "dtype", U16)
        object.__setattr__(self, "lanes", self.a.lanes * (1 if self.b is None else 2))

    def operands(self) -> tuple[Expr, ...]:
        return (self.a,) if self.b is None else (self.a, self.b)

    def with_operands(self, kids: tuple[Expr, ...]) -> ToBF16:
        return ToBF16(*kids)

    def format(self, ops) -> str:
        return f"bf16_bits({', '.join(ops)})"

    @staticmethod
    def numpy(a, b=None) -> np.ndarray:
        """The reference semantics (round to nearest even; NaN stays NaN)."""
        x = round_bf16_bits(np.asarray(a, np.float32))
        if b is None:
            return x
        return np.stack([x, round_bf16_bits(np.asarray(b, np.float32))], axis=-1).reshape(-1)


@dataclass(frozen=True, eq=False, slots=True)
class BfDot(Expr):
    acc: Expr
    a: Load
    b: Load
    dtype: DType = field(init=False)
    lanes: int = field(init=False)

    def __post_init__(self):
        if self.acc.dtype is not F32:
            raise TypeError(f"BfDot accumulates in float32, got {self.acc.dtype}")
        _check_bits(self.a, "BfDot")
        _check_bits(self.b, "BfDot")
        L = self.acc.lanes
        if self.a.lanes not in (2, 2 * L) or self.b.lanes not in (2, 2 * L):
            raise ValueError(f"BfDot over {L} lanes takes operands of 2 or {2 * L} bf16")
        object.__setattr__(self, "dtype", F32)
        object.__setattr__(self, "lanes", L)

    def operands(self) -> tuple[Expr, ...]:
        return (self.acc, self.a, self.b)

    def with_operands(self, kids: tuple[Expr, ...]) -> BfDot:
        return BfDot(*kids)

    def format(self, ops) -> str:
        return f"dot_bf16({ops[0]}, {ops[1]}, {ops[2]})"

    @staticmethod
    def numpy(acc, a, b) -> np.ndarray:
        """acc [L] + pairwise products of a, b ([2L] or one pair [2] of u16 bits) in float64."""
        L = len(acc)
        a2 = np.broadcast_to(bits_to_f32(a).astype(np.float64).reshape(-1, 2), (L, 2))
        b2 = np.broadcast_to(bits_to_f32(b).astype(np.float64).reshape(-1, 2), (L, 2))
        return (np.asarray(acc, np.float64) + (a2 * b2).sum(axis=1)).astype(np.float32)


@dataclass(frozen=True, eq=False, slots=True)
class BfTileDot(Expr):
    acc: Expr
    a: Load
    b: Load
    a_stride: int
    b_stride: int
    dtype: DType = field(init=False)
    lanes: int = field(init=False)

    def __post_init__(self):
        if self.acc.dtype is not F32 or self.acc.lanes != 256:
            raise TypeError("BfTileDot accumulates a 16x16 float32 tile (256 lanes)")
        _check_bits(self.a, "BfTileDot")
        _check_bits(self.b, "BfTileDot")
        object.__setattr__(self, "dtype", F32)
        object.__setattr__(self, "lanes", 256)

    def operands(self) -> tuple[Expr, ...]:
        return (self.acc, self.a, self.b)

    def with_operands(self, kids: tuple[Expr, ...]) -> BfTileDot:
        return BfTileDot(*kids, self.a_stride, self.b_stride)

    def format(self, ops) -> str:
        return f"tile_dot_bf16({ops[0]}, &{ops[1]} rows {self.a_stride}, &{ops[2]} rows {self.b_stride})"

    @staticmethod
    def numpy(acc, a_tile, b_tile) -> np.ndarray:
        """acc [16, 16] + a_tile [16, 32] @ b_tile [16, 16, 2] (read as [32, 16]), operands u16 bits."""
        a = bits_to_f32(a_tile).astype(np.float64).reshape(16, 32)
        b = bits_to_f32(b_tile).astype(np.float64).reshape(16, 16, 2).transpose(0, 2, 1).reshape(32, 16)
        return (np.asarray(acc, np.float64) + a @ b).astype(np.float32)


def round_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> the u16 bits of the nearest bfloat16, ties to even (what ``vcvtneps2bf16`` computes for
    normal numbers; NaN becomes a quiet NaN)."""
    x = np.ascontiguousarray(x, np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    r = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0) | ((bits >> 16).astype(np.uint16) & np.uint16(0x8000)), r)


def bits_to_f32(b) -> np.ndarray:
    return (np.asarray(b).astype(np.uint32) << 16).view(np.float32)


def round_bf16(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to bfloat16 and back to float32 (the value a bf16 kernel multiplies)."""
    return bits_to_f32(round_bf16_bits(x)).reshape(np.shape(x))


__all__ = ["BfDot", "BfTileDot", "ToBF16", "bits_to_f32", "round_bf16", "round_bf16_bits"]
