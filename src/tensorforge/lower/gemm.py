"""GEMM: register-blocked micro-kernel over packed panels (BLIS style).

``C[M,N] = A[M,K] @ B[K,N]`` is computed tile by tile. A tile is ``MR x NR`` (``NR = nv * W`` for
vector width ``W``); its ``MR*nv`` accumulators live in vector registers across the whole K loop:

    for k:  b_j = Bp[panel][k][j*W : (j+1)*W]            (nv vector loads, contiguous)
            a_i = broadcast(A[m0+i, k])                   (MR broadcast loads)
            acc[i][j] = fma(a_i, b_j, acc[i][j])          (MR*nv FMAs)

B is packed into ``[N/NR][K][NR]`` panels (zero-padded at the N edge): at compile time when B is a
constant (weights), at run time into arena scratch otherwise. A is read in place (or pre-packed into
``[M/MR][K][MR]`` when constant, as in convolution). The tile is written through a small stack buffer
by a vectorized epilogue loop that applies alpha/beta/bias/activation and handles M and N edges, so the
micro-kernel itself has no edge cases. MR/NR come from the target's register count and vector width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..ir.dtype import DType
from . import kir as K
from .kir import Assign, Broadcast, Buffer, Const, Decl, Expr, Fma, For, Load, LoopKind, Stmt, Store, Var, binop
from .rules import LowerCtx, Sink, kernel_rule
from .tensor import TExpr, View


@dataclass(frozen=True)
class GemmPlan:
    MR: int
    nv: int
    W: int
    KU: int = 4  # K-loop unroll

    @property
    def NR(self) -> int:
        return self.nv * self.W


def plan_gemm(ctx: LowerCtx, dtype: DType, M: int, N: int, Kd: int) -> GemmPlan:
    """Pick the micro-tile from the target's registers: as many accumulators as fit beside the
    B vectors and one broadcast register, never more rows than M or columns than N needs."""
    t = ctx.target
    W = t.lanes(dtype)
    R = t.num_vregs
    if t.is_gpu:
        return GemmPlan(1, 1, 1, 1)
    n_vecs = max(1, -(-N // W))
    best = None
    for nv in range(1, 9):
        if nv > n_vecs and nv > 1:
            break
        for mr in range(1, 17):
            if mr > max(M, 1):
                break
            regs = mr * nv + (nv if mr > 1 else 0) + 1
            if regs > R:
                break
            acc = mr * nv
            # more accumulators first (latency hiding, reuse); then the squarer tile (fewer loads/flop)
            score = (min(acc, 12 if R <= 16 else 28), acc * 1.0 / (mr + nv), -nv)
            if best is None or score > best[0]:
                best = (score, mr, nv)
    _, mr, nv = best
    return GemmPlan(mr, nv, W, 4)


def pack_b_const(b: np.ndarray, NR: int) -> np.ndarray:
    """[..., K, N] -> [..., ceil(N/NR), K, NR] zero-padded panels."""
    *batch, k, n = b.shape
    np_ = -(-n // NR)
    padded = np.zeros((*batch, k, np_ * NR), dtype=b.dtype)
    padded[..., :n] = b
    out = padded.reshape(*batch, k, np_, NR)
    return np.ascontiguousarray(np.moveaxis(out, -2, -3))


def pack_a_const(a: np.ndarray, MR: int) -> np.ndarray:
    """[..., M, K] -> [..., ceil(M/MR), K, MR] zero-padded panels (broadcast loads become contiguous)."""
    *batch, m, k = a.shape
    nt = -(-m // MR)
    padded = np.zeros((*batch, nt * MR, k), dtype=a.dtype)
    padded[..., :m, :] = a
    out = padded.reshape(*batch, nt, MR, k)
    return np.ascontiguousarray(np.swapaxes(out, -1, -2))


@dataclass
class GemmSpec:
    """A (batched) GEMM for ``emit_gemm``. Index arguments are kernel-IR expressions."""

    M: int
    N: int
    K: int
    batch: int
    dtype: DType  # compute dtype
    # scalar A[b, m, k] (m may be clamped to M-1 at the edge); or None with a_packed
    a_elem: Callable[[Expr, Expr, Expr], Expr] | None
    a_packed: Buffer | None  # [batchA][M/MR][K][MR] pre-packed
    a_batch_stride: int  # elements between batches of a_packed (0 = shared)
    b_packed: Buffer  # [batchB][N/NR][K][NR]
    b_batch_stride: int
    store: Callable[[Expr, Expr, Expr, Expr], Stmt]  # store(b, m, n, value) with epilogue


def _unrolled_k(Kd: int, U: int, body: Callable[[Expr], list[Stmt]]) -> Stmt:
    """for k in 0..K: body(k), unrolled by U (remainder loop after)."""
    stmts: list[Stmt] = []
    if Kd >= U and U > 1:
        k0 = Var("k0")
        inner = []
        for u in range(U):
            inner.extend(body(binop("add", binop("mul", k0, U), u)))
        stmts.append(For(k0, Const(0), Const(Kd // U), K.seq(inner)))
    rem_start = (Kd // U) * U if U > 1 else 0
    if rem_start < Kd:
        k = Var("k")
        stmts.append(For(k, Const(rem_start), Const(Kd), K.seq(body(k))))
    return K.seq(stmts)


def emit_gemm(ctx: LowerCtx, plan: GemmPlan, spec: GemmSpec, parallel: bool) -> Stmt:
    MR, NR, W, nv = plan.MR, plan.NR, plan.W, plan.nv
    M, N, Kd = spec.M, spec.N, spec.K
    dt = spec.dtype
    mt_n = -(-M // MR)
    np_n = -(-N // NR)
    tiles = spec.batch * mt_n * np_n
    t = Var("tile")
    # tile order: batch, then panel, then m-tile (a B panel is reused across consecutive m-tiles)
    bi = binop("floordiv", t, mt_n * np_n) if spec.batch > 1 else Const(0)
    rem = binop("mod", t, mt_n * np_n) if spec.batch > 1 else t
    p = binop("floordiv", rem, mt_n) if mt_n > 1 else rem
    mt = binop("mod", rem, mt_n) if mt_n > 1 else Const(0)
    bvar, pvar, mvar = Var("b"), Var("p"), Var("mt")
    m0 = binop("mul", mvar, MR)
    n0 = binop("mul", pvar, NR)
    acc = [[Var(f"acc{i}_{j}", dt, W) for j in range(nv)] for i in range(MR)]
    body: list[Stmt] = [Decl(bvar, bi), Decl(pvar, p), Decl(mvar, mt)]
    zero = Const(0.0 if dt.is_float else 0, dt, W)
    body += [Decl(acc[i][j], zero) for i in range(MR) for j in range(nv)]
    b_base = binop("add", binop("mul", bvar, spec.b_batch_stride), binop("mul", pvar, Kd * NR))
    if spec.a_packed is not None:
        a_base = binop("add", binop("mul", bvar, spec.a_batch_stride), binop("mul", mvar, Kd * MR))
    rows = [K.minimum(binop("add", m0, i), Const(M - 1)) for i in range(MR)]

    def kstep(k: Expr) -> list[Stmt]:
        out: list[Stmt] = []
        bv = []
        for j in range(nv):
            bv.append(Load(spec.b_packed, binop("add", b_base, binop("add", binop("mul", k, NR), j * W)), W))
        for i in range(MR):
            if spec.a_packed is not None:
                a = Load(spec.a_packed, binop("add", a_base, binop("add", binop("mul", k, MR), i)))
            else:
                a = spec.a_elem(bvar, rows[i], k)
            if a.dtype != dt:
                a = K.cast(a, dt)
            ab = Broadcast(a, W)
            for j in range(nv):
                out.append(Assign(acc[i][j], Fma(ab, bv[j], acc[i][j])))
        return out

    body.append(_unrolled_k(Kd, plan.KU if Kd > 8 else 1, kstep))
    # spill the tile to a stack buffer, then a vectorized epilogue writes the valid part
    tile = Buffer("ctile", dt, MR * NR)
    for i in range(MR):
        for j in range(nv):
            body.append(Store(tile, Const(i * NR + j * W), acc[i][j]))
    ii, jj = Var("ii"), Var("jj")
    mvalid = K.minimum(Const(MR), binop("sub", Const(M), m0))
    nvalid = K.minimum(Const(NR), binop("sub", Const(N), n0))
    value = Load(tile, binop("add", binop("mul", ii, NR), jj))
    epi = spec.store(bvar, binop("add", m0, ii), binop("add", n0, jj), value)
    vec = NR >= W > 1
    inner = For(jj, Const(0), nvalid, epi, LoopKind.VECTOR if vec else LoopKind.SERIAL, 1, W if vec else 1)
    body.append(For(ii, Const(0), mvalid, inner))
    kind = LoopKind.PARALLEL if parallel and tiles > 1 else LoopKind.SERIAL
    return For(t, Const(0), Const(tiles), K.seq(body), kind)


def emit_pack_b(ctx: LowerCtx, src: Callable[[Expr, Expr, Expr], Expr], batch: int, Kd: int, N: int, NR: int,
                dst: Buffer, parallel: bool) -> Stmt:  # fmt: skip
    """Runtime packing ``dst[b][p][k][j] = src(b, k, p*NR + j)`` (zero past N)."""
    W = ctx.lanes(dst.dtype)
    np_n = -(-N // NR)
    b, p, k, j = Var("b"), Var("p"), Var("k"), Var("j")
    base = binop("add", binop("mul", binop("add", binop("mul", b, np_n), p), Kd * NR), binop("mul", k, NR))
    nvalid = K.minimum(Const(NR), binop("sub", Const(N), binop("mul", p, NR)))
    n = binop("add", binop("mul", p, NR), j)
    copy = For(j, Const(0), nvalid, Store(dst, binop("add", base, j), K.cast(src(b, k, n), dst.dtype)),
               LoopKind.VECTOR if NR >= W > 1 else LoopKind.SERIAL, 1, W if NR >= W > 1 else 1)  # fmt: skip
    zero = For(j, nvalid, Const(NR), Store(dst, binop("add", base, j), K.const(0, dst.dtype)))
    inner = K.seq(copy, zero) if N % NR else copy
    stmt: Stmt = For(k, Const(0), Const(Kd), inner)
    total = batch * np_n
    if batch > 1:
        stmt = For(p, Const(0), Const(np_n), stmt, LoopKind.PARALLEL if parallel and np_n > 1 else LoopKind.SERIAL)
        return For(b, Const(0), Const(batch), stmt)
    stmt = For(p, Const(0), Const(np_n), stmt, LoopKind.PARALLEL if parallel and total > 1 else LoopKind.SERIAL)
    return K.seq(Decl(b, Const(0)), stmt)


def _batch_index(bvar: Expr, batch_shape: Sequence[int], operand_batch: Sequence[int]) -> list[Expr]:
    """Index into an operand's (broadcast) batch dims from the flat output batch index."""
    out: list[Expr] = []
    pad = len(batch_shape) - len(operand_batch)
    stride = 1
    strides = []
    for d in reversed(batch_shape):
        strides.append(stride)
        stride *= d
    strides = list(reversed(strides))
    for i, d in enumerate(operand_batch):
        bd = batch_shape[pad + i]
        if d == 1:
            out.append(Const(0))
        else:
            q = binop("floordiv", bvar, strides[pad + i]) if strides[pad + i] != 1 else bvar
            out.append(binop("mod", q, bd) if pad + i > 0 else q)
    return out


