"""Ops that scan along an axis: TopK, ArgMax, ArgMin, Hardmax, CumSum, CumProd.

Ties are broken by position as ONNX (and numpy) do: TopK keeps the lower index first, ArgMax/ArgMin
return the first extreme (the last with ``select_last_index``).
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType, is_float_dtype
from ..ir.graph import TensorType
from .common import norm_axis
from .registry import InferCtx, OpDef, Pattern, flag, register


def scalar_int(a) -> int:
    return int(np.asarray(a).reshape(-1)[0])


# -- TopK ------------------------------------------------------------------------------------------
def _topk_infer(ctx: InferCtx):
    s = ctx.shape(0)
    if ctx.dtype(0) is DType.BOOL:
        ctx.fail("TopK of bool tensors is not defined")
    axis = norm_axis(ctx, int(ctx.attr("axis", -1)), len(s))
    k = ctx.require_const(1, "k")
    if k.size != 1:
        ctx.fail(f"k must hold one value, got shape {list(k.shape)}")
    k = scalar_int(k)
    if isinstance(s[axis], int) and not 0 <= k <= s[axis]:
        ctx.fail(f"k={k} is out of range for axis {axis} of size {s[axis]}")
    out = tuple(k if i == axis else d for i, d in enumerate(s))
    return [TensorType(ctx.dtype(0), out), TensorType(DType.I64, out)]


def topk_reference(attrs, x, k):
    axis = int(attrs.get("axis", -1)) % x.ndim
    k = scalar_int(k)
    keys = x.astype(np.float64) if is_float_dtype(x.dtype) else x.astype(np.int64)
    order = np.argsort(-keys if attrs.get("largest", 1) else keys, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)


register(OpDef("TopK", Pattern.OPAQUE, _topk_infer, topk_reference, {"axis": -1, "largest": flag(1), "sorted": flag(1)},
               (2, 2)))  # fmt: skip


# -- ArgMax / ArgMin -------------------------------------------------------------------------------
def _arg_infer(ctx: InferCtx):
    s = ctx.shape(0)
    axis = norm_axis(ctx, int(ctx.attr("axis", 0)), len(s))
    keep = bool(ctx.attr("keepdims", 1))
    out = tuple((1 if i == axis else d) for i, d in enumerate(s) if keep or i != axis)
    return [TensorType(DType.I64, out)]


def _arg_ref(fn):
    def ref(attrs, x):
        axis = int(attrs.get("axis", 0)) % x.ndim
        if attrs.get("select_last_index", 0):
            r = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
        else:
            r = fn(x, axis=axis)
        if attrs.get("keepdims", 1):
            r = np.expand_dims(r, axis)
        return (np.asarray(r, np.int64),)

    return ref


_ARG_ATTRS = {"axis": 0, "keepdims": flag(1), "select_last_index": flag()}
register(OpDef("ArgMax", Pattern.REDUCTION, _arg_infer, _arg_ref(np.argmax), _ARG_ATTRS))
register(OpDef("ArgMin", Pattern.REDUCTION, _arg_infer, _arg_ref(np.argmin), _ARG_ATTRS))


# -- Hardmax ---------------------------------------------------------------------------------------
def _hardmax_infer(ctx: InferCtx):
    norm_axis(ctx, int(ctx.attr("axis", -1)), ctx.type(0).rank)
    return [ctx.type(0)]


def _hardmax_ref(attrs, x):
    axis = int(attrs.get("axis", -1)) % x.ndim
    hot = np.expand_dims(np.argmax(x, axis=axis), axis) == np.indices(x.shape)[axis]
    return (hot.astype(x.dtype),)


register(OpDef("Hardmax", Pattern.REDUCTION, _hardmax_infer, _hardmax_ref, {"axis": -1}))


# -- CumSum / CumProd ------------------------------------------------------------------------------
def _cum_infer(ctx: InferCtx):
    if ctx.dtype(0) is DType.BOOL:
        ctx.fail(f"{ctx.node.op} of bool tensors is not defined")
    axis = ctx.require_const(1, "axis")
    if axis.size != 1:
        ctx.fail(f"axis must be a scalar, got shape {list(axis.shape)}")
    norm_axis(ctx, scalar_int(axis), ctx.type(0).rank)
    return [ctx.type(0)]


def _cum_ref(fn):
    def ref(attrs, x, axis):
        axis = scalar_int(axis) % x.ndim
        if attrs.get("reverse", 0):
            x = np.flip(x, axis)
        r = fn(x, axis=axis, dtype=x.dtype)
        if attrs.get("exclusive", 0):
            ident = 0 if fn is np.cumsum else 1
            pad = [(0, 0)] * x.ndim
            pad[axis] = (1, 0)
            r = np.pad(np.take(r, np.arange(x.shape[axis] - 1), axis=axis), pad, constant_values=ident)
        if attrs.get("reverse", 0):
            r = np.flip(r, axis)
        return (np.ascontiguousarray(r).astype(x.dtype),)

    return ref


_CUM_ATTRS = {"exclusive": flag(), "reverse": flag()}
register(OpDef("CumSum", Pattern.OPAQUE, _cum_infer, _cum_ref(np.cumsum), _CUM_ATTRS, (2, 2)))
register(OpDef("CumProd", Pattern.OPAQUE, _cum_infer, _cum_ref(np.cumprod), _CUM_ATTRS, (2, 2)))
