"""Ops that read or write at indices given by a tensor: Gather, GatherElements, GatherND, ScatterElements,
ScatterND, OneHot.

Indices may be negative (counted from the end). An index out of range is an error, as in ONNX: the
references raise ``IndexError`` (so constant folding leaves such a node to the compiler, which reports it),
and compiled code checks every index at run time before using it (``lower/checks.py``).
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType, is_float_dtype
from ..ir.graph import TensorType
from .common import norm_axis
from .registry import InferCtx, OpDef, Pattern, register

REDUCTIONS = ("none", "add", "mul", "max", "min")


def _need_int(ctx: InferCtx, i: int, what: str) -> None:
    if ctx.dtype(i) not in (DType.I32, DType.I64):
        ctx.fail(f"{what} must be int32 or int64, got {ctx.dtype(i)}")


def _wrap(idx: np.ndarray, dim: int) -> np.ndarray:
    """Indices in [-dim, dim) as positions in [0, dim); any other index raises IndexError."""
    idx = np.asarray(idx).astype(np.int64)
    bad = (idx < -dim) | (idx >= dim)
    if bad.any():
        raise IndexError(f"index {int(idx[bad].reshape(-1)[0])} is out of range for a dim of {dim}")
    return np.where(idx < 0, idx + dim, idx)


# -- Gather ----------------------------------------------------------------------------------------
def _gather_infer(ctx: InferCtx):
    s, ind = ctx.shape(0), ctx.shape(1)
    _need_int(ctx, 1, "indices")
    if not s:
        ctx.fail("cannot gather from a scalar")
    axis = norm_axis(ctx, int(ctx.attr("axis", 0)), len(s))
    return [TensorType(ctx.dtype(0), (*s[:axis], *ind, *s[axis + 1 :]))]


def _gather_ref(attrs, x, ind):
    axis = int(attrs.get("axis", 0)) % x.ndim
    return (np.take(x, _wrap(ind, x.shape[axis]), axis=axis),)


register(OpDef("Gather", Pattern.INJECTIVE, _gather_infer, _gather_ref, {"axis": 0}, (2, 2)))


# -- GatherElements --------------------------------------------------------------------------------
def _gather_elements_infer(ctx: InferCtx):
    s, ind = ctx.shape(0), ctx.shape(1)
    _need_int(ctx, 1, "indices")
    if len(s) != len(ind) or not s:
        ctx.fail(f"data {list(s)} and indices {list(ind)} must have one rank (>= 1)")
    norm_axis(ctx, int(ctx.attr("axis", 0)), len(s))
    return [TensorType(ctx.dtype(0), tuple(ind))]


def _gather_elements_ref(attrs, x, ind):
    axis = int(attrs.get("axis", 0)) % x.ndim
    return (np.take_along_axis(x, _wrap(ind, x.shape[axis]), axis=axis),)


register(OpDef("GatherElements", Pattern.INJECTIVE, _gather_elements_infer, _gather_elements_ref, {"axis": 0},
               (2, 2)))  # fmt: skip


# -- GatherND --------------------------------------------------------------------------------------
def gather_nd_shape(ctx: InferCtx | None, s, ind, b: int) -> tuple:
    def fail(msg):
        if ctx is None:
            raise ValueError(msg)
        ctx.fail(msg)

    if not ind:
        fail("indices must be at least 1-D")
    m = ind[-1]
    if not isinstance(m, int) or b + m > len(s):
        fail(f"indices' last dim {m} plus batch_dims={b} exceeds the data rank {len(s)}")
    if list(s[:b]) != list(ind[:b]):
        fail(f"the first batch_dims={b} dims of data {list(s)} and indices {list(ind)} differ")
    return (*ind[:-1], *s[b + m :])


def _gather_nd_infer(ctx: InferCtx):
    _need_int(ctx, 1, "indices")
    b = int(ctx.attr("batch_dims", 0))
    return [TensorType(ctx.dtype(0), gather_nd_shape(ctx, ctx.shape(0), ctx.shape(1), b))]


def _gather_nd_ref(attrs, x, ind):
    b = int(attrs.get("batch_dims", 0))
    m = ind.shape[-1]
    out_shape = gather_nd_shape(None, x.shape, ind.shape, b)
    bsz = int(np.prod(x.shape[:b])) if b else 1
    xs = x.reshape((bsz, *x.shape[b:]))
    ii = ind.reshape(bsz, -1, m).astype(np.int64)
    out = []
    for bi in range(bsz):
        for row in ii[bi]:
            pos = tuple(int(_wrap(r, x.shape[b + k])) for k, r in enumerate(row))
            out.append(xs[(bi, *pos)])
    return (np.asarray(out, dtype=x.dtype).reshape(out_shape),)


register(OpDef("GatherND", Pattern.INJECTIVE, _gather_nd_infer, _gather_nd_ref, {"batch_dims": 0}, (2, 2)))


# -- ScatterElements / ScatterND -------------------------------------------------------------------
def _scatter_common(ctx: InferCtx):
    if ctx.attr("reduction", "none") not in REDUCTIONS:
        ctx.fail(f"reduction={ctx.attr('reduction')!r} is not one of {', '.join(REDUCTIONS)}")
    _need_int(ctx, 1, "indices")
    if ctx.dtype(2) != ctx.dtype(0):
        ctx.fail(f"updates have dtype {ctx.dtype(2)}, data has {ctx.dtype(0)}")


def _scatter_elements_infer(ctx: InferCtx):
    _scatter_common(ctx)
    s, ind, upd = ctx.shape(0), ctx.shape(1), ctx.shape(2)
    if len(ind) != len(s) or tuple(ind) != tuple(upd):
        ctx.fail(f"indices {list(ind)} and updates {list(upd)} must have one shape, of the data's rank {len(s)}")
    norm_axis(ctx, int(ctx.attr("axis", 0)), len(s))
    return [ctx.type(0)]


_NP_REDUCE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter_elements_ref(attrs, x, ind, upd):
    axis = int(attrs.get("axis", 0)) % x.ndim
    red = attrs.get("reduction", "none")
    y = x.copy()
    ind = _wrap(ind, x.shape[axis])
    for pos in np.ndindex(ind.shape):
        dst = list(pos)
        dst[axis] = int(ind[pos])
        dst = tuple(dst)
        y[dst] = upd[pos] if red == "none" else _NP_REDUCE[red](y[dst], upd[pos])
    return (y,)


register(OpDef("ScatterElements", Pattern.OPAQUE, _scatter_elements_infer, _scatter_elements_ref,
               {"axis": 0, "reduction": "none"}, (3, 3)))  # fmt: skip


def _scatter_nd_infer(ctx: InferCtx):
    _scatter_common(ctx)
    s, ind, upd = ctx.shape(0), ctx.shape(1), ctx.shape(2)
    if not ind or not isinstance(ind[-1], int) or ind[-1] > len(s):
        ctx.fail(f"indices {list(ind)}: the last dim must be at most the data rank {len(s)}")
    want = (*ind[:-1], *s[ind[-1] :])
    if tuple(upd) != want:
        ctx.fail(f"updates have shape {list(upd)}, expected {list(want)}")
    return [ctx.type(0)]


def _scatter_nd_ref(attrs, x, ind, upd):
    red = attrs.get("reduction", "none")
    y = x.copy()
    m = ind.shape[-1]
    for pos in np.ndindex(ind.shape[:-1]):
        dst = tuple(int(_wrap(v, x.shape[k])) for k, v in enumerate(ind[pos]))
        y[dst] = upd[pos] if red == "none" else _NP_REDUCE[red](y[dst], upd[pos])
    del m
    return (y,)


register(OpDef("ScatterND", Pattern.OPAQUE, _scatter_nd_infer, _scatter_nd_ref, {"reduction": "none"}, (3, 3)))


# -- OneHot ----------------------------------------------------------------------------------------
def _onehot_infer(ctx: InferCtx):
    s = ctx.shape(0)
    depth = ctx.require_const(1, "depth")
    if depth.size != 1:
        ctx.fail(f"depth must be a scalar, got shape {list(depth.shape)}")
    d = int(np.asarray(depth).reshape(-1)[0])
    if d <= 0:
        ctx.fail(f"depth must be positive, got {d}")
    if ctx.type(2).rank != 1 or ctx.shape(2) != (2,):
        ctx.fail(f"values must be [off_value, on_value], got shape {list(ctx.shape(2))}")
    axis = norm_axis(ctx, int(ctx.attr("axis", -1)), len(s) + 1)
    out = (*s[:axis], d, *s[axis:])
    return [TensorType(ctx.dtype(2), out)]


def _onehot_ref(attrs, ind, depth, values):
    d = int(np.asarray(depth).reshape(-1)[0])
    axis = int(attrs.get("axis", -1))
    axis = axis + ind.ndim + 1 if axis < 0 else axis
    ind = np.asarray(ind)
    if is_float_dtype(ind.dtype):
        ind = np.trunc(ind)
    ind = np.where(ind < 0, ind + d, ind)
    target = np.arange(d).reshape((1,) * axis + (d,) + (1,) * (ind.ndim - axis))
    hot = np.expand_dims(ind, axis) == target
    return (np.where(hot, values[1], values[0]).astype(values.dtype),)


register(OpDef("OneHot", Pattern.INJECTIVE, _onehot_infer, _onehot_ref, {"axis": -1}, (3, 3)))


# -- TensorScatter (a key/value cache update) ------------------------------------------------------
def _tensor_scatter_infer(ctx: InferCtx):
    s, u = ctx.shape(0), ctx.shape(1)
    axis = norm_axis(ctx, int(ctx.attr("axis", -2)), len(s))
    if ctx.attr("mode", "linear") not in ("linear", "circular"):
        ctx.fail(f"mode={ctx.attr('mode')!r} must be linear or circular")
    if len(u) != len(s) or any(a != b for i, (a, b) in enumerate(zip(s, u)) if i != axis) or u[axis] > s[axis]:
        ctx.fail(f"update {list(u)} does not fit the cache {list(s)} along axis {axis}")
    if ctx.dtype(1) != ctx.dtype(0):
        ctx.fail(f"update has dtype {ctx.dtype(1)}, the cache {ctx.dtype(0)}")
    if axis == 0:
        ctx.fail("axis 0 is the batch axis that write_indices index")
    return [ctx.type(0)]


def _tensor_scatter_ref(attrs, cache, update, write=None):
    axis = int(attrs.get("axis", -2)) % cache.ndim
    out = cache.copy()
    n, m = cache.shape[axis], update.shape[axis]
    starts = np.zeros(cache.shape[0], np.int64) if write is None else np.asarray(write).astype(np.int64)
    if attrs.get("mode", "linear") == "linear" and ((starts < 0) | (starts > n - m)).any():
        raise IndexError(f"write indices {starts.tolist()} do not fit an update of {m} into {n} steps")
    for b in range(cache.shape[0]):
        for j in range(m):
            p = int(starts[b]) + j
            if attrs.get("mode", "linear") == "circular":
                p %= n
            dst = [b] + [slice(None)] * (cache.ndim - 1)
            src = [b] + [slice(None)] * (cache.ndim - 1)
            dst[axis], src[axis] = p, j
            out[tuple(dst)] = update[tuple(src)]
    return (out,)


register(OpDef("TensorScatter", Pattern.INJECTIVE, _tensor_scatter_infer, _tensor_scatter_ref,
               {"axis": -2, "mode": "linear"}, (2, 3)))  # fmt: skip
