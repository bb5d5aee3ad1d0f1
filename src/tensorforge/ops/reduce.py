"""Reductions (ReduceSum, ReduceMean, ReduceMax, ...), each defined as (prologue, combiner, epilogue)
over the scalar-op handler, so that the reference and the lowering share one definition."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..ir.dtype import DType, is_float_dtype
from ..ir.graph import Node, TensorType
from .common import norm_axes, prod
from .handler import NUMPY
from .registry import InferCtx, OpDef, Pattern, flag, register


@dataclass(frozen=True)
class Reducer:
    name: str
    combine: str  # add | mul | max | min
    pre: Callable | None = None  # pre(h, x) applied to every element
    post: Callable | None = None  # post(h, acc, count) applied to the result
    float_only: bool = False


REDUCERS: dict[str, Reducer] = {}


def _reg(r: Reducer):
    REDUCERS[r.name] = r
    register(OpDef(r.name, Pattern.REDUCTION, _reduce_infer, _make_ref(r),
                   {"keepdims": flag(1), "noop_with_empty_axes": flag()}, (1, 2), flops=_reduce_flops))  # fmt: skip


def reduce_axes(ctx_or_none, rank: int, axes_value, noop: bool) -> tuple[int, ...] | None:
    """Resolved reduction axes; None means 'no reduction' (noop_with_empty_axes with no axes)."""
    if axes_value is None or np.asarray(axes_value).size == 0:
        return None if noop else tuple(range(rank))
    axes = [int(a) for a in np.asarray(axes_value).reshape(-1)]
    if ctx_or_none is not None:
        return norm_axes(ctx_or_none, axes, rank)
    return tuple(sorted(a % rank if rank else 0 for a in axes))


def _reduce_infer(ctx: InferCtx):
    s = ctx.shape(0)
    r = REDUCERS[ctx.node.op]
    dt = ctx.dtype(0)
    if r.float_only and not dt.is_float:
        ctx.fail(f"input must be float, got {dt}")
    if dt is DType.BOOL and r.combine not in ("max", "min"):
        ctx.fail(f"{r.name} of bool tensors is not defined")
    axes_val = ctx.require_const(1, "axes") if ctx.has(1) else ctx.attr("axes")
    axes = reduce_axes(ctx, len(s), axes_val, bool(ctx.attr("noop_with_empty_axes", 0)))
    if axes is None:
        return [TensorType(dt, s)]
    keep = bool(ctx.attr("keepdims", 1))
    out = tuple((1 if i in axes else d) for i, d in enumerate(s) if keep or i not in axes)
    return [TensorType(dt, out)]


def _make_ref(r: Reducer):
    def ref(attrs, x, axes_in=None):
        axes_val = axes_in if axes_in is not None else attrs.get("axes")
        axes = reduce_axes(None, x.ndim, axes_val, bool(attrs.get("noop_with_empty_axes", 0)))
        if axes is None:
            return (x,)
        h = NUMPY
        y = r.pre(h, x) if r.pre else x
        keep = bool(attrs.get("keepdims", 1))
        fn = {"add": np.sum, "mul": np.prod, "max": np.max, "min": np.min}[r.combine]
        if y.size == 0 and r.combine in ("max", "min"):
            shape = tuple((1 if i in axes else d) for i, d in enumerate(x.shape) if keep or i not in axes)
            if is_float_dtype(x.dtype):
                fill = -np.inf if r.combine == "max" else np.inf
            elif x.dtype.kind == "b":
                fill = r.combine == "min"
            else:
                fill = np.iinfo(x.dtype).min if r.combine == "max" else np.iinfo(x.dtype).max
            return (np.full(shape, fill, dtype=x.dtype),)
        acc = fn(y, axis=axes, keepdims=keep).astype(x.dtype)
        count = prod(x.shape[a] for a in axes)
        if r.post:
            acc = np.asarray(r.post(h, acc, count)).astype(x.dtype)
        return (acc,)

    return ref


def _reduce_flops(node: Node) -> int:
    s = node.inputs[0].shape
    return prod(s) if all(isinstance(d, int) for d in s) else 0


_reg(Reducer("ReduceSum", "add"))
_reg(Reducer("ReduceMean", "add", post=lambda h, acc, n: h.div(acc, h.const(n, acc))))
_reg(Reducer("ReduceMax", "max"))
_reg(Reducer("ReduceMin", "min"))
_reg(Reducer("ReduceProd", "mul"))
_reg(Reducer("ReduceL1", "add", pre=lambda h, x: h.abs(x)))
_reg(Reducer("ReduceL2", "add", pre=lambda h, x: h.mul(x, x), post=lambda h, acc, n: h.sqrt(acc), float_only=True))
_reg(Reducer("ReduceSumSquare", "add", pre=lambda h, x: h.mul(x, x)))
_reg(Reducer("ReduceLogSum", "add", post=lambda h, acc, n: h.log(acc), float_only=True))
_reg(Reducer("ReduceLogSumExp", "add", pre=lambda h, x: h.exp(x), post=lambda h, acc, n: h.log(acc),
             float_only=True))  # fmt: skip
