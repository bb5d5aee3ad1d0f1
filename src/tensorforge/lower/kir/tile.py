"""``TileGemm``: an AMX micro-kernel as one kernel-IR statement (an extension statement: ``exprs`` /
``map_exprs`` / ``format``, so every walk, substitution and printer handles it; the LLVM emitter is
``codegen/llvm/intdot.py``).

It computes an ``ma x nb`` grid of 16x16 int32 tiles (float32 for ``kind="bf16"``) over ``ksteps`` K steps of
64 bytes::

    C[i][j] (+)= sum_k A_tile(i, k) @ B_tile(j, k)

A tile ``(i, k)``: 16 rows of 64 bytes at ``a + i*a_tile + k*a_k`` (elements), rows ``a_stride`` apart;
B tile ``(j, k)``: 16 rows (groups of 4 k) of 16 columns x 4 bytes at ``b + j*b_tile + k*b_k``, rows
``b_stride`` apart (the VNNI layout); C tile ``(i, j)`` at ``c + i*16*c_stride + j*16``, rows ``c_stride``
int32 apart (``c_in``'s ``c_in_stride`` apart when given). The accumulators start as the tiles at
``c_in`` (or zero when ``c_in`` is None) and are stored at ``c_out``. The accumulators stay in tile
registers for the whole K loop (they are ``x86_amx`` values in the loop's phis: no tile ever goes through
a vector), which a loop of ``TileDot`` expressions over ``<256 x i32>`` locals did not get from LLVM (each
step stored the tiles and copied them as vectors on the stack: 0.2-0.3 TOP/s). ``a``, ``b``, ``c_in``
and ``c_out`` are scalar ``Load``s naming the first element (a Load is how a statement names a buffer
position that walks see); ``c_out``'s buffer is written."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...ir.dtype import DType
from .nodes import Expr, Load, Stmt


@dataclass(frozen=True, eq=False, slots=True)
class TileGemm(Stmt):
    a: Load
    a_stride: int
    a_tile: int
    a_k: int
    b: Load
    b_stride: int
    b_tile: int
    b_k: int
    c_in: Load | None
    c_out: Load
    c_stride: int
    ma: int
    nb: int
    ksteps: Expr
    prefetch: int = 0  # prefetch the A and B tiles this many K steps ahead (0: none)
    c_in_stride: int = 0  # rows of ``c_in`` (0: ``c_stride``)
    # "int8": ``tdpb{s,u}{s,u}d`` on 8-bit A/B, int32 tiles; "bf16": ``tdpbf16ps`` on bf16 bits (u16 buffers:
    # A tile 16 rows x 32 bf16, B tile 16 rows of 16 VNNI-2 pairs), float32 tiles
    kind: str = "int8"
    # K as segments: ``(a_off, b_off)`` element offsets added to ``a`` / ``b``, each segment ``ksteps`` K steps
    # with the accumulators carried in tile registers from one to the next (a convolution's taps); () is one
    # segment at (0, 0)
    segments: tuple[tuple[int, int], ...] = ()

    def exprs(self):
        yield self.a
        yield self.b
        if self.c_in is not None:
            yield self.c_in
        yield self.c_out
        yield self.ksteps

    def map_exprs(self, fe, fb, fs):
        c_in = None if self.c_in is None else fe(self.c_in)
        out = fe(self.c_out)
        buf = fb(out.buf)
        if buf is not out.buf:
            out = Load(buf, out.index)
        return TileGemm(fe(self.a), self.a_stride, self.a_tile, self.a_k, fe(self.b), self.b_stride, self.b_tile,
                        self.b_k, c_in, out, self.c_stride, self.ma, self.nb, fe(self.ksteps),
                        self.prefetch, self.c_in_stride, self.kind, self.segments)  # fmt: skip

    def format(self) -> str:
        from ..printer import format_expr

        def at(x: Load) -> str:
            return f"&{x.buf.name}[{format_expr(x.index)}]"

        src = "0" if self.c_in is None else at(self.c_in)
        kind = "" if self.kind == "int8" else f", {self.kind}"
        segs = f" x {len(self.segments)} segments" if self.segments else ""
        return (f"{at(self.c_out)} = tile_gemm<{self.ma}x{self.nb}{kind}>({src}, A {at(self.a)} rows {self.a_stride} "
                f"tiles {self.a_tile} k {self.a_k}, B {at(self.b)} rows {self.b_stride} tiles {self.b_tile} "
                f"k {self.b_k}, C rows {self.c_stride}, {format_expr(self.ksteps)} steps{segs})")  # fmt: skip


@dataclass(frozen=True, eq=False, slots=True)
class Interleave(Expr):
    """``G`` vectors of ``L`` lanes as one of ``G*L``: lane ``G*i + j`` is lane ``i`` of part ``j`` (four rows
    of bytes become the VNNI layout: 4 consecutive k per column). An extension node (``operands`` /
    ``with_operands`` / ``format``); the LLVM emitter is ``codegen/llvm/intdot.py`` (shuffles)."""

    parts: tuple[Expr, ...]
    dtype: DType = field(init=False)
    lanes: int = field(init=False)

    def __post_init__(self):
        a = self.parts[0]
        if any(p.dtype is not a.dtype or p.lanes != a.lanes for p in self.parts):
            raise ValueError("interleave: the parts must have one dtype and lane count")
        object.__setattr__(self, "dtype", a.dtype)
        object.__setattr__(self, "lanes", a.lanes * len(self.parts))

    def operands(self) -> tuple[Expr, ...]:
        return self.parts

    def with_operands(self, kids: tuple[Expr, ...]) -> Interleave:
        return Interleave(tuple(kids))

    def format(self, ops) -> str:
        return f"interleave({', '.join(ops)})"

    @staticmethod
    def numpy(*parts):
        import numpy as np

        return np.stack([np.asarray(p) for p in parts], axis=1).reshape(-1)


__all__ = ["Interleave", "TileGemm"]
