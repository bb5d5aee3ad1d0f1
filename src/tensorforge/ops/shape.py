"""Shape and data-movement ops: Reshape, Flatten, Transpose, Concat, Squeeze, Unsqueeze, Expand, Slice,
Identity, Shape, Size."""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from ..ir.graph import Dim, TensorType
from .common import broadcast_shapes, norm_axes, norm_axis, prod
from .registry import Attr, InferCtx, OpDef, Pattern, flag, register


def _static(shape) -> bool:
    return all(isinstance(d, int) for d in shape)


def _sym_factor(shape) -> tuple[int, list[str]]:
    c, syms = 1, []
    for d in shape:
        if isinstance(d, int):
            c *= d
        else:
            syms.append(d)
    return c, syms


# -- Reshape ---------------------------------------------------------------------------------------
def reshape_target(ctx: InferCtx, in_shape, target, allowzero: bool) -> tuple[Dim, ...]:
    target = [int(t) for t in target]
    out: list[Dim] = []
    neg = [i for i, t in enumerate(target) if t == -1]
    if len(neg) > 1:
        ctx.fail(f"shape {target} has more than one -1")
    for i, t in enumerate(target):
        if t == 0 and not allowzero:
            if i >= len(in_shape):
                ctx.fail(f"shape {target} copies dim {i} (0) but the input has rank {len(in_shape)}")
            out.append(in_shape[i])
        elif t < -1:
            ctx.fail(f"shape {target} has invalid entry {t}")
        else:
            out.append(t)
    if neg:
        j = neg[0]
        known = [d for i, d in enumerate(out) if i != j]
        ic, isyms = _sym_factor(in_shape)
        kc, ksyms = _sym_factor(known)
        rest = list(isyms)
        for s in ksyms:
            if s in rest:
                rest.remove(s)
            else:
                ctx.fail(f"cannot infer -1 in {target} from symbolic input shape {list(in_shape)}")
        if kc == 0 or ic % kc:
            ctx.fail(f"cannot reshape {list(in_shape)} ({ic} elements) to {target}")
        ratio = ic // kc
        if not rest:
            out[j] = ratio
        elif len(rest) == 1 and ratio == 1:
            out[j] = rest[0]
        else:
            ctx.fail(f"cannot infer -1 in {target} from symbolic input shape {list(in_shape)}")
    elif _static(in_shape) and _static(out) and prod(in_shape) != prod(out):
        ctx.fail(f"cannot reshape {list(in_shape)} ({prod(in_shape)} elements) to {list(out)} ({prod(out)} elements)")
    return tuple(out)


def _reshape_infer(ctx: InferCtx):
    target = ctx.require_const(1, "the target shape")
    if target.ndim != 1:
        ctx.fail(f"shape input must be 1-D, got shape {list(target.shape)}")
    return [TensorType(ctx.dtype(0), reshape_target(ctx, ctx.shape(0), target, bool(ctx.attr("allowzero", 0))))]


def _reshape_ref(attrs, x, shape):
    target = [int(t) for t in shape]
    if not attrs.get("allowzero", 0):
        target = [x.shape[i] if t == 0 else t for i, t in enumerate(target)]
    return (x.reshape(target),)


register(OpDef("Reshape", Pattern.INJECTIVE, _reshape_infer, _reshape_ref, {"allowzero": flag()}, (2, 2)))


# -- Flatten ---------------------------------------------------------------------------------------
def _flatten_infer(ctx: InferCtx):
    s = ctx.shape(0)
    axis = int(ctx.attr("axis", 1))
    if not -len(s) <= axis <= len(s):
        ctx.fail(f"axis={axis} out of range for rank {len(s)}")
    if axis < 0:
        axis += len(s)
    a, b = s[:axis], s[axis:]

    def size(ds):
        c, syms = _sym_factor(ds)
        if not syms:
            return c
        if len(syms) == 1 and c == 1:
            return syms[0]
        ctx.fail(f"cannot flatten symbolic shape {list(s)} at axis {axis}")

    return [TensorType(ctx.dtype(0), (size(a), size(b)))]


def _flatten_ref(attrs, x):
    axis = int(attrs.get("axis", 1))
    if axis < 0:
        axis += x.ndim
    return (x.reshape(prod(x.shape[:axis]), -1) if x.size else x.reshape(prod(x.shape[:axis]), prod(x.shape[axis:])),)


