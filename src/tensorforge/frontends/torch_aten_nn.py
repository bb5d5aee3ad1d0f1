"""Converters of core-ATen ops onto IR ops: movement (view, permute, slicing, concatenation, indexing),
matrix products, convolution, pooling, normalization and embedding. Registered by ATen op name in
``torch_export.ATEN``; elementwise ops, reductions and creation are in ``torch_aten_ops.py``.

Shapes given as lists of ints and SymInts become int64 tensors (``Ctx.ints``); dims PyTorch accepts
negative are normalized against the rank it traced.
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from ..ir.graph import Value
from .torch_export import Ctx, aten

I64 = DType.I64
INT64_MAX = 2**63 - 1


def _dim(cx: Ctx, dim: int, rank: int | None = None) -> int:
    rank = cx.rank(0) if rank is None else rank
    return int(dim) % max(rank, 1)


def _static(d) -> int | None:
    return d if isinstance(d, int) else None


# -------------------------------------------------------------------------------------------------
# movement
# -------------------------------------------------------------------------------------------------
@aten("view.default", "_unsafe_view.default", "reshape.default")
def _view(cx: Ctx, x, size):
    zero = any(isinstance(d, int) and d == 0 for d in size)
    return cx.emit("Reshape", x, cx.ints(size), allowzero=int(zero))


@aten("permute.default")
def _permute(cx: Ctx, x, dims):
    return cx.emit("Transpose", x, perm=[_dim(cx, d) for d in dims])


@aten("expand.default")
def _expand(cx: Ctx, x, size, implicit=False):
    # -1 keeps a dim: 1 does the same under Expand's broadcasting
    return cx.emit("Expand", x, cx.ints([1 if isinstance(d, int) and d == -1 else d for d in size]))


def _squeeze_axes(cx: Ctx, x, axes) -> Value:
    """PyTorch skips dims that are not 1; the IR's Squeeze requires them to be."""
    shape = cx.meta(0).shape
    keep = sorted({a for a in axes if _static(shape[a]) == 1})
    return cx.emit("Squeeze", x, cx.ints(keep)) if keep else x


@aten("squeeze.dims")
def _squeeze_dims(cx: Ctx, x, dim):
    return _squeeze_axes(cx, x, [_dim(cx, d) for d in dim])


@aten("squeeze.dim")
def _squeeze_dim(cx: Ctx, x, dim):
    return _squeeze_axes(cx, x, [_dim(cx, dim)])


@aten("squeeze.default")
def _squeeze_all(cx: Ctx, x):
    return _squeeze_axes(cx, x, range(cx.rank(0)))


@aten("unsqueeze.default")
def _unsqueeze(cx: Ctx, x, dim):
    return cx.emit("Unsqueeze", x, cx.ints([_dim(cx, dim, cx.rank(0) + 1)]))


@aten("select.int")
def _select(cx: Ctx, x, dim, index):
    axis = _dim(cx, dim)
    size = _static(cx.meta(0).shape[axis])
    if isinstance(index, int) and index < 0 and size is not None:
        index += size
    return cx.emit("Gather", x, cx.scalar(index, I64), axis=axis)


@aten("slice.Tensor")
def _slice(cx: Ctx, x, dim=0, start=None, end=None, step=1):
    axis = _dim(cx, dim)
    size = _static(cx.meta(0).shape[axis])
    start = 0 if start is None else start
    end = INT64_MAX if end is None else end
    if start == 0 and step == 1 and isinstance(end, int) and size is not None and end >= size:
        return x
    return cx.emit("Slice", x, cx.ints([start]), cx.ints([end]), cx.ints([axis]), cx.ints([step]))


@aten("cat.default")
def _cat(cx: Ctx, tensors, dim=0):
    metas = cx.meta(0)
    rank = max(m.dim() for m in metas)
    # PyTorch skips 1-D empty tensors in a concatenation of tensors of higher rank
    parts = [cx.cast(t, cx.out_dtype) for t, m in zip(tensors, metas) if not (m.dim() == 1 and m.shape[0] == 0
                                                                             and rank > 1)]  # fmt: skip
    return parts[0] if len(parts) == 1 else cx.emit("Concat", *parts, axis=_dim(cx, dim, rank))


