"""Gradient rules of the neural-network ops: GEMM/MatMul, convolution, pooling, softmax, batch norm.

Matrix products differentiate into matrix products with transposed operands (``Gemm``'s trans flags,
or ``Transpose`` views, which cost nothing); convolution into its two adjoints (``ConvGradInput``,
``ConvGradWeight``); pooling into ``MaxPoolGrad`` / ``AveragePoolGrad``.
"""

from __future__ import annotations

from ..errors import UnsupportedError, node_context
from ..ir.graph import Node, Value
from ..ops.nn import _conv_window, pool_window
from ..ops.registry import InferCtx
from .builder import GraphBuilder
from .core import vjp
from .rules_reduce import extreme_vjp


def _gemm(b: GraphBuilder, a: Value, w: Value, ta: int = 0, tb: int = 0, alpha: float = 1.0) -> Value:
    attrs = {"transA": int(ta), "transB": int(tb), "alpha": float(alpha)}
    defaults = {"transA": 0, "transB": 0, "alpha": 1.0}
    return b.op("Gemm", [a, w], **{k: v for k, v in attrs.items() if v != defaults[k]})


@vjp("Gemm")
def gemm_vjp(b: GraphBuilder, node: Node, cts, needs):
    """Y = alpha * op(A) @ op(B) + beta * C."""
    a, w, c = node.input(0), node.input(1), node.input(2)
    ct = cts[0]
    ta, tb = int(node.attr("transA", 0)), int(node.attr("transB", 0))
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    da = dw = dc = None
    if needs[0]:  # d op(A) = ct @ op(B)ᵀ
        da = _gemm(b, ct, w, 0, 1 - tb, alpha) if not ta else _gemm(b, w, ct, tb, 1, alpha)
    if needs[1]:  # d op(B) = op(A)ᵀ @ ct
        dw = _gemm(b, a, ct, 1 - ta, 0, alpha) if not tb else _gemm(b, ct, a, 1, ta, alpha)
    if len(needs) > 2 and needs[2]:
        dc = b.scale(b.sum_to(ct, c.shape), beta)
    return [da, dw, dc]


def _swap(b: GraphBuilder, x: Value) -> Value:
    r = len(x.shape)
    return b.transpose(x, [*range(r - 2), r - 1, r - 2])


