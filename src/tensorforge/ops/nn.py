"""Neural-network ops: Gemm, MatMul, Conv, pooling, normalization, softmax."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ir.dtype import DType, is_float_dtype
from ..ir.graph import Node, TensorType
from .common import broadcast_shapes, norm_axis, prod
from .registry import Attr, InferCtx, OpDef, Pattern, flag, register


def _static(shape) -> bool:
    return all(isinstance(d, int) for d in shape)


def _need_float(ctx: InferCtx, i: int, what: str = "input") -> DType:
    dt = ctx.dtype(i)
    if not dt.is_float:
        ctx.fail(f"{what} {i} must be float, got {dt}")
    return dt


# ---------------------------------------------------------------------------------------------------
# Gemm / MatMul
# ---------------------------------------------------------------------------------------------------
def _gemm_infer(ctx: InferCtx):
    a, b = ctx.shape(0), ctx.shape(1)
    if len(a) != 2 or len(b) != 2:
        ctx.fail(f"A and B must be 2-D, got A{list(a)} and B{list(b)}")
    dt = ctx.dtype(0)
    if ctx.dtype(1) != dt:
        ctx.fail(f"A is {dt} but B is {ctx.dtype(1)}")
    ta, tb = ctx.attr("transA", 0), ctx.attr("transB", 0)
    m, k = (a[1], a[0]) if ta else (a[0], a[1])
    k2, n = (b[1], b[0]) if tb else (b[0], b[1])
    if isinstance(k, int) and isinstance(k2, int) and k != k2:
        ctx.fail(
            f"inner dimensions differ: A{list(a)}{'ᵀ' if ta else ''} has K={k}, "
            f"B{list(b)}{'ᵀ' if tb else ''} has K={k2}"
        )
    if ctx.has(2):
        c = ctx.shape(2)
        try:
            out = broadcast_shapes(ctx, [c, (m, n)])
        except Exception:
            ctx.fail(f"C{list(c)} does not broadcast to the output [{m}, {n}]")
        if out != (m, n):
            ctx.fail(f"C{list(c)} does not broadcast to the output [{m}, {n}]")
        if ctx.dtype(2) != dt:
            ctx.fail(f"C is {ctx.dtype(2)} but A is {dt}")
    return [TensorType(dt, (m, n))]


def _gemm_ref(attrs, a, b, c=None):
    if attrs.get("transA", 0):
        a = a.T
    if attrs.get("transB", 0):
        b = b.T
    y = attrs.get("alpha", 1.0) * (a @ b)
    if c is not None:
        y = y + attrs.get("beta", 1.0) * c
    return (y.astype(a.dtype),)


def _gemm_flops(node: Node) -> int:
    m, n = node.outputs[0].shape
    a = node.inputs[0].shape
    k = a[0] if node.attrs.get("transA", 0) else a[1]
    return 2 * m * n * k if _static((m, n, k)) else 0


register(OpDef("Gemm", Pattern.OUT_FUSABLE, _gemm_infer, _gemm_ref,
               {"alpha": 1.0, "beta": 1.0, "transA": flag(), "transB": flag()}, (2, 3), flops=_gemm_flops))  # fmt: skip


def matmul_shape(ctx: InferCtx, a, b):
    if len(a) == 0 or len(b) == 0:
        ctx.fail("MatMul inputs must be at least 1-D")
    a2 = (1, *a) if len(a) == 1 else tuple(a)
    b2 = (*b, 1) if len(b) == 1 else tuple(b)
    if isinstance(a2[-1], int) and isinstance(b2[-2], int) and a2[-1] != b2[-2]:
        ctx.fail(f"inner dimensions differ: A{list(a)} has K={a2[-1]}, B{list(b)} has K={b2[-2]}")
    batch = broadcast_shapes(ctx, [a2[:-2], b2[:-2]])
    out = [*batch, a2[-2], b2[-1]]
    if len(b) == 1:
        out.pop(-1)
    if len(a) == 1:
        out.pop(-2 if len(b) != 1 else -1)
    return tuple(out)


def _matmul_infer(ctx: InferCtx):
    dt = ctx.dtype(0)
    if ctx.dtype(1) != dt:
        ctx.fail(f"A is {dt} but B is {ctx.dtype(1)}")
    if dt is DType.BOOL:
        ctx.fail("MatMul of bool tensors is not defined")
    return [TensorType(dt, matmul_shape(ctx, ctx.shape(0), ctx.shape(1)))]


def _matmul_flops(node: Node) -> int:
    out = node.outputs[0].shape
    k = node.inputs[0].shape[-1]
    return 2 * prod(out) * k if _static((*out, k)) else 0


register(OpDef("MatMul", Pattern.OUT_FUSABLE, _matmul_infer,
               lambda attrs, a, b: (np.matmul(a, b).astype(a.dtype),), {}, (2, 2), flops=_matmul_flops))  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Convolution and pooling geometry
# ---------------------------------------------------------------------------------------------------
# The attributes every sliding-window op shares (Conv, ConvTranspose, the poolings): declared once.
WINDOW_ATTRS = {
    "auto_pad": Attr("NOTSET", choices=("NOTSET", "", "SAME_UPPER", "SAME_LOWER", "VALID")),
    "kernel_shape": Attr(kind="ints", min=1),
    "strides": Attr(kind="ints", min=1),
    "dilations": Attr(kind="ints", min=1),
    "pads": Attr(kind="ints", min=0),
}


@dataclass(frozen=True)
class Window:
    """Resolved sliding-window geometry: per spatial dim kernel, stride, dilation, pads, output size."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    in_size: tuple[int, ...]
    out_size: tuple[int, ...]


