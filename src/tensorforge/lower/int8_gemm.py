"""The int8 GEMM: ``C[M,N] (int32) = (A - za) @ (B - zb)`` for 8-bit A and B, on the target's dot-product
instructions, with any fused epilogue (rescale, bias, ReLU, requantize) applied through the output ``Sink``.

Paths, from ``Target.int8_isa`` (the features decide, never the CPU name):

* ``amx``: 32x32 blocks of four 16x16 int32 tiles, per 64-byte K step two A tiles and two B tiles loaded
  and four ``tdpb{s,u}{s,u}d`` (``kir.TileDot``; the instruction matches the operands' signedness);
* ``vnni512`` / ``vnni256``: ``MR x NR`` register tiles of ``vpdpbusd`` (``kir.Dot`` over 4 bytes): per
  k-group of 4, ``nv`` loads of B (16 or 8 columns x 4 bytes) and ``MR`` broadcasts of 4 bytes of A;
* ``avx2``: the same tiles over int16 pairs with ``vpmaddwd`` (exact: ``vpmaddubsw`` would saturate);
* ``generic`` (AArch64, others): the zero-point-shifted operands through the int32 GEMM (``lower/qgemm.py``).

Layouts: A is row-major ``[Mp][Kp]`` (rows padded to the block, K to the K step), read in place when it
already is (a contiguous 8-bit tensor with aligned sizes), else copied once by a vectorized loop; B is packed
in VNNI panels ``[Np/NR][Kp/G][NR][G]`` (``G`` = 4 bytes, or 2 int16), at compile time when constant. An AMX
B tile is 16 columns of such a panel (rows ``4*NR`` bytes apart).

Zero points and signedness: ``vpdpbusd`` multiplies unsigned by signed bytes, so one operand is stored
``xor 0x80`` when both have the same type (``x + 128`` for int8, ``x - 128`` for uint8); with ``d`` that
shift, ``X - z = X' - (z + d)``. With ``z'`` the shifted zero points,

    C = A'@B' - z'A[m] * colsum(B')[n] - z'B[n] * rowsum(A')[m] + K * z'A[m] * z'B[n]

whose terms over a constant operand are compile-time vectors added in the epilogue; a run-time operand's
sums are computed only when the other side's ``z'`` is not zero (a uint8 weight with its zero point). AMX
has all four sign combinations (no shift); the AVX2 path subtracts the zero points while packing to int16
(no corrections).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..ir.dtype import DType
from . import kir as K
from .gemm import _kloop
from .gemm_plan import PARALLEL_FLOPS_PER_ELEMENT, choose_tile
from .kir import Buffer, Const, Decl, Dot, Expr, For, If, Load, LoopKind, Stmt, Store, TileDot, Var, binop
from .rules import LowerCtx

I32, I16, U8, I8 = DType.I32, DType.I16, DType.U8, DType.I8
Elem2 = Callable[[Expr, Expr], Expr]


@dataclass(frozen=True)
class Int8Plan:
    isa: str
    MR: int  # rows per block
    NR: int  # columns per block (= panel width)
    W: int  # int32 lanes per vector (VNNI / AVX2); 16 for AMX tiles
    G: int  # k elements per group: 4 bytes, or 2 int16
    KS: int  # K step of the packed layouts (64 for AMX, else G)

    @property
    def elem(self) -> DType:
        return I16 if self.isa == "avx2" else U8

    @property
    def nv(self) -> int:
        return self.NR // self.W


def plan_int8(ctx: LowerCtx, isa: str, M: int, N: int, Kd: int) -> Int8Plan:
    t = ctx.target
    over = ctx.options.get("int8_gemm") or {}
    if isa == "amx":
        ma = 1 if M <= 16 else 2
        nb = 1 if N <= 16 else 2
        return Int8Plan(isa, int(over.get("MR", 16 * ma)), int(over.get("NR", 16 * nb)), 16, 4, 64)
    G = 2 if isa == "avx2" else 4
    W = 16 if isa == "vnni512" else 8
    mr, nv = choose_tile(t, I32, M, N, -(-Kd // G), max_nv=4)
    if W * 32 != t.vector_bits:  # an AVX-VNNI (ymm) path on a zmm target: plan with 16 registers
        mr, nv = min(mr, 6), min(nv, 2)
    mr, nv = int(over.get("MR", mr)), int(over.get("nv", nv))
    return Int8Plan(isa, mr, nv * W, W, G, G)


def _ceil(x: int, m: int) -> int:
    return -(-x // m) * m


# -- operand preparation -----------------------------------------------------------------------------------
@dataclass
class Operand:
    """One 8-bit operand as the kernel sees it: its stored type (after the sign shift), the shift ``d`` and
    the shifted zero point ``z' = z + d`` (int64 vector: per row of A / column of B, or one element)."""

    dtype: DType  # stored element type (u8 / i8, or i16 on AVX2)
    shift: int  # added to every element when stored (0, +128, -128)
    zp: np.ndarray  # z' (what the corrections subtract); all zero on AVX2 (subtracted while packing)
    raw_zp: np.ndarray  # z as given (AVX2 subtracts it)

    @property
    def zero(self) -> bool:
        return not np.any(self.zp)


