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
from dataclasses import dataclass, field, replace

import numpy as np

from ..ir.dtype import DType
from . import kir as K
from .gemm import _kloop
from .gemm_plan import PARALLEL_FLOPS_PER_ELEMENT, choose_tile, ranked_tiles, register_budget
from .kir import Buffer, Const, Decl, Dot, Expr, For, If, Load, LoopKind, Stmt, Store, Var, binop
from .kir.tile import TileGemm
from .rules import LowerCtx

I32, I16, U8, I8 = DType.I32, DType.I16, DType.U8, DType.I8
Elem2 = Callable[[Expr, Expr], Expr]
AMX_PREFETCH_CYCLES = 96  # how far ahead (in tdpb* cycles) the AMX micro-kernel prefetches its tiles


@dataclass(frozen=True)
class Int8Plan:
    isa: str
    MR: int  # rows per block
    NR: int  # columns per block (= panel width)
    W: int  # int32 lanes per vector (VNNI / AVX2); 16 for AMX tiles
    G: int  # k elements per group: 4 bytes, or 2 int16
    KS: int  # K step of the packed layouts (64 for AMX, else G)
    KC: int = 0  # AMX: K block (bytes, a multiple of 64; 0: the whole K in one pass)
    MC: int = 0  # AMX: rows per macro tile (0: all)
    NC: int = 0  # AMX: columns per macro tile (0: all)
    prefetch: int = 0  # AMX: software prefetch distance in K steps (0: none)
    unroll: int = 4  # VNNI / AVX2: K groups per iteration of the register tile's loop

    @property
    def elem(self) -> DType:
        return I16 if self.isa == "avx2" else U8

    @property
    def nv(self) -> int:
        return self.NR // self.W


