"""GEMM: BLIS-style packing, cache blocking and a register-blocked micro-kernel.

``C[M,N] = A[M,K] @ B[K,N]`` is computed in ``MR x NR`` tiles (``NR = nv * W`` for vector width ``W``).
A tile's ``MR*nv`` accumulators live in vector registers across its K loop (the micro-kernel):

    for k:  b_j = Bp[panel][k][j*W : (j+1)*W]            (nv vector loads, contiguous)
            a_i = broadcast(Ap[mtile][k][i])              (MR broadcast loads, contiguous)
            acc[i][j] = fma(a_i, b_j, acc[i][j])          (MR*nv FMAs)

Operands are packed so that the micro-kernel reads both of them as contiguous streams: B into
``[N/NR][K][NR]`` panels and A into ``[M/MR][K][MR]`` micro-panels, zero-padded at the edges (so the
micro-kernel has no edge cases). Constant operands (weights) are packed once, at compile time; the
others at run time into arena workspace. A is left in place when it is used by one panel only (packing
would cost as much as the product).

Cache blocking (loops around the micro-kernel, derived from the target's cache sizes in ``plan_gemm``):

    parallel for macro tile (batch, ic, jc):      MC rows x NC columns; threads take contiguous ranges
      for kc in K blocks of KC:                   the A micro-panel (KC x MR) stays in L1,
        for mt in the MC rows, for p in the NC columns (or p, then mt):   the B block (KC x NC) in L2
          micro-kernel over [kc, kc + KC)

When K is split (K > KC), partial sums go to the output (or a workspace) and are read back by the next
K block; only the last block applies the epilogue. The tile is written through a small stack buffer by
a vectorized epilogue loop that calls ``spec.store`` (alpha, beta*C, bias and any fused elementwise
epilogue, through the output's ``Sink``) and handles the M and N edges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..ir.dtype import DType
from . import kir as K
from .gemm_plan import IN_PLACE_B_MAX_TILES, PARALLEL_FLOPS_PER_ELEMENT, GemmPlan, choose_tile, plan_gemm, tile_cycles
from .kir import Assign, Broadcast, Buffer, Const, Decl, Expr, Fma, For, If, Load, LoopKind, Stmt, Store, Var, binop
from .rules import LowerCtx, Sink, kernel_rule
from .tensor import TExpr, View


# -- compile-time packing -----------------------------------------------------------------------------
def pack_b_const(b: np.ndarray, NR: int) -> np.ndarray:
    """[..., K, N] -> [..., ceil(N/NR), K, NR] zero-padded panels."""
    *batch, k, n = b.shape
    np_ = -(-n // NR)
    padded = np.zeros((*batch, k, np_ * NR), dtype=b.dtype)
    padded[..., :n] = b
    out = padded.reshape(*batch, k, np_, NR)
    return np.ascontiguousarray(np.moveaxis(out, -2, -3))


def pack_a_const(a: np.ndarray, MR: int) -> np.ndarray:
    """[..., M, K] -> [..., ceil(M/MR), K, MR] zero-padded micro-panels (broadcast loads become contiguous)."""
    *batch, m, k = a.shape
    nt = -(-m // MR)
    padded = np.zeros((*batch, nt * MR, k), dtype=a.dtype)
    padded[..., :m, :] = a
    out = padded.reshape(*batch, nt, MR, k)
    return np.ascontiguousarray(np.swapaxes(out, -1, -2))


# -- the kernel ---------------------------------------------------------------------------------------
Elem3 = Callable[[Expr, Expr, Expr], Expr]


@dataclass
class GemmSpec:
    """A (batched) GEMM for ``emit_gemm``. Index arguments are kernel-IR expressions."""

    M: int
    N: int
    K: int
    batch: int
    dtype: DType  # compute dtype
    # scalar A[b, m, k] read in place (m < M); or None with a_packed
    a_elem: Elem3 | None
    a_packed: Buffer | None  # [batchA][M/MR][K][MR]
    a_batch_stride: int  # elements between batches of a_packed (0 = shared)
    b_packed: Buffer  # [batchB][N/NR][K][NR]; with b_rows only the panels from b_rows[1] on
    b_batch_stride: int
    store: Callable[[Expr, Expr, Expr, Expr], Stmt]  # store(b, m, n, value): the final value, with epilogue
    # where partial sums of element (b, m, n) may live when K is split: (buffer, index); None: workspace
    acc_at: Callable[[Expr, Expr, Expr], tuple[Buffer, Expr]] | None = None
    # B read in place: (buffer, index of element (b, k, n) with unit stride along n, full panels read so;
    # the partial last panel, if any, is in b_packed)
    b_rows: tuple[Buffer, Callable[[Expr, Expr, Expr], Expr], int] | None = None


def _kloop(start: Expr, length: Expr, U: int, body: Callable[[Expr], list[Stmt]]) -> Stmt:
    """for k in [start, start+length): body(k), unrolled by U (remainder loop after)."""
    if U <= 1:
        k = Var("k")
        return For(k, Const(0), length, K.seq(body(binop("add", start, k))))
    stmts: list[Stmt] = []
    main = length
    if U > 1:
        k0 = Var("k0")
        inner: list[Stmt] = []
        for u in range(U):
            inner.extend(body(binop("add", start, binop("add", binop("mul", k0, U), u))))
        trips = binop("floordiv", length, U)
        stmts.append(For(k0, Const(0), trips, K.seq(inner)))
        main = binop("mul", trips, U)
    if not (isinstance(length, Const) and isinstance(main, Const) and main.value == length.value):
        k = Var("k")
        stmts.append(For(k, main, length, K.seq(body(binop("add", start, k)))))
    return K.seq(stmts)


def emit_gemm(ctx: LowerCtx, plan: GemmPlan, spec: GemmSpec, parallel: bool) -> Stmt:
    MR, NR = plan.MR, plan.NR
    M, N, Kd = spec.M, spec.N, spec.K
    dt = spec.dtype
    mt_n = -(-M // MR)
    np_n = -(-N // NR)
    mc_t = (plan.MC // MR) if plan.MC else mt_n  # m-tiles per macro tile
    nc_p = (plan.NC // NR) if plan.NC else np_n  # panels per macro tile
    ic_n, jc_n = -(-mt_n // mc_t), -(-np_n // nc_p)
    KC = plan.KC if plan.KC and plan.KC < Kd else Kd
    nk = -(-Kd // KC)
    macro = spec.batch * ic_n * jc_n
    ctx.stores_once = nk == 1  # a split K stores partial sums before the result

    # macro tile -> (b, ic, jc)
    t = Var("tile")
    bvar, icv, jcv = Var("b"), Var("ic"), Var("jc")
    per_b = ic_n * jc_n
    body: list[Stmt] = [
        Decl(bvar, binop("floordiv", t, per_b) if spec.batch > 1 else Const(0)),
    ]
    rem = binop("mod", t, per_b) if spec.batch > 1 else t
    body.append(Decl(icv, binop("floordiv", rem, jc_n) if jc_n > 1 else rem))
    body.append(Decl(jcv, binop("mod", rem, jc_n) if jc_n > 1 else Const(0)))

    acc_at = spec.acc_at
    if nk > 1 and acc_at is None:
        ws = ctx.workspace(dt, spec.batch * M * N, f"{ctx.node.name}_acc")

        def acc_at(b, m, n):
            return ws, binop("add", binop("mul", binop("add", binop("mul", b, M), m), N), n)

    kc = Var("kc")
    k0 = binop("mul", kc, KC) if nk > 1 else Const(0)
    klen = K.minimum(Const(KC), binop("sub", Const(Kd), k0)) if (nk > 1 and Kd % KC) else Const(KC)
    mt, p = Var("mt"), Var("p")
    micro = _micro_tile(ctx, plan, spec, bvar, mt, p, kc, nk, k0, klen, acc_at)
    mt_lo = binop("mul", icv, mc_t)
    mt_hi = K.minimum(binop("add", mt_lo, mc_t), Const(mt_n)) if mt_n % mc_t else binop("add", mt_lo, mc_t)
    p_lo = binop("mul", jcv, nc_p)
    p_hi = K.minimum(binop("add", p_lo, nc_p), Const(np_n)) if np_n % nc_p else binop("add", p_lo, nc_p)
    if ic_n == 1:
        mt_lo, mt_hi = Const(0), Const(mt_n)
    if jc_n == 1:
        p_lo, p_hi = Const(0), Const(np_n)
    if plan.order == "pm":
        inner: Stmt = For(p, p_lo, p_hi, For(mt, mt_lo, mt_hi, micro))
    else:
        inner = For(mt, mt_lo, mt_hi, For(p, p_lo, p_hi, micro))
    body.append(For(kc, Const(0), Const(nk), inner) if nk > 1 else inner)
    kind = LoopKind.PARALLEL if parallel and macro > 1 else LoopKind.SERIAL
    return For(t, Const(0), Const(macro), K.seq(body), kind)


def _micro_tile(ctx: LowerCtx, plan: GemmPlan, spec: GemmSpec, bvar: Var, mt: Var, p: Var, kc: Var, nk: int,
                k0: Expr, klen: Expr, acc_at) -> Stmt:  # fmt: skip
    """One MR x NR tile over one K block: accumulate in registers, then write through the stack tile."""
    MR, NR, W, nv = plan.MR, plan.NR, plan.W, plan.nv
    M, N = spec.M, spec.N
    dt = spec.dtype
    m0 = binop("mul", mt, MR)
    n0 = binop("mul", p, NR)
    acc = [[Var(f"acc{i}_{j}", dt, W) for j in range(nv)] for i in range(MR)]
    zero = Const(0.0 if dt.is_float else 0, dt, W)
    tile = Buffer("ctile", dt, MR * NR)
    ii, jj = Var("ii"), Var("jj")
    mvalid = K.minimum(Const(MR), binop("sub", Const(M), m0)) if M % MR else Const(MR)
    nvalid = K.minimum(Const(NR), binop("sub", Const(N), n0)) if N % NR else Const(NR)
    vec = NR >= W > 1

    def tile_loop(stmt: Stmt) -> Stmt:
        inner = For(jj, Const(0), nvalid, stmt, LoopKind.VECTOR if vec else LoopKind.SERIAL, 1, W if vec else 1)
        return For(ii, Const(0), mvalid, inner)

    out: list[Stmt] = [Decl(acc[i][j], zero) for i in range(MR) for j in range(nv)]
    m_at, n_at = binop("add", m0, ii), binop("add", n0, jj)
    if nk > 1:  # later K blocks start from the partial sums
        abuf, aidx = acc_at(bvar, m_at, n_at)
        load_partial = [tile_loop(Store(tile, binop("add", binop("mul", ii, NR), jj), Load(abuf, aidx)))]
        load_partial += [Assign(acc[i][j], Load(tile, Const(i * NR + j * W), W)) for i in range(MR) for j in range(nv)]
        out.append(If(K.cmp("gt", kc, Const(0)), K.seq(load_partial)))
    out.append(_kernel_body(plan, spec, bvar, mt, p, k0, klen, acc))
    out += [Store(tile, Const(i * NR + j * W), acc[i][j]) for i in range(MR) for j in range(nv)]
    value = Load(tile, binop("add", binop("mul", ii, NR), jj))
    final = tile_loop(spec.store(bvar, m_at, n_at, value))
    if nk > 1:
        abuf, aidx = acc_at(bvar, m_at, n_at)
        partial = tile_loop(Store(abuf, aidx, value))
        out.append(If(K.cmp("eq", kc, Const(nk - 1)), final, partial))
    else:
        out.append(final)
    return K.seq(out)


def _kernel_body(plan: GemmPlan, spec: GemmSpec, bvar: Var, mt: Var, p: Var, k0: Expr, klen: Expr,
                 acc: list[list[Var]]) -> Stmt:  # fmt: skip
    """The K loop of the micro-kernel: nv vector loads of B, MR broadcasts of A, MR*nv FMAs per k."""
    MR, NR, W, nv = plan.MR, plan.NR, plan.W, plan.nv
    M, Kd = spec.M, spec.K
    dt = spec.dtype
    first_packed = spec.b_rows[2] if spec.b_rows else 0
    b_base = binop("add", binop("mul", bvar, spec.b_batch_stride), binop("mul", binop("sub", p, first_packed), Kd * NR))
    m0 = binop("mul", mt, MR)
    n0 = binop("mul", p, NR)

    def make(rows: list[Expr] | None, in_place: bool) -> Stmt:
        if spec.a_packed is not None:
            a_base = binop("add", binop("mul", bvar, spec.a_batch_stride), binop("mul", mt, Kd * MR))

        def kstep(k: Expr) -> list[Stmt]:
            st: list[Stmt] = []
            if in_place:
                buf, at, _ = spec.b_rows
                row = at(bvar, k, n0)
                bv = [Load(buf, binop("add", row, j * W), W) for j in range(nv)]
            else:
                bv = [Load(spec.b_packed, binop("add", b_base, binop("add", binop("mul", k, NR), j * W)), W)
                      for j in range(nv)]  # fmt: skip
            for i in range(MR):
                if spec.a_packed is not None:
                    a = Load(spec.a_packed, binop("add", a_base, binop("add", binop("mul", k, MR), i)))
                else:
                    a = spec.a_elem(bvar, rows[i], k)
                if a.dtype != dt:
                    a = K.cast(a, dt)
                ab = Broadcast(a, W)
                for j in range(nv):
                    st.append(Assign(acc[i][j], Fma(ab, bv[j], acc[i][j])))
            return st

        return _kloop(k0, klen, plan.KU if Kd > 8 else 1, kstep)

    def for_b(rows: list[Expr] | None) -> Stmt:
        if spec.b_rows is None:
            return make(rows, False)
        full = spec.b_rows[2]
        if full * NR >= spec.N:
            return make(rows, True)
        return If(K.cmp("lt", p, Const(full)), make(rows, True), make(rows, False))

    if spec.a_packed is not None:
        return for_b(None)
    affine = [binop("add", m0, i) for i in range(MR)]
    if M % MR == 0:
        return for_b(affine)
    # in-place A with a partial last m-tile: full tiles keep affine row addresses (one base register),
    # the edge tile clamps its rows
    clamped = [K.minimum(binop("add", m0, i), Const(M - 1)) for i in range(MR)]
    return If(K.cmp("lt", mt, Const(M // MR)), for_b(affine), for_b(clamped))


def emit_pack(ctx: LowerCtx, src: Elem3, batch: int, rows: int, Kd: int, R: int, dst: Buffer, parallel: bool,
              vector_over: str = "r") -> Stmt:  # fmt: skip
    """Run-time packing ``dst[b][t][k][r] = src(b, k, t*R + r)`` (zero past ``rows``).

    Packs B panels (rows = N, R = NR) and, with ``src(b, k, m) = A[b, m, k]``, A micro-panels (rows = M,
    R = MR). ``vector_over`` is the loop the vectorizer should get: "r" when the source is contiguous
    along the packed rows (B row-major), "k" when it is contiguous along K (A row-major)."""
    W = ctx.lanes(dst.dtype)
    nt = -(-rows // R)
    b, tv, k, r = Var("b"), Var("t"), Var("k"), Var("r")
    base = binop("mul", binop("add", binop("mul", b, nt), tv), Kd * R)
    nvalid = K.minimum(Const(R), binop("sub", Const(rows), binop("mul", tv, R))) if rows % R else Const(R)
    n = binop("add", binop("mul", tv, R), r)
    at = binop("add", base, binop("add", binop("mul", k, R), r))

    def copy(v: Expr) -> Stmt:
        return Store(dst, at, K.cast(v, dst.dtype))

    if vector_over == "k" and Kd >= W > 1:
        inner = For(k, Const(0), Const(Kd), copy(src(b, k, n)), LoopKind.VECTOR, 1, W)
        stmt: Stmt = For(r, Const(0), nvalid, inner)
        if rows % R:
            stmt = K.seq(stmt, For(r, nvalid, Const(R), For(k, Const(0), Const(Kd), copy(K.const(0, dst.dtype)))))
    else:
        vec = R >= W > 1
        cp = For(r, Const(0), nvalid, copy(src(b, k, n)), LoopKind.VECTOR if vec else LoopKind.SERIAL, 1,
                 W if vec else 1)  # fmt: skip
        inner = K.seq(cp, For(r, nvalid, Const(R), copy(K.const(0, dst.dtype)))) if rows % R else cp
        stmt = For(k, Const(0), Const(Kd), inner)
    total = batch * nt
    kind = LoopKind.PARALLEL if parallel and total > 1 else LoopKind.SERIAL
    if batch > 1:
        flat = Var("bt")
        split = K.seq(Decl(b, binop("floordiv", flat, nt)), Decl(tv, binop("mod", flat, nt)), stmt)
        return For(flat, Const(0), Const(total), split, kind)
    return K.seq(Decl(b, Const(0)), For(tv, Const(0), Const(nt), stmt, kind))


def emit_pack_b(ctx: LowerCtx, src: Elem3, batch: int, Kd: int, N: int, NR: int, dst: Buffer, parallel: bool) -> Stmt:
    """Run-time packing of B panels ``dst[b][p][k][j] = src(b, k, p*NR + j)`` (zero past N)."""
    return emit_pack(ctx, src, batch, N, Kd, NR, dst, parallel)


# -- MatMul / Gemm ------------------------------------------------------------------------------------
def _strides(shape: Sequence[int]) -> list[int]:
    out, s = [], 1
    for d in reversed(shape):
        out.append(s)
        s *= d
    return list(reversed(out))


def _batch_index(bvar: Expr, batch_shape: Sequence[int], operand_batch: Sequence[int]) -> list[Expr]:
    """Index into an operand's (broadcast) batch dims from the flat output batch index."""
    out: list[Expr] = []
    pad = len(batch_shape) - len(operand_batch)
    strides = _strides(batch_shape)
    for i, d in enumerate(operand_batch):
        bd = batch_shape[pad + i]
        if d == 1:
            out.append(Const(0))
        else:
            q = binop("floordiv", bvar, strides[pad + i]) if strides[pad + i] != 1 else bvar
            out.append(binop("mod", q, bd) if pad + i > 0 else q)
    return out


