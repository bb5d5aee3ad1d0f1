"""Backward ops: what gradient graphs are made of, beyond the forward ops themselves.

* ``ElementwiseGrad(ct, *xs) {op, wrt, ...op's attrs}``: the vector-Jacobian product of any elementwise op
  with respect to its input ``wrt``, derived from the op's own body by ``DualHandler`` — one op covers
  every elementwise op, reference and lowering included.
* ``ConvGradInput(dY, W)`` / ``ConvGradWeight(dY, X)``: the two adjoints of ``Conv`` (lowered as GEMMs,
  ``lower/grad.py``).
* ``MaxPoolGrad(dY, X)`` / ``AveragePoolGrad(dY)``: the adjoints of pooling (the max goes to the first
  maximal element of each window, in window scan order, as in PyTorch).
* ``SliceGrad(dY)``: ``dY`` placed into zeros at the positions a ``Slice`` read.

Each carries, as attributes, what its output shape cannot be recovered from (the forward input's shape).
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import TensorType
from .common import broadcast_shapes, prod
from .dual import Dual, DualHandler
from .elementwise import ANY, BODIES, _replace_infer, elementwise
from .nn import _conv_window, pool_window
from .registry import InferCtx, OpDef, Pattern, register

# -- ElementwiseGrad --------------------------------------------------------------------------------
GRAD_ATTRS = ("op", "wrt")


@elementwise("ElementwiseGrad", (2, -1), types=ANY, same_dtype=False, attrs={"op": "", "wrt": 0}, flops=4)
def elementwise_grad(h, a, ct, *xs):
    """ct * d op(xs) / d xs[wrt], from the op's body run on dual numbers seeded with ct at input wrt."""
    e = BODIES[a["op"]]
    wrt = int(a["wrt"])
    attrs = {**e.attrs, **{k: v for k, v in a.items() if k not in GRAD_ATTRS}}
    dtype = h.dtype(xs[wrt])
    args = [None if x is None else Dual(x, h.cast(ct, dtype) if i == wrt else None) for i, x in enumerate(xs)]
    while args and args[-1] is None:
        args.pop()
    out = e.body(DualHandler(h), attrs, *args)
    if out.t is None:  # piecewise-constant op: zero, shaped like ct
        zero = h.const(0, h.cast(ct, dtype))
        return h.select(h.eq(ct, ct), zero, zero)
    return h.cast(out.t, dtype)


def _elementwise_grad_infer(ctx: InferCtx) -> list[TensorType]:
    op = ctx.attr("op")
    if op not in BODIES:
        ctx.fail(f"op={op!r} is not an elementwise op")
    wrt = int(ctx.attr("wrt", 0))
    n = len(ctx.inputs) - 1
    if not 0 <= wrt < n or not ctx.has(1 + wrt):
        ctx.fail(f"wrt={wrt} does not name one of the op's {n} inputs")
    dt = ctx.dtype(1 + wrt)
    if not dt.is_float or not ctx.dtype(0).is_float:
        ctx.fail(f"input {wrt} of {op} has dtype {dt}; only float inputs have gradients")
    shape = broadcast_shapes(ctx, [ctx.shape(i) for i, v in enumerate(ctx.inputs) if v is not None])
    return [TensorType(dt, shape)]


_replace_infer("ElementwiseGrad", _elementwise_grad_infer)


# -- convolution ------------------------------------------------------------------------------------
def _conv_geometry(attrs, x_shape, w_shape):
    win = _conv_window(None, x_shape, w_shape, attrs)
    group = int(attrs.get("group", 1))
    return win, group, x_shape[1] // group, w_shape[0] // group


def _window_slices(win, kidx):
    sp = len(win.kernel)
    return tuple(slice(kidx[i] * win.dilations[i], kidx[i] * win.dilations[i] + win.strides[i] * (win.out_size[i] - 1)
                       + 1, win.strides[i]) for i in range(sp))  # fmt: skip


def _check_conv_grad(ctx: InferCtx, dy, x_shape, w_shape):
    if len(x_shape) != len(w_shape) or len(x_shape) < 3:
        ctx.fail(f"input shape {list(x_shape)} and weight shape {list(w_shape)} must be (N, C, spatial...)")
    group = int(ctx.attr("group", 1))
    if w_shape[1] * group != x_shape[1] or w_shape[0] % group:
        ctx.fail(f"weight {list(w_shape)} with group={group} does not fit input {list(x_shape)}")
    win = _conv_window(ctx, x_shape, w_shape, ctx.attrs)
    want = (x_shape[0], w_shape[0], *win.out_size)
    if tuple(dy) != want:
        ctx.fail(f"output gradient has shape {list(dy)}, expected {list(want)}")