register(OpDef("Flatten", Pattern.INJECTIVE, _flatten_infer, _flatten_ref, {"axis": 1}))


# -- Transpose -------------------------------------------------------------------------------------
def transpose_perm(ctx: InferCtx, rank: int) -> tuple[int, ...]:
    perm = ctx.attr("perm")
    if perm is None:
        return tuple(reversed(range(rank)))
    perm = tuple(int(p) for p in perm)
    if sorted(perm) != list(range(rank)):
        ctx.fail(f"perm={list(perm)} is not a permutation of 0..{rank - 1}")
    return perm


def _transpose_infer(ctx: InferCtx):
    s = ctx.shape(0)
    perm = transpose_perm(ctx, len(s))
    return [TensorType(ctx.dtype(0), tuple(s[p] for p in perm))]


register(OpDef("Transpose", Pattern.INJECTIVE, _transpose_infer,
               lambda attrs, x: (np.transpose(x, attrs.get("perm")),), {"perm": Attr(kind="ints")}))  # fmt: skip


# -- Concat ----------------------------------------------------------------------------------------
def _concat_infer(ctx: InferCtx):
    shapes = [ctx.shape(i) for i in range(len(ctx.inputs))]
    dts = {ctx.dtype(i) for i in range(len(ctx.inputs))}
    if len(dts) > 1:
        ctx.fail(f"inputs have different dtypes: {', '.join(sorted(str(d) for d in dts))}")
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        ctx.fail(f"inputs must have one rank, got shapes {[list(s) for s in shapes]}")
    axis = norm_axis(ctx, int(ctx.attr("axis")), rank)
    out = list(shapes[0])
    total: Dim = 0
    for s in shapes:
        for d in range(rank):
            if d != axis and isinstance(s[d], int) and isinstance(out[d], int) and s[d] != out[d]:
                ctx.fail(f"inputs differ outside axis {axis}: {[list(x) for x in shapes]}")
        if isinstance(total, int) and isinstance(s[axis], int):
            total += s[axis]
        else:
            ctx.fail(f"concat along symbolic dim: {[list(x) for x in shapes]}")
    out[axis] = total
    return [TensorType(dts.pop(), tuple(out))]


register(OpDef("Concat", Pattern.INJECTIVE, _concat_infer,
               lambda attrs, *xs: (np.concatenate(xs, axis=int(attrs["axis"])),), {"axis": Attr(kind="int")},
               (1, -1)))  # fmt: skip


# -- Squeeze / Unsqueeze ---------------------------------------------------------------------------
def _squeeze_infer(ctx: InferCtx):
    s = ctx.shape(0)
    if ctx.has(1):
        axes = norm_axes(ctx, ctx.require_const(1, "axes").reshape(-1).tolist(), len(s))
        for a in axes:
            if s[a] != 1 and isinstance(s[a], int):
                ctx.fail(f"cannot squeeze axis {a} of size {s[a]} in shape {list(s)}")
    else:
        axes = tuple(i for i, d in enumerate(s) if d == 1)
    return [TensorType(ctx.dtype(0), tuple(d for i, d in enumerate(s) if i not in axes))]


def _squeeze_ref(attrs, x, axes=None):
    return (np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes)),)


register(OpDef("Squeeze", Pattern.INJECTIVE, _squeeze_infer, _squeeze_ref, {}, (1, 2)))


def _unsqueeze_infer(ctx: InferCtx):
    s = ctx.shape(0)
    axes_raw = ctx.require_const(1, "axes").reshape(-1).tolist()
    rank = len(s) + len(axes_raw)
    axes = sorted(norm_axes(ctx, axes_raw, rank))
    out = list(s)
    for a in axes:
        out.insert(a, 1)
    return [TensorType(ctx.dtype(0), tuple(out))]


def _unsqueeze_ref(attrs, x, axes):
    rank = x.ndim + axes.size
    out = x
    for a in sorted(int(a) % rank for a in axes.reshape(-1)):
        out = np.expand_dims(out, a)
    return (out,)


register(OpDef("Unsqueeze", Pattern.INJECTIVE, _unsqueeze_infer, _unsqueeze_ref, {}, (2, 2)))