def lower_matmul(ctx: LowerCtx, a: TExpr, b: TExpr, sink: Sink, trans_a: bool = False, trans_b: bool = False,
                 alpha: float = 1.0, c: TExpr | None = None, beta: float = 1.0) -> Stmt:  # fmt: skip
    """``sink = alpha * op(a) @ op(b) + beta * c`` for 2-D or batched (numpy-broadcast) operands."""
    dt = sink.dtype
    cdt = dt.compute
    a_shape, b_shape = list(a.shape), list(b.shape)
    a1, b1 = len(a_shape) == 1, len(b_shape) == 1
    if a1:
        a_shape = [1, a_shape[0]]
    if b1:
        b_shape = [b_shape[0], 1]
    if trans_a:
        a_shape[-2], a_shape[-1] = a_shape[-1], a_shape[-2]
    if trans_b:
        b_shape[-2], b_shape[-1] = b_shape[-1], b_shape[-2]
    M, Kd = a_shape[-2], a_shape[-1]
    N = b_shape[-1]
    a_batch, b_batch = a_shape[:-2], b_shape[:-2]
    batch_shape = list(np.broadcast_shapes(tuple(a_batch), tuple(b_batch)))
    batch = int(np.prod(batch_shape)) if batch_shape else 1
    out_rank = len(sink.shape)
    plan = plan_gemm(ctx, cdt, M, N, Kd)
    work = 2 * batch * M * N * Kd
    parallel = work >= ctx.parallel_threshold * 8

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
    # B panels
    b_batches = int(np.prod(b_batch)) if b_batch else 1
    if b.const is not None:
        bmat = b.const
        if b1:
            bmat = bmat.reshape(-1, 1)
        if trans_b:
            bmat = np.swapaxes(bmat, -1, -2)
        bmat = bmat.reshape(b_batches, Kd, N).astype(cdt.np)
        view = ctx.const_view(pack_b_const(bmat, plan.NR), f"{ctx.node.name}_Bpacked")
        bp = view.buf
        b_stride = -(-N // plan.NR) * Kd * plan.NR
        if b_batches == 1:
            b_stride = 0
        elif b_batches != batch:
            # broadcast batch of B: re-pack expanded to the output batch (rare; constant anyway)
            full = np.broadcast_to(bmat.reshape(*b_batch, Kd, N), (*batch_shape, Kd, N)).reshape(batch, Kd, N)
            view = ctx.const_view(pack_b_const(np.ascontiguousarray(full), plan.NR), f"{ctx.node.name}_Bpacked")
            bp = view.buf
    else:
        np_n = -(-N // plan.NR)
        bp = ctx.workspace(cdt, batch * np_n * Kd * plan.NR, f"{ctx.node.name}_Bpack")
        stmts.append(emit_pack_b(ctx, b_at, batch, Kd, N, plan.NR, bp, parallel))
        b_stride = np_n * Kd * plan.NR
    a_packed = None
    a_stride = 0
    if a.const is not None and M >= plan.MR:
        amat = a.const
        if a1:
            amat = amat.reshape(1, -1)
        if trans_a:
            amat = np.swapaxes(amat, -1, -2)
        a_batches = int(np.prod(a_batch)) if a_batch else 1
        amat = amat.reshape(a_batches, M, Kd).astype(cdt.np)
        if a_batches not in (1, batch):
            amat = np.broadcast_to(amat.reshape(*a_batch, M, Kd), (*batch_shape, M, Kd)).reshape(batch, M, Kd)
            a_batches = batch
        a_packed = ctx.const_view(pack_a_const(np.ascontiguousarray(amat), plan.MR), f"{ctx.node.name}_Apacked").buf
        a_stride = 0 if a_batches == 1 else -(-M // plan.MR) * Kd * plan.MR

    def store(bi, m, n, v):
        if alpha != 1.0:
            v = binop("mul", v, K.const(alpha, cdt))
        oidx_full = [*_unflatten_batch(bi, batch_shape), m, n]
        if c is not None:
            cv = c(_broadcast_c_index(oidx_full, c.shape))
            if cv.dtype != cdt:
                cv = K.cast(cv, cdt)
            v = binop("add", v, cv if beta == 1.0 else binop("mul", cv, K.const(beta, cdt)))
        oidx = oidx_full
        if a1 and b1:
            oidx = [*oidx_full[:-2]]
        elif a1:
            oidx = [*oidx_full[:-2], n]
        elif b1:
            oidx = [*oidx_full[:-2], m]
        assert len(oidx) == out_rank, (oidx, sink.shape)
        return sink.store(oidx, v)

    spec = GemmSpec(M, N, Kd, batch, cdt, None if a_packed is not None else a_at, a_packed, a_stride, bp, b_stride,
                    store)  # fmt: skip
    stmts.append(emit_gemm(ctx, plan, spec, parallel))
    return K.seq(stmts)


def _unflatten_batch(bvar: Expr, batch_shape: Sequence[int]) -> list[Expr]:
    out = []
    stride = 1
    strides = []
    for d in reversed(batch_shape):
        strides.append(stride)
        stride *= d
    strides = list(reversed(strides))
    for i, d in enumerate(batch_shape):
        q = binop("floordiv", bvar, strides[i]) if strides[i] != 1 else bvar
        out.append(binop("mod", q, d) if i > 0 else q)
    return out


def _broadcast_c_index(out_idx: Sequence[Expr], c_shape: Sequence[int]) -> list[Expr]:
    pad = len(out_idx) - len(c_shape)
    return [Const(0) if d == 1 else out_idx[pad + i] for i, d in enumerate(c_shape)]


@kernel_rule("Gemm")
def _gemm(ctx: LowerCtx, node, ins, outs):
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    at = node.attrs
    return lower_matmul(ctx, a, b, outs[0], bool(at.get("transA", 0)), bool(at.get("transB", 0)),
                        float(at.get("alpha", 1.0)), c, float(at.get("beta", 1.0)))  # fmt: skip


@kernel_rule("MatMul")
def _matmul(ctx: LowerCtx, node, ins, outs):
    return lower_matmul(ctx, ins[0], ins[1], outs[0])


__all__ = ["GemmPlan", "GemmSpec", "View", "emit_gemm", "emit_pack_b", "lower_matmul", "pack_a_const",
           "pack_b_const", "plan_gemm"]  # fmt: skip
