"""bf16 GEMM for ``precision="bf16"``: float32 models whose GEMMs and convolutions multiply bfloat16 operands
with float32 accumulation (the lowering option ``precision``; everything else stays float32, inputs and
outputs too).

Paths, from the target's features (``bf16_isa``; the lowering option ``bf16_isa`` forces one):

* ``amx`` (AMX-BF16): 32x32 blocks of four 16x16 float32 tiles; per step of 32 k two A tiles (16 rows x 32
  bf16) and two B tiles (16 k-pairs x 16 columns x 2) loaded and four ``tdpbf16ps``: the int8 side's
  ``TileGemm`` with ``kind="bf16"``, whose accumulators stay in tile registers over all of K (and over a
  convolution's taps, its ``segments``); A and constant B in whole 1 KiB tiles, macro tiles (``_emit_amx``);
* ``avx512bf16``: ``MR x NR`` register tiles of ``vdpbf16ps`` (``kir.BfDot``): per k-pair, ``nv`` loads of B
  (16 columns x 2 bf16) and ``MR`` broadcasts of one pair of A;
* neither: ``precision="bf16"`` is refused (``check_precision``). Emulating it (bf16-rounded operands through
  the float32 GEMM) would run no faster than float32 and only reproduce the rounding, so a model compiled
  "in bf16" would silently be a float32 model; float32 runs everywhere.

Layouts (bf16 as u16 bits, ``lower/kir/bf16.py``): A row-major ``[Mp][Kp]``, B in VNNI-2 panels
``[Np/NR][Kp/2][NR][2]`` (two k of a column side by side); on AMX A in blocks ``[Mp/MR][Kp/32][MR/16][16][32]``
(``pack_a_tiles``) and a GEMM's B in whole tiles ``[Np/NR][Kp/32][NR/16][16][16][2]`` (``pack_b_tiles``).
Constant B (weights) are rounded to bf16 (nearest even) and packed at compile time; a run-time A is converted
while it is copied into rows or tiles (``vcvtne2ps2bf16``, 32 values per instruction). Partial tiles at
the edges are computed on zero (or ignored) padding and dropped by the epilogue, which applies alpha, C,
bias and any fused elementwise epilogue through the output ``Sink``.

The micro-kernel (``emit_bf16_gemm``) reads K as *segments*: a segment is a run of k-pairs at a constant offset
in A's rows and in B, consecutive pairs ``pair_stride`` elements apart in B. A GEMM is one segment (B panels);
a convolution (``lower/bf16_conv.py``) is one segment per kernel tap, B read in place from its channel-pair
interleaved input planes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..codegen.targets import Target
from ..errors import UnsupportedError
from ..ir.dtype import DType
from . import kir as K
from .gemm import MATMUL_VARIANTS, _broadcast_c_index, _fold_rows, _kloop
from .gemm_plan import PARALLEL_FLOPS_PER_ELEMENT, choose_tile
from .int8_gemm import tile_loop
from .kir import Buffer, Const, Decl, Expr, For, If, Load, LoopKind, Stmt, Store, Var, binop
from .kir.bf16 import BfDot, BfTileDot, ToBF16, round_bf16_bits
from .kir.tile import TileGemm
from .rules import LowerCtx, Sink
from .shape_ops import unflatten
from .tensor import TExpr

F32, U16 = DType.F32, DType.U16
PRECISIONS = ("fp32", "bf16")
GPU_PRECISIONS = ("fp32", "tf32", "bf16", "fp16")  # NVPTX targets: tensor cores (``lower/gpu_gemm.py``)
BF16_OPS = ("Conv", "Gemm", "MatMul")  # the ops with bf16 kernels


# -- the path ----------------------------------------------------------------------------------------------
def target_bf16_isa(target: Target) -> str | None:
    """``amx`` (AMX-BF16 tiles), ``avx512bf16`` (``vdpbf16ps`` on zmm), or None: what the features allow."""
    if target.arch != "x86_64" or target.vector_bits < 512:
        return None
    if target.has_feature("amx-bf16") and target.has_feature("amx-tile"):
        return "amx"
    return "avx512bf16" if target.has_feature("avx512bf16") else None


def precision_of(options: dict) -> str:
    return str(options.get("precision") or "fp32")


def check_precision(target: Target, options: dict, model: str = "model") -> None:
    """Refuse a precision this target cannot run (see the module docstring: no float32 emulation)."""
    p = precision_of(options)
    if target.is_gpu:
        return _check_gpu_precision(target, p, model)
    if p not in PRECISIONS:
        extra = f" ({p} is a GPU precision)" if p in GPU_PRECISIONS else ""
        raise UnsupportedError(
            f"model '{model}': precision must be one of {', '.join(PRECISIONS)} on CPU targets, got {p!r}{extra}"
        )
    if p == "bf16" and bf16_isa_of(target, options) is None:
        raise UnsupportedError(
            f"model '{model}': precision 'bf16' needs AVX512-BF16 or AMX-BF16, and target {target.name} "
            f"({target.cpu}) has neither; compile with precision 'fp32' (the default) for this target"
        )


def _check_gpu_precision(target: Target, p: str, model: str) -> None:
    from .gpu_gemm import MMA_PRECISIONS
    from .gpu_kir import gpu_spec

    if p not in GPU_PRECISIONS:
        allowed = ", ".join(GPU_PRECISIONS)
        raise UnsupportedError(f"model '{model}': GPU precision must be one of {allowed}, got {p!r}")
    if p != "fp32" and MMA_PRECISIONS[p] not in gpu_spec(target).tensor_cores:
        raise UnsupportedError(
            f"model '{model}': precision {p!r} needs tensor cores with {p} operands (sm_80 or newer); "
            f"target {target.name} ({target.cpu}) has none: use precision 'fp32'"
        )


def bf16_isa_of(target: Target, options: dict) -> str | None:
    forced = options.get("bf16_isa")
    return str(forced) if forced else target_bf16_isa(target)


def use_bf16(ctx: LowerCtx) -> str | None:
    """The bf16 path for this node's kernel, or None (float32)."""
    if precision_of(ctx.options) != "bf16" or ctx.target.is_gpu:
        return None
    return bf16_isa_of(ctx.target, ctx.options)


