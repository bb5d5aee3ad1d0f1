"""Lowering of ConvTranspose through the ``ConvGradInput`` kernel (``lower/grad.py``) of the forward
convolution it transposes, followed by the bias."""

from __future__ import annotations

from ..ir.graph import Node
from ..ops.conv_transpose import conv_attrs
from . import kir as K
from .grad import _conv_grad_input
from .rules import LowerCtx, kernel_rule
from .schedule import pointwise_nest


@kernel_rule("ConvTranspose")
def _conv_transpose(ctx: LowerCtx, node, ins, outs):
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    shim = Node("ConvGradInput", node.inputs[:2], node.outputs, conv_attrs(x.shape, w.shape, node.attrs), node.name)
    body = _conv_grad_input(ctx, shim, [x, w], outs)
    if bias is None:
        return body
    view = outs[0].view

    def add_bias(idx):
        return view.store(idx, K.cast(K.binop("add", view.load(idx), K.cast(bias([idx[1]]), view.dtype)), view.dtype))

    return K.seq(body, pointwise_nest(view.shape, add_bias, ctx.lanes(view.dtype), ctx.parallel_threshold))