@aten("split_with_sizes.default")
def _split_with_sizes(cx: Ctx, x, split_sizes, dim=0):
    n = len(split_sizes)
    out = cx.emit("Split", x, cx.ints(split_sizes), n=n, axis=_dim(cx, dim))
    return [out] if n == 1 else out


@aten("split.Tensor")
def _split(cx: Ctx, x, split_size, dim=0):
    axis = _dim(cx, dim)
    sizes = [m.shape[axis] for m in cx.out]
    if not all(isinstance(s, int) for s in sizes):
        cx.unsupported(f"splitting symbolic dim {axis} in pieces of {split_size}")
    return _split_with_sizes(cx, x, sizes, axis)


@aten("index_select.default")
def _index_select(cx: Ctx, x, dim, index):
    return cx.emit("Gather", x, index, axis=_dim(cx, dim))


@aten("index.Tensor")
def _index(cx: Ctx, x, indices):
    given = [(i, t) for i, t in enumerate(indices) if t is not None]
    if len(given) != 1:
        cx.unsupported(f"indexing with {len(given)} index tensors (tensorforge takes one)")
    axis, index = given[0]
    if cx.dtype(index) == DType.BOOL:
        cx.unsupported("indexing with a boolean mask (its result's shape depends on the data)")
    return cx.emit("Gather", x, index, axis=axis)


@aten("gather.default")
def _gather(cx: Ctx, x, dim, index, sparse_grad=False):
    return cx.emit("GatherElements", x, index, axis=_dim(cx, dim))


@aten("flip.default")
def _flip(cx: Ctx, x, dims):
    axes = [_dim(cx, d) for d in dims]
    if not axes:
        return x
    k = len(axes)
    return cx.emit("Slice", x, cx.ints([-1] * k), cx.ints([-INT64_MAX - 1] * k), cx.ints(axes), cx.ints([-1] * k))


@aten("repeat.default")
def _repeat(cx: Ctx, x, repeats):
    extra = len(repeats) - cx.rank(0)
    if extra > 0:
        x = cx.emit("Unsqueeze", x, cx.ints(list(range(extra))))
    return cx.emit("Tile", x, cx.ints(repeats))


@aten("constant_pad_nd.default")
def _pad(cx: Ctx, x, pad, value=0):
    rank = cx.rank(0)
    begins, ends = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):  # pairs from the last dim backwards
        begins[rank - 1 - i], ends[rank - 1 - i] = pad[2 * i], pad[2 * i + 1]
    return cx.emit("Pad", x, cx.ints(begins + ends), cx.const(value, cx.out_dtype), mode="constant")


def _trilu(upper: int):
    def conv(cx: Ctx, x, diagonal=0):
        return cx.emit("Trilu", x, cx.scalar(diagonal, I64), upper=upper)

    return conv


aten("triu.default")(_trilu(1))
aten("tril.default")(_trilu(0))


# -------------------------------------------------------------------------------------------------
# matrix products
# -------------------------------------------------------------------------------------------------
@aten("mm.default", "bmm.default")
def _matmul(cx: Ctx, a, b):
    return cx.emit("MatMul", a, b)


@aten("addmm.default")
def _addmm(cx: Ctx, bias, a, b, beta=1, alpha=1):
    return cx.emit("Gemm", a, b, bias, alpha=float(alpha), beta=float(beta))


@aten("baddbmm.default")
def _baddbmm(cx: Ctx, bias, a, b, beta=1, alpha=1):
    dt = cx.out_dtype
    prod = cx.emit("MatMul", a, b)
    if alpha != 1:
        prod = cx.emit("Mul", prod, cx.const(alpha, dt))
    if beta == 0:
        return prod
    return cx.emit("Add", prod, bias if beta == 1 else cx.emit("Mul", bias, cx.const(beta, dt)))


