"""Lowering of Gather, GatherElements, GatherND, OneHot (index expressions: the index tensor is loaded and
the data read at the computed position, fusable like any elementwise op) and ScatterElements / ScatterND
(kernels: copy the data, then apply the updates in order, serially, so that duplicate indices combine
as the reference does).

Indices are checked at run time before the kernel that uses them (``LowerCtx.check_range``,
``lower/checks.py``): out of range is an error, as in ONNX. The index expressions then only count
negative indices from the end.
"""

from __future__ import annotations

import numpy as np

from ..ops.indexing import gather_nd_shape
from . import kir as K
from .kir import Const, Expr, LoopKind
from .movement import clamp
from .rules import LowerCtx, Sink, index_rule, kernel_rule, view_rule
from .schedule import pointwise_nest
from .tensor import TExpr, View


def norm_index(e: Expr, dim: int) -> Expr:
    """A checked index as i64, negative values counted from the end."""
    e = K.cast(e, K.I64)
    return K.select(K.cmp("lt", e, Const(0)), K.binop("add", e, Const(dim)), e)


def check_indices(ctx: LowerCtx, ind: TExpr, dims: list[int], axes: list[int]) -> None:
    """Every index in [-dim, dim - 1] of the data axis it selects (one axis for all, or one per position along
    the last axis of ``ind``: GatherND / ScatterND index tuples)."""
    ranges = [(-d, d - 1, f"axis {a} of the data has {d} entries") for d, a in zip(dims, axes)]
    ctx.check_range(ind, "indices", "index", ranges)


def _axis(node, rank: int) -> int:
    return int(node.attrs.get("axis", 0)) % rank


# -- Gather ----------------------------------------------------------------------------------------
@view_rule("Gather")
def _gather_view(ctx: LowerCtx, node, ins):
    """x[..., i, ...] with a constant scalar index i is a view (common in shape code and attention)."""
    x, ind = ins
    if x.view is None or ind.const is None or ind.const.ndim != 0:
        return None
    axis = _axis(node, x.rank)
    check_indices(ctx, ind, [x.shape[axis]], [axis])
    i = int(ind.const)
    i = i + x.shape[axis] if i < 0 else i
    v = x.view
    shape = v.shape[:axis] + v.shape[axis + 1 :]
    strides = v.strides[:axis] + v.strides[axis + 1 :]
    return [View(v.buf, shape, strides, v.offset + i * v.strides[axis])]


@index_rule("Gather")
def _gather(ctx: LowerCtx, node, ins):
    x, ind = ins
    axis = _axis(node, x.rank)
    q = ind.rank
    check_indices(ctx, ind, [x.shape[axis]], [axis])

    def fn(idx):
        pos = norm_index(ind(idx[axis : axis + q]), x.shape[axis])
        return x([*idx[:axis], pos, *idx[axis + q :]])

    return [TExpr.compute(node.outputs[0].shape, x.dtype, fn)]


@index_rule("GatherElements")
def _gather_elements(ctx: LowerCtx, node, ins):
    x, ind = ins
    axis = _axis(node, x.rank)
    check_indices(ctx, ind, [x.shape[axis]], [axis])

    def fn(idx):
        src = list(idx)
        src[axis] = norm_index(ind(idx), x.shape[axis])
        return x(src)

    return [TExpr.compute(ind.shape, x.dtype, fn)]


@index_rule("GatherND")
def _gather_nd(ctx: LowerCtx, node, ins):
    x, ind = ins
    b = int(node.attrs.get("batch_dims", 0))
    m = ind.shape[-1]
    q = ind.rank
    out_shape = gather_nd_shape(None, x.shape, ind.shape, b)
    check_indices(ctx, ind, list(x.shape[b : b + m]), list(range(b, b + m)))

    def fn(idx):
        lead = list(idx[: q - 1])
        pos = [norm_index(ind([*lead, Const(k)]), x.shape[b + k]) for k in range(m)]
        return x([*lead[:b], *pos, *idx[q - 1 :]])

    return [TExpr.compute(out_shape, x.dtype, fn)]


