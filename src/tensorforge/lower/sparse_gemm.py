"""Sparse GEMM: ``C = A @ B`` with a constant ``B`` of high unstructured sparsity (a pruned weight).

The dense micro-kernel (``lower/gemm.py``) vectorizes along N and broadcasts A; a sparse B has no
contiguous runs along N to load (at 80% sparsity, 97% of 16-wide row segments still hold a nonzero), so
this kernel vectorizes along M instead, over a transposed copy of A:

    A is packed at run time into panels ``Ap[M/MT][K][MT]`` (MT = mv vectors of rows; zero-padded),
    B is stored at compile time by columns (CSC): per column its nonzeros as (k * MT, value) pairs,
    padded with zero entries to a multiple of U:

    parallel for tile (m panel, block of NB columns):
      for each column n of the block:
        acc[u][i] = 0                                   (U x mv vector accumulators)
        for each group of U nonzeros (off, w) of column n:
          acc[u][i] = fma(broadcast(w), Ap[panel][off + i*W : +W], acc[u][i])
        tile[n][:] = sum over u of acc[u]               (C^T for the block, on the stack)
      for each row m: C[m, block] = epilogue(tile[:, m])   (vectorized along n, through the Sink)

Per nonzero: one index load, one broadcast, ``mv`` vector loads and ``mv`` FMAs; U independent
accumulator sets keep the FMA latency hidden. The code is loops over the compressed arrays: its size
does not depend on the number of nonzeros. The rule takes a GEMM only when B's density is at most
``max_density``, A has at least ``min_rows`` rows (a panel of fewer rows is mostly padding), and the cost
model (``sparse_cycles`` against ``dense_cycles``, constants measured against the dense kernel with
``benchmarks/bench_prune.py``) says it is faster: the transposes cost per element of A and C, so a sparse
B pays only with enough nonzeros per column. The lowering option ``sparse_gemm`` overrides them
(``False`` turns the kernel off, a dict sets ``SparsePlan`` fields).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from ..ir.dtype import DType
from . import kir as K
from .gemm import MATMUL_VARIANTS
from .gemm_plan import FMA_LATENCY, PARALLEL_FLOPS_PER_ELEMENT, register_budget
from .kir import Assign, Broadcast, Buffer, Const, Decl, Expr, Fma, For, Load, LoopKind, Stmt, Store, Var, binop
from .rules import LowerCtx, Sink
from .tensor import TExpr

# Whether the sparse kernel pays is decided by a cost model in cycles, its constants measured on Sapphire Rapids
# (one thread, benchmarks/bench_prune.py; 256x64x256, 256x256x10, 256x784x256 and 1024^3 at densities 0.001-0.5):
# per nonzero of B and vector of A rows, a broadcast, an index and a vector load feed one FMA (L2-bound for
# large K: ~1.25 cycles); transposing A into panels ~1 cycle per element; the epilogue (tile transpose,
# Sink) ~0.5 cycle per output element; the dense GEMM runs at ~80% of the FMA peak. Beyond this density the
# sparse kernel is never tried (the dense micro-kernel reuses each loaded vector MR times).
SPARSE_MAX_DENSITY = 0.5
CYCLES_PER_NONZERO_VECTOR = 1.25
PACK_CYCLES_PER_ELEMENT = 1.0
EPILOGUE_CYCLES_PER_ELEMENT = 0.5
DENSE_EFFICIENCY = 0.8
MAX_PANEL_VECTORS = 4  # rows per A panel: up to 4 vectors (64 floats on AVX-512)


@dataclass(frozen=True)
class SparsePlan:
    """Schedule of one sparse GEMM: rows per panel ``mv * W``, ``U`` accumulator sets, ``W`` columns per
    tile; ``max_density``, ``min_rows`` and the cost model decide whether the sparse kernel is used at all."""

    mv: int
    W: int
    U: int
    max_density: float = SPARSE_MAX_DENSITY
    min_rows: int = 0  # 0: one vector of rows
    cost_model: bool = True  # False: used whenever the density allows (tests, benchmarks)

    @property
    def MT(self) -> int:
        return self.mv * self.W

    @property
    def NB(self) -> int:  # columns per tile: one vector, so that the tile transposes as W x W blocks
        return self.W


def plan_sparse(ctx: LowerCtx, dtype: DType, M: int) -> SparsePlan | None:
    """The plan for an ``M``-row product, or None when the option ``sparse_gemm`` is False."""
    over = ctx.options.get("sparse_gemm", True)
    if over is False or ctx.target.is_gpu:
        return None
    W = ctx.lanes(dtype)
    mv = max(1, min(MAX_PANEL_VECTORS, -(-M // W)))
    # enough independent FMA chains to cover the latency on every FMA unit, within the registers
    chains = FMA_LATENCY * max(1, ctx.target.fma_units)
    U = max(1, min(-(-chains // mv), register_budget(ctx.target) // (2 * mv), 8))
    plan = SparsePlan(mv, W, U)
    if isinstance(over, dict):
        known = {f.name for f in fields(SparsePlan)}
        plan = SparsePlan(**{**plan.__dict__, **{k: v for k, v in over.items() if k in known}})
    return plan


def dense_cycles(ctx: LowerCtx, dtype: DType, M: int, N: int, Kd: int) -> float:
    """Modelled cycles of the dense GEMM (N padded to whole vectors)."""
    W = ctx.lanes(dtype)
    fmas = ctx.target.fma_units * min(1.0, ctx.target.fma_bits / ctx.target.vector_bits)
    return M * (-(-N // W) * W) * Kd / (W * max(fmas, 0.5) * DENSE_EFFICIENCY)


def sparse_cycles(ctx: LowerCtx, plan: SparsePlan, M: int, N: int, Kd: int, nnz: int) -> float:
    """Modelled cycles of the sparse kernel: the nonzeros (padded per column to U) once per panel of rows,
    the transposition of A, the epilogue over the padded tile (constants measured, see above)."""
    panels = -(-M // plan.MT)
    padded = nnz + N * (plan.U - 1) / 2
    n_pad = -(-N // plan.NB) * plan.NB
    return (panels * padded * plan.mv * CYCLES_PER_NONZERO_VECTOR + M * Kd * PACK_CYCLES_PER_ELEMENT
            + panels * plan.MT * n_pad * EPILOGUE_CYCLES_PER_ELEMENT)  # fmt: skip


def pack_csc(b: np.ndarray, MT: int, U: int, NB: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``B[K, N]`` by columns: ``ptr`` (int32, one more than the columns padded to NB; in groups of U
    entries), ``off`` (int32, ``k * MT`` per entry) and ``val`` (per entry); every column padded with
    zero entries (k = 0) to a multiple of U."""
    Kd, N = b.shape
    cols = -(-N // NB) * NB
    nz = b != 0
    counts = nz.sum(axis=0)
    groups = np.zeros(cols, np.int64)
    groups[:N] = -(-counts // U)
    ptr = np.zeros(cols + 1, np.int64)
    np.cumsum(groups, out=ptr[1:])
    total = int(ptr[-1]) * U
    off = np.zeros(max(total, 1), np.int32)
    val = np.zeros(max(total, 1), b.dtype)
    for n in range(N):
        ks = np.flatnonzero(nz[:, n])
        at = int(ptr[n]) * U
        off[at : at + ks.size] = ks * MT
        val[at : at + ks.size] = b[ks, n]
    if ptr[-1] * U * MT >= 2**31 or Kd * MT >= 2**31:
        raise OverflowError("sparse GEMM offsets exceed int32")
    return ptr.astype(np.int32), off, val


def emit_sparse_gemm(ctx: LowerCtx, plan: SparsePlan, M: int, N: int, Kd: int, dt: DType, ap: Buffer, ptr: Buffer,
                     off: Buffer, val: Buffer, store: Callable[[Expr, Expr, Expr], Stmt],
                     parallel: bool) -> Stmt:  # fmt: skip
    """The tile loop over the packed A panels ``ap`` and the CSC arrays (see the module docstring)."""
    W, mv, U, NB, MT = plan.W, plan.mv, plan.U, plan.NB, plan.MT
    mp_n, nb_n = -(-M // MT), -(-N // NB)
    t, mp, nb, c, n, g = Var("tile"), Var("mp"), Var("nb"), Var("c"), Var("n"), Var("g")
    body: list[Stmt] = [Decl(mp, binop("floordiv", t, nb_n)), Decl(nb, binop("mod", t, nb_n))]
    base = binop("mul", mp, Kd * MT)
    tile, tmp = Buffer("stile", dt, NB * MT), Buffer("stile2", dt, NB * MT)
    zero = Const(0.0, dt, W)
    acc = [[Var(f"sacc{u}_{i}", dt, W) for i in range(mv)] for u in range(U)]
    col: list[Stmt] = [Decl(n, binop("add", binop("mul", nb, NB), c))]
    col += [Decl(acc[u][i], zero) for u in range(U) for i in range(mv)]
    step: list[Stmt] = []
    for u in range(U):
        e = binop("add", binop("mul", g, U), u)
        at = binop("add", base, K.cast(Load(off, e), K.I64))
        w = Broadcast(Load(val, e), W)
        for i in range(mv):
            step.append(Assign(acc[u][i], Fma(w, Load(ap, binop("add", at, i * W), W), acc[u][i])))
    lo, hi = K.cast(Load(ptr, n), K.I64), K.cast(Load(ptr, binop("add", n, 1)), K.I64)
    col.append(For(g, lo, hi, K.seq(step)))
    for i in range(mv):
        s: Expr = acc[0][i]
        for u in range(1, U):
            s = binop("add", s, acc[u][i])
        col.append(Store(tile, binop("add", binop("mul", c, W), i * W * W), s))
    body.append(For(c, Const(0), Const(NB), K.seq(col)))
    body += _transpose_tiles(tile, tmp, W, mv)
    # epilogue: row by row, vectorized along the block's columns (the tile is now [MT][NB])
    m0, n0 = binop("mul", mp, MT), binop("mul", nb, NB)
    mvalid = K.minimum(Const(MT), binop("sub", Const(M), m0)) if M % MT else Const(MT)
    nvalid = K.minimum(Const(NB), binop("sub", Const(N), n0)) if N % NB else Const(NB)
    ii, jj = Var("ii"), Var("jj")
    value = Load(tile, binop("add", binop("mul", ii, NB), jj))
    vec = NB >= W > 1
    inner = For(jj, Const(0), nvalid, store(binop("add", m0, ii), binop("add", n0, jj), value),
                LoopKind.VECTOR if vec else LoopKind.SERIAL, 1, W if vec else 1)  # fmt: skip
    body.append(For(ii, Const(0), mvalid, inner))
    kind = LoopKind.PARALLEL if parallel and mp_n * nb_n > 1 else LoopKind.SERIAL
    return For(t, Const(0), Const(mp_n * nb_n), K.seq(body), kind)


def shuffle_strides(W: int) -> list[int]:
    """Strides ``s`` (4 or 2) whose product is ``W``: a ``W x W`` transpose is the perfect shuffle by W, and
    shuffles compose (by a, then by b, is by a*b)."""
    out, w = [], W
    while w % 4 == 0 and w > 1:
        out.append(4)
        w //= 4
    if w == 2:
        out.append(2)
        w = 1
    if w != 1:
        raise ValueError(f"vector width {W} is not a power of two")
    return out


def _transpose_tiles(tile: Buffer, tmp: Buffer, W: int, mv: int) -> list[Stmt]:
    """Transpose the ``mv`` ``W x W`` tiles in ``tile`` ([i][c][m] -> [i][m][c]) in place (through ``tmp``).

    A perfect shuffle by s of the n = W*W elements, ``out[j] = in[s*j mod (n-1)]`` (``out[n-1] = in[n-1]``),
    reads each output vector v as the stride-s run from ``s*W*v mod (n-1)``: stride-s vector loads, which
    code generation emits as s contiguous loads and one shuffle where the target has cheap masks
    (AVX-512), else lane by lane. ``shuffle_strides(W)`` such passes make the transpose; an odd number of
    passes ends with a copy back."""
    if W == 1:
        return []
    n = W * W
    out: list[Stmt] = []
    i = Var("ti")
    src, dst = tile, tmp
    for s in shuffle_strides(W):
        base = binop("mul", i, n)
        loads = [Store(dst, binop("add", base, v * W),
                       Load(src, K.Ramp(binop("add", base, (s * W * v) % (n - 1)), s, W), W))
                 for v in range(W)]  # fmt: skip
        out.append(For(i, Const(0), Const(mv), K.seq(loads)))
        src, dst = dst, src
    if src is not tile:
        out.append(For(i, Const(0), Const(mv * W), Store(tile, binop("mul", i, W), Load(tmp, binop("mul", i, W), W))))
    return out


def emit_transpose_pack(src: Callable[[Expr, Expr], Expr], M: int, Kd: int, MT: int, dst: Buffer, dt: DType,
                        parallel: bool, KB: int = 16) -> Stmt:  # fmt: skip
    """``dst[t][k][r] = src(k, t*MT + r)`` (zero past M): A transposed into panels, K in blocks of KB so that
    the KB x MT block written and the MT x KB block read stay in L1."""
    mp_n = -(-M // MT)
    t, kb, r, j, k = Var("t"), Var("kb"), Var("r"), Var("j"), Var("k")
    base = binop("mul", t, Kd * MT)
    rvalid = K.minimum(Const(MT), binop("sub", Const(M), binop("mul", t, MT))) if M % MT else Const(MT)
    kk = binop("add", binop("mul", kb, KB), j)
    jvalid = K.minimum(Const(KB), binop("sub", Const(Kd), binop("mul", kb, KB))) if Kd % KB else Const(KB)
    copy = Store(dst, binop("add", base, binop("add", binop("mul", kk, MT), r)),
                 K.cast(src(kk, binop("add", binop("mul", t, MT), r)), dt))  # fmt: skip
    blocks = For(kb, Const(0), Const(-(-Kd // KB)), For(r, Const(0), rvalid, For(j, Const(0), jvalid, copy)))
    body: list[Stmt] = [blocks]
    if M % MT:
        zero = Store(dst, binop("add", base, binop("add", binop("mul", k, MT), r)), K.const(0, dt))
        body.append(For(k, Const(0), Const(Kd), For(r, rvalid, Const(MT), zero)))
    kind = LoopKind.PARALLEL if parallel and mp_n > 1 else LoopKind.SERIAL
    return For(t, Const(0), Const(mp_n), K.seq(body), kind)


def _unflatten(m: Expr, dims: list[int]) -> list[Expr]:
    out, stride = [], int(np.prod(dims)) if dims else 1
    for i, d in enumerate(dims):
        stride //= d
        q = binop("floordiv", m, stride) if stride != 1 else m
        out.append(binop("mod", q, d) if i > 0 else q)
    return out


def lower_sparse_matmul(ctx: LowerCtx, a: TExpr, b: TExpr, sink: Sink, trans_a: bool, trans_b: bool, alpha: float,
                        c: TExpr | None, beta: float) -> Stmt | None:  # fmt: skip
    """``sink = alpha * op(a) @ op(b) + beta * c`` with the sparse kernel, or None where it does not apply
    (B not a 2-D constant, integer dtypes, A with fewer than 2 dims, too few rows, B too dense)."""
    dt = sink.dtype.compute
    if b.const is None or b.const.ndim != 2 or a.rank < 2 or not dt.is_float or dt.itemsize != 4:
        return None
    bmat = b.const.T if trans_b else b.const
    Kd, N = bmat.shape
    lead = list(a.shape[:-2])
    rows = a.shape[-1] if trans_a else a.shape[-2]
    M = int(np.prod(lead)) * rows
    plan = plan_sparse(ctx, dt, M)
    if plan is None or M < (plan.min_rows or plan.W) or bmat.size == 0:
        return None
    nnz = int(np.count_nonzero(bmat))
    density = nnz / bmat.size
    if density > plan.max_density:
        return None
    if plan.cost_model and sparse_cycles(ctx, plan, M, N, Kd, nnz) >= dense_cycles(ctx, dt, M, N, Kd):
        return None
    name = ctx.node.name
    ptr_a, off_a, val_a = pack_csc(np.ascontiguousarray(bmat, dtype=dt.np), plan.MT, plan.U, plan.NB)
    ptr = ctx.const_view(ptr_a, f"{name}_Bptr").buf
    off = ctx.const_view(off_a, f"{name}_Boff").buf
    val = ctx.const_view(val_a, f"{name}_Bval").buf
    work = 2 * M * N * Kd * density
    parallel = work >= ctx.parallel_threshold * PARALLEL_FLOPS_PER_ELEMENT
    mp_n = -(-M // plan.MT)
    ap = ctx.workspace(dt, mp_n * Kd * plan.MT, f"{name}_AT")
    dims = [*lead, rows]

    def a_at(k, m):
        idx = _unflatten(m, dims)
        return a([*idx[:-1], k, idx[-1]] if trans_a else [*idx, k])

    stmts = [emit_transpose_pack(a_at, M, Kd, plan.MT, ap, dt, parallel)]
    out_rank = len(sink.shape)

    def store(m, n, v):
        if alpha != 1.0:
            v = binop("mul", v, K.const(alpha, dt))
        oidx = [*_unflatten(m, list(sink.shape[:-1])), n] if out_rank > 1 else [n]
        if c is not None:
            pad = len(oidx) - len(c.shape)
            cv = c([Const(0) if d == 1 else oidx[pad + i] for i, d in enumerate(c.shape)])
            if cv.dtype != dt:
                cv = K.cast(cv, dt)
            v = binop("add", v, cv if beta == 1.0 else binop("mul", cv, K.const(beta, dt)))
        return sink.store(oidx, v)

    ctx.stores_once = True
    stmts.append(emit_sparse_gemm(ctx, plan, M, N, Kd, dt, ap, ptr, off, val, store, parallel))
    return K.seq(stmts)


MATMUL_VARIANTS.append(lower_sparse_matmul)

__all__ = ["SPARSE_MAX_DENSITY", "SparsePlan", "dense_cycles", "emit_sparse_gemm", "lower_sparse_matmul", "pack_csc",
           "plan_sparse", "shuffle_strides", "sparse_cycles"]  # fmt: skip
