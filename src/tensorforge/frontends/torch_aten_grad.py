"""Converters of the ATen ops that training graphs add: the backward ops AOTAutograd leaves after
``core_aten_decompositions`` (``convolution_backward``, ``max_pool2d_with_indices_backward``, pooling and
attention backward) and the training-mode forward ops whose extra results the backward reads (batch norm
with batch statistics and its running-stat updates). Registered by ATen op name in ``torch_export.ATEN``.

Each maps onto IR ops that already have a reference and a lowering: the adjoints of convolution and
pooling (``ConvGradInput``, ``ConvGradWeight``, ``MaxPoolGrad``, ``AveragePoolGrad``, ``ops/grad.py``),
matrix products, reductions and elementwise arithmetic.
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from ..ir.graph import Value
from .torch_aten_nn import _per_dim, _window
from .torch_export import Ctx, aten

I64 = DType.I64


def _spatial(cx: Ctx, i: int = 0) -> int:
    return cx.rank(i) - 2


def _channel_shape(cx: Ctx, rank: int) -> Value:
    return cx.ints([-1] + [1] * (rank - 2))


# -------------------------------------------------------------------------------------------------
# batch norm in training mode
# -------------------------------------------------------------------------------------------------
@aten("_native_batch_norm_legit_functional.default")
def _batch_norm_train(cx: Ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
    """(y, mean, 1/std, new running mean, new running var): batch statistics (the variance biased in y,
    unbiased in the running estimate, as PyTorch does)."""
    if not training:
        cx.unsupported("batch norm with training=False in a training graph")
    dt = cx.out_dtype
    rank = cx.rank(0)
    axes = cx.ints([0, *range(2, rank)])
    shape = cx.meta(0).shape
    count = int(np.prod([int(d) for i, d in enumerate(shape) if i != 1]))
    mean_k = cx.emit("ReduceMean", x, axes, keepdims=1)
    dev = cx.emit("Sub", x, mean_k)
    var_k = cx.emit("ReduceMean", cx.emit("Mul", dev, dev), axes, keepdims=1)
    invstd_k = cx.emit("Reciprocal", cx.emit("Sqrt", cx.emit("Add", var_k, cx.const(eps, dt))))
    y = cx.emit("Mul", dev, invstd_k)
    cshape = _channel_shape(cx, rank)
    if weight is not None:
        y = cx.emit("Mul", y, cx.emit("Reshape", weight, cshape))
    if bias is not None:
        y = cx.emit("Add", y, cx.emit("Reshape", bias, cshape))
    flat = cx.ints([-1])
    mean, var, invstd = (cx.emit("Reshape", v, flat) for v in (mean_k, var_k, invstd_k))
    m = float(momentum)
    unbiased = cx.emit("Mul", var, cx.const(count / max(count - 1, 1), dt))
    new_mean = cx.emit("Add", cx.emit("Mul", running_mean, cx.const(1 - m, dt)), cx.emit("Mul", mean,
                                                                                         cx.const(m, dt)))  # fmt: skip
    new_var = cx.emit("Add", cx.emit("Mul", running_var, cx.const(1 - m, dt)), cx.emit("Mul", unbiased,
                                                                                       cx.const(m, dt)))  # fmt: skip
    return [y, mean, invstd, new_mean, new_var]


# -------------------------------------------------------------------------------------------------
# convolution and pooling backward
# -------------------------------------------------------------------------------------------------
@aten("convolution_backward.default")
def _convolution_backward(cx: Ctx, dy, x, weight, bias_sizes, stride, padding, dilation, transposed,
                          output_padding, groups, output_mask):  # fmt: skip
    """(dx, dw, db) for the outputs ``output_mask`` asks for."""
    if transposed:
        cx.unsupported("the backward of a transposed convolution")
    k = cx.rank(2) - 2
    pads = _per_dim(padding, k)
    attrs = dict(strides=_per_dim(stride, k), pads=pads + pads, dilations=_per_dim(dilation, k), group=int(groups))
    x_shape = tuple(int(d) for d in cx.meta(1).shape)
    w_shape = tuple(int(d) for d in cx.meta(2).shape)
    dx = cx.emit("ConvGradInput", dy, weight, shape=x_shape, **attrs) if output_mask[0] else None
    dw = cx.emit("ConvGradWeight", dy, x, shape=w_shape, **attrs) if output_mask[1] else None
    db = None
    if len(output_mask) > 2 and output_mask[2]:
        db = cx.emit("ReduceSum", dy, cx.ints([0, *range(2, k + 2)]), keepdims=0)
    return [dx, dw, db]


@aten("max_pool2d_with_indices_backward.default", "max_pool3d_with_indices_backward.default")
def _max_pool_backward(cx: Ctx, dy, x, kernel_size, stride, padding, dilation, ceil_mode, indices):
    """The gradient goes to the first maximum of each window, as PyTorch's indices say (the window is
    scanned again rather than the indices read: the same element, without the int64 tensor)."""
    w = _window(cx, kernel_size, stride, padding)
    return cx.emit("MaxPoolGrad", dy, x, dilations=_per_dim(dilation, len(w["kernel_shape"])),
                   ceil_mode=int(bool(ceil_mode)), **w)  # fmt: skip


@aten("avg_pool2d_backward.default", "avg_pool3d_backward.default")
def _avg_pool_backward(cx: Ctx, dy, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override=None):  # fmt: skip
    if divisor_override is not None:
        cx.unsupported(f"avg_pool backward with divisor_override={divisor_override}")
    x_shape = tuple(int(d) for d in cx.meta(1).shape)
    w = _window(cx, kernel_size, stride, padding)
    return cx.emit("AveragePoolGrad", dy, shape=x_shape, ceil_mode=int(bool(ceil_mode)),
                   count_include_pad=int(bool(count_include_pad)), **w)  # fmt: skip


@aten("_adaptive_avg_pool2d_backward.default", "_adaptive_avg_pool3d_backward.default")
def _adaptive_avg_pool_backward(cx: Ctx, dy, x):
    x_shape = [int(d) for d in cx.meta(1).shape]
    out = [int(d) for d in cx.meta(0).shape[2:]]
    spatial = x_shape[2:]
    if any(d % o for d, o in zip(spatial, out)):
        cx.unsupported(f"adaptive average pooling backward from {spatial} to {out} (only sizes that divide evenly)")
    kernel = [d // o for d, o in zip(spatial, out)]
    return cx.emit("AveragePoolGrad", dy, shape=tuple(x_shape), kernel_shape=kernel, strides=kernel,
                   pads=[0] * (2 * len(out)))  # fmt: skip


# -------------------------------------------------------------------------------------------------
# attention backward
# -------------------------------------------------------------------------------------------------
def _t(cx: Ctx, v: Value, rank: int) -> Value:
    return cx.emit("Transpose", v, perm=[*range(rank - 2), rank - 1, rank - 2])


def _probabilities(cx: Ctx, q, k, lse, s: float, attn_mask, is_causal, rank: int) -> Value:
    """softmax(q kᵀ s + mask) from the saved log-sum-exp of each row."""
    dt = cx.out_dtype
    scores = cx.emit("Mul", cx.emit("MatMul", q, _t(cx, k, rank)), cx.const(s, dt))
    if attn_mask is not None:
        if cx.dtype(attn_mask) == DType.BOOL:
            attn_mask = cx.emit("Where", attn_mask, cx.const(0.0, dt), cx.const(-np.inf, dt))
        scores = cx.emit("Add", scores, attn_mask)
    if is_causal:
        lq, lk = int(cx.meta(1).shape[-2]), int(cx.meta(2).shape[-2])
        scores = cx.emit("Add", scores, cx.const(np.where(np.tril(np.ones((lq, lk), bool)), 0.0, -np.inf), dt))
    return cx.emit("Exp", cx.emit("Sub", scores, cx.emit("Unsqueeze", cx.cast(lse, dt), cx.ints([rank - 1]))))


@aten("_scaled_dot_product_flash_attention_for_cpu_backward.default")
def _sdpa_backward(cx: Ctx, dout, q, k, v, out, lse, dropout_p, is_causal, *, attn_mask=None, scale=None):
    """softmax(q kᵀ s + mask) v differentiated: dS = P * (dP - rowsum(dO * O)) * s. Core ATen's
    decomposition of the forward saves the probabilities P in the log-sum-exp's place (same rank as q);
    a real log-sum-exp (one rank less) gives P from the scores again."""
    if dropout_p:
        cx.unsupported(f"attention backward with dropout_p={dropout_p}")
    dt = cx.out_dtype
    rank = cx.rank(1)
    s = float(scale) if scale is not None else 1.0 / np.sqrt(int(cx.meta(1).shape[-1]))
    if cx.rank(5) == rank:
        p = cx.cast(lse, dt)
    else:
        p = _probabilities(cx, q, k, lse, s, attn_mask, is_causal, rank)
    dv = cx.emit("MatMul", _t(cx, p, rank), dout)
    dp = cx.emit("MatMul", dout, _t(cx, v, rank))
    rowsum = cx.emit("ReduceSum", cx.emit("Mul", dout, out), cx.ints([rank - 1]), keepdims=1)
    ds = cx.emit("Mul", cx.emit("Mul", p, cx.emit("Sub", dp, rowsum)), cx.const(s, dt))
    dq = cx.emit("MatMul", ds, k)
    dk = cx.emit("MatMul", _t(cx, ds, rank), q)
    return [dq, dk, dv]
