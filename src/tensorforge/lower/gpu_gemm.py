"""GPU schedules of GEMM and convolution (schedule family ``gpu``): shared-memory tiled fp32 SIMT kernels.

One kernel computes ``C[bi] = A[bi] @ B[bi]`` for every batch ``bi``; each block owns a ``BM x BN`` tile of
one batch's C, each of its ``(BM/TM) * (BN/TN)`` threads a ``TM x TN`` sub-tile held in registers. Over K in
steps of ``BK``: the block loads the ``BM x BK`` slice of A and the ``BK x BN`` slice of B into shared memory
(consecutive threads reading consecutive elements along each operand's contiguous axis: coalesced), a
barrier, then every thread accumulates its sub-tile from shared memory (``TM + TN`` loads for ``TM * TN``
FMAs), a barrier before the next slice overwrites the tiles. Edges read zeros (indices clamped, values
selected: no load outside a buffer). The final values go through the ``Sink`` (fused bias, activation,
residual: the same epilogues as on the CPU).

With the lowering option ``precision`` = ``tf32`` / ``fp16`` / ``bf16`` (``compile_cuda(..., precision=...)``,
sm_80 and later) the products run on tensor cores instead (``gpu_gemm_mma``): ``mma.sync.m16n8k8`` on
tf32-rounded operands, or ``mma.sync.m16n8k16`` on operands converted to float16 / bfloat16 as the tiles are
staged in shared memory, always with float32 accumulation; a 64x64 block tile of four warps, each warp 32x32
(8 instructions per k step), fragments read from the shared tiles. fp32 SIMT stays the default (exact
float32 products, as PyTorch's default ``allow_tf32=False``).

Convolution is an implicit GEMM: per image and group, ``A`` is the weights ``[Cout/g, Cin/g * kernel]``
and ``B`` the im2col matrix ``[Cin/g * kernel, out pixels]``, each element computed from the input as the
tile is loaded (padding reads zero), never stored.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..ir.dtype import DType
from ..ops.nn import _conv_window
from . import kir as K
from .conv import patch_element
from .gemm import _batch_index, matmul_dims
from .gpu_kir import MMA_SHAPES, WARP, Barrier, Mma, SharedBuffer, gpu_spec, launch, mma_fragments
from .kir import Const, Decl, Expr, For, If, Load, Stmt, Store, Var, binop
from .rules import LowerCtx, schedule_rule
from .shape_ops import unflatten
from .tensor import TExpr

BK = 16
TM = TN = 4

Elem = Callable[[Expr, Expr, Expr], Expr]  # (batch, row, col) -> value


def _tile(extent: int) -> int:
    """Block tile edge: the smallest of 16, 32, 64 covering ``extent`` (64 beyond)."""
    for t in (16, 32, 64):
        if extent <= t:
            return t
    return 64


class _Geometry:
    """Block tiles of a batched GEMM and the shared tiles they are staged through."""

    def __init__(self, batch: int, M: int, N: int, Kd: int, BM: int, BN: int, threads: int, cdt: DType,
                 k_inner: bool = False):  # fmt: skip
        self.M, self.N, self.Kd, self.BM, self.BN, self.threads = M, N, Kd, BM, BN, threads
        self.k_inner = k_inner  # tiles stored [m][k] / [n][k]: k-adjacent pairs of 16-bit values share a word
        self.nm, self.nn = -(-M // BM), -(-N // BN)
        self.blocks = batch * self.nm * self.nn
        self.n_k = -(-Kd // BK)
        self.As = SharedBuffer("As", cdt, BK * BM)  # [k][m] (k_inner: [m][k])
        self.Bs = SharedBuffer("Bs", cdt, BK * BN)  # [k][n] (k_inner: [n][k])
        self.cdt = cdt

    def block(self, b: Var) -> tuple[list[Stmt], Var, Var, Var]:
        bn, bm, bi = Var("bn"), Var("bm"), Var("bi")
        return [Decl(bn, binop("mod", b, self.nn)), Decl(bm, binop("mod", binop("floordiv", b, self.nn), self.nm)),
                Decl(bi, binop("floordiv", b, self.nn * self.nm))], bm, bn, bi  # fmt: skip

    def loads(self, t: Var, bm: Var, bn: Var, bi: Var, kbase: Expr, a_at: Elem, b_at: Elem, a_k_contiguous: bool,
              b_n_contiguous: bool) -> list[Stmt]:  # fmt: skip
        """The block's threads copy the BM x BK slice of A and the BK x BN slice of B into shared memory,
        consecutive threads along each operand's contiguous axis; zeros past the edges."""
        M, N, Kd, BM, BN, threads = self.M, self.N, self.Kd, self.BM, self.BN, self.threads
        zero = K.const(0, self.cdt)
        out: list[Stmt] = []
        for ld in range(-(-(BM * BK) // threads)):
            e = binop("add", t, ld * threads)
            if a_k_contiguous:
                mm, kk = binop("floordiv", e, BK), binop("mod", e, BK)
            else:
                kk, mm = binop("floordiv", e, BM), binop("mod", e, BM)
            m, k = binop("add", binop("mul", bm, BM), mm), binop("add", kbase, kk)
            ok = K.binop("and", K.cmp("lt", m, Const(M)), K.cmp("lt", k, Const(Kd)))
            v = a_at(bi, K.minimum(m, Const(M - 1)), K.minimum(k, Const(Kd - 1)))
            st = Store(self.As, self.at_a(kk, mm), K.select(ok, K.cast(v, self.cdt), zero))
            out.append(st if (ld + 1) * threads <= BM * BK else If(K.cmp("lt", e, Const(BM * BK)), st))
        for ld in range(-(-(BK * BN) // threads)):
            e = binop("add", t, ld * threads)
            if b_n_contiguous:
                kk, nn_ = binop("floordiv", e, BN), binop("mod", e, BN)
            else:
                nn_, kk = binop("floordiv", e, BK), binop("mod", e, BK)
            k, n = binop("add", kbase, kk), binop("add", binop("mul", bn, BN), nn_)
            ok = K.binop("and", K.cmp("lt", k, Const(Kd)), K.cmp("lt", n, Const(N)))
            v = b_at(bi, K.minimum(k, Const(Kd - 1)), K.minimum(n, Const(N - 1)))
            st = Store(self.Bs, self.at_b(kk, nn_), K.select(ok, K.cast(v, self.cdt), zero))
            out.append(st if (ld + 1) * threads <= BK * BN else If(K.cmp("lt", e, Const(BK * BN)), st))
        return out

    def at_a(self, k: Expr, m: Expr) -> Expr:
        """The element of the shared A tile holding (k, m)."""
        return binop("add", binop("mul", m, BK), k) if self.k_inner else binop("add", binop("mul", k, self.BM), m)

    def at_b(self, k: Expr, n: Expr) -> Expr:
        return binop("add", binop("mul", n, BK), k) if self.k_inner else binop("add", binop("mul", k, self.BN), n)

    def store_if_inside(self, m: Expr, n: Expr, st: Stmt) -> Stmt:
        return If(K.binop("and", K.cmp("lt", m, Const(self.M)), K.cmp("lt", n, Const(self.N))), st)


def gpu_gemm(batch: int, M: int, N: int, Kd: int, a_at: Elem, b_at: Elem,
             store: Callable[[Expr, Expr, Expr, Expr], Stmt], cdt: DType, a_k_contiguous: bool = True,
             b_n_contiguous: bool = True, mma: str | None = None) -> Stmt:  # fmt: skip
    """The launch nest of the batched GEMM ``store(bi, m, n, sum_k a_at(bi, m, k) * b_at(bi, k, n))``: fp32 SIMT,
    or with ``mma`` (``tf32``, ``f16``, ``bf16``) on tensor cores (``gpu_gemm_mma``)."""
    if mma:
        return gpu_gemm_mma(batch, M, N, Kd, a_at, b_at, store, a_k_contiguous, b_n_contiguous, mma)
    BM, BN = _tile(M), _tile(N)
    tx_n = BN // TN
    geo = _Geometry(batch, M, N, Kd, BM, BN, tx_n * (BM // TM), cdt)
    As, Bs = geo.As, geo.Bs

    def body(b: Var, t: Var) -> Stmt:
        stmts, bm, bn, bi = geo.block(b)
        ty, tx = Var("ty"), Var("tx")
        stmts += [Decl(ty, binop("floordiv", t, tx_n)), Decl(tx, binop("mod", t, tx_n))]
        acc = [[Var(f"c{i}_{j}", cdt) for j in range(TN)] for i in range(TM)]
        stmts += [Decl(v, K.const(0, cdt)) for row in acc for v in row]
        k0 = Var("k0")
        loads = geo.loads(t, bm, bn, bi, binop("mul", k0, BK), a_at, b_at, a_k_contiguous, b_n_contiguous)
        kk = Var("kk")
        a_r = [Var(f"a{i}", cdt) for i in range(TM)]
        b_r = [Var(f"b{j}", cdt) for j in range(TN)]
        inner: list[Stmt] = []
        for i in range(TM):
            inner.append(
                Decl(a_r[i], Load(As, binop("add", binop("mul", kk, BM), binop("add", binop("mul", ty, TM), i))))
            )
        for j in range(TN):
            inner.append(
                Decl(b_r[j], Load(Bs, binop("add", binop("mul", kk, BN), binop("add", binop("mul", tx, TN), j))))
            )
        for i in range(TM):
            for j in range(TN):
                inner.append(K.Assign(acc[i][j], K.Fma(a_r[i], b_r[j], acc[i][j])))
        kloop = For(kk, Const(0), Const(BK), K.seq(inner))
        stmts.append(For(k0, Const(0), Const(geo.n_k), K.seq(*loads, Barrier(), kloop, Barrier())))
        for i in range(TM):
            for j in range(TN):
                m = binop("add", binop("mul", bm, BM), binop("add", binop("mul", ty, TM), i))
                n = binop("add", binop("mul", bn, BN), binop("add", binop("mul", tx, TN), j))
                stmts.append(geo.store_if_inside(m, n, store(bi, m, n, acc[i][j])))
        return K.seq(stmts)

    return launch(geo.blocks, geo.threads, body)


# tensor cores: a 64x64 block tile, four warps of 32x32, each warp 2 x 4 mma tiles of 16x8 per k step
MMA_BM = MMA_BN = 64
MMA_WARPS_N = 2
_MMA_SHARED = {"tf32": DType.F32, "f16": DType.F16, "bf16": DType.BF16}  # the staged tiles' element type


def gpu_gemm_mma(batch: int, M: int, N: int, Kd: int, a_at: Elem, b_at: Elem,
                 store: Callable[[Expr, Expr, Expr, Expr], Stmt], a_k_contiguous: bool = True,
                 b_n_contiguous: bool = True, kind: str = "tf32") -> Stmt:  # fmt: skip
    """The batched GEMM on tensor cores with float32 accumulation (``gpu_kir.Mma`` of ``kind``: tf32
    m16n8k8, or f16 / bf16 m16n8k16 with the operands converted to float16 / bfloat16 as the tiles are
    staged in shared memory, halving their size): each warp reads its fragments from the shared tiles in the
    instruction's layout (``mma_fragments``) and keeps its 32x32 accumulator tile in registers (32 per
    thread)."""
    f32 = DType.F32
    geo = _Geometry(batch, M, N, Kd, MMA_BM, MMA_BN, 128, _MMA_SHARED[kind], k_inner=kind != "tf32")
    As, Bs = geo.As, geo.Bs
    ks = MMA_SHAPES[kind][0][2]  # k per instruction
    fa, fb, fc = mma_fragments(kind)

    def body(b: Var, t: Var) -> Stmt:
        stmts, bm, bn, bi = geo.block(b)
        wm, wn, g, q = Var("wm"), Var("wn"), Var("g"), Var("q")
        warp, lane = binop("floordiv", t, WARP), binop("mod", t, WARP)
        stmts += [Decl(wm, binop("floordiv", warp, MMA_WARPS_N)), Decl(wn, binop("mod", warp, MMA_WARPS_N)),
                  Decl(g, binop("floordiv", lane, 4)), Decl(q, binop("mod", lane, 4))]  # fmt: skip
        acc = [[[Var(f"c{i}_{j}_{r}", f32) for r in range(4)] for j in range(4)] for i in range(2)]
        stmts += [Decl(v, K.const(0, f32)) for tile in acc for frag in tile for v in frag]
        k0 = Var("k0")
        loads = geo.loads(t, bm, bn, bi, binop("mul", k0, BK), a_at, b_at, a_k_contiguous, b_n_contiguous)
        kk = Var("kk")

        def k_at(kmul: int, koff: int) -> Expr:  # the k row of the shared tiles
            return binop("add", binop("mul", kk, ks), binop("add", binop("mul", q, kmul), koff))

        def a_el(row: Expr, kmul: int, koff: int) -> Expr:
            return Load(As, geo.at_a(k_at(kmul, koff), row))

        def b_el(col: Expr, kmul: int, koff: int) -> Expr:
            return Load(Bs, geo.at_b(k_at(kmul, koff), col))

        inner: list[Stmt] = []
        for i in range(2):
            row = binop("add", binop("add", binop("mul", wm, 32), i * 16), g)
            a = tuple(a_el(binop("add", row, ro), km, ko) for ro, km, ko in fa)
            for j in range(4):
                col = binop("add", binop("add", binop("mul", wn, 32), j * 8), g)
                bv = tuple(b_el(col, km, ko) for km, ko in fb)
                inner.append(Mma(tuple(acc[i][j]), a, bv, tuple(acc[i][j]), kind))
        kloop = For(kk, Const(0), Const(BK // ks), K.seq(inner))
        stmts.append(For(k0, Const(0), Const(geo.n_k), K.seq(*loads, Barrier(), kloop, Barrier())))
        for i in range(2):
            for j in range(4):
                for r, (ro, co) in enumerate(fc):
                    m = binop("add", binop("mul", bm, MMA_BM), binop("add", binop("mul", wm, 32), i * 16 + ro))
                    m = binop("add", m, g)
                    n = binop("add", binop("mul", bn, MMA_BN), binop("add", binop("mul", wn, 32), j * 8 + co))
                    n = binop("add", n, binop("mul", q, 2))
                    stmts.append(geo.store_if_inside(m, n, store(bi, m, n, acc[i][j][r])))
        return K.seq(stmts)

    return launch(geo.blocks, geo.threads, body)


# the GPU precisions (lowering option ``precision``) that run GEMMs on tensor cores, and their mma kinds
MMA_PRECISIONS = {"tf32": "tf32", "fp16": "f16", "bf16": "bf16"}


def mma_kind(ctx: LowerCtx, cdt: DType) -> str | None:
    """The tensor-core kind of a float32 GEMM at the lowering option ``precision`` (tf32, fp16, bf16) on a GPU
    that has it; None: fp32 SIMT."""
    kind = MMA_PRECISIONS.get(str(ctx.options.get("precision") or "fp32"))
    return kind if kind and cdt is DType.F32 and kind in gpu_spec(ctx.target).tensor_cores else None


# -- MatMul and Gemm -------------------------------------------------------------------------------------------
def gpu_matmul(ctx: LowerCtx, a: TExpr, b: TExpr, sink, trans_a: bool = False, trans_b: bool = False,
               alpha: float = 1.0, c: TExpr | None = None, beta: float = 1.0) -> Stmt:  # fmt: skip
    """``sink = alpha * op(a) @ op(b) + beta * c`` for 2-D or batched (numpy-broadcast) operands."""
    cdt = sink.dtype.compute
    a1, b1, M, Kd, N, a_batch, b_batch, batch_shape = matmul_dims(a.shape, b.shape, trans_a, trans_b)
    batch = int(np.prod(batch_shape)) if batch_shape else 1

    def a_at(bi, m, k):
        idx = [*_batch_index(bi, batch_shape, a_batch), *((k, m) if trans_a else (m, k))]
        return a([idx[-1]] if a1 else idx)

    def b_at(bi, k, n):
        idx = [*_batch_index(bi, batch_shape, b_batch), *((n, k) if trans_b else (k, n))]
        return b([idx[-2]] if b1 else idx)

    def store(bi, m, n, v):
        if alpha != 1.0:
            v = binop("mul", v, K.const(alpha, cdt))
        full = [*(unflatten(bi, batch_shape) if batch_shape else []), m, n]
        if c is not None:
            pad = len(full) - c.rank
            cv = c([Const(0) if d == 1 else full[pad + i] for i, d in enumerate(c.shape)])
            cv = K.cast(cv, cdt)
            v = binop("add", v, cv if beta == 1.0 else binop("mul", cv, K.const(beta, cdt)))
        oidx = full
        if a1 and b1:
            oidx = full[:-2]
        elif a1:
            oidx = [*full[:-2], full[-1]]
        elif b1:
            oidx = full[:-1]
        return sink.store(oidx, v)

    ctx.stores_once = True
    return gpu_gemm(batch, M, N, Kd, a_at, b_at, store, cdt, not trans_a, not trans_b, mma_kind(ctx, cdt))


@schedule_rule("gpu", "Gemm")
def _gemm(ctx: LowerCtx, node, ins, outs):
    at = node.attrs
    c = ins[2] if len(ins) > 2 else None
    return gpu_matmul(ctx, ins[0], ins[1], outs[0], bool(at.get("transA", 0)), bool(at.get("transB", 0)),
                      float(at.get("alpha", 1.0)), c, float(at.get("beta", 1.0)))  # fmt: skip


@schedule_rule("gpu", "MatMul")
def _matmul(ctx: LowerCtx, node, ins, outs):
    return gpu_matmul(ctx, ins[0], ins[1], outs[0])


# -- convolution: implicit GEMM ----------------------------------------------------------------------------------
@schedule_rule("gpu", "Conv")
def _conv(ctx: LowerCtx, node, ins, outs):
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    sink = outs[0]
    win = _conv_window(None, x.shape, w.shape, node.attrs)
    group = int(node.attrs.get("group", 1))
    n_img, c_in = x.shape[:2]
    m_out = w.shape[0]
    cg, mg = c_in // group, m_out // group
    Kd = cg * int(np.prod(win.kernel))
    out_sp = tuple(win.out_size)
    N = int(np.prod(out_sp))
    cdt = sink.dtype.compute

    def split(bi):  # GEMM batch -> (image, group)
        return binop("floordiv", bi, group), binop("mod", bi, group)

    def a_at(bi, m, k):
        _, g = split(bi)
        return w([binop("add", binop("mul", g, mg), m), *unflatten(k, (cg, *win.kernel))])

    def b_at(bi, k, n):
        img, g = split(bi)
        return patch_element(x, win, img, g, cg, k, n)

    def store(bi, m, n, v):
        img, g = split(bi)
        ch = binop("add", binop("mul", g, mg), m)
        if bias is not None:
            v = binop("add", v, K.cast(bias([ch]), cdt))
        return sink.store([img, ch, *unflatten(n, out_sp)], v)

    ctx.stores_once = True
    return gpu_gemm(n_img * group, mg, N, Kd, a_at, b_at, store, cdt, True, True, mma_kind(ctx, cdt))


__all__ = ["MMA_PRECISIONS", "gpu_gemm", "gpu_matmul", "mma_kind"]


def gpu_precision_note(graph, program, precision: str) -> str:
    """One line for the report at a GPU precision other than fp32: which GEMM, MatMul and Conv nodes run on
    tensor cores (their kernels hold an ``Mma``), and which stayed fp32 SIMT."""
    from .kir import walk_stmt

    ops = {n.name: n.op for n in graph.nodes for n in (n.attrs.get("body") or (n,))}
    on_tc: set[str] = set()
    for k in program.kernels:
        if any(isinstance(s, Mma) for s in walk_stmt(k.body)):
            on_tc.update(label.rsplit(" (", 1)[0] for label in k.labels)

    def count(names) -> str:
        by_op: dict[str, int] = {}
        for name in names:
            by_op[ops[name]] = by_op.get(ops[name], 0) + 1
        return ", ".join(f"{op} x{c}" for op, c in sorted(by_op.items())) or "none"

    kind = MMA_PRECISIONS[precision]
    shape = "m{}n{}k{}".format(*MMA_SHAPES[kind][0])
    tc = [n for n, op in ops.items() if op in ("Conv", "Gemm", "MatMul") and n in on_tc]
    rest = [n for n, op in ops.items() if op in ("Conv", "Gemm", "MatMul") and n not in on_tc]
    line = f"precision {precision} (tensor cores mma.sync.{shape}.{kind}, float32 accumulation): {count(tc)}"
    return line + (f"; fp32 SIMT {count(rest)}" if rest else "") + "; everything else float32"