def operands(isa: str, a_dt: DType, b_dt: DType, za: np.ndarray, zb: np.ndarray, const_side: str
             ) -> tuple[Operand, Operand]:  # fmt: skip
    """The stored forms of A and B for ``isa``; ``const_side`` ("a" or "b") keeps its own domain."""
    za, zb = np.asarray(za, np.int64), np.asarray(zb, np.int64)
    if isa == "avx2":
        return Operand(I16, 0, np.zeros_like(za), za), Operand(I16, 0, np.zeros_like(zb), zb)
    da = db = 0
    ta, tb = a_dt, b_dt
    if isa != "amx" and a_dt == b_dt:  # vpdpbusd: one unsigned and one signed operand
        d = 128 if a_dt is I8 else -128
        flipped = U8 if a_dt is I8 else I8
        if const_side == "b":
            da, ta = d, flipped
        else:
            db, tb = d, flipped
    return Operand(ta, da, za + da, za), Operand(tb, db, zb + db, zb)


def store_value(x: np.ndarray, op: Operand, zp: np.ndarray | None = None) -> np.ndarray:
    """A constant operand's stored values (numpy): shifted (``xor 0x80``) or, on AVX2, minus its zero point."""
    if op.dtype is I16:
        return (x.astype(np.int64) - (0 if zp is None else zp)).astype(np.int16)
    return (x.astype(np.int64) + op.shift).astype(op.dtype.np)


def store_expr(v: Expr, op: Operand, zp: Expr | None = None) -> Expr:
    """A run-time element's stored value (kernel IR)."""
    if op.dtype is I16:
        w = K.cast(v, I16)
        return w if zp is None else binop("sub", w, K.cast(zp, I16))
    if op.shift:
        return K.cast(binop("xor", K.cast(v, I32), Const(0x80, I32)), op.dtype)
    return K.cast(v, op.dtype) if v.dtype is not op.dtype else v


def pack_a_rows_const(a: np.ndarray, Mp: int, Kp: int) -> np.ndarray:
    out = np.zeros((Mp, Kp), a.dtype)
    out[: a.shape[0], : a.shape[1]] = a
    return out


