"""Pooling relatives: MaxPool with its Indices output (``MaxPoolWithIndices``), MaxUnpool and Col2Im.

Indices are flat positions in the input tensor (batch and channel included), row-major over the spatial
dims (``storage_order`` 0) or column-major (1). MaxUnpool scatters values back to such positions;
Col2Im adds the columns of an im2col matrix back into an image (the adjoint of im2col).
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType, is_float_dtype
from ..ir.graph import TensorType
from .nn import WINDOW_ATTRS, _pool_infer, pool_window, resolve_window
from .registry import InferCtx, OpDef, Pattern, flag, register


def flat_position(n: int, c: int, channels: int, pos, size, storage_order: int) -> int:
    """Index of X[n, c, pos...] in X flattened (the spatial part column-major when storage_order=1)."""
    plane = 0
    dims = list(zip(pos, size))
    for p, s in reversed(dims) if storage_order else dims:
        plane = plane * s + p
    return (n * channels + c) * int(np.prod(size)) + plane


def _maxpool_idx_ref(attrs, x):
    win = pool_window(None, x.shape, attrs)
    n, c = x.shape[:2]
    so = int(attrs.get("storage_order", 0))
    y = np.full((n, c, *win.out_size), -np.inf if is_float_dtype(x.dtype) else np.iinfo(x.dtype).min, x.dtype)
    ind = np.zeros(y.shape, np.int64)
    for o in np.ndindex(*win.out_size):
        for k in np.ndindex(*win.kernel):
            pos = [o[d] * win.strides[d] - win.pads_begin[d] + k[d] * win.dilations[d] for d in range(len(o))]
            if any(p < 0 or p >= s for p, s in zip(pos, win.in_size)):
                continue
            v = x[(slice(None), slice(None), *pos)]
            better = v > y[(slice(None), slice(None), *o)]
            y[(slice(None), slice(None), *o)] = np.where(better, v, y[(slice(None), slice(None), *o)])
            for b in range(n):
                for ch in range(c):
                    if better[b, ch]:
                        ind[(b, ch, *o)] = flat_position(b, ch, c, pos, win.in_size, so)
    return y, ind


register(OpDef("MaxPoolWithIndices", Pattern.OPAQUE, _pool_infer, _maxpool_idx_ref,
               {**WINDOW_ATTRS, "ceil_mode": flag(), "storage_order": flag()}, (1, 1)))  # fmt: skip


# -- MaxUnpool -------------------------------------------------------------------------------------
def unpool_shape(x_shape, attrs) -> tuple[int, ...]:
    k = [int(v) for v in attrs["kernel_shape"]]
    sp = len(k)
    strides = [int(v) for v in (attrs.get("strides") or [1] * sp)]
    pads = [int(v) for v in (attrs.get("pads") or [0] * (2 * sp))]
    return (x_shape[0], x_shape[1], *((x_shape[2 + d] - 1) * strides[d] - pads[d] - pads[sp + d] + k[d]
                                       for d in range(sp)))  # fmt: skip


def _unpool_infer(ctx: InferCtx):
    x, ind = ctx.shape(0), ctx.shape(1)
    if tuple(x) != tuple(ind) or ctx.dtype(1) is not DType.I64:
        ctx.fail(f"indices must be int64 with the shape of X {list(x)}, got {ctx.type(1)}")
    shape = unpool_shape(x, ctx.attrs)
    if ctx.has(2):
        out = tuple(int(v) for v in ctx.require_const(2, "output_shape"))
        if len(out) != len(shape) or any(a < b for a, b in zip(out, shape)):
            ctx.fail(f"output_shape {list(out)} is smaller than the unpooled shape {list(shape)}")
        shape = out
    return [TensorType(ctx.dtype(0), tuple(shape))]


def _unpool_ref(attrs, x, ind, out_shape=None):
    inferred = unpool_shape(x.shape, attrs)
    y = np.zeros(int(np.prod(inferred)), x.dtype)
    flat = ind.reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= y.size):
        raise IndexError(f"MaxUnpool index out of range [0, {y.size - 1}]")
    y[flat] = x.reshape(-1)
    y = y.reshape(inferred)
    if out_shape is None:
        return (y,)
    res = np.zeros(tuple(int(v) for v in out_shape), x.dtype)
    res[tuple(slice(0, d) for d in inferred)] = y
    return (res,)


register(OpDef("MaxUnpool", Pattern.OPAQUE, _unpool_infer, _unpool_ref, {}, (2, 3)))


# -- Col2Im ----------------------------------------------------------------------------------------
def col2im_window(image, block, attrs):
    return resolve_window(None, tuple(int(v) for v in image), tuple(int(v) for v in block), attrs)


def _col2im_infer(ctx: InferCtx):
    x = ctx.shape(0)
    image = [int(v) for v in ctx.require_const(1, "image_shape")]
    block = [int(v) for v in ctx.require_const(2, "block_shape")]
    if len(x) != 3 or len(image) != len(block):
        ctx.fail(f"input {list(x)} must be (N, C*prod(block), L) and image/block shapes of one length")
    k = int(np.prod(block))
    win = col2im_window(image, block, ctx.attrs)
    if x[1] % k or x[2] != int(np.prod(win.out_size)):
        ctx.fail(f"input {list(x)} does not match blocks {block} over image {image} ({int(np.prod(win.out_size))} "
                 "blocks)")  # fmt: skip
    return [TensorType(ctx.dtype(0), (x[0], x[1] // k, *image))]


def _col2im_ref(attrs, x, image, block):
    win = col2im_window(image, block, attrs)
    n, ck, _ = x.shape
    k = int(np.prod(win.kernel))
    out = np.zeros((n, ck // k, *win.in_size), np.float64)
    cols = x.reshape(n, ck // k, k, *win.out_size)
    for ki, koff in enumerate(np.ndindex(*win.kernel)):
        for o in np.ndindex(*win.out_size):
            pos = [o[d] * win.strides[d] - win.pads_begin[d] + koff[d] * win.dilations[d] for d in range(len(o))]
            if all(0 <= p < s for p, s in zip(pos, win.in_size)):
                out[(slice(None), slice(None), *pos)] += cols[(slice(None), slice(None), ki, *o)]
    return (out.astype(x.dtype),)


register(OpDef("Col2Im", Pattern.OPAQUE, _col2im_infer, _col2im_ref, {}, (3, 3)))