# -- Expand ----------------------------------------------------------------------------------------
def _expand_infer(ctx: InferCtx):
    shape = ctx.require_const(1, "the target shape").reshape(-1).tolist()
    return [TensorType(ctx.dtype(0), broadcast_shapes(ctx, [ctx.shape(0), shape]))]


def _expand_ref(attrs, x, shape):
    out = np.broadcast_shapes(x.shape, tuple(int(s) for s in shape))
    return (np.broadcast_to(x, out).copy(),)


register(OpDef("Expand", Pattern.BROADCAST, _expand_infer, _expand_ref, {}, (2, 2)))


# -- Slice -----------------------------------------------------------------------------------------
def slice_params(ctx: InferCtx, shape) -> list[tuple[int, int, int, int]]:
    """Per axis (start, stop, step, out_len), clamped as numpy does."""
    starts = ctx.require_const(1, "starts").reshape(-1).tolist()
    ends = ctx.require_const(2, "ends").reshape(-1).tolist()
    rank = len(shape)
    axes = ctx.require_const(3, "axes").reshape(-1).tolist() if ctx.has(3) else list(range(len(starts)))
    steps = ctx.require_const(4, "steps").reshape(-1).tolist() if ctx.has(4) else [1] * len(starts)
    if not (len(starts) == len(ends) == len(axes) == len(steps)):
        ctx.fail(f"starts/ends/axes/steps lengths differ: {starts}, {ends}, {axes}, {steps}")
    axes = norm_axes(ctx, axes, rank)
    params = [(0, d, 1, d) for d in shape]
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        d = shape[ax]
        if not isinstance(d, int):
            ctx.fail(f"slicing symbolic dim {ax} of {list(shape)}")
        if sp == 0:
            ctx.fail("slice step cannot be 0")
        start, stop, step = slice(int(st), int(en), int(sp)).indices(d)
        n = max(0, (stop - start + (step - (1 if step > 0 else -1))) // step)
        params[ax] = (start, stop, step, n)
    return params


def _slice_infer(ctx: InferCtx):
    s = ctx.shape(0)
    params = slice_params(ctx, s)
    return [TensorType(ctx.dtype(0), tuple(p[3] for p in params))]


def _slice_ref(attrs, x, starts, ends, axes=None, steps=None):
    rank = x.ndim
    axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    sl = [slice(None)] * rank
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        sl[ax] = slice(int(st), int(en), int(sp))
    return (x[tuple(sl)],)


register(OpDef("Slice", Pattern.INJECTIVE, _slice_infer, _slice_ref, {}, (3, 5)))


# -- Identity, Shape, Size -------------------------------------------------------------------------
register(OpDef("Identity", Pattern.ELEMWISE, lambda ctx: [ctx.type(0)], lambda attrs, x: (x,)))


def _shape_range(ctx: InferCtx):
    rank = ctx.type(0).rank
    start = int(ctx.attr("start", 0))
    end = ctx.attr("end")
    start = max(0, min(rank, start + rank if start < 0 else start))
    end = rank if end is None else int(end)
    end = max(0, min(rank, end + rank if end < 0 else end))
    return start, max(start, end)


def _shape_infer(ctx: InferCtx):
    a, b = _shape_range(ctx)
    return [TensorType(DType.I64, (b - a,))]


def _shape_value(ctx: InferCtx):
    a, b = _shape_range(ctx)
    dims = ctx.shape(0)[a:b]
    if not _static(dims):
        return None
    return [np.array(dims, dtype=np.int64)]


def _shape_ref(attrs, x):
    start = int(attrs.get("start", 0))
    end = attrs.get("end")
    return (np.array(x.shape[slice(start, None if end is None else int(end))], dtype=np.int64),)


register(OpDef("Shape", Pattern.OPAQUE, _shape_infer, _shape_ref, {}, value=_shape_value))


def _size_value(ctx: InferCtx):
    s = ctx.shape(0)
    return [np.array(prod(s), dtype=np.int64)] if _static(s) else None


register(OpDef("Size", Pattern.OPAQUE, lambda ctx: [TensorType(DType.I64, ())],
               lambda attrs, x: (np.array(x.size, dtype=np.int64),), value=_size_value))  # fmt: skip
