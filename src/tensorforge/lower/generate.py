"""Lowering of ConstantOfShape, Range and EyeLike: index expressions with no (or scalar) inputs."""

from __future__ import annotations

import numpy as np

from ..ops.generate import _fill_value
from . import kir as K
from .kir import Const
from .movement import scalar_of
from .rules import LowerCtx, index_rule
from .tensor import TExpr


@index_rule("ConstantOfShape")
def _constant_of_shape(ctx: LowerCtx, node, ins):
    out = node.outputs[0]
    v = np.asarray(_fill_value(node.attrs)).reshape(-1)[0]
    return [TExpr.scalar(v, out.dtype, out.shape)]


@index_rule("Range")
def _range(ctx: LowerCtx, node, ins):
    start, _limit, delta = ins
    out = node.outputs[0]

    def fn(idx):
        i = K.cast(idx[0], out.dtype)
        return K.binop("add", scalar_of(start), K.binop("mul", i, scalar_of(delta)))

    return [TExpr.compute(out.shape, out.dtype, fn)]


@index_rule("EyeLike")
def _eyelike(ctx: LowerCtx, node, ins):
    out = node.outputs[0]
    k = int(node.attrs.get("k", 0))

    def fn(idx):
        on = K.cmp("eq", K.binop("sub", idx[1], idx[0]), Const(k))
        return K.select(on, K.const(1, out.dtype), K.const(0, out.dtype))

    return [TExpr.compute(out.shape, out.dtype, fn)]


@index_rule("Shape", "Size")
def _shape_of(ctx: LowerCtx, node, ins):
    """Shapes are static once lowered, so Shape/Size are constants (normally folded before lowering)."""
    from ..ops.registry import evaluate

    x = ins[0]
    (val,) = evaluate(node, [np.empty(x.shape, np.uint8)])
    out = node.outputs[0]
    if val.size == 1:
        return [TExpr.scalar(val.reshape(-1)[0], out.dtype, out.shape)]
    view = ctx.const_view(val.astype(out.dtype.np), node.name or out.name)
    return [TExpr.from_view(view, val)]