@vjp("MatMul")
def matmul_vjp(b: GraphBuilder, node: Node, cts, needs):
    """numpy matmul: 1-D operands are promoted to matrices, batch dims broadcast."""
    a, w = node.inputs
    ct = cts[0]
    a2 = b.reshape(a, (1, a.shape[0])) if len(a.shape) == 1 else a
    w2 = b.reshape(w, (w.shape[0], 1)) if len(w.shape) == 1 else w
    m, k, n = a2.shape[-2], a2.shape[-1], w2.shape[-1]
    da = dw = None
    if len(w2.shape) == 2:  # x @ W with any leading dims: fold them into M (one GEMM per operand)
        ct2 = b.reshape(ct, (_numel(a2.shape) // k, n))
        a_flat = b.reshape(a2, (_numel(a2.shape) // k, k))
        if needs[0]:
            da = b.reshape(_gemm(b, ct2, w2, 0, 1), a.shape)
        if needs[1]:
            dw = b.reshape(_gemm(b, a_flat, ct2, 1, 0), w.shape)
        return [da, dw]
    batch = tuple(ct.shape[: len(ct.shape) - (2 if len(a.shape) > 1 and len(w.shape) > 1 else 1)])
    ct2 = b.reshape(ct, (*batch, m, n))
    if needs[0]:
        da = b.reshape(b.sum_to(b.op("MatMul", [ct2, _swap(b, w2)]), a2.shape), a.shape)
    if needs[1]:
        dw = b.reshape(b.sum_to(b.op("MatMul", [_swap(b, a2), ct2]), w2.shape), w.shape)
    return [da, dw]


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _window_attrs(win) -> dict:
    return {"strides": win.strides, "pads": (*win.pads_begin, *win.pads_end), "dilations": win.dilations}


@vjp("Conv")
def conv_vjp(b: GraphBuilder, node: Node, cts, needs):
    x, w = node.input(0), node.input(1)
    ct = cts[0]
    win = _conv_window(InferCtx(node, b.model), x.shape, w.shape, node.attrs)
    attrs = {**_window_attrs(win), "group": int(node.attr("group", 1))}
    dx = b.op("ConvGradInput", [ct, w], shape=tuple(x.shape), **attrs) if needs[0] else None
    dw = b.op("ConvGradWeight", [ct, x], shape=tuple(w.shape), **attrs) if needs[1] else None
    db = None
    if len(needs) > 2 and needs[2]:
        db = b.reduce_sum(ct, [0, *range(2, len(ct.shape))], keepdims=False)
    return [dx, dw, db]


def _pool_attrs(node: Node, x: Value, model: str) -> dict:
    win = pool_window(InferCtx(node, model), x.shape, node.attrs)
    return {"kernel_shape": win.kernel, **_window_attrs(win), "ceil_mode": int(node.attr("ceil_mode", 0))}


@vjp("MaxPool")
def maxpool_vjp(b: GraphBuilder, node: Node, cts, needs):
    x = node.inputs[0]
    return [b.op("MaxPoolGrad", [cts[0], x], **_pool_attrs(node, x, b.model))]


@vjp("AveragePool")
def avgpool_vjp(b: GraphBuilder, node: Node, cts, needs):
    x = node.inputs[0]
    attrs = {**_pool_attrs(node, x, b.model), "count_include_pad": int(node.attr("count_include_pad", 0))}
    return [b.op("AveragePoolGrad", [cts[0]], shape=tuple(x.shape), **attrs)]


@vjp("GlobalAveragePool")
def global_avgpool_vjp(b: GraphBuilder, node: Node, cts, needs):
    x = node.inputs[0]
    return [b.expand(b.scale(cts[0], 1.0 / _numel(x.shape[2:])), x.shape)]


@vjp("GlobalMaxPool")
def global_maxpool_vjp(b: GraphBuilder, node: Node, cts, needs):
    x = node.inputs[0]
    return [extreme_vjp(b, x, node.outputs[0], cts[0], list(range(2, len(x.shape))))]


@vjp("Softmax")
def softmax_vjp(b: GraphBuilder, node: Node, cts, needs):
    """dx = y * (ct - sum(ct * y))"""
    y, ct = node.outputs[0], cts[0]
    axis = int(node.attr("axis", -1)) % len(y.shape)
    return [b.mul(y, b.sub(ct, b.reduce_sum(b.mul(ct, y), [axis])))]


@vjp("LogSoftmax")
def logsoftmax_vjp(b: GraphBuilder, node: Node, cts, needs):
    """dx = ct - exp(y) * sum(ct)"""
    y, ct = node.outputs[0], cts[0]
    axis = int(node.attr("axis", -1)) % len(y.shape)
    return [b.sub(ct, b.mul(b.op("Exp", [y]), b.reduce_sum(ct, [axis])))]


@vjp("BatchNormalization")
def batchnorm_vjp(b: GraphBuilder, node: Node, cts, needs):
    """Inference form y = (x - mean) * scale / sqrt(var + eps) + B (statistics given as inputs; a training
    step rewrites batch norm to batch statistics first, see ``train_graph.py``)."""
    x, scale, bias, mean, var = node.inputs
    ct = cts[0]
    eps = float(node.attr("epsilon", 1e-5))
    c = x.shape[1]
    bshape = (1, c) + (1,) * (len(x.shape) - 2)
    axes = [0, *range(2, len(x.shape))]
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.add(var, b.scalar(eps, var))])])  # [C]
    out = [None] * 5
    if needs[0]:
        out[0] = b.mul(ct, b.reshape(b.mul(scale, inv), bshape))
    xc = b.sub(x, b.reshape(mean, bshape)) if (needs[1] or needs[4]) else None
    if needs[1]:
        out[1] = b.mul(b.reduce_sum(b.mul(ct, xc), axes, keepdims=False), inv)
    if needs[2] or needs[3]:
        s = b.reduce_sum(ct, axes, keepdims=False)
        out[2] = s if needs[2] else None
        if needs[3]:
            out[3] = b.neg(b.mul(s, b.mul(scale, inv)))
    if needs[4]:  # d/dvar of (var + eps)^-1/2 = -1/2 inv^3
        s = b.reduce_sum(b.mul(ct, xc), axes, keepdims=False)
        out[4] = b.mul(b.mul(s, scale), b.scale(b.mul(inv, b.mul(inv, inv)), -0.5))
    return out


@vjp("Einsum")
def einsum_vjp(b: GraphBuilder, node: Node, cts, needs):
    """The adjoint of an einsum is an einsum: operand i's cotangent contracts the output cotangent with the
    other operands onto i's labels. Labels only operand i has (summed only there) are broadcast back, and
    axes it broadcast are summed back. Repeated labels within one operand (diagonals) have no rule."""
    from ..ops.einsum import parse_einsum

    c = parse_einsum(node.attr("equation"), [v.shape for v in node.inputs])
    out: list[Value | None] = []
    for i, (x, labels, need) in enumerate(zip(node.inputs, c.inputs, needs)):
        if not need:
            out.append(None)
            continue
        if len(set(labels)) != len(labels):
            raise UnsupportedError(f"{node_context(b.model, node.name, node.op)}: no gradient for the repeated "
                                   f"label of operand {i} in {node.attr('equation')!r}")  # fmt: skip
        others = [(v, ls) for j, (v, ls) in enumerate(zip(node.inputs, c.inputs)) if j != i]
        present = [a for a in labels if a in c.output or any(a in ls for _, ls in others)]
        terms = ",".join(["".join(c.output), *("".join(ls) for _, ls in others)])
        d = b.op("Einsum", [cts[0], *(v for v, _ in others)], equation=f"{terms}->{''.join(present)}")
        d = b.reshape(d, tuple(c.sizes[a] if a in present else 1 for a in labels))
        d = b.expand(d, tuple(c.sizes[a] for a in labels))
        out.append(b.sum_to(d, x.shape))
    return out