def _unflatten_batch(bvar: Expr, batch_shape: Sequence[int]) -> list[Expr]:
    out = []
    strides = _strides(batch_shape)
    for i, d in enumerate(batch_shape):
        q = binop("floordiv", bvar, strides[i]) if strides[i] != 1 else bvar
        out.append(binop("mod", q, d) if i > 0 else q)
    return out


def _broadcast_c_index(out_idx: Sequence[Expr], c_shape: Sequence[int]) -> list[Expr]:
    pad = len(out_idx) - len(c_shape)
    return [Const(0) if d == 1 else out_idx[pad + i] for i, d in enumerate(c_shape)]


def matmul_dims(a_shape, b_shape, trans_a: bool, trans_b: bool):
    """The dims of ``op(a) @ op(b)`` (numpy matmul rules, 1-D operands promoted): ``(a1, b1, M, K, N, a_batch,
    b_batch, batch_shape)``, ``a1``/``b1`` whether an operand was 1-D, the batch dims of each and broadcast."""
    a_shape, b_shape = list(a_shape), list(b_shape)
    a1, b1 = len(a_shape) == 1, len(b_shape) == 1
    if a1:
        a_shape = [1, a_shape[0]]
    if b1:
        b_shape = [b_shape[0], 1]
    if trans_a:
        a_shape[-2], a_shape[-1] = a_shape[-1], a_shape[-2]
    if trans_b:
        b_shape[-2], b_shape[-1] = b_shape[-1], b_shape[-2]
    a_batch, b_batch = a_shape[:-2], b_shape[:-2]
    batch_shape = list(np.broadcast_shapes(tuple(a_batch), tuple(b_batch)))
    return a1, b1, a_shape[-2], a_shape[-1], b_shape[-1], a_batch, b_batch, batch_shape