# -- OneHot ----------------------------------------------------------------------------------------
@index_rule("OneHot")
def _onehot(ctx: LowerCtx, node, ins):
    ind, depth, values = ins
    out = node.outputs[0]
    d = int(np.asarray(depth.const).reshape(-1)[0])
    axis = int(node.attrs.get("axis", -1)) % out.type.rank

    def fn(idx):
        v = ind([*idx[:axis], *idx[axis + 1 :]])
        if v.dtype.is_float:
            v = K.unop("trunc", v)
        v = K.cast(v, K.I64)
        v = K.select(K.cmp("lt", v, Const(0)), K.binop("add", v, Const(d)), v)
        return K.select(K.cmp("eq", v, idx[axis]), values([Const(1)]), values([Const(0)]))

    return [TExpr.compute(out.shape, out.dtype, fn)]


# -- Scatter ---------------------------------------------------------------------------------------
def _combine(red: str, old: Expr, new: Expr) -> Expr:
    if red == "none":
        return new
    return K.binop({"add": "add", "mul": "mul", "max": "max", "min": "min"}[red], old, new)


def _copy_then(ctx: LowerCtx, data: TExpr, sink: Sink, scatter: K.Stmt) -> K.Stmt:
    view = sink.view

    def copy(idx):
        return view.store(idx, K.cast(data(idx), view.dtype))

    return K.seq(pointwise_nest(data.shape, copy, ctx.lanes(data.dtype), ctx.parallel_threshold), scatter)


@kernel_rule("ScatterElements")
def _scatter_elements(ctx: LowerCtx, node, ins, outs):
    data, ind, upd = ins
    sink = outs[0]
    axis = _axis(node, data.rank)
    red = node.attrs.get("reduction", "none")
    view = sink.view
    check_indices(ctx, ind, [data.shape[axis]], [axis])

    def body(idx):
        dst = list(idx)
        dst[axis] = norm_index(ind(idx), data.shape[axis])
        val = K.cast(upd(idx), view.dtype)
        return view.store(dst, _combine(red, view.load(dst), val))

    scatter = K.loop_nest(ind.shape, body, kinds=[LoopKind.SERIAL] * ind.rank) if ind.numel else K.Seq(())
    return _copy_then(ctx, data, sink, scatter)


@kernel_rule("ScatterND")
def _scatter_nd(ctx: LowerCtx, node, ins, outs):
    data, ind, upd = ins
    sink = outs[0]
    red = node.attrs.get("reduction", "none")
    m = ind.shape[-1]
    lead = ind.shape[:-1]
    view = sink.view
    shape = (*lead, *data.shape[m:])
    check_indices(ctx, ind, list(data.shape[:m]), list(range(m)))

    def body(idx):
        pos = list(idx[: len(lead)])
        dst = [norm_index(ind([*pos, Const(k)]), data.shape[k]) for k in range(m)] + list(idx[len(lead) :])
        val = K.cast(upd(idx), view.dtype)
        return view.store(dst, _combine(red, view.load(dst), val))

    scatter = K.loop_nest(shape, body, kinds=[LoopKind.SERIAL] * len(shape)) if int(np.prod(shape)) else K.Seq(())
    return _copy_then(ctx, data, sink, scatter)


@index_rule("TensorScatter")
def _tensor_scatter(ctx: LowerCtx, node, ins):
    """out[b, .., p, ..] = update[b, .., p - start[b], ..] where that lies inside the update, else the cache.
    In linear mode the whole update must fit: 0 <= start[b] <= n - m (checked at run time)."""
    cache, upd = ins[0], ins[1]
    write = ins[2] if len(ins) > 2 else None
    axis = int(node.attrs.get("axis", -2)) % cache.rank
    circular = node.attrs.get("mode", "linear") == "circular"
    n, m = cache.shape[axis], upd.shape[axis]
    if write is not None and not circular:
        about = f"the update's {m} steps must fit in the cache's {n} along axis {axis}"
        ctx.check_range(write, "write_indices", "write index", [(0, n - m, about)])

    def fn(idx):
        start = K.cast(write([idx[0]]), K.I64) if write is not None else Const(0)
        j = K.binop("sub", idx[axis], start)
        if circular:
            j = K.binop("mod", K.binop("add", K.binop("mod", j, n), n), n)
        inside = K.binop("and", K.cmp("ge", j, Const(0)), K.cmp("lt", j, Const(m)))
        src = list(idx)
        src[axis] = clamp(j, 0, m - 1)
        return K.select(inside, upd(src), cache(idx))

    return [TExpr.compute(cache.shape, cache.dtype, fn)]
