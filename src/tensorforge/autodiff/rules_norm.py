"""Gradient rules of the normalizations, and of ConvTranspose, CumSum, TopK and Hardmax.

The normalizations share one formula: with ``xhat = (x - mean) * inv`` over the normalized axes and
``g`` the cotangent of ``xhat``, ``dx = inv * (g - mean(g) - xhat * mean(g * xhat))`` (RMS normalization
has no mean term). The statistics are the forward node's own outputs where it has them (layer norm),
recomputed otherwise.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError, node_context
from ..ir.graph import Node, Value
from ..ops.conv_transpose import conv_attrs
from .builder import GraphBuilder
from .core import vjp


def _mean(b: GraphBuilder, x: Value, axes) -> Value:
    return b.op("ReduceMean", [x, b.ints(axes, "axes")], keepdims=1)


def _inv_std(b: GraphBuilder, var: Value, eps: float) -> Value:
    return b.op("Reciprocal", [b.op("Sqrt", [b.add(var, b.scalar(eps, var))])])


def _normalize_vjp(b: GraphBuilder, xhat: Value, inv: Value, g: Value, axes, centered: bool = True) -> Value:
    t = b.mul(xhat, _mean(b, b.mul(g, xhat), axes))
    inner = b.sub(b.sub(g, _mean(b, g, axes)), t) if centered else b.sub(g, t)
    return b.mul(inv, inner)


def _only_first_output(b: GraphBuilder, node: Node, cts) -> None:
    if any(c is not None for c in cts[1:]):
        raise UnsupportedError(f"{node_context(b.model, node.name, node.op)}: no gradient through the mean / "
                               "inverse-deviation outputs")  # fmt: skip


@vjp("LayerNormalization")
def layer_norm_vjp(b: GraphBuilder, node: Node, cts, needs):
    _only_first_output(b, node, cts)
    x, scale, bias = node.input(0), node.input(1), node.input(2)
    axes = list(range(int(node.attr("axis", -1)) % len(x.shape), len(x.shape)))
    if len(node.outputs) == 3:
        mean, inv = node.outputs[1], node.outputs[2]
    else:  # the model does not name the statistics outputs: recompute them
        mean = _mean(b, x, axes)
        xc = b.sub(x, mean)
        inv = _inv_std(b, _mean(b, b.mul(xc, xc), axes), float(node.attr("epsilon", 1e-5)))
    ct = cts[0]
    xhat = b.mul(b.sub(x, mean), inv)
    out = [None, None, None]
    if needs[0]:
        out[0] = _normalize_vjp(b, xhat, inv, b.mul(ct, scale), axes)
    if needs[1]:
        out[1] = b.sum_to(b.mul(ct, xhat), scale.shape)
    if len(needs) > 2 and needs[2]:
        out[2] = b.sum_to(ct, bias.shape)
    return out


@vjp("RMSNormalization")
def rms_norm_vjp(b: GraphBuilder, node: Node, cts, needs):
    x, scale = node.inputs
    axes = list(range(int(node.attr("axis", -1)) % len(x.shape), len(x.shape)))
    ct = cts[0]
    inv = _inv_std(b, _mean(b, b.mul(x, x), axes), float(node.attr("epsilon", 1e-5)))
    xhat = b.mul(x, inv)
    dx = _normalize_vjp(b, xhat, inv, b.mul(ct, scale), axes, centered=False) if needs[0] else None
    return [dx, b.sum_to(b.mul(ct, xhat), scale.shape) if needs[1] else None]


def _group_norm(b: GraphBuilder, node: Node, cts, needs, groups: int):
    """Statistics per (image, group of channels); scale and bias per channel."""
    x, scale, bias = node.inputs
    n, c = x.shape[:2]
    ct = cts[0]
    grouped = (n, groups, int(np.prod(x.shape)) // (n * groups))
    xg = b.reshape(x, grouped)
    mean = _mean(b, xg, [2])
    xc = b.sub(xg, mean)
    inv = _inv_std(b, _mean(b, b.mul(xc, xc), [2]), float(node.attr("epsilon", 1e-5)))
    xhat = b.mul(xc, inv)
    channel = (1, c) + (1,) * (len(x.shape) - 2)
    axes = [0, *range(2, len(x.shape))]
    out = [None, None, None]
    if needs[0]:
        g = b.reshape(b.mul(ct, b.reshape(scale, channel)), grouped)
        out[0] = b.reshape(_normalize_vjp(b, xhat, inv, g, [2]), x.shape)
    if needs[1]:
        out[1] = b.reduce_sum(b.mul(ct, b.reshape(xhat, x.shape)), axes, keepdims=False)
    if needs[2]:
        out[2] = b.reduce_sum(ct, axes, keepdims=False)
    return out


@vjp("GroupNormalization")
def group_norm_vjp(b: GraphBuilder, node: Node, cts, needs):
    return _group_norm(b, node, cts, needs, int(node.attr("num_groups")))


@vjp("InstanceNormalization")
def instance_norm_vjp(b: GraphBuilder, node: Node, cts, needs):
    return _group_norm(b, node, cts, needs, node.inputs[0].shape[1])


@vjp("LpNormalization")
def lp_norm_vjp(b: GraphBuilder, node: Node, cts, needs):
    """y = x / |x|_p (p = 1, 2): dx = (ct - d * sum(ct * y)) / |x|_p with d = y (p = 2) or sign(x) (p = 1)."""
    x, y, ct = node.inputs[0], node.outputs[0], cts[0]
    axis = int(node.attr("axis", -1)) % len(x.shape)
    p = int(node.attr("p", 2))
    norm = b.op("ReduceL2" if p == 2 else "ReduceL1", [x, b.ints([axis], "axes")], keepdims=1)
    d = y if p == 2 else b.op("Sign", [x])
    return [b.div(b.sub(ct, b.mul(d, b.reduce_sum(b.mul(ct, y), [axis]))), norm)]


@vjp("ConvTranspose")
def conv_transpose_vjp(b: GraphBuilder, node: Node, cts, needs):
    """ConvTranspose(X, W) is the input gradient of a convolution; its adjoints are that convolution (for X)
    and its weight gradient, taken with X as the output gradient (for W)."""
    x, w = node.input(0), node.input(1)
    ct = cts[0]
    attrs = conv_attrs(x.shape, w.shape, node.attrs)
    geo = {k: attrs[k] for k in ("strides", "pads", "dilations", "group")}
    dx = b.op("Conv", [ct, w], **geo) if needs[0] else None
    dw = b.op("ConvGradWeight", [x, ct], shape=tuple(w.shape), **geo) if needs[1] else None
    db = b.reduce_sum(ct, [0, *range(2, len(ct.shape))], keepdims=False) if len(needs) > 2 and needs[2] else None
    return [dx, dw, db]


@vjp("CumSum")
def cumsum_vjp(b: GraphBuilder, node: Node, cts, needs):
    """A prefix sum's adjoint is the suffix sum (and the other way round)."""
    attrs = {**node.attrs, "reverse": 1 - int(node.attr("reverse", 0))}
    return [b.op("CumSum", [cts[0], node.inputs[1]], **attrs), None]


@vjp("TopK")
def topk_vjp(b: GraphBuilder, node: Node, cts, needs):
    """The selected values' cotangents go back to where they were taken from."""
    x = node.inputs[0]
    axis = int(node.attr("axis", -1)) % len(x.shape)
    return [b.op("ScatterElements", [b.zeros(x.shape, x), node.outputs[1], cts[0]], axis=axis, reduction="add"),
            None]  # fmt: skip


@vjp("Hardmax")
def piecewise_constant_vjp(b: GraphBuilder, node: Node, cts, needs):
    """Hardmax is piecewise constant: its gradient is zero almost everywhere."""
    return [None]