def _conv_grad_input_infer(ctx: InferCtx):
    x_shape = tuple(int(d) for d in ctx.attr("shape"))
    _check_conv_grad(ctx, ctx.shape(0), x_shape, ctx.shape(1))
    return [TensorType(ctx.dtype(0), x_shape)]


def _conv_grad_weight_infer(ctx: InferCtx):
    w_shape = tuple(int(d) for d in ctx.attr("shape"))
    _check_conv_grad(ctx, ctx.shape(0), ctx.shape(1), w_shape)
    return [TensorType(ctx.dtype(0), w_shape)]


def _conv_grad_input_ref(attrs, dy, w):
    x_shape = tuple(int(d) for d in attrs["shape"])
    win, group, cg, mg = _conv_geometry(attrs, x_shape, w.shape)
    sp = len(win.kernel)
    padded = [x_shape[2 + i] + win.pads_begin[i] + win.pads_end[i] for i in range(sp)]
    dxp = np.zeros((*x_shape[:2], *padded), dtype=np.float64)
    for g in range(group):
        dyg = dy[:, g * mg : (g + 1) * mg]
        for kidx in np.ndindex(*win.kernel):
            wk = w[(slice(g * mg, (g + 1) * mg), slice(None), *kidx)]
            dxp[(slice(None), slice(g * cg, (g + 1) * cg), *_window_slices(win, kidx))] += np.einsum(
                "nm...,mc->nc...", dyg, wk)  # fmt: skip
    crop = tuple(slice(win.pads_begin[i], win.pads_begin[i] + x_shape[2 + i]) for i in range(sp))
    return (dxp[(slice(None), slice(None), *crop)].astype(dy.dtype),)


def _conv_grad_weight_ref(attrs, dy, x):
    w_shape = tuple(int(d) for d in attrs["shape"])
    win, group, cg, mg = _conv_geometry(attrs, x.shape, w_shape)
    sp = len(win.kernel)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(win.pads_begin[i], win.pads_end[i]) for i in range(sp)])
    dw = np.zeros(w_shape, dtype=np.float64)
    for g in range(group):
        dyg = dy[:, g * mg : (g + 1) * mg]
        xg = xp[:, g * cg : (g + 1) * cg]
        for kidx in np.ndindex(*win.kernel):
            patch = xg[(slice(None), slice(None), *_window_slices(win, kidx))]
            dw[(slice(g * mg, (g + 1) * mg), slice(None), *kidx)] = np.einsum(
                "nmp,ncp->mc", dyg.reshape(*dyg.shape[:2], -1), patch.reshape(*patch.shape[:2], -1)
            )
    return (dw.astype(dy.dtype),)


def _conv_grad_flops(node) -> int:
    dy, w_or_x = node.inputs[0].shape, node.inputs[1].shape
    w = w_or_x if node.op == "ConvGradInput" else node.outputs[0].shape
    return 2 * prod(dy) * prod(w[1:])


_CONV_ATTRS = {"auto_pad": "NOTSET", "group": 1}
register(OpDef("ConvGradInput", Pattern.OPAQUE, _conv_grad_input_infer, _conv_grad_input_ref, _CONV_ATTRS, (2, 2),
               flops=_conv_grad_flops, doc="gradient of Conv with respect to its input X"))  # fmt: skip
register(OpDef("ConvGradWeight", Pattern.OPAQUE, _conv_grad_weight_infer, _conv_grad_weight_ref, _CONV_ATTRS, (2, 2),
               flops=_conv_grad_flops, doc="gradient of Conv with respect to its weights W"))  # fmt: skip


# -- pooling ----------------------------------------------------------------------------------------
def window_positions(win, kidx):
    """For one kernel offset: per spatial dim the input positions read by each output, whether they lie in
    the input, and whether they lie in the padded input (for count_include_pad)."""
    pos, valid, inpad = [], [], []
    for d, k in enumerate(kidx):
        p = np.arange(win.out_size[d]) * win.strides[d] - win.pads_begin[d] + k * win.dilations[d]
        pos.append(p)
        valid.append((p >= 0) & (p < win.in_size[d]))
        inpad.append((p >= -win.pads_begin[d]) & (p < win.in_size[d] + win.pads_end[d]))
    return pos, valid, inpad


def _grid(arrays, combine):
    out = None
    for d, a in enumerate(arrays):
        shape = [1] * len(arrays)
        shape[d] = a.size
        a = a.reshape(shape)
        out = a if out is None else combine(out, a)
    return out


def _flat_positions(win, pos):
    strides = np.cumprod((1, *win.in_size[::-1]))[:-1][::-1]
    clipped = [np.clip(p, 0, win.in_size[d] - 1) * strides[d] for d, p in enumerate(pos)]
    return _grid(clipped, np.add)