# -------------------------------------------------------------------------------------------------
# convolution and pooling
# -------------------------------------------------------------------------------------------------
def _per_dim(v, k: int) -> list[int]:
    vals = [int(x) for x in (v if isinstance(v, list | tuple) else [v])]
    return vals * k if len(vals) == 1 else vals


@aten("convolution.default")
def _convolution(cx: Ctx, x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    k = cx.rank(1) - 2
    pads = _per_dim(padding, k)
    attrs = dict(strides=_per_dim(stride, k), pads=pads + pads, dilations=_per_dim(dilation, k),
                 group=int(groups))  # fmt: skip
    if transposed:
        return cx.emit("ConvTranspose", x, weight, bias, output_padding=_per_dim(output_padding, k),
                       **attrs)  # fmt: skip
    return cx.emit("Conv", x, weight, bias, **attrs)


def _window(cx: Ctx, kernel_size, stride, padding) -> dict:
    k = len(kernel_size) if isinstance(kernel_size, list | tuple) else cx.rank(0) - 2
    kernel = _per_dim(kernel_size, k)
    pads = _per_dim(padding, k)
    strides = _per_dim(stride, k) if stride else kernel  # an empty stride is the kernel size
    return dict(kernel_shape=kernel, strides=strides, pads=pads + pads)


@aten("max_pool2d_with_indices.default", "max_pool3d_with_indices.default")
def _max_pool(cx: Ctx, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    w = _window(cx, kernel_size, stride, padding)
    attrs = dict(dilations=_per_dim(dilation, len(w["kernel_shape"])), ceil_mode=int(bool(ceil_mode)), **w)
    if 1 not in cx.used_outputs():
        return [cx.emit("MaxPool", x, **attrs), None]
    out, flat = cx.emit("MaxPoolWithIndices", x, n=2, **attrs)
    # PyTorch's indices count within each (batch, channel) plane; the IR's over the whole tensor
    plane = int(np.prod([int(d) for d in cx.meta(0).shape[2:]]))
    return [out, cx.emit("Mod", flat, cx.const(plane, I64), fmod=0)]


@aten("avg_pool1d.default", "avg_pool2d.default", "avg_pool3d.default")
def _avg_pool(cx: Ctx, x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
              divisor_override=None):  # fmt: skip
    if divisor_override is not None:
        cx.unsupported(f"avg_pool with divisor_override={divisor_override}")
    return cx.emit("AveragePool", x, ceil_mode=int(bool(ceil_mode)), count_include_pad=int(bool(count_include_pad)),
                   **_window(cx, kernel_size, stride, padding))  # fmt: skip


@aten("_adaptive_avg_pool2d.default", "_adaptive_avg_pool3d.default", "adaptive_avg_pool1d.default")
def _adaptive_avg_pool(cx: Ctx, x, output_size):
    out = [int(o) for o in output_size]
    if all(o == 1 for o in out):
        return cx.emit("GlobalAveragePool", x)
    spatial = [_static(d) for d in cx.meta(0).shape[-len(out) :]]
    if any(d is None or d % o for d, o in zip(spatial, out)):
        cx.unsupported(f"adaptive average pooling of spatial size {list(cx.meta(0).shape[-len(out):])} to {out} "
                       "(only sizes that divide evenly, or output 1)")  # fmt: skip
    kernel = [d // o for d, o in zip(spatial, out)]
    return cx.emit("AveragePool", x, kernel_shape=kernel, strides=kernel, pads=[0] * (2 * len(out)))


def _resize(cx: Ctx, x, output_size, scale_factors, **attrs) -> Value:
    if scale_factors:
        scales = cx.const([1.0, 1.0, *scale_factors], DType.F32)
        return cx.emit("Resize", x, None, scales, **attrs)
    sizes = cx.emit("Concat", cx.emit("Shape", x, end=2), cx.ints(output_size), axis=0)
    return cx.emit("Resize", x, None, None, sizes, **attrs)


@aten("upsample_nearest2d.vec")
def _upsample_nearest(cx: Ctx, x, output_size, scale_factors):
    # PyTorch's nearest: source = floor(destination / scale)
    return _resize(cx, x, output_size, scale_factors, mode="nearest", coordinate_transformation_mode="asymmetric",
                   nearest_mode="floor")  # fmt: skip


@aten("upsample_bilinear2d.vec")
def _upsample_bilinear(cx: Ctx, x, output_size, align_corners, scale_factors):
    ctm = "align_corners" if align_corners else "pytorch_half_pixel"
    return _resize(cx, x, output_size, scale_factors, mode="linear", coordinate_transformation_mode=ctm)


@aten("topk.default")
def _topk(cx: Ctx, x, k, dim=-1, largest=True, sorted=True):
    return cx.emit("TopK", x, cx.ints([k]), n=2, axis=_dim(cx, dim), largest=int(bool(largest)),
                   sorted=int(bool(sorted)))  # fmt: skip


@aten("sort.default")
def _sort(cx: Ctx, x, dim=-1, descending=False):
    axis = _dim(cx, dim)
    k = cx.emit("Reshape", cx.emit("Shape", x, start=axis, end=axis + 1), cx.ints([1]))
    return cx.emit("TopK", x, k, n=2, axis=axis, largest=int(bool(descending)), sorted=1)


# -------------------------------------------------------------------------------------------------
# normalization, embedding, PReLU
# -------------------------------------------------------------------------------------------------
def _ones(cx: Ctx, shape, value: float = 1.0) -> Value:
    if not all(isinstance(d, int) for d in shape):
        cx.unsupported(f"a normalization without weight over symbolic shape {list(shape)}")
    return cx.const(np.full(tuple(shape), value), cx.out_dtype)


@aten("native_layer_norm.default")
def _layer_norm(cx: Ctx, x, normalized_shape, weight, bias, eps):
    scale = weight if weight is not None else _ones(cx, normalized_shape)
    y = cx.emit("LayerNormalization", x, scale, bias, axis=-len(normalized_shape), epsilon=float(eps))
    if not cx.used_outputs() & {1, 2}:
        return [y, None, None]  # mean and 1/std: only training's backward reads them
    dt = cx.out_dtype
    axes = cx.ints(list(range(cx.rank(0) - len(normalized_shape), cx.rank(0))))
    mean = cx.emit("ReduceMean", x, axes, keepdims=1)
    dev = cx.emit("Sub", x, mean)
    var = cx.emit("ReduceMean", cx.emit("Mul", dev, dev), axes, keepdims=1)
    rstd = cx.emit("Reciprocal", cx.emit("Sqrt", cx.emit("Add", var, cx.const(eps, dt))))
    return [y, mean, rstd]


@aten("_native_batch_norm_legit_no_training.default")
def _batch_norm(cx: Ctx, x, weight, bias, running_mean, running_var, momentum, eps):
    c = cx.meta(0).shape[1]
    scale = weight if weight is not None else _ones(cx, [c])
    shift = bias if bias is not None else _ones(cx, [c], 0.0)
    y = cx.emit("BatchNormalization", x, scale, shift, running_mean, running_var, epsilon=float(eps))
    return [y, None, None]


@aten("native_group_norm.default")
def _group_norm(cx: Ctx, x, weight, bias, n, c, hxw, group, eps):
    channels = cx.meta(0).shape[1]
    scale = weight if weight is not None else _ones(cx, [channels])
    shift = bias if bias is not None else _ones(cx, [channels], 0.0)
    y = cx.emit("GroupNormalization", x, scale, shift, num_groups=int(group), epsilon=float(eps))
    return [y, None, None]


@aten("embedding.default")
def _embedding(cx: Ctx, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return cx.emit("Gather", weight, indices, axis=0)


@aten("_prelu_kernel.default")
def _prelu(cx: Ctx, x, weight):
    rank, n = cx.rank(0), cx.meta(1).numel()
    if rank >= 2 and n > 1:  # one slope per channel (dim 1)
        weight = cx.emit("Reshape", weight, cx.ints([n] + [1] * (rank - 2)))
    return cx.emit("PRelu", x, weight)