@dataclass(frozen=True)
class BfPlan:
    isa: str
    MR: int  # rows per block
    NR: int  # columns per block (= panel width)
    W: int = 16  # float32 lanes per accumulator vector (a 16-column AMX tile)
    MC: int = 0  # AMX: rows per macro tile (0: all)
    NC: int = 0  # AMX: columns per macro tile (0: all)
    prefetch: int = 0  # AMX: software prefetch distance in K steps (0: none)

    @property
    def nv(self) -> int:
        return self.NR // self.W

    @property
    def KS(self) -> int:
        """K step of the layouts: a 64-byte AMX tile row, and one ``vcvtne2ps2bf16`` (32 values) of A's rows
        (the vector path's K loop stops at the last real pair)."""
        return 32


def plan_bf16(ctx: LowerCtx, isa: str, M: int, N: int, Kd: int) -> BfPlan:
    over = ctx.options.get("bf16_gemm") or {}
    if isa == "amx":
        return _plan_amx(ctx, M, N, Kd, over)
    mr, nv = choose_tile(ctx.target, F32, M, N, -(-Kd // 2), max_nv=4)
    return BfPlan(isa, int(over.get("MR", mr)), 16 * int(over.get("nv", nv)))


def _plan_amx(ctx: LowerCtx, M: int, N: int, Kd: int, over: dict) -> BfPlan:
    """2x2 tiles (32x32 float32 blocks) unless a side is at most 16, whose accumulators stay in tile registers
    over the whole K (``TileGemm``); macro tiles of MC rows x NC columns, the B block (``Kp x NC`` bf16) within
    half of L2, enough of them (at least 4 per core when the blocks allow) to balance the threads; a thread
    walks a macro tile's row blocks outside its column blocks, so each 32-row A block stays in L1/L2 while it
    meets the whole B block. No K blocks: a 32 x K micro-panel of bf16 stays within L2 up to K = 8192."""
    t = ctx.target
    MR = int(over.get("MR", 16 if M <= 16 else 32))
    NR = int(over.get("NR", 16 if N <= 16 else 32))
    ma, nb = MR // 16, NR // 16
    if MR % 16 or NR % 16 or not ma or not nb or ma * nb + (nb if ma > 1 else 1) + 1 > 8:
        raise ValueError(f"bf16 AMX block {MR}x{NR}: needs multiples of 16 whose accumulator, A and B tiles fit "
                         "the 8 tile registers (e.g. 16x32, 32x32, 16x64, 64x16)")  # fmt: skip
    Kp = ceil_to(Kd, 32)
    mt_n, np_n = -(-M // MR), -(-N // NR)
    nc_p = max(1, min(np_n, (t.l2 // 2) // (2 * Kp * NR)))
    jc_n = -(-np_n // nc_p)
    want = max(1, -(-4 * t.cores // jc_n))
    mc_t = max(1, -(-mt_n // want))
    if -(-mt_n // mc_t) * jc_n < 4 * t.cores and np_n > 1:  # few row blocks: split the columns further
        nc_p = max(1, min(nc_p, -(-np_n * -(-mt_n // mc_t) // (4 * t.cores))))
    MC = int(over.get("MC", 0 if mc_t >= mt_n else mc_t * MR))
    NC = int(over.get("NC", 0 if nc_p >= np_n else nc_p * NR))
    return BfPlan("amx", MR, NR, 16, ceil_to(MC, MR) if MC else 0, ceil_to(NC, NR) if NC else 0,
                  int(over.get("prefetch", 0)))  # fmt: skip


def ceil_to(x: int, m: int) -> int:
    return -(-x // m) * m


def is_parallel(ctx: LowerCtx, work: int) -> bool:
    return work >= ctx.parallel_threshold * PARALLEL_FLOPS_PER_ELEMENT


# -- compile-time packing ----------------------------------------------------------------------------------
def pack_b_panels(b: np.ndarray, NR: int, Kp: int) -> np.ndarray:
    """float32 [K, N] -> bf16 bits in VNNI-2 panels [Np/NR][Kp/2][NR][2], zero-padded."""
    k, n = b.shape
    Np = ceil_to(n, NR)
    full = np.zeros((Kp, Np), np.uint16)
    full[:k, :n] = round_bf16_bits(b)
    return np.ascontiguousarray(full.reshape(Kp // 2, 2, Np // NR, NR).transpose(2, 0, 3, 1))


def pack_b_tiles(b: np.ndarray, NR: int, Kp: int) -> np.ndarray:
    """float32 [K, N] -> bf16 bits in whole AMX B tiles ``[Np/NR][Kp/32][NR/16][16][16][2]`` (each tile 1 KiB
    contiguous: 16 k-pairs x 16 columns x 2), zero-padded."""
    k, n = b.shape
    Np = ceil_to(n, NR)
    full = np.zeros((Kp, Np), np.uint16)
    full[:k, :n] = round_bf16_bits(b)
    t = full.reshape(Kp // 32, 16, 2, Np // NR, NR // 16, 16).transpose(3, 0, 4, 1, 5, 2)
    return np.ascontiguousarray(t)


def pack_a_tiles(a: np.ndarray, Mp: int, Kp: int, MR: int) -> np.ndarray:
    """float32 [..., M, K] -> bf16 bits in AMX A blocks ``[..., Mp/MR][Kp/32][MR/16][16][32]`` (each tile 1 KiB
    contiguous), zero-padded: a block's K step is one contiguous ``MR x 32`` run."""
    rows = pack_a_rows(a, Mp, Kp)
    lead = rows.shape[:-2]
    t = rows.reshape(*lead, Mp // MR, MR // 16, 16, Kp // 32, 32)
    n = len(lead)
    return np.ascontiguousarray(t.transpose(*range(n), n, n + 3, n + 1, n + 2, n + 4))


def a_tile_index(m: Expr, k: Expr, Kp: int, MR: int) -> Expr:
    """The element of ``pack_a_tiles``' layout holding row ``m``, column ``k``."""
    blk = binop("mul", binop("floordiv", m, MR), MR * Kp)
    at = binop("add", binop("mul", binop("floordiv", k, 32), MR * 32), binop("mul", binop("mod", m, MR), 32))
    return binop("add", blk, binop("add", at, binop("mod", k, 32)))


def pack_a_rows(a: np.ndarray, Mp: int, Kp: int) -> np.ndarray:
    """float32 [..., M, K] -> bf16 bits [..., Mp, Kp], zero-padded."""
    out = np.zeros((*a.shape[:-2], Mp, Kp), np.uint16)
    out[..., : a.shape[-2], : a.shape[-1]] = round_bf16_bits(a)
    return out


# -- run-time conversion -----------------------------------------------------------------------------------
def emit_rows_to_bf16(ctx: LowerCtx, a: TExpr, M: int, Kd: int, Kp: int, dst: Buffer, parallel: bool,
                      tile_mr: int = 0) -> Stmt:  # fmt: skip
    """``dst[m*Kp + k] = bf16(a[m, k])`` for m < M, zero for k in [Kd, Kp) (``Kp`` a multiple of 32); with
    ``tile_mr``, into ``pack_a_tiles``' layout of ``tile_mr``-row blocks instead. Rows contiguous along K are
    converted 32 values per ``vcvtne2ps2bf16`` (a masked last one); any other A one element at a time."""
    if tile_mr:
        where = lambda m, k: a_tile_index(m, k, Kp, tile_mr)  # noqa: E731
    else:
        where = lambda m, k: binop("add", binop("mul", m, Kp), k)  # noqa: E731
    m, c = Var("m"), Var("c")
    kind = LoopKind.PARALLEL if parallel and M > 1 else LoopKind.SERIAL
    v = a.view
    if v is not None and (v.strides[-1] == 1 or v.shape[-1] == 1):
        row = v.index([m, Const(0)])
        full, chunks = Kd // 32, Kp // 32

        def chunk(masked: bool) -> Stmt:
            k0 = binop("mul", c, 32)
            mask = K.cmp("lt", K.Ramp(k0, 1, 32), Const(Kd, K.I64, 32)) if masked else None
            x = Load(v.buf, binop("add", row, k0), 32, mask)
            return Store(dst, where(m, k0), ToBF16(x))

        body = K.seq(For(c, Const(0), Const(full), chunk(False)) if full else None,
                     For(c, Const(full), Const(chunks), chunk(True)) if chunks > full else None)  # fmt: skip
        return For(m, Const(0), Const(M), body, kind)
    k = Var("k")
    at = where(m, k)
    body = K.seq(For(k, Const(0), Const(Kd), Store(dst, at, ToBF16(K.cast(a([m, k]), F32)))),
                 For(k, Const(Kd), Const(Kp), Store(dst, at, Const(0, U16))) if Kp > Kd else None)  # fmt: skip
    return For(m, Const(0), Const(M), body, kind)


# -- the kernel --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    a_off: int  # offset of its first k in A's rows (elements)
    b_off: int  # offset of its first k-pair in B (elements), from the block's B base
    pairs: int  # k-pairs (a multiple of 16 on AMX)


@dataclass
class BfGemm:
    """What ``emit_bf16_gemm`` computes: ``epilogue`` of each block of ``C = A @ B`` for rows < M, columns < N."""

    M: int
    N: int
    a: Buffer  # bf16 rows, ``lda`` apart
    a_offset: Expr
    lda: int
    b: Buffer
    b_base: Callable[[Expr], Expr]  # element offset of block column p's B (its first pair of its first column)
    pair_stride: int  # elements between consecutive k-pairs of one column in B
    segments: list[Segment]
    # epilogue(tile, base, m0, n0, rows, cols): store the rows x cols block at tile[base:] (row-major), whose
    # first element is C[m0, n0]; it drops rows >= M and columns >= N
    epilogue: Callable[[Buffer, int, Expr, Expr, int, int], Stmt]
    order: str = "mp"  # "mp": row blocks outer, "pm": column blocks outer (vector path)
    a_tiles: bool = False  # AMX: A in ``pack_a_tiles``' blocks of MR rows (``lda`` = its padded K)
    b_tiles: bool = False  # AMX: B in ``pack_b_tiles``' whole tiles (one segment; ``b_base`` its panel)


def emit_bf16_gemm(ctx: LowerCtx, plan: BfPlan, g: BfGemm, parallel: bool) -> Stmt:
    if plan.isa == "amx":
        return _emit_amx(plan, g, parallel)
    return tile_loop(-(-g.M // plan.MR), -(-g.N // plan.NR), g.order, lambda mt, p: _vector_block(plan, g, mt, p),
                     parallel)  # fmt: skip


def _vector_block(plan: BfPlan, g: BfGemm, mt: Var, p: Var) -> Stmt:
    MR, NR, W, nv = plan.MR, plan.NR, plan.W, plan.nv
    acc = [[Var(f"acc{i}_{j}", F32, W) for j in range(nv)] for i in range(MR)]
    out: list[Stmt] = [Decl(acc[i][j], Const(0.0, F32, W)) for i in range(MR) for j in range(nv)]
    m0, n0 = binop("mul", mt, MR), binop("mul", p, NR)
    a_base = binop("add", g.a_offset, binop("mul", m0, g.lda))
    b_base = g.b_base(p)
    for seg in g.segments:

        def kstep(kp: Expr, seg: Segment = seg) -> list[Stmt]:
            bat = binop("add", b_base, binop("add", binop("mul", kp, g.pair_stride), seg.b_off))
            bv = [Load(g.b, binop("add", bat, 2 * W * j), 2 * W) for j in range(nv)]
            st: list[Stmt] = []
            for i in range(MR):
                av = Load(g.a, binop("add", a_base, binop("add", binop("mul", kp, 2), seg.a_off + i * g.lda)), 2)
                st += [K.Assign(acc[i][j], BfDot(acc[i][j], av, bv[j])) for j in range(nv)]
            return st

        out.append(_kloop(Const(0), Const(seg.pairs), 4 if seg.pairs >= 8 else 1, kstep))
    tile = Buffer("ctile", F32, MR * NR)
    out += [Store(tile, Const(i * NR + j * W), acc[i][j]) for i in range(MR) for j in range(nv)]
    out.append(g.epilogue(tile, 0, m0, n0, MR, NR))
    return K.seq(out)


def _emit_amx(plan: BfPlan, g: BfGemm, parallel: bool) -> Stmt:
    """Macro tiles (parallel) x row blocks x column blocks of ``TileGemm`` micro-kernels (``kind="bf16"``):
    each block's ``MR x NR`` float32 accumulators stay in tile registers over every segment and K step, are
    stored once to a stack tile and go through the epilogue."""
    MR, NR = plan.MR, plan.NR
    ma, nb = MR // 16, NR // 16
    mt_n, np_n = -(-g.M // MR), -(-g.N // NR)
    mc_t = plan.MC // MR if plan.MC else mt_n
    nc_p = plan.NC // NR if plan.NC else np_n
    ic_n, jc_n = -(-mt_n // mc_t), -(-np_n // nc_p)
    steps = {seg.pairs for seg in g.segments}
    if len(steps) != 1 or next(iter(steps)) % 16:
        raise ValueError(f"bf16 AMX: segments need one length, a multiple of 16 pairs (got {sorted(steps)})")
    ksteps = next(iter(steps)) // 16
    t, mt, p = Var("macro"), Var("mt"), Var("p")
    ic, jc = binop("floordiv", t, jc_n), binop("mod", t, jc_n)
    m0, n0 = binop("mul", mt, MR), binop("mul", p, NR)
    if g.a_tiles:  # A blocks: the 16 rows of a tile 32 apart, tiles 512 apart, a K step MR x 32
        a_at = binop("add", g.a_offset, binop("mul", mt, MR * g.lda))
        a_geom = (32, 512, MR * 32)
        a_segs = [seg.a_off // 32 * MR * 32 for seg in g.segments]
    else:
        a_at = binop("add", g.a_offset, binop("mul", m0, g.lda))
        a_geom = (g.lda, 16 * g.lda, 32)
        a_segs = [seg.a_off for seg in g.segments]
    if g.b_tiles:  # whole 1 KiB tiles: rows 32 apart, tiles 512 apart, a K step NR x 32
        b_geom = (32, 512, NR * 32)
    else:  # 16 k-pairs of a panel or of the interleaved planes, ``pair_stride`` apart
        b_geom = (g.pair_stride, 32, 16 * g.pair_stride)
    segs = tuple((ao, seg.b_off) for ao, seg in zip(a_segs, g.segments, strict=True))
    tile = Buffer("ctile", F32, MR * NR)
    mm = TileGemm(Load(g.a, a_at), *a_geom, Load(g.b, g.b_base(p)), *b_geom, None, Load(tile, Const(0)), NR, ma, nb,
                  Const(ksteps), plan.prefetch, 0, "bf16", segs if segs != ((0, 0),) else ())  # fmt: skip
    block = K.seq(mm, g.epilogue(tile, 0, m0, n0, MR, NR))
    inner = For(p, binop("mul", jc, nc_p), K.minimum(binop("mul", binop("add", jc, 1), nc_p), Const(np_n)), block)
    rows = For(mt, binop("mul", ic, mc_t), K.minimum(binop("mul", binop("add", ic, 1), mc_t), Const(mt_n)), inner)
    kind = LoopKind.PARALLEL if parallel and ic_n * jc_n > 1 else LoopKind.SERIAL
    return For(t, Const(0), Const(ic_n * jc_n), rows, kind)


def edge(extent: int, start: Expr, size: int, block: int) -> tuple[Expr, bool]:
    """The valid part of ``size`` rows (or columns) from ``start`` of a block grid of ``block``: (count, whether
    the part may start past ``extent``, to be skipped). An AMX block holds several 16-row tiles, so a tile may
    lie wholly past the end even when ``extent`` is a multiple of its size."""
    count = K.minimum(Const(size), binop("sub", Const(extent), start)) if extent % size else Const(size)
    return count, bool(extent % size or extent % block)


def block_epilogue(M: int, N: int, plan: BfPlan, store: Callable[[Expr, Expr, Expr], Stmt]) -> Callable[..., Stmt]:
    """The epilogue of a plain GEMM: ``store(m, n, value)`` for each valid element, vectorized along n."""

    def epi(tile: Buffer, base: int, m0: Expr, n0: Expr, R: int, C: int) -> Stmt:
        ii, jj = Var("ii"), Var("jj")
        (mvalid, mskip), (nvalid, nskip) = edge(M, m0, R, plan.MR), edge(N, n0, C, plan.NR)
        v = Load(tile, binop("add", Const(base), binop("add", binop("mul", ii, C), jj)))
        m, n = binop("add", m0, ii), binop("add", n0, jj)
        stmt: Stmt = For(ii, Const(0), mvalid, For(jj, Const(0), nvalid, store(m, n, v), LoopKind.VECTOR, 1, 16))
        if mskip:
            stmt = If(K.cmp("lt", m0, Const(M)), stmt)
        if nskip:
            stmt = If(K.cmp("lt", n0, Const(N)), stmt)
        return stmt

    return epi


# -- MatMul / Gemm -----------------------------------------------------------------------------------------
def lower_matmul_bf16(ctx: LowerCtx, a: TExpr, b: TExpr, sink: Sink, trans_a: bool = False, trans_b: bool = False,
                      alpha: float = 1.0, c: TExpr | None = None, beta: float = 1.0) -> Stmt | None:  # fmt: skip
    """``sink = alpha * A @ B + beta * C`` with a constant 2-D B (weights) in bf16; None: not this route (a
    run-time B, a transposed A, float64, ...: those stay float32)."""
    isa = use_bf16(ctx)
    if isa is None or b.const is None or b.rank != 2 or a.rank < 2 or trans_a or sink.dtype is not F32:
        return None
    if a.dtype is not F32 or b.dtype is not F32:
        return None
    bmat = np.asarray(b.const, np.float32)
    bmat = bmat.T if trans_b else bmat
    lead = a.shape[:-1]
    M, Kd, N = int(np.prod(lead)), a.shape[-1], bmat.shape[1]
    plan = plan_bf16(ctx, isa, M, N, Kd)
    Kp, Mp = ceil_to(Kd, plan.KS), ceil_to(M, plan.MR)
    name = ctx.node.name
    amx = isa == "amx"
    bp = ctx.const_view((pack_b_tiles if amx else pack_b_panels)(bmat, plan.NR, Kp), f"{name}_Bbf16").buf
    parallel = is_parallel(ctx, 2 * M * N * Kd)
    abuf = ctx.workspace(U16, Mp * Kp, f"{name}_Abf16")
    pack = emit_rows_to_bf16(ctx, _fold_rows(a), M, Kd, Kp, abuf, parallel, plan.MR if amx else 0)

    def store(m: Expr, n: Expr, v: Expr) -> Stmt:
        if alpha != 1.0:
            v = binop("mul", v, K.const(alpha, F32))
        idx = [*unflatten(m, lead), n] if len(lead) > 1 else [m, n]
        if c is not None:
            cv = c(_broadcast_c_index(idx, c.shape))
            cv = cv if cv.dtype is F32 else K.cast(cv, F32)
            v = binop("add", v, cv if beta == 1.0 else binop("mul", cv, K.const(beta, F32)))
        return sink.store(idx, v)

    seg = Segment(0, 0, Kp // 2 if isa == "amx" else -(-Kd // 2))
    g = BfGemm(M, N, abuf, Const(0), Kp, bp, lambda p: binop("mul", p, Kp * plan.NR), 2 * plan.NR, [seg],
               block_epilogue(M, N, plan, store), a_tiles=amx, b_tiles=amx)  # fmt: skip
    ctx.stores_once = True
    return K.seq(pack, emit_bf16_gemm(ctx, plan, g, parallel))


MATMUL_VARIANTS.append(lower_matmul_bf16)


__all__ = ["BF16_OPS", "GPU_PRECISIONS", "PRECISIONS", "BfGemm", "BfPlan", "Segment", "check_precision",
           "emit_bf16_gemm", "lower_matmul_bf16", "plan_bf16", "target_bf16_isa", "use_bf16"]  # fmt: skip


# -- what ran in bf16 ----------------------------------------------------------------------------------------
def precision_note(graph, program, options: dict) -> str | None:
    """One line for the report: which ops run in bf16 (their kernels hold bf16 dot products) and which of the
    ops that could stayed float32. None at precision fp32."""
    if program.target.is_gpu and precision_of(options) != "fp32":
        from .gpu_gemm import gpu_precision_note

        return gpu_precision_note(graph, program, precision_of(options))
    if precision_of(options) != "bf16":
        return None
    from .kir import walk_expr, walk_stmt
    from .kir.traverse import stmt_exprs

    ops: dict[str, str] = {}
    for n in graph.nodes:
        for member in n.attrs.get("body") or (n,):
            ops[member.name] = member.op
    bf16: set[str] = set()
    for k in program.kernels:
        seen: set[int] = set()
        stmts = list(walk_stmt(k.body))
        tiles = any(isinstance(s, TileGemm) and s.kind == "bf16" for s in stmts)
        if tiles or any(isinstance(x, BfDot | BfTileDot) for s in stmts for e in stmt_exprs(s)
                        for x in walk_expr(e, seen)):  # fmt: skip
            names = (label.rsplit(" (", 1)[0] for label in k.labels)  # "node (op)"
            bf16.update(name for name in names if ops.get(name) in BF16_OPS)

    def count(names) -> str:
        by_op: dict[str, int] = {}
        for name in names:
            by_op[ops[name]] = by_op.get(ops[name], 0) + 1
        return ", ".join(f"{op} x{c}" for op, c in sorted(by_op.items())) or "none"

    rest = [name for name, op in ops.items() if op in BF16_OPS and name not in bf16]
    isa = {"amx": "AMX tdpbf16ps", "avx512bf16": "AVX512-BF16 vdpbf16ps"}.get(bf16_isa_of(program.target, options), "")
    line = f"precision bf16 ({isa}, float32 accumulation): in bf16 {count(bf16)}"
    why = " (depthwise, few channels or run-time operands)"
    return line + (f"; in float32 {count(rest)}{why}; everything else float32" if rest else "; everything else float32")
