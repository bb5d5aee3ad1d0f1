"""Lowering of reductions, global pooling and softmax.

A reduction is a loop nest over the output with an accumulator and the reduced loops inside. When the
innermost input axis is reduced, the innermost reduce loop is vectorized (a vector accumulator folded
across lanes at the end); otherwise the innermost output loop is vectorized (one accumulator per lane).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..ir.dtype import DType
from ..ops.reduce import REDUCERS, reduce_axes
from ..ops.registry import InferCtx
from . import kir as K
from .elementwise import KIR
from .kir import Assign, Const, Decl, Expr, For, LoopKind, Stmt, Var
from .rules import LowerCtx, Sink, kernel_rule
from .schedule import loop_vars, parallel_axis
from .vectorize import identity


def reduce_nest(
    ctx: LowerCtx,
    out_shape: Sequence[int],
    red_shape: Sequence[int],
    value: Callable[[list[Expr], list[Expr]], Expr],
    combine: str,
    acc_dtype: DType,
    finish: Callable[[list[Expr], Expr], Stmt],
    vector: str,
    init: Expr | None = None,
) -> Stmt:
    """``for out: acc = init; for red: acc = combine(acc, value(out, red)); finish(out, acc)``.

    ``vector`` is "out" (vectorize the last output loop), "red" (the last reduce loop) or "none".
    """
    ov = loop_vars(len(out_shape))
    rv = [Var(f"r{d}") for d in range(len(red_shape))]
    acc = Var("acc", acc_dtype)
    lanes = ctx.lanes(acc_dtype)
    upd = Assign(acc, K.binop(combine, acc, value(list(ov), list(rv))))
    body: Stmt = upd
    for d in reversed(range(len(red_shape))):
        kind, nl = LoopKind.SERIAL, 1
        if vector == "red" and d == len(red_shape) - 1 and red_shape[d] >= lanes > 1:
            kind, nl = LoopKind.VECTOR, lanes
        body = For(rv[d], Const(0), Const(red_shape[d]), body, kind, 1, nl)
    start = init if init is not None else identity(combine, acc_dtype)
    stmt: Stmt = K.seq(Decl(acc, start), body, finish(list(ov), acc))
    red_n = int(np.prod(red_shape)) if len(red_shape) else 1
    par = parallel_axis(out_shape, red_n, ctx.parallel_threshold, max_axes=max(len(out_shape) - 1, 1))
    for d in reversed(range(len(out_shape))):
        kind, nl = LoopKind.SERIAL, 1
        if vector == "out" and d == len(out_shape) - 1 and out_shape[d] >= lanes > 1:
            kind, nl = LoopKind.VECTOR, lanes
        elif d == par:
            kind = LoopKind.PARALLEL
        stmt = For(ov[d], Const(0), Const(out_shape[d]), stmt, kind, 1, nl)
    return stmt


def lower_reduce(ctx: LowerCtx, x, axes: Sequence[int], sink: Sink, combine: str,
                 pre=None, post=None, keepdims: bool = True) -> Stmt:  # fmt: skip
    """Reduce TExpr ``x`` over ``axes`` into ``sink`` (whose shape has the reduced dims kept or dropped)."""
    rank = x.rank
    axes = sorted(axes)
    kept = [d for d in range(rank) if d not in axes]
    out_shape = [x.shape[d] for d in kept]
    red_shape = [x.shape[d] for d in axes]
    count = int(np.prod(red_shape)) if red_shape else 1
    dt = x.dtype

    def value(o, r):
        idx: list[Expr] = [Const(0)] * rank
        for d, i in zip(kept, o):
            idx[d] = i
        for d, i in zip(axes, r):
            idx[d] = i
        v = x(idx)
        return pre(KIR, v) if pre else v

    def finish(o, acc):
        res = post(KIR, acc, count) if post else acc
        oidx: list[Expr] = []
        it = iter(o)
        for d in range(rank):
            if d in axes:
                if keepdims:
                    oidx.append(Const(0))
            else:
                oidx.append(next(it))
        return sink.store(oidx, res)

    vector = "red" if (axes and axes[-1] == rank - 1) else "out"
    return reduce_nest(ctx, out_shape, red_shape, value, combine, dt, finish, vector)


@kernel_rule(*REDUCERS, epilogue=True, prologue=True, epilogue_reads_tensors=True)
def _reduce(ctx: LowerCtx, node, ins, outs):
    x = ins[0]
    r = REDUCERS[node.op]
    axes_val = ins[1].const if len(ins) > 1 and ins[1] is not None else node.attrs.get("axes")
    if len(ins) > 1 and ins[1] is not None and axes_val is None:
        ctx.fail("axes must be a compile-time constant")
    axes = reduce_axes(InferCtx(node), x.rank, axes_val, bool(node.attrs.get("noop_with_empty_axes", 0)))
    sink = outs[0]
    if axes is None:  # no-op reduction: copy (through pre/post so ReduceL2 etc. still apply elementwise)
        axes = ()
    keep = bool(node.attrs.get("keepdims", 1))
    return lower_reduce(ctx, x, axes, sink, r.combine, r.pre, r.post, keep)


@kernel_rule("GlobalAveragePool", "GlobalMaxPool", epilogue=True, prologue=True)
def _global_pool(ctx: LowerCtx, node, ins, outs):
    x = ins[0]
    axes = list(range(2, x.rank))
    if node.op == "GlobalAveragePool":
        return lower_reduce(ctx, x, axes, outs[0], "add", None, lambda h, acc, n: h.div(acc, h.const(n, acc)))
    return lower_reduce(ctx, x, axes, outs[0], "max")


# -- softmax ---------------------------------------------------------------------------------------
@kernel_rule("Softmax", "LogSoftmax", epilogue=True, prologue=True, epilogue_reads_tensors=True)
def _softmax(ctx: LowerCtx, node, ins, outs):
    x = ins[0]
    sink = outs[0]
    rank = x.rank
    axis = int(node.attrs.get("axis", -1)) % rank
    log = node.op == "LogSoftmax"
    dt = x.dtype
    n = x.shape[axis]
    before = list(x.shape[:axis])
    after = list(x.shape[axis + 1 :])
    lanes = ctx.lanes(dt)
    bv = loop_vars(len(before))
    av = [Var(f"t{d}") for d in range(len(after))]
    j = Var("j")
    m, s = Var("m", dt), Var("s", dt)
    # the output is written first, then normalized in place: read it back through the sink's view
    out_view = sink.view

    def idx(jv):
        return [*bv, jv, *av]

    vec_axis = not after and n >= lanes > 1
    kind = LoopKind.VECTOR if vec_axis else LoopKind.SERIAL
    nl = lanes if vec_axis else 1
    xj = x(idx(j))
    p1 = For(j, Const(0), Const(n), Assign(m, K.binop("max", m, xj)), kind, 1, nl)
    e = K.unop("exp", K.binop("sub", xj, m))
    if log:
        p2 = For(j, Const(0), Const(n), Assign(s, K.binop("add", s, e)), kind, 1, nl)
        ls = Var("ls", dt)
        p3 = K.seq(
            Decl(ls, K.binop("add", m, K.unop("log", s))),
            For(j, Const(0), Const(n), sink.store(idx(j), K.binop("sub", xj, ls)), kind, 1, nl),
        )
    else:
        p2 = For(j, Const(0), Const(n), K.seq(out_view.store(idx(j), K.cast(e, out_view.dtype)),
                                               Assign(s, K.binop("add", s, e))), kind, 1, nl)  # fmt: skip
        inv = Var("inv", dt)
        stored = K.cast(out_view.load(idx(j)), dt)
        p3 = K.seq(
            Decl(inv, K.binop("div", K.const(1.0, dt), s)),
            For(j, Const(0), Const(n), sink.store(idx(j), K.binop("mul", stored, inv)), kind, 1, nl),
        )
    body = K.seq(Decl(m, K.const(float("-inf"), dt)), p1, Decl(s, K.const(0.0, dt)), p2, p3)
    # loops over the dims after the axis (innermost vectorized), then before it (outermost parallel)
    for d in reversed(range(len(after))):
        k2, l2 = LoopKind.SERIAL, 1
        if d == len(after) - 1 and after[d] >= lanes > 1:
            k2, l2 = LoopKind.VECTOR, lanes
        body = For(av[d], Const(0), Const(after[d]), body, k2, 1, l2)
    outer = before
    par = parallel_axis(outer, n * max(1, int(np.prod(after)) if after else 1) * 4, ctx.parallel_threshold)
    for d in reversed(range(len(before))):
        body = For(bv[d], Const(0), Const(before[d]), body, LoopKind.PARALLEL if d == par else LoopKind.SERIAL)
    return body