def resolve_window(ctx: InferCtx | None, in_size, kernel, attrs, ceil_mode: bool = False) -> Window:
    sp = len(kernel)
    # absent means the default; given, even as an empty list, it must have one entry per spatial dim
    strides = tuple(int(s) for s in (attrs.get("strides") if attrs.get("strides") is not None else [1] * sp))
    dil = tuple(int(d) for d in (attrs.get("dilations") if attrs.get("dilations") is not None else [1] * sp))
    pads = [int(p) for p in (attrs.get("pads") if attrs.get("pads") is not None else [0] * (2 * sp))]
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()

    def fail(msg):
        if ctx is None:
            raise ValueError(msg)
        ctx.fail(msg)

    if len(strides) != sp or len(dil) != sp or len(pads) != 2 * sp:
        fail(f"strides/dilations/pads do not match {sp} spatial dims "
             f"(strides={list(strides)}, dilations={list(dil)}, pads={pads})")  # fmt: skip
    if any(s <= 0 for s in strides) or any(d <= 0 for d in dil):
        fail(f"strides and dilations must be positive, got {list(strides)} and {list(dil)}")
    if any(k <= 0 for k in kernel):
        fail(f"kernel_shape must be positive, got {list(kernel)}")
    eff = [(kernel[i] - 1) * dil[i] + 1 for i in range(sp)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [math.ceil(in_size[i] / strides[i]) for i in range(sp)]
        for i in range(sp):
            total = max(0, (out[i] - 1) * strides[i] + eff[i] - in_size[i])
            small, big = total // 2, total - total // 2
            pads[i], pads[i + sp] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    elif auto_pad == "VALID":
        pads = [0] * (2 * sp)
    elif auto_pad not in ("NOTSET", ""):
        fail(f"auto_pad={auto_pad!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    out = []
    for i in range(sp):
        span = in_size[i] + pads[i] + pads[i + sp] - eff[i]
        if span < 0:
            fail(f"window {eff[i]} (kernel {kernel[i]}, dilation {dil[i]}) is larger than the padded "
                 f"input {in_size[i] + pads[i] + pads[i + sp]} in spatial dim {i}")  # fmt: skip
        if ceil_mode:
            o = -(-span // strides[i]) + 1
            if (o - 1) * strides[i] >= in_size[i] + pads[i]:  # last window would start in the padding
                o -= 1
        else:
            o = span // strides[i] + 1
        out.append(o)
    return Window(tuple(kernel), strides, dil, tuple(pads[:sp]), tuple(pads[sp:]), tuple(in_size), tuple(out))


def _conv_window(ctx: InferCtx | None, x_shape, w_shape, attrs) -> Window:
    ks = attrs.get("kernel_shape") or w_shape[2:]
    return resolve_window(ctx, tuple(x_shape[2:]), tuple(int(k) for k in ks), attrs)


def _conv_infer(ctx: InferCtx):
    x, w = ctx.shape(0), ctx.shape(1)
    dt = _need_float(ctx, 0)
    if ctx.dtype(1) != dt:
        ctx.fail(f"X is {dt} but W is {ctx.dtype(1)}")
    if len(x) < 3 or len(w) != len(x):
        ctx.fail(f"X{list(x)} and W{list(w)} must both be (N, C, spatial...) of the same rank")
    if not _static(x[1:]) or not _static(w):
        ctx.fail(f"Conv needs static channel and spatial sizes, got X{list(x)} W{list(w)}")
    group = int(ctx.attr("group", 1))
    c, m = x[1], w[0]
    if c % group or m % group:
        ctx.fail(f"group={group} does not divide input channels {c} and output channels {m}")
    if w[1] * group != c:
        ctx.fail(f"W{list(w)} expects {w[1] * group} input channels (W.shape[1] x group={group}), X{list(x)} has {c}")
    if ctx.has(2) and tuple(ctx.shape(2)) != (m,):
        ctx.fail(f"bias B{list(ctx.shape(2))} must have shape [{m}]")
    ks = ctx.attr("kernel_shape")
    if ks and tuple(ks) != tuple(w[2:]):
        ctx.fail(f"kernel_shape={list(ks)} does not match W{list(w)}")
    win = _conv_window(ctx, x, w, ctx.attrs)
    return [TensorType(dt, (x[0], m, *win.out_size))]


def conv_accumulate(attrs, x, w, acc_dtype=np.float64) -> np.ndarray:
    """The convolution of ``x`` by ``w`` (no bias) accumulated in ``acc_dtype`` (float64, or int64 for the
    integer convolution's exact reference), zero padding."""
    win = _conv_window(None, x.shape, w.shape, attrs)
    group = int(attrs.get("group", 1))
    sp = len(win.kernel)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(win.pads_begin[i], win.pads_end[i]) for i in range(sp)])
    n, c = x.shape[:2]
    m = w.shape[0]
    y = np.zeros((n, m, *win.out_size), dtype=acc_dtype)
    cg, mg = c // group, m // group
    for g in range(group):
        xg = xp[:, g * cg : (g + 1) * cg]
        for kidx in np.ndindex(*win.kernel):
            sl = tuple(slice(kidx[i] * win.dilations[i],
                             kidx[i] * win.dilations[i] + win.strides[i] * (win.out_size[i] - 1) + 1,
                             win.strides[i]) for i in range(sp))  # fmt: skip
            patch = xg[(slice(None), slice(None), *sl)]
            wk = w[(slice(g * mg, (g + 1) * mg), slice(None), *kidx)]
            y[:, g * mg : (g + 1) * mg] += np.einsum("nc...,mc->nm...", patch, wk)
    return y


def conv_reference(attrs, x, w, b=None):
    y = conv_accumulate(attrs, x, w)
    if b is not None:
        y += b.reshape((1, w.shape[0]) + (1,) * (x.ndim - 2))
    return (y.astype(x.dtype),)


def _conv_flops(node: Node) -> int:
    out = node.outputs[0].shape
    w = node.inputs[1].shape
    return 2 * prod(out) * prod(w[1:]) if _static(out) and _static(w) else 0


register(OpDef("Conv", Pattern.OUT_FUSABLE, _conv_infer, conv_reference,
               {**WINDOW_ATTRS, "group": Attr(1, min=1)}, (2, 3), flops=_conv_flops))  # fmt: skip


def pool_window(ctx: InferCtx | None, x_shape, attrs) -> Window:
    """A pooling window. Explicit pads must be smaller than the kernel, as ONNX Runtime requires: a window
    lying wholly in the padding has no input (a max of nothing is -inf, an average 0/0)."""

    def fail(msg):
        if ctx is None:
            raise ValueError(msg)
        ctx.fail(msg)

    ks = attrs.get("kernel_shape")
    if not ks:
        fail("kernel_shape is required")
    kernel = tuple(int(k) for k in ks)
    pads = [int(p) for p in attrs.get("pads") or ()]
    if pads and attrs.get("auto_pad", "NOTSET") in ("NOTSET", b"NOTSET", ""):  # (pads >= 0: the op's Attr)
        sp = len(kernel)
        big = [i for i, p in enumerate(pads) if i < 2 * sp and p >= kernel[i % sp]]
        if big:
            i = big[0]
            fail(f"pads {pads} must be smaller than kernel_shape {list(kernel)}: pad {pads[i]} at the "
                 f"{'start' if i < sp else 'end'} of spatial dim {i % sp} >= kernel {kernel[i % sp]}")  # fmt: skip
    return resolve_window(ctx, tuple(x_shape[2:]), kernel, attrs, bool(attrs.get("ceil_mode", 0)))


def _pool_infer(ctx: InferCtx):
    x = ctx.shape(0)
    dt = ctx.dtype(0)
    if ctx.node.op == "AveragePool" and not dt.is_float:
        ctx.fail(f"input must be float, got {dt}")
    if len(x) < 3 or not _static(x[2:]):
        ctx.fail(f"input must be (N, C, spatial...) with static spatial sizes, got {list(x)}")
    ks = ctx.attr("kernel_shape")
    if not ks or len(ks) != len(x) - 2:
        ctx.fail(f"kernel_shape={ks} must give one size per spatial dim of X{list(x)}")
    win = pool_window(ctx, x, ctx.attrs)
    out = TensorType(dt, (x[0], x[1], *win.out_size))
    return [out, TensorType(DType.I64, out.shape)]


def _pool_patches(x, win: Window, pad_value):
    sp = len(win.kernel)
    # pad generously so that ceil_mode windows that run past the end read pad_value
    extra = [max(0, (win.out_size[i] - 1) * win.strides[i] + (win.kernel[i] - 1) * win.dilations[i] + 1
                 - (x.shape[2 + i] + win.pads_begin[i] + win.pads_end[i])) for i in range(sp)]  # fmt: skip
    xp = np.pad(x, [(0, 0), (0, 0)] + [(win.pads_begin[i], win.pads_end[i] + extra[i]) for i in range(sp)],
                constant_values=pad_value)  # fmt: skip
    valid = np.pad(np.ones(x.shape[2:], bool), [(win.pads_begin[i], win.pads_end[i] + extra[i]) for i in range(sp)])
    inpad = np.pad(np.ones(x.shape[2:], bool), [(win.pads_begin[i], win.pads_end[i]) for i in range(sp)],
                   constant_values=True)  # fmt: skip
    inpad = np.pad(inpad, [(0, extra[i]) for i in range(sp)], constant_values=False)
    for kidx in np.ndindex(*win.kernel):
        sl = tuple(slice(kidx[i] * win.dilations[i],
                         kidx[i] * win.dilations[i] + win.strides[i] * (win.out_size[i] - 1) + 1,
                         win.strides[i]) for i in range(sp))  # fmt: skip
        yield kidx, xp[(slice(None), slice(None), *sl)], valid[sl], inpad[sl]


def _maxpool_ref(attrs, x):
    win = pool_window(None, x.shape, attrs)
    lowest = -np.inf if is_float_dtype(x.dtype) else np.iinfo(x.dtype).min
    y = np.full((*x.shape[:2], *win.out_size), lowest, dtype=x.dtype)
    for _, patch, _, _ in _pool_patches(x, win, lowest):
        y = np.maximum(y, patch)
    return (y, np.zeros(y.shape, np.int64))


def _avgpool_ref(attrs, x):
    win = pool_window(None, x.shape, attrs)
    include_pad = bool(attrs.get("count_include_pad", 0))
    s = np.zeros((*x.shape[:2], *win.out_size), dtype=np.float64)
    cnt = np.zeros(win.out_size, dtype=np.float64)
    for _, patch, valid, inpad in _pool_patches(x, win, 0):
        s += patch
        cnt += inpad if include_pad else valid
    return ((s / np.maximum(cnt, 1)).astype(x.dtype),)


register(OpDef("MaxPool", Pattern.OPAQUE, _pool_infer, _maxpool_ref,
               {**WINDOW_ATTRS, "ceil_mode": flag(), "storage_order": flag()}, (1, 1)))  # fmt: skip
register(OpDef("AveragePool", Pattern.OPAQUE, _pool_infer, _avgpool_ref,
               {**WINDOW_ATTRS, "ceil_mode": flag(), "count_include_pad": flag()}, (1, 1)))  # fmt: skip


def _global_pool_infer(ctx: InferCtx):
    x = ctx.shape(0)
    if len(x) < 3:
        ctx.fail(f"input must be (N, C, spatial...), got {list(x)}")
    if ctx.node.op == "GlobalAveragePool":
        _need_float(ctx, 0)
    return [TensorType(ctx.dtype(0), (x[0], x[1]) + (1,) * (len(x) - 2))]


register(OpDef("GlobalAveragePool", Pattern.REDUCTION, _global_pool_infer,
               lambda attrs, x: (x.mean(axis=tuple(range(2, x.ndim)), keepdims=True).astype(x.dtype),)))  # fmt: skip
register(OpDef("GlobalMaxPool", Pattern.REDUCTION, _global_pool_infer,
               lambda attrs, x: (x.max(axis=tuple(range(2, x.ndim)), keepdims=True),)))  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Normalization and softmax
# ---------------------------------------------------------------------------------------------------
def _bn_infer(ctx: InferCtx):
    x = ctx.shape(0)
    dt = _need_float(ctx, 0)
    if len(x) < 2:
        ctx.fail(f"input must be at least (N, C), got {list(x)}")
    if ctx.attr("training_mode", 0):
        ctx.unsupported("training_mode=1 (batch statistics) is not supported in inference graphs")
    c = x[1]
    for i, nm in zip(range(1, 5), ("scale", "B", "mean", "var")):
        s = ctx.shape(i)
        if tuple(s) != (c,):
            ctx.fail(f"{nm} has shape {list(s)}, expected [{c}] (the channel dim of X{list(x)})")
    return [TensorType(dt, x)]


def _bn_ref(attrs, x, scale, b, mean, var):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    eps = attrs.get("epsilon", 1e-5)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * scale.reshape(shape) + b.reshape(shape)
    return (y.astype(x.dtype),)


register(OpDef("BatchNormalization", Pattern.BROADCAST, _bn_infer, _bn_ref,
               {"epsilon": 1e-5, "momentum": 0.9, "training_mode": flag()}, (5, 5)))  # fmt: skip


def _softmax_infer(ctx: InferCtx):
    dt = _need_float(ctx, 0)
    norm_axis(ctx, int(ctx.attr("axis", -1)), ctx.type(0).rank)
    return [TensorType(dt, ctx.shape(0))]


def _softmax_ref(attrs, x):
    ax = int(attrs.get("axis", -1))
    m = x.max(axis=ax, keepdims=True)
    e = np.exp(x - m)
    return ((e / e.sum(axis=ax, keepdims=True)).astype(x.dtype),)


def _logsoftmax_ref(attrs, x):
    ax = int(attrs.get("axis", -1))
    m = x.max(axis=ax, keepdims=True)
    s = np.log(np.exp(x - m).sum(axis=ax, keepdims=True))
    return ((x - m - s).astype(x.dtype),)


def _softmax_flops(node: Node) -> int:
    s = node.outputs[0].shape
    return 5 * prod(s) if _static(s) else 0


register(OpDef("Softmax", Pattern.REDUCTION, _softmax_infer, _softmax_ref, {"axis": -1}, flops=_softmax_flops))
register(OpDef("LogSoftmax", Pattern.REDUCTION, _softmax_infer, _logsoftmax_ref, {"axis": -1},
               flops=_softmax_flops))  # fmt: skip
