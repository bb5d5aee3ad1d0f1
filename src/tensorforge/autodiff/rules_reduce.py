"""Gradient rules of the reductions: the cotangent, with the reduced axes restored as size-1 dims,
broadcast back over the input (times the derivative of the per-element prologue / epilogue)."""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node, Value
from ..ops.reduce import reduce_axes
from .builder import GraphBuilder
from .core import vjp


def _axes(node: Node) -> tuple[int, ...] | None:
    x = node.inputs[0]
    axes_in = node.input(1)
    val = axes_in.const if axes_in is not None else node.attr("axes")
    return reduce_axes(None, len(x.shape), val, bool(node.attr("noop_with_empty_axes", 0)))


def _kept(b: GraphBuilder, node: Node, v: Value, axes) -> Value:
    """``v`` (shaped like the reduction's output) with the reduced axes present as size-1 dims."""
    x = node.inputs[0]
    return b.reshape(v, tuple(1 if i in axes else d for i, d in enumerate(x.shape)))


def _reduction(fn):
    """Wrap ``fn(b, x, y_kept, ct_kept, axes)``; a no-op reduction passes the cotangent through its
    elementwise prologue/epilogue only, handled by treating it as a reduction over no axes."""

    def rule(b: GraphBuilder, node: Node, cts, needs):
        x = node.inputs[0]
        axes = _axes(node)
        axes = () if axes is None else axes
        return [fn(b, x, _kept(b, node, node.outputs[0], axes), _kept(b, node, cts[0], axes), list(axes))]

    return rule


def _count(x: Value, axes) -> int:
    return int(np.prod([x.shape[a] for a in axes])) if axes else 1


def extreme_vjp(b: GraphBuilder, x: Value, y: Value, ct: Value, axes) -> Value:
    """Max / min: the cotangent is shared equally by the elements equal to the extreme (as torch.amax)."""
    mask = b.op("Cast", [b.op("Equal", [x, y])], to=x.dtype.onnx)
    count = b.reduce_sum(mask, axes)
    return b.mul(mask, b.div(ct, count))


vjp("ReduceSum")(_reduction(lambda b, x, y, ct, axes: b.expand(ct, x.shape)))
vjp("ReduceMean")(_reduction(lambda b, x, y, ct, axes: b.expand(b.scale(ct, 1.0 / _count(x, axes)), x.shape)))
vjp("ReduceSumSquare")(_reduction(lambda b, x, y, ct, axes: b.mul(x, b.scale(ct, 2.0))))
vjp("ReduceL1")(_reduction(lambda b, x, y, ct, axes: b.mul(b.op("Sign", [x]), ct)))
vjp("ReduceL2")(_reduction(lambda b, x, y, ct, axes: b.mul(b.div(x, y), ct)))
vjp("ReduceLogSumExp")(_reduction(lambda b, x, y, ct, axes: b.mul(b.op("Exp", [b.sub(x, y)]), ct)))
vjp("ReduceLogSum")(_reduction(lambda b, x, y, ct, axes: b.expand(b.div(ct, b.op("Exp", [y])), x.shape)))
vjp("ReduceMax", "ReduceMin")(_reduction(extreme_vjp))