def pack_b_panels_const(b: np.ndarray, plan: Int8Plan, Kp: int) -> np.ndarray:
    """[K, N] -> [Np/NR][Kp/G][NR][G] zero-padded VNNI panels."""
    k, n = b.shape
    NR, G = plan.NR, plan.G
    Np = _ceil(n, NR)
    full = np.zeros((Kp, Np), b.dtype)
    full[:k, :n] = b
    return np.ascontiguousarray(full.reshape(Kp // G, G, Np // NR, NR).transpose(2, 0, 3, 1))


def emit_pack_a_rows(ctx: LowerCtx, src: Elem2, M: int, Kd: int, Mp: int, Kp: int, dst: Buffer, parallel: bool
                     ) -> Stmt:  # fmt: skip
    """``dst[m*Kp + k] = src(m, k)`` for m < M, k < K, zero in the padding: one vector loop per row."""
    W = ctx.lanes(dst.dtype)
    m, k = Var("m"), Var("k")
    at = binop("add", binop("mul", m, Kp), k)
    zero = K.const(0, dst.dtype)
    row = K.seq(For(k, Const(0), Const(Kd), Store(dst, at, src(m, k)), LoopKind.VECTOR, 1, W),
                For(k, Const(Kd), Const(Kp), Store(dst, at, zero)) if Kp > Kd else None)  # fmt: skip
    kind = LoopKind.PARALLEL if parallel and M > 1 else LoopKind.SERIAL
    rows = For(m, Const(0), Const(M), row, kind)
    if Mp > M:
        z = Var("z")
        return K.seq(rows, For(z, Const(M * Kp), Const(Mp * Kp), Store(dst, z, zero), LoopKind.VECTOR, 1, W))
    return rows


def emit_row_sums(ctx: LowerCtx, src: Elem2, M: int, Kd: int, dst: Buffer) -> Stmt:
    """``dst[m] = sum_k src(m, k)`` in int32 (a run-time operand's row sums, for a zero-point correction)."""
    m, k, s = Var("m"), Var("k"), Var("s", I32)
    W = ctx.lanes(I32)
    add = K.Assign(s, binop("add", s, K.cast(src(m, k), I32)))
    body = K.seq(Decl(s, Const(0, I32)), For(k, Const(0), Const(Kd), add, LoopKind.VECTOR, 1, W), Store(dst, m, s))
    return For(m, Const(0), Const(M), body)


# -- corrections -------------------------------------------------------------------------------------------
@dataclass
class Corrections:
    """``value += sum(row[m] * col[n])`` over terms; a missing side is 1. Buffers are int32, padded."""

    terms: list[tuple[Buffer | None, Buffer | None]] = field(default_factory=list)

    def apply(self, v: Expr, m: Expr, n: Expr) -> Expr:
        for row, col in self.terms:
            r = Load(row, m) if row is not None else None
            c = Load(col, n) if col is not None else None
            t = r if c is None else c if r is None else binop("mul", r, c)
            v = binop("add", v, t)
        return v


def _vec(ctx: LowerCtx, x: np.ndarray, length: int, name: str) -> Buffer:
    out = np.zeros(length, np.int32)
    x = np.broadcast_to(np.asarray(x, np.int64), (length,)) if np.ndim(x) == 0 else np.asarray(x, np.int64)
    out[: len(x)] = x
    return ctx.const_view(out, name).buf


# -- the kernel --------------------------------------------------------------------------------------------
@dataclass
class Int8Gemm:
    """What ``emit_int8_gemm`` computes: ``store(m, n, A[m]·B[:, n] + corrections)`` for m < M, n < N."""

    M: int
    N: int
    Kp: int
    a: Buffer  # row-major [Mp][Kp] stored A
    a_offset: Expr
    b: Buffer  # panels [Np/NR][Kp/G][NR][G]
    b_offset: Expr
    store: Callable[[Expr, Expr, Expr], Stmt]
    corr: Corrections
    order: str = "mp"  # tile order: "mp" (block rows outer) or "pm"
    row_stride: int = 0  # elements between rows of A (default Kp)
    MR: int = 0  # the block the kernel steps by (emit_int8_gemm sets it from the plan)
    NR: int = 0


def emit_int8_gemm(ctx: LowerCtx, plan: Int8Plan, g: Int8Gemm, parallel: bool) -> Stmt:
    MR, NR = plan.MR, plan.NR
    g.MR, g.NR = MR, NR
    mt_n, np_n = -(-g.M // MR), -(-g.N // NR)
    t = Var("tile")
    mt, p = Var("mt"), Var("p")
    if g.order == "pm":
        decls = [Decl(p, binop("floordiv", t, mt_n)), Decl(mt, binop("mod", t, mt_n))]
    else:
        decls = [Decl(mt, binop("floordiv", t, np_n)), Decl(p, binop("mod", t, np_n))]
    body = (_amx_block if plan.isa == "amx" else _vector_block)(plan, g, mt, p)
    kind = LoopKind.PARALLEL if parallel and mt_n * np_n > 1 else LoopKind.SERIAL
    return For(t, Const(0), Const(mt_n * np_n), K.seq(*decls, body), kind)


def _a_row_stride(g: Int8Gemm) -> int:
    return g.row_stride or g.Kp


def _vector_block(plan: Int8Plan, g: Int8Gemm, mt: Var, p: Var) -> Stmt:
    MR, NR, W, G, nv = plan.MR, plan.NR, plan.W, plan.G, plan.nv
    lda = _a_row_stride(g)
    acc = [[Var(f"acc{i}_{j}", I32, W) for j in range(nv)] for i in range(MR)]
    out: list[Stmt] = [Decl(acc[i][j], Const(0, I32, W)) for i in range(MR) for j in range(nv)]
    m0, n0 = binop("mul", mt, MR), binop("mul", p, NR)
    a_base = binop("add", g.a_offset, binop("mul", m0, lda))
    b_base = binop("add", g.b_offset, binop("mul", p, g.Kp * NR))

    def kstep(kg: Expr) -> list[Stmt]:
        bv = [Load(g.b, binop("add", b_base, binop("add", binop("mul", kg, NR * G), j * W * G)), W * G)
              for j in range(nv)]  # fmt: skip
        st: list[Stmt] = []
        for i in range(MR):
            av = Load(g.a, binop("add", a_base, binop("add", binop("mul", kg, G), i * lda)), G)
            for j in range(nv):
                st.append(K.Assign(acc[i][j], Dot(acc[i][j], av, bv[j])))
        return st

    out.append(_kloop(Const(0), Const(g.Kp // G), 4 if g.Kp // G >= 8 else 1, kstep))
    tile = Buffer("ctile", I32, MR * NR)
    out += [Store(tile, Const(i * NR + j * W), acc[i][j]) for i in range(MR) for j in range(nv)]
    out.append(_tile_epilogue(g, tile, m0, n0, MR, NR, 0, W))
    return K.seq(out)


def _amx_block(plan: Int8Plan, g: Int8Gemm, mt: Var, p: Var) -> Stmt:
    MR, NR = plan.MR, plan.NR
    ma, nb = MR // 16, NR // 16
    lda = _a_row_stride(g)
    acc = [[Var(f"tile{i}_{j}", I32, 256) for j in range(nb)] for i in range(ma)]
    out: list[Stmt] = [Decl(acc[i][j], Const(0, I32, 256)) for i in range(ma) for j in range(nb)]
    m0, n0 = binop("mul", mt, MR), binop("mul", p, NR)
    a_base = binop("add", g.a_offset, binop("mul", m0, lda))
    b_base = binop("add", g.b_offset, binop("mul", p, g.Kp * NR))
    kt = Var("kt")
    steps: list[Stmt] = []
    a_t = [Load(g.a, binop("add", a_base, binop("add", binop("mul", kt, 64), i * 16 * lda))) for i in range(ma)]
    b_t = [Load(g.b, binop("add", b_base, binop("add", binop("mul", kt, 16 * NR * 4), j * 64))) for j in range(nb)]
    for i in range(ma):
        for j in range(nb):
            steps.append(K.Assign(acc[i][j], TileDot(acc[i][j], a_t[i], b_t[j], lda, NR * 4)))
    out.append(For(kt, Const(0), Const(g.Kp // 64), K.seq(steps)))
    tile = Buffer("ctile", I32, MR * NR)
    out += [Store(tile, Const((i * nb + j) * 256), acc[i][j]) for i in range(ma) for j in range(nb)]
    for i in range(ma):
        for j in range(nb):
            out.append(_tile_epilogue(g, tile, binop("add", m0, 16 * i), binop("add", n0, 16 * j), 16, 16,
                                      (i * nb + j) * 256, 16))  # fmt: skip
    return K.seq(out)


def _tile_epilogue(g: Int8Gemm, tile: Buffer, m0: Expr, n0: Expr, R: int, C: int, base: int, W: int) -> Stmt:
    """Store the ``R x C`` block of ``tile`` at ``base`` (row-major) for its valid rows and columns."""
    ii, jj = Var("ii"), Var("jj")
    # a block may end past M (N) unless the padded extent equals it: the padding is MR (NR) for a register
    # tile, but a 16x16 AMX sub-tile of a 32x32 block can start past the edge as well
    m_edge, n_edge = _ceil(g.M, g.MR or R) != g.M, _ceil(g.N, g.NR or C) != g.N
    mvalid = K.minimum(Const(R), binop("sub", Const(g.M), m0)) if m_edge else Const(R)
    nvalid = K.minimum(Const(C), binop("sub", Const(g.N), n0)) if n_edge else Const(C)
    m, n = binop("add", m0, ii), binop("add", n0, jj)
    v = g.corr.apply(Load(tile, binop("add", Const(base), binop("add", binop("mul", ii, C), jj))), m, n)
    inner = For(jj, Const(0), nvalid, g.store(m, n, v), LoopKind.VECTOR, 1, W)
    stmt: Stmt = For(ii, Const(0), mvalid, inner)
    if m_edge:
        stmt = If(K.cmp("lt", m0, Const(g.M)), stmt)
    if n_edge:
        stmt = If(K.cmp("lt", n0, Const(g.N)), stmt)
    return stmt


def is_parallel(ctx: LowerCtx, work: int) -> bool:
    return work >= ctx.parallel_threshold * PARALLEL_FLOPS_PER_ELEMENT
