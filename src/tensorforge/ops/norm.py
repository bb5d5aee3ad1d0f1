"""Normalization ops: LayerNormalization, RMSNormalization, InstanceNormalization, GroupNormalization,
LpNormalization, LRN.

The first four normalize *lines* — groups of elements that share a mean and variance — and then apply a
per-element scale and bias; they share one lowering (``lower/norm.py``). Statistics are computed in
float32 for float16 inputs and in the input type otherwise; LayerNormalization's Mean and InvStdDev
outputs have the dtype ``stash_type`` names (float32 by default), as ONNX types them.
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from ..ir.graph import TensorType
from .common import norm_axis
from .registry import Attr, InferCtx, OpDef, Pattern, register


def _float_input(ctx: InferCtx):
    if not ctx.dtype(0).is_float:
        ctx.fail(f"input must be float, got {ctx.dtype(0)}")


def _broadcastable_to(ctx: InferCtx, i: int, shape, what: str) -> None:
    s = ctx.shape(i)
    if len(s) > len(shape) or any(a not in (1, b) for a, b in zip(s[::-1], shape[::-1]) if isinstance(b, int)):
        ctx.fail(f"{what} has shape {list(s)}, which does not broadcast to {list(shape)}")


def _stat_dtype(x: np.ndarray):
    return np.float32 if x.dtype == np.float16 else x.dtype


# -- LayerNormalization / RMSNormalization ---------------------------------------------------------
def _layer_norm_infer(ctx: InferCtx):
    _float_input(ctx)
    s = ctx.shape(0)
    axis = norm_axis(ctx, int(ctx.attr("axis", -1)), len(s))
    inner = s[axis:]
    _broadcastable_to(ctx, 1, inner, "scale")
    if ctx.has(2):
        _broadcastable_to(ctx, 2, inner, "bias")
    stat = TensorType(_stash_dtype(ctx.attr("stash_type", 1)), (*s[:axis], *([1] * len(inner))))
    return [ctx.type(0), stat, stat]


def _stash_dtype(code) -> DType:
    """The dtype of LayerNormalization's Mean and InvStdDev outputs: ``stash_type`` (float32 by default, for
    every input type), as the ONNX schema types them."""
    return DType.from_onnx(int(code))


def _layer_norm_ref(attrs, x, scale, bias=None):
    axis = int(attrs.get("axis", -1)) % x.ndim
    axes = tuple(range(axis, x.ndim))
    xs = x.astype(np.float64)
    mean = xs.mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(((xs - mean) ** 2).mean(axis=axes, keepdims=True) + attrs.get("epsilon", 1e-5))
    y = (xs - mean) * inv * scale
    if bias is not None:
        y = y + bias
    stash = _stash_dtype(attrs.get("stash_type", 1)).np
    return y.astype(x.dtype), mean.astype(stash), inv.astype(stash)


register(OpDef("LayerNormalization", Pattern.REDUCTION, _layer_norm_infer, _layer_norm_ref,
               {"axis": -1, "epsilon": 1e-5, "stash_type": Attr(1, choices=(1, 16))}, (2, 3)))  # float, bfloat16


def _rms_norm_infer(ctx: InferCtx):
    return _layer_norm_infer(ctx)[:1]


def _rms_norm_ref(attrs, x, scale):
    axis = int(attrs.get("axis", -1)) % x.ndim
    xs = x.astype(np.float64)
    ms = (xs * xs).mean(axis=tuple(range(axis, x.ndim)), keepdims=True)
    return ((xs / np.sqrt(ms + attrs.get("epsilon", 1e-5)) * scale).astype(x.dtype),)


register(OpDef("RMSNormalization", Pattern.REDUCTION, _rms_norm_infer, _rms_norm_ref,
               {"axis": -1, "epsilon": 1e-5, "stash_type": 1}, (2, 2)))  # fmt: skip


# -- InstanceNormalization / GroupNormalization ----------------------------------------------------
def _channel_params(ctx: InferCtx, first: int, n: int):
    s = ctx.shape(0)
    if len(s) < 3 and ctx.node.op == "InstanceNormalization":
        ctx.fail(f"input must be (N, C, spatial...), got {list(s)}")
    if len(s) < 2:
        ctx.fail(f"input must be at least (N, C), got {list(s)}")
    for i, nm in zip(range(first, first + n), ("scale", "bias")):
        if tuple(ctx.shape(i)) != (s[1],):
            ctx.fail(f"{nm} has shape {list(ctx.shape(i))}, expected [{s[1]}] (the channels of X{list(s)})")


def _instance_norm_infer(ctx: InferCtx):
    _float_input(ctx)
    _channel_params(ctx, 1, 2)
    return [ctx.type(0)]


def group_norm_ref(x, scale, bias, groups: int, eps: float):
    n, c = x.shape[:2]
    xs = x.astype(np.float64).reshape(n, groups, -1)
    mean = xs.mean(axis=2, keepdims=True)
    var = ((xs - mean) ** 2).mean(axis=2, keepdims=True)
    y = ((xs - mean) / np.sqrt(var + eps)).reshape(x.shape)
    shape = (1, c) + (1,) * (x.ndim - 2)
    return (y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)


def _instance_norm_ref(attrs, x, scale, bias):
    return (group_norm_ref(x, scale, bias, x.shape[1], attrs.get("epsilon", 1e-5)),)


register(OpDef("InstanceNormalization", Pattern.REDUCTION, _instance_norm_infer, _instance_norm_ref,
               {"epsilon": 1e-5}, (3, 3)))  # fmt: skip


def _group_norm_infer(ctx: InferCtx):
    _float_input(ctx)
    _channel_params(ctx, 1, 2)
    g = int(ctx.attr("num_groups"))
    c = ctx.shape(0)[1]
    if g <= 0 or (isinstance(c, int) and c % g):
        ctx.fail(f"num_groups={g} does not divide the {c} channels")
    return [ctx.type(0)]


def _group_norm_ref(attrs, x, scale, bias):
    return (group_norm_ref(x, scale, bias, int(attrs["num_groups"]), attrs.get("epsilon", 1e-5)),)


register(OpDef("GroupNormalization", Pattern.REDUCTION, _group_norm_infer, _group_norm_ref,
               {"epsilon": 1e-5, "stash_type": 1}, (3, 3)))  # fmt: skip


# -- LpNormalization -------------------------------------------------------------------------------
def _lp_norm_infer(ctx: InferCtx):
    _float_input(ctx)
    norm_axis(ctx, int(ctx.attr("axis", -1)), ctx.type(0).rank)
    if int(ctx.attr("p", 2)) not in (1, 2):
        ctx.fail(f"p={ctx.attr('p')} must be 1 or 2")
    return [ctx.type(0)]


def _lp_norm_ref(attrs, x, *_):
    axis = int(attrs.get("axis", -1)) % x.ndim
    p = int(attrs.get("p", 2))
    xs = x.astype(np.float64)
    norm = np.abs(xs).sum(axis, keepdims=True) if p == 1 else np.sqrt((xs * xs).sum(axis, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(norm == 0, 0, xs / norm).astype(x.dtype),)


register(OpDef("LpNormalization", Pattern.REDUCTION, _lp_norm_infer, _lp_norm_ref, {"axis": -1, "p": 2}))


# -- LRN -------------------------------------------------------------------------------------------
def _lrn_infer(ctx: InferCtx):
    _float_input(ctx)
    if ctx.type(0).rank < 3:
        ctx.fail(f"input must be (N, C, spatial...), got {list(ctx.shape(0))}")
    if int(ctx.attr("size")) <= 0:
        ctx.fail(f"size={ctx.attr('size')} must be positive")
    return [ctx.type(0)]


def lrn_window(size: int) -> tuple[int, int]:
    """Channels [c - before, c + after] enter the sum for channel c."""
    return (size - 1) // 2, size - 1 - (size - 1) // 2


def _lrn_ref(attrs, x):
    size = int(attrs["size"])
    before, after = lrn_window(size)
    xs = x.astype(np.float64)
    sq = np.zeros_like(xs)
    c = x.shape[1]
    for ch in range(c):
        sq[:, ch] = (xs[:, max(0, ch - before) : min(c, ch + after + 1)] ** 2).sum(axis=1)
    d = (attrs.get("bias", 1.0) + attrs.get("alpha", 1e-4) / size * sq) ** attrs.get("beta", 0.75)
    return ((xs / d).astype(x.dtype),)


register(OpDef("LRN", Pattern.INJECTIVE, _lrn_infer, _lrn_ref,
               {"alpha": 1e-4, "beta": 0.75, "bias": 1.0, "size": Attr(kind="int", min=1)}))  # fmt: skip