def _maxpool_grad_ref(attrs, dy, x):
    win = pool_window(None, x.shape, attrs)
    n, c = x.shape[:2]
    xf = x.reshape(n, c, -1)
    best = np.full(dy.shape, -np.inf)
    arg = np.full(dy.shape, -1, dtype=np.int64)
    for kidx in np.ndindex(*win.kernel):
        pos, valid, _ = window_positions(win, kidx)
        flat = _flat_positions(win, pos)
        ok = _grid(valid, np.logical_and)
        v = np.where(ok, xf[:, :, flat], -np.inf)
        take = v > best
        best = np.where(take, v, best)
        arg = np.where(take, flat, arg)
    dx = np.zeros((n, c, prod(win.in_size)), dtype=np.float64)
    ni, ci = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
    sel = arg >= 0
    idx = (np.broadcast_to(ni.reshape(n, c, *([1] * len(win.kernel))), arg.shape)[sel],
           np.broadcast_to(ci.reshape(n, c, *([1] * len(win.kernel))), arg.shape)[sel], arg[sel])  # fmt: skip
    np.add.at(dx, idx, dy[sel])
    return (dx.reshape(x.shape).astype(dy.dtype),)


def _avgpool_grad_ref(attrs, dy):
    shape = tuple(int(d) for d in attrs["shape"])
    win = pool_window(None, shape, attrs)
    include_pad = bool(attrs.get("count_include_pad", 0))
    cnt = np.zeros(win.out_size)
    for kidx in np.ndindex(*win.kernel):
        _, valid, inpad = window_positions(win, kidx)
        cnt += _grid(inpad if include_pad else valid, np.logical_and)
    g = dy / np.maximum(cnt, 1)
    n, c = shape[:2]
    dx = np.zeros((n, c, prod(win.in_size)), dtype=np.float64)
    for kidx in np.ndindex(*win.kernel):
        pos, valid, _ = window_positions(win, kidx)
        ok = _grid(valid, np.logical_and)
        flat = _flat_positions(win, pos)
        np.add.at(dx, (slice(None), slice(None), flat[ok]), g[..., ok])
    return (dx.reshape(shape).astype(dy.dtype),)


def _pool_grad_check(ctx: InferCtx, x_shape):
    win = pool_window(ctx, x_shape, ctx.attrs)
    want = (*x_shape[:2], *win.out_size)
    if tuple(ctx.shape(0)) != want:
        ctx.fail(f"output gradient has shape {list(ctx.shape(0))}, expected {list(want)}")


def _maxpool_grad_infer(ctx: InferCtx):
    _pool_grad_check(ctx, ctx.shape(1))
    return [ctx.type(1)]


def _avgpool_grad_infer(ctx: InferCtx):
    shape = tuple(int(d) for d in ctx.attr("shape"))
    _pool_grad_check(ctx, shape)
    return [TensorType(ctx.dtype(0), shape)]


register(OpDef("MaxPoolGrad", Pattern.OPAQUE, _maxpool_grad_infer, _maxpool_grad_ref,
               {"auto_pad": "NOTSET", "ceil_mode": 0, "storage_order": 0}, (2, 2),
               doc="gradient of MaxPool: dY goes to the first maximal element of each window"))  # fmt: skip
register(OpDef("AveragePoolGrad", Pattern.OPAQUE, _avgpool_grad_infer, _avgpool_grad_ref,
               {"auto_pad": "NOTSET", "ceil_mode": 0, "count_include_pad": 0}, (1, 1),
               doc="gradient of AveragePool: dY / count spread over each window"))  # fmt: skip


# -- slicing ----------------------------------------------------------------------------------------
def slice_grad_params(attrs) -> list[tuple[int, int, int]]:
    """Per axis (start, step, count) of the positions the forward Slice read."""
    return [(int(s), int(st), int(n)) for s, st, n in zip(attrs["starts"], attrs["steps"], attrs["counts"])]


def _slice_grad_infer(ctx: InferCtx):
    shape = tuple(int(d) for d in ctx.attr("shape"))
    params = slice_grad_params(ctx.attrs)
    if len(params) != len(shape) or tuple(ctx.shape(0)) != tuple(n for _, _, n in params):
        ctx.fail(f"output gradient has shape {list(ctx.shape(0))}, expected {[n for _, _, n in params]}")
    return [TensorType(ctx.dtype(0), shape)]


def _slice_grad_ref(attrs, dy):
    shape = tuple(int(d) for d in attrs["shape"])
    dx = np.zeros(shape, dtype=dy.dtype)
    idx = [s + st * np.arange(n) for s, st, n in slice_grad_params(attrs)]
    dx[np.ix_(*idx)] = dy
    return (dx,)


register(OpDef("SliceGrad", Pattern.INJECTIVE, _slice_grad_infer, _slice_grad_ref, {}, (1, 1),
               doc="gradient of Slice: dY scattered into zeros"))  # fmt: skip


__all__ = ["GRAD_ATTRS", "slice_grad_params", "window_positions"]