# Other kernels for special operands (lower/sparse_gemm.py: a sparse constant B), tried in order before the dense
# one with lower_matmul's arguments: each returns its statement, or None where it does not apply.
MATMUL_VARIANTS: list[Callable[..., Stmt | None]] = []


def lower_matmul(ctx: LowerCtx, a: TExpr, b: TExpr, sink: Sink, trans_a: bool = False, trans_b: bool = False,
                 alpha: float = 1.0, c: TExpr | None = None, beta: float = 1.0) -> Stmt:  # fmt: skip
    """``sink = alpha * op(a) @ op(b) + beta * c`` for 2-D or batched (numpy-broadcast) operands."""
    for variant in MATMUL_VARIANTS:
        stmt = variant(ctx, a, b, sink, trans_a, trans_b, alpha, c, beta)
        if stmt is not None:
            return stmt
    dt = sink.dtype
    cdt = dt.compute
    a1, b1, M, Kd, N, a_batch, b_batch, batch_shape = matmul_dims(a.shape, b.shape, trans_a, trans_b)
    batch = int(np.prod(batch_shape)) if batch_shape else 1
    out_rank = len(sink.shape)
    # A[batch..., M, K] @ B[K, N]: one GEMM of batch*M rows (a ViT's A[197, 1, 768] is one 197-row product,
    # not 197 products of one row); the output [batch..., M, N] is row-major [batch*M, N] either way
    rows_per = 0  # M of one batch when folded
    if batch > 1 and not a1 and not trans_a and int(np.prod(b_batch)) == 1 and int(np.prod(a_batch)) == batch:
        rows_per = M
        a = _fold_rows(a)
        M, batch, a_batch = batch * M, 1, []
    sig = gemm_signature(cdt, batch, M, N, Kd, b.const is not None, trans_a, trans_b)
    seen = ctx.options.get("gemm_signatures")
    if seen is not None:  # the tuner asks which GEMMs a model has (compiler/tuning.py)
        seen[sig] = {"dtype": cdt.short, "batch": batch, "M": M, "N": N, "K": Kd, "const_b": b.const is not None,
                     "trans_a": trans_a, "trans_b": trans_b}  # fmt: skip
    plan = plan_gemm(ctx, cdt, M, N, Kd, batch, sig)
    MR, NR = plan.MR, plan.NR
    work = 2 * batch * M * N * Kd
    parallel = work >= ctx.parallel_threshold * PARALLEL_FLOPS_PER_ELEMENT

    def a_at(bi, m, k):
        idx = [*_batch_index(bi, batch_shape, a_batch), *((k, m) if trans_a else (m, k))]
        if a1:
            idx = [idx[-1]]
        return a(idx)

    def b_at(bi, k, n):
        idx = [*_batch_index(bi, batch_shape, b_batch), *((n, k) if trans_b else (k, n))]
        if b1:
            idx = [idx[-2]]
        return b(idx)

    stmts: list[Stmt] = []
    name = ctx.node.name
    b_rows = None
    # B panels
    b_batches = int(np.prod(b_batch)) if b_batch else 1
    np_n = -(-N // NR)
    if b.const is not None:
        bmat = b.const.reshape(-1, 1) if b1 else b.const
        if trans_b:
            bmat = np.swapaxes(bmat, -1, -2)
        if b_batches not in (1, batch):  # broadcast batch of B: pack it expanded to the output batch
            bmat = np.broadcast_to(bmat, (*batch_shape, Kd, N))
            b_batches = batch
        bmat = np.ascontiguousarray(bmat).reshape(b_batches, Kd, N).astype(cdt.np)
        bp = ctx.const_view(pack_b_const(bmat, NR), f"{name}_Bpacked").buf
        b_stride = 0 if b_batches == 1 else np_n * Kd * NR
    elif not _b_in_place(b, trans_b, b1, M, plan, cdt, ctx.target.l2):
        bp = ctx.workspace(cdt, batch * np_n * Kd * NR, f"{name}_Bpack")
        stmts.append(emit_pack(ctx, b_at, batch, N, Kd, NR, bp, parallel, "k" if trans_b else "r"))
        b_stride = np_n * Kd * NR
    else:  # rows of B read in place; a partial last panel is packed (its vector loads would run past N)
        full = N // NR
        bv = b.view

        def b_index(bi, k, n):
            return bv.index([*_batch_index(bi, batch_shape, b_batch), k, n])

        b_rows = (bv.buf, b_index, full)
        b_stride = 0
        bp = bv.buf
        if N % NR:
            bp = ctx.workspace(cdt, batch * Kd * NR, f"{name}_Bedge")
            stmts.append(emit_pack(ctx, lambda bi, k, n: b_at(bi, k, binop("add", n, full * NR)), batch, N - full * NR,
                                   Kd, NR, bp, parallel and batch > 1))  # fmt: skip
            b_stride = Kd * NR
    # A micro-panels: constant -> packed now; otherwise packed at run time when several panels reuse it
    a_packed = None
    a_stride = 0
    mt_n = -(-M // MR)
    if a.const is not None and M >= MR:
        amat = a.const.reshape(1, -1) if a1 else a.const
        if trans_a:
            amat = np.swapaxes(amat, -1, -2)
        a_batches = int(np.prod(a_batch)) if a_batch else 1
        if a_batches not in (1, batch):
            amat = np.broadcast_to(amat, (*batch_shape, M, Kd))
            a_batches = batch
        amat = np.ascontiguousarray(amat).reshape(a_batches, M, Kd).astype(cdt.np)
        a_packed = ctx.const_view(pack_a_const(amat, MR), f"{name}_Apacked").buf
        a_stride = 0 if a_batches == 1 else mt_n * Kd * MR
    elif plan.pack_a if plan.pack_a is not None else _pack_a_at_run_time(a, M, Kd, MR, np_n, trans_a, cdt):
        a_packed = ctx.workspace(cdt, batch * mt_n * Kd * MR, f"{name}_Apack")
        stmts.append(emit_pack(ctx, lambda bi, k, m: a_at(bi, m, k), batch, M, Kd, MR, a_packed, parallel,
                               "r" if trans_a else "k"))  # fmt: skip
        a_stride = mt_n * Kd * MR

    def store(bi, m, n, v):
        if alpha != 1.0:
            v = binop("mul", v, K.const(alpha, cdt))
        if rows_per == 1:
            oidx_full = [*_unflatten_batch(m, batch_shape), Const(0), n]
        elif rows_per:
            oidx_full = [*_unflatten_batch(binop("floordiv", m, rows_per), batch_shape), binop("mod", m, rows_per), n]
        else:
            oidx_full = [*_unflatten_batch(bi, batch_shape), m, n]
        if c is not None:
            cv = c(_broadcast_c_index(oidx_full, c.shape))
            if cv.dtype != cdt:
                cv = K.cast(cv, cdt)
            v = binop("add", v, cv if beta == 1.0 else binop("mul", cv, K.const(beta, cdt)))
        return sink.store(_out_index(oidx_full, a1, b1, out_rank), v)

    acc_at = None
    if sink.view.dtype == cdt and sink.view.is_contiguous:
        # partial sums of a split K go straight to the output (row-major [batch, M, N] order)
        out_buf = sink.view.buf
        off = sink.view.offset

        def acc_at(bi, m, n):
            return out_buf, binop("add", binop("add", binop("mul", binop("add", binop("mul", bi, M), m), N), n), off)

    spec = GemmSpec(M, N, Kd, batch, cdt, None if a_packed is not None else a_at, a_packed, a_stride, bp, b_stride,
                    store, acc_at, b_rows)  # fmt: skip
    stmts.append(emit_gemm(ctx, plan, spec, parallel))
    return K.seq(stmts)


def gemm_signature(dt: DType, batch: int, M: int, N: int, Kd: int, const_b: bool, trans_a: bool, trans_b: bool) -> str:
    """What a tuned plan is looked up by: the product's shape, dtype and operand layout."""
    return (f"matmul/{dt.short}/{batch}x{M}x{N}x{Kd}/B{'const' if const_b else 'run'}"
            f"{'/tA' if trans_a else ''}{'/tB' if trans_b else ''}")  # fmt: skip


def _fold_rows(a: TExpr) -> TExpr:
    """``a[batch..., M, K]`` read as ``[batch*M, K]``: a view when its batch and row strides chain (any
    contiguous tensor; dims of extent 1 have no stride to respect), else an index expression."""
    *lead, Kd = a.shape
    rows = int(np.prod(lead))
    const = None if a.const is None else a.const.reshape(rows, Kd)
    v = a.view
    if v is not None:
        dims = [(d, s) for d, s in zip(v.shape[:-1], v.strides[:-1]) if d != 1]
        if all(s0 == d1 * s1 for (_, s0), (d1, s1) in zip(dims, dims[1:])):
            row_stride = dims[-1][1] if dims else 0
            return TExpr.from_view(View(v.buf, (rows, Kd), (row_stride, v.strides[-1]), v.offset), const)
    M = lead[-1]

    def fn(idx):
        m, k = idx
        return a([*_unflatten_batch(binop("floordiv", m, M), lead[:-1]), binop("mod", m, M), k])

    return TExpr((rows, Kd), a.dtype, fn, None, const)


def _b_in_place(b: TExpr, trans_b: bool, b1: bool, M: int, plan: GemmPlan, dt: DType, l2: int) -> bool:
    """Whether a run-time B is read in place rather than packed into panels first. Only a tensor in memory
    whose rows are contiguous along N can be (a transposed B is packed); by default only when few m-tiles
    reuse it (packing reads and writes all of B once; the product then reads it once per m-tile, in place
    with a stride per k step; measured on Sapphire Rapids, in place is 8-22% faster up to 10 m-tiles of a B
    within L2, packing 10-20% faster beyond). ``plan.pack_b`` overrides the default."""
    if b1 or trans_b or b.view is None or b.view.dtype != dt:
        return False
    v = b.view
    if v.shape[-1] > 1 and v.strides[-1] != 1:
        return False
    if plan.pack_b is not None:
        return not plan.pack_b
    b_bytes = v.shape[-1] * v.shape[-2] * dt.itemsize
    return -(-M // plan.MR) <= IN_PLACE_B_MAX_TILES and b_bytes <= l2 // 2


def _pack_a_at_run_time(a: TExpr, M: int, Kd: int, MR: int, panels: int, trans_a: bool, dt: DType) -> bool:
    """Whether to copy a run-time A into micro-panels first. Only when several panels reuse it and reading
    it in place would cost more: it is an expression (a fused producer, recomputed per panel), or its MR
    rows would share L1 sets (row stride a multiple of 4 KiB, more rows than L1 ways). Measured on Zen 4
    from 64 to 2048 cubed, reading a plain A in place is 1-15% faster than packing it."""
    if panels <= 1 or M <= MR:
        return False
    if a.view is None:
        return True
    return not trans_a and (Kd * max(dt.itemsize, 4)) % 4096 == 0 and MR > 8


def _out_index(oidx_full: list[Expr], a1: bool, b1: bool, out_rank: int) -> list[Expr]:
    if a1 and b1:
        oidx = oidx_full[:-2]
    elif a1:
        oidx = [*oidx_full[:-2], oidx_full[-1]]
    elif b1:
        oidx = oidx_full[:-1]
    else:
        oidx = oidx_full
    assert len(oidx) == out_rank, (oidx, out_rank)
    return oidx


# the tile's epilogue loop stores it row by row, vectorized along N: a residual is read in contiguous runs
@kernel_rule("Gemm", epilogue=True, epilogue_reads_tensors=True)
def _gemm(ctx: LowerCtx, node, ins, outs):
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    at = node.attrs
    return lower_matmul(ctx, a, b, outs[0], bool(at.get("transA", 0)), bool(at.get("transB", 0)),
                        float(at.get("alpha", 1.0)), c, float(at.get("beta", 1.0)))  # fmt: skip


@kernel_rule("MatMul", epilogue=True, epilogue_reads_tensors=True)
def _matmul(ctx: LowerCtx, node, ins, outs):
    return lower_matmul(ctx, ins[0], ins[1], outs[0])


__all__ = ["PARALLEL_FLOPS_PER_ELEMENT", "GemmPlan", "GemmSpec", "View", "choose_tile", "emit_gemm", "emit_pack",
           "emit_pack_b", "gemm_signature", "lower_matmul", "pack_a_const", "pack_b_const", "plan_gemm",
           "tile_cycles"]  # fmt: skip
