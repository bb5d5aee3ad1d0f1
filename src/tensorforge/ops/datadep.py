"""Ops whose output *shape* depends on input *data*: NonZero, Compress, Unique.

Their type rules give a symbolic dim (named after the node) for the data-dependent size. A model that
uses them runs as a ``DynamicModel`` (``dynamic.py``): the graph is compiled in segments split at these
nodes, and the node itself runs on the host with the numpy semantics below between two native segments
(a graph break, as torch.compile makes for ``nonzero``). Compress with a constant condition is a Gather
and is imported as one (``frontends/onnx_ops.py``).
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from ..ir.graph import TensorType
from .common import norm_axis
from .registry import InferCtx, OpDef, Pattern, register


def _count_dim(ctx: InferCtx, what: str = "n") -> str:
    return f"{ctx.node.name or ctx.node.outputs[0].name}_{what}"


def _nonzero_infer(ctx: InferCtx):
    return [TensorType(DType.I64, (max(ctx.type(0).rank, 1), _count_dim(ctx)))]


def _nonzero_ref(attrs, x):
    x = np.asarray(x)
    if x.ndim == 0:
        return (np.zeros((1, int(bool(x))), np.int64),)
    return (np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1),)


register(OpDef("NonZero", Pattern.OPAQUE, _nonzero_infer, _nonzero_ref, data_dependent=True))


def _compress_infer(ctx: InferCtx):
    s = ctx.shape(0)
    if ctx.dtype(1) is not DType.BOOL or ctx.type(1).rank != 1:
        ctx.fail(f"condition must be a 1-D bool tensor, got {ctx.type(1)}")
    axis = ctx.attr("axis")
    if axis is None:
        return [TensorType(ctx.dtype(0), (_count_dim(ctx),))]
    axis = norm_axis(ctx, int(axis), len(s))
    return [TensorType(ctx.dtype(0), tuple(_count_dim(ctx) if i == axis else d for i, d in enumerate(s)))]


def _compress_ref(attrs, x, cond):
    axis = attrs.get("axis")
    return (np.compress(np.asarray(cond, bool), x, axis=None if axis is None else int(axis)),)


register(OpDef("Compress", Pattern.OPAQUE, _compress_infer, _compress_ref, {}, (2, 2), data_dependent=True))


def _unique_infer(ctx: InferCtx):
    s = ctx.shape(0)
    u = _count_dim(ctx, "unique")
    axis = ctx.attr("axis")
    if axis is None:
        y = (u,)
        n_in = None
    else:
        axis = norm_axis(ctx, int(axis), len(s))
        y = tuple(u if i == axis else d for i, d in enumerate(s))
        n_in = s[axis]
    inverse = (n_in,) if n_in is not None else ((int(np.prod(s)),) if all(isinstance(d, int) for d in s) else
                                                 (_count_dim(ctx, "numel"),))  # fmt: skip
    return [TensorType(ctx.dtype(0), y), TensorType(DType.I64, (u,)), TensorType(DType.I64, inverse),
            TensorType(DType.I64, (u,))]  # fmt: skip


def _unique_ref(attrs, x):
    axis = attrs.get("axis")
    flat = axis is None
    y, first, inverse, counts = np.unique(x if not flat else x.reshape(-1), return_index=True, return_inverse=True,
                                          return_counts=True, axis=None if flat else int(axis))  # fmt: skip
    inverse = inverse.reshape(-1)
    if not attrs.get("sorted", 1):
        order = np.argsort(first, kind="stable")  # unique values in order of first occurrence
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        first, counts, inverse = first[order], counts[order], rank[inverse]
        y = x.reshape(-1)[first] if flat else np.take(x, first, axis=int(axis))
    return (y, first.astype(np.int64), inverse.astype(np.int64), counts.astype(np.int64))


register(OpDef("Unique", Pattern.OPAQUE, _unique_infer, _unique_ref, {"sorted": 1}, (1, 1), data_dependent=True))