def plan_int8(ctx: LowerCtx, isa: str, M: int, N: int, Kd: int, a_rows: bool = False) -> Int8Plan:
    """``a_rows``: A is read in place as rows (AMX then takes 16-row blocks, see ``_plan_amx``)."""
    t = ctx.target
    over = ctx.options.get("int8_gemm") or {}
    if isa == "amx":
        return _plan_amx(ctx, M, N, Kd, over, a_rows)
    G = 2 if isa == "avx2" else 4
    W = 16 if isa == "vnni512" else 8
    if isa == "avx2":  # vpmaddwd + vpaddd: each step needs a product register besides the accumulators
        regs = register_budget(t)
        mr, nv = ranked_tiles(t, I32, M, N, -(-Kd // G), 4, lambda mr, nv: mr * nv + nv + 2 <= regs)[0]
    else:
        mr, nv = choose_tile(t, I32, M, N, -(-Kd // G), max_nv=4)
    if W * 32 != t.vector_bits:  # an AVX-VNNI (ymm) path on a zmm target: plan with 16 registers
        mr, nv = min(mr, 6), min(nv, 2)
    mr, nv = int(over.get("MR", mr)), int(over.get("nv", nv))
    return Int8Plan(isa, mr, nv * W, W, G, G, unroll=int(over.get("unroll", 2 if isa == "avx2" else 4)))


def _plan_amx(ctx: LowerCtx, M: int, N: int, Kd: int, over: dict, a_rows: bool) -> Int8Plan:
    """2x2 tiles (32x32 int32 blocks, 4 of the 8 tile registers accumulating) unless a side is at most 16.
    The accumulators stay in tiles over the whole K unless the micro-panels would not stay in L2: partial
    sums through an int32 workspace cost more than they save (measured on Sapphire Rapids, 1024^3: 0.3-1.0
    TOP/s with K blocks of 512 vs 1.4 without). Macro tiles (MC x NC: the B block within half of L2) give
    each thread several independent blocks. An A read in place as rows (a MatMulInteger's activation) takes
    1x2 tiles instead: its rows lie ``K`` bytes apart, so the 32 rows of a 2x2 block's A crowd a few L1 sets
    (measured on Sapphire Rapids, 1024^3: 1x2 in place 1.5x ONNX Runtime, 2x2 in place 1.0x, 2x2 on A packed
    into tiles 1.1x with its packing); packed A tiles are contiguous and keep 2x2 (ResNet-50's convolutions:
    2x2 10% faster than 1x2)."""
    t = ctx.target
    MR = int(over.get("MR", 16 if M <= 16 or a_rows else 32))
    NR = int(over.get("NR", 16 if N <= 16 else 32))
    Kp = _ceil(Kd, 64)
    KC = 0  # K blocks only when a block's micro-panels (A: MR x K, B: K x NR) would not stay in L2
    if Kp * (MR + NR) > t.l2 // 2:
        kc_max = max(64, (t.l2 // 4) // (MR + NR) // 64 * 64)
        nk = -(-Kp // kc_max)
        KC = _ceil(-(-Kp // nk), 64)
    KC = int(over.get("KC", KC))
    kc = KC or Kp
    nc = max(NR, (t.l2 // 2) // kc // NR * NR)  # the B block within half of L2
    NC = 0 if nc >= N else nc
    mt_n, jc_n = -(-M // MR), -(-N // (NC or N))
    want = max(1, (4 * t.cores) // jc_n)  # enough macro tiles to balance the threads
    mc_tiles = max(1, -(-mt_n // want))
    MC = 0 if mc_tiles >= mt_n else mc_tiles * MR
    panels = -(-N // NR)
    if -(-mt_n // mc_tiles) * -(-panels // ((NC or panels * NR) // NR)) < 4 * t.cores and panels > 1:
        per = max(1, -(-panels * -(-mt_n // mc_tiles) // (4 * t.cores)))
        NC = min(NC or panels * NR, per * NR)
        NC = 0 if NC >= panels * NR else NC
    MC, NC = int(over.get("MC", MC)), int(over.get("NC", NC))
    # software prefetch far enough ahead to hide an L2 miss (~100 cycles) behind the K steps' tdpb* (16 cycles
    # per tile pair): 1x2 tiles 3 steps, 2x2 2. Measured on a shared, loaded SPR, 1024^3 (paired rounds): the
    # in-place rows without it fall to 0.2-0.8 TOP/s whenever neighbours load the caches, with it steadier
    # (paired median speed-up 1.1-4x in most runs); int8 3x3 convolutions 1.1-1.2x
    pf = max(1, -(-AMX_PREFETCH_CYCLES // (16 * (MR // 16) * (NR // 16))))
    return Int8Plan("amx", MR, NR, 16, 4, 64, KC, _ceil(MC, MR) if MC else 0, _ceil(NC, NR) if NC else 0,
                    int(over.get("prefetch", pf)))  # fmt: skip


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
    """[K, N] -> zero-padded VNNI panels: ``[Np/NR][Kp/G][NR][G]``, or for AMX whole tiles
    ``[Np/NR][Kp/64][NR/16][16][16][4]`` (each B tile 1 KiB contiguous, rows 64 bytes apart)."""
    k, n = b.shape
    NR, G = plan.NR, plan.G
    Np = _ceil(n, NR)
    full = np.zeros((Kp, Np), b.dtype)
    full[:k, :n] = b
    if plan.isa == "amx":
        t = full.reshape(Kp // 64, 16, 4, Np // NR, NR // 16, 16).transpose(3, 0, 4, 1, 5, 2)
        return np.ascontiguousarray(t)
    return np.ascontiguousarray(full.reshape(Kp // G, G, Np // NR, NR).transpose(2, 0, 3, 1))


def b_index(plan: Int8Plan, Kp: int, p: Expr, k: Expr, nn: Expr) -> Expr:
    """The element of the packed B (``pack_b_panels_const``'s layout) holding ``B[k][p*NR + nn]``."""
    NR, G = plan.NR, plan.G
    panel = binop("mul", p, Kp * NR)
    if plan.isa == "amx":
        kt, kr = binop("floordiv", k, 64), binop("mod", k, 64)
        jt, c = binop("floordiv", nn, 16), binop("mod", nn, 16)
        at = binop("add", binop("mul", kt, NR * 64), binop("mul", jt, 1024))
        inner = binop("add", binop("mul", binop("floordiv", kr, 4), 64), binop("add", binop("mul", c, 4),
                                                                                 binop("mod", kr, 4)))  # fmt: skip
        return binop("add", panel, binop("add", at, inner))
    return binop("add", binop("add", panel, binop("mul", binop("floordiv", k, G), NR * G)),
                 binop("add", binop("mul", nn, G), binop("mod", k, G)))  # fmt: skip


def pack_a_tiles_const(a: np.ndarray, Mp: int, Kp: int, MR: int) -> np.ndarray:
    """[M, K] -> AMX A blocks ``[Mp/MR][Kp/64][MR/16][16][64]`` (each A tile 1 KiB contiguous)."""
    full = pack_a_rows_const(a, Mp, Kp)
    return np.ascontiguousarray(full.reshape(Mp // MR, MR // 16, 16, Kp // 64, 64).transpose(0, 3, 1, 2, 4))


def emit_pack_a_tiles(ctx: LowerCtx, src: Elem2, M: int, Kd: int, Mp: int, Kp: int, MR: int, dst: Buffer,
                      parallel: bool) -> Stmt:  # fmt: skip
    """``pack_a_tiles_const`` at run time: per row, 64-byte vector copies into the row's place in each tile."""
    W = 64
    m, kt, kk = Var("m"), Var("kt"), Var("kk")
    row = binop("add", binop("mul", binop("floordiv", m, MR), MR * Kp), binop("mul", binop("mod", m, MR), 64))
    at = binop("add", binop("add", row, binop("mul", kt, MR * 64)), kk)
    k = binop("add", binop("mul", kt, 64), kk)
    zero = K.const(0, dst.dtype)
    full, rem = Kd // 64, Kd % 64
    body = [For(kt, Const(0), Const(full), For(kk, Const(0), Const(64), Store(dst, at, src(m, k)),
                                               LoopKind.VECTOR, 1, W))] if full else []  # fmt: skip
    if rem:
        last = K.seq(For(kk, Const(0), Const(rem), Store(dst, at, src(m, k)), LoopKind.VECTOR, 1, W),
                     For(kk, Const(rem), Const(64), Store(dst, at, zero)))  # fmt: skip
        body.append(K.seq(Decl(kt, Const(full)), last))
    kind = LoopKind.PARALLEL if parallel and M > 1 else LoopKind.SERIAL
    stmt = For(m, Const(0), Const(M), K.seq(*body), kind)
    if Mp > M:  # the padding rows: zero (a whole row of every tile of the last block)
        pad = For(m, Const(M), Const(Mp), For(kt, Const(0), Const(Kp // 64),
                  For(kk, Const(0), Const(64), Store(dst, at, zero), LoopKind.VECTOR, 1, W)))  # fmt: skip
        stmt = K.seq(stmt, pad)
    return stmt


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
    """``value += sum(row[m] * col[n])`` over terms; a missing side is 1. Buffers are int32, padded; a row side
    may also be an int32 scalar expression (the same for every row)."""

    terms: list[tuple[Buffer | Expr | None, Buffer | None]] = field(default_factory=list)

    def apply(self, v: Expr, m: Expr, n: Expr) -> Expr:
        for row, col in self.terms:
            # a row side that is an expression is the same for every row (a run-time zero point)
            r = (Load(row, m) if isinstance(row, Buffer) else row) if row is not None else None
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
    a_tiles: bool = False  # AMX: A in tile blocks ``[Mp/MR][Kp/64][MR/16][16][64]`` (pack_a_tiles_const)
    MR: int = 0  # the block the kernel steps by (emit_int8_gemm sets it from the plan)
    NR: int = 0
    # columns numbered over rows of ``row_w`` of which the first ``row_valid`` are real (a convolution's
    # pixels over padded rows): the epilogue stores row by row through ``store_rc(m, row, col, value)``
    row_w: int = 0
    row_valid: int = 0
    store_rc: Callable[[Expr, Expr, Expr, Expr], Stmt] | None = None


def emit_int8_gemm(ctx: LowerCtx, plan: Int8Plan, g: Int8Gemm, parallel: bool) -> Stmt:
    g = replace(g, MR=plan.MR, NR=plan.NR)
    if plan.isa == "amx":
        return _emit_amx(ctx, plan, g, parallel)
    return tile_loop(-(-g.M // plan.MR), -(-g.N // plan.NR), g.order, lambda mt, p: _vector_block(plan, g, mt, p),
                     parallel)  # fmt: skip


def tile_loop(mt_n: int, np_n: int, order: str, block: Callable[[Var, Var], Stmt], parallel: bool) -> Stmt:
    """One loop over the ``mt_n x np_n`` register tiles (row tile ``mt``, column panel ``p``; "mp": rows outer,
    "pm": panels outer), parallel when asked and there is more than one: ``block(mt, p)`` computes one."""
    t, mt, p = Var("tile"), Var("mt"), Var("p")
    if order == "pm":
        decls = [Decl(p, binop("floordiv", t, mt_n)), Decl(mt, binop("mod", t, mt_n))]
    else:
        decls = [Decl(mt, binop("floordiv", t, np_n)), Decl(p, binop("mod", t, np_n))]
    kind = LoopKind.PARALLEL if parallel and mt_n * np_n > 1 else LoopKind.SERIAL
    return For(t, Const(0), Const(mt_n * np_n), K.seq(*decls, block(mt, p)), kind)


def _emit_amx(ctx: LowerCtx, plan: Int8Plan, g: Int8Gemm, parallel: bool) -> Stmt:
    """Macro tiles (parallel) x K blocks x row blocks x panels of ``TileGemm`` micro-kernels. With several K
    blocks the partial sums live in an int32 workspace ``[Mp][Np]`` between blocks; the last block stores its
    tiles to a stack buffer whose epilogue applies the corrections and the output ``Sink``."""
    MR, NR = plan.MR, plan.NR
    ma, nb = MR // 16, NR // 16
    mt_n, np_n = -(-g.M // MR), -(-g.N // NR)
    Mp, Np = mt_n * MR, np_n * NR
    kc = min(plan.KC or g.Kp, g.Kp)
    nk = -(-g.Kp // kc)
    mc_t = (plan.MC // MR) if plan.MC else mt_n
    nc_p = (plan.NC // NR) if plan.NC else np_n
    ic_n, jc_n = -(-mt_n // mc_t), -(-np_n // nc_p)
    lda = _a_row_stride(g)
    tile = Buffer("ctile", I32, MR * NR)
    part = ctx.workspace(I32, Mp * Np, "int8_partial") if nk > 1 else None
    t, mt, p, kb = Var("macro"), Var("mt"), Var("p"), Var("kb")
    ic, jc = binop("floordiv", t, jc_n), binop("mod", t, jc_n)

    def micro(kblock: Expr, steps: int, first: bool, last: bool) -> Stmt:
        m0, n0 = binop("mul", mt, MR), binop("mul", p, NR)
        k0 = binop("mul", kblock, kc)  # bytes
        if g.a_tiles:
            a_at = binop("add", g.a_offset, binop("add", binop("mul", mt, MR * g.Kp), binop("mul", kblock, kc * MR)))
            a = (a_at, 64, 1024, MR * 64)
        else:
            a_at = binop("add", g.a_offset, binop("add", binop("mul", m0, lda), k0))
            a = (a_at, lda, 16 * lda, 64)
        b_at = binop("add", g.b_offset, binop("add", binop("mul", p, g.Kp * NR), binop("mul", kblock, kc * NR)))
        c_part = None if part is None else Load(part, binop("add", binop("mul", m0, Np), n0))
        c_in = None if first else c_part
        c_out = Load(tile, Const(0)) if last else c_part
        stmt = TileGemm(Load(g.a, a[0]), a[1], a[2], a[3], Load(g.b, b_at), 64, 1024, NR * 64, c_in, c_out,
                        NR if last else Np, ma, nb, Const(steps // 64), plan.prefetch, Np)  # fmt: skip
        if not last:
            return stmt
        out = [stmt]
        for i in range(ma):
            for j in range(nb):
                out.append(_tile_epilogue(g, tile, binop("add", m0, 16 * i), binop("add", n0, 16 * j), 16, 16,
                                          i * 16 * NR + j * 16, 16, NR))  # fmt: skip
        return K.seq(out)

    def blocks(kblock: Expr, steps: int, first: bool, last: bool) -> Stmt:
        inner = For(p, binop("mul", jc, nc_p), K.minimum(binop("mul", binop("add", jc, 1), nc_p), Const(np_n)),
                    micro(kblock, steps, first, last))  # fmt: skip
        return For(mt, binop("mul", ic, mc_t), K.minimum(binop("mul", binop("add", ic, 1), mc_t), Const(mt_n)),
                   inner)  # fmt: skip

    tail = g.Kp - (nk - 1) * kc
    if nk == 1:
        body = blocks(Const(0), g.Kp, True, True)
    else:
        body = K.seq(blocks(Const(0), kc, True, False),
                     For(kb, Const(1), Const(nk - 1), blocks(kb, kc, False, False)) if nk > 2 else None,
                     blocks(Const(nk - 1), tail, False, True))  # fmt: skip
    kind = LoopKind.PARALLEL if parallel and ic_n * jc_n > 1 else LoopKind.SERIAL
    return For(t, Const(0), Const(ic_n * jc_n), body, kind)


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

    out.append(_kloop(Const(0), Const(g.Kp // G), plan.unroll if g.Kp // G >= 2 * plan.unroll else 1, kstep))
    tile = Buffer("ctile", I32, MR * NR)
    out += [Store(tile, Const(i * NR + j * W), acc[i][j]) for i in range(MR) for j in range(nv)]
    out.append(_tile_epilogue(g, tile, m0, n0, MR, NR, 0, W))
    return K.seq(out)


def _tile_epilogue(g: Int8Gemm, tile: Buffer, m0: Expr, n0: Expr, R: int, C: int, base: int, W: int,
                   ld: int = 0) -> Stmt:  # fmt: skip
    """Store the ``R x C`` block of ``tile`` at ``base`` (rows ``ld``, default ``C``, apart) for its valid rows
    and columns."""
    ii, jj = Var("ii"), Var("jj")
    # a block may end past M (N) unless the padded extent equals it: the padding is MR (NR) for a register
    # tile, but a 16x16 AMX sub-tile of a 32x32 block can start past the edge as well
    m_edge, n_edge = _ceil(g.M, g.MR or R) != g.M, _ceil(g.N, g.NR or C) != g.N
    mvalid = K.minimum(Const(R), binop("sub", Const(g.M), m0)) if m_edge else Const(R)
    nvalid = K.minimum(Const(C), binop("sub", Const(g.N), n0)) if n_edge else Const(C)
    m, n = binop("add", m0, ii), binop("add", n0, jj)
    v = g.corr.apply(Load(tile, binop("add", Const(base), binop("add", binop("mul", ii, ld or C), jj))), m, n)
    inner = For(jj, Const(0), nvalid, g.store(m, n, v), LoopKind.VECTOR, 1, W)
    if g.store_rc is not None and g.row_w != g.row_valid:  # one vector loop per row the block touches
        r, nn = Var("r"), Var("nn")
        wq, rows = g.row_w, -(-g.N // g.row_w)
        r_hi = K.minimum(Const(rows), binop("floordiv", binop("add", n0, C + wq - 1), wq))
        row0 = binop("mul", r, wq)
        lo = K.maximum(n0, row0)
        hi = K.minimum(binop("add", n0, nvalid), binop("add", row0, g.row_valid))
        tv = Load(tile, binop("add", Const(base), binop("add", binop("mul", ii, ld or C), binop("sub", nn, n0))))
        st = g.store_rc(m, r, binop("sub", nn, row0), g.corr.apply(tv, m, nn))
        inner = For(r, binop("floordiv", n0, wq), r_hi, For(nn, lo, hi, st, LoopKind.VECTOR, 1, W))
    stmt: Stmt = For(ii, Const(0), mvalid, inner)
    if m_edge:
        stmt = If(K.cmp("lt", m0, Const(g.M)), stmt)
    if n_edge:
        stmt = If(K.cmp("lt", n0, Const(g.N)), stmt)
    return stmt


def is_parallel(ctx: LowerCtx, work: int) -> bool:
    return work >= ctx.parallel_threshold * PARALLEL_FLOPS_PER_ELEMENT
