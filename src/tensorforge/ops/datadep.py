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


# -- NonMaxSuppression -----------------------------------------------------------------------------
def _nms_infer(ctx: InferCtx):
    b, s = ctx.shape(0), ctx.shape(1)
    if len(b) != 3 or b[-1] != 4 or len(s) != 3 or s[0] != b[0] or s[2] != b[1]:
        ctx.fail(f"boxes {list(b)} must be [batch, boxes, 4] and scores {list(s)} [batch, classes, boxes]")
    return [TensorType(DType.I64, (_count_dim(ctx, "selected"), 3))]


def _corners(boxes: np.ndarray, center: bool) -> np.ndarray:
    """[n, 4] boxes as (y_min, x_min, y_max, x_max)."""
    if center:
        xc, yc, w, h = boxes.T
        return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], 1)
    y1, x1, y2, x2 = boxes.T
    return np.stack([np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2), np.maximum(x1, x2)], 1)


def _iou(one: np.ndarray, many: np.ndarray) -> np.ndarray:
    iy = np.clip(np.minimum(one[2], many[:, 2]) - np.maximum(one[0], many[:, 0]), 0, None)
    ix = np.clip(np.minimum(one[3], many[:, 3]) - np.maximum(one[1], many[:, 1]), 0, None)
    inter = ix * iy
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    union = area(one) + area(many) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where((inter > 0) & (union > 0) & (area(one) > 0) & (area(many) > 0), inter / union, 0.0)
    return iou


def _nms_ref(attrs, boxes, scores, max_out=None, iou_thr=None, score_thr=None):
    """Greedy per (batch, class): highest score first (lower index first on ties), skipping boxes whose
    IoU with a kept box exceeds the threshold, up to max_output_boxes_per_class."""
    limit = 0 if max_out is None or np.asarray(max_out).size == 0 else max(int(np.asarray(max_out).reshape(-1)[0]), 0)
    iou_t = 0.0 if iou_thr is None or np.asarray(iou_thr).size == 0 else float(np.asarray(iou_thr).reshape(-1)[0])
    has_st = score_thr is not None and np.asarray(score_thr).size > 0
    center = bool(attrs.get("center_point_box", 0))
    out = []
    for b in range(boxes.shape[0]):
        corners = _corners(boxes[b].astype(np.float64), center)
        for c in range(scores.shape[1]):
            s = scores[b, c].astype(np.float64)
            cand = np.flatnonzero(s > float(np.asarray(score_thr).reshape(-1)[0])) if has_st else np.arange(s.size)
            order = cand[np.lexsort((cand, -s[cand]))]
            kept: list[int] = []
            for i in order:
                if len(kept) >= limit:
                    break
                if not kept or not np.any(_iou(corners[i], corners[kept]) > iou_t):
                    kept.append(int(i))
                    out.append((b, c, int(i)))
    return (np.array(out, np.int64).reshape(-1, 3),)


register(OpDef("NonMaxSuppression", Pattern.OPAQUE, _nms_infer, _nms_ref, {"center_point_box": 0}, (2, 5),
               data_dependent=True))  # fmt: skip
