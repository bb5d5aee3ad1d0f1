"""Det: the determinant of each square matrix in the trailing two dims (LU with partial pivoting)."""

from __future__ import annotations

import numpy as np

from ..ir.graph import TensorType
from .registry import InferCtx, OpDef, Pattern, register


def _det_infer(ctx: InferCtx):
    s = ctx.shape(0)
    if not ctx.dtype(0).is_float:
        ctx.fail(f"input must be float, got {ctx.dtype(0)}")
    if len(s) < 2 or s[-1] != s[-2]:
        ctx.fail(f"input must be [..., M, M], got {list(s)}")
    return [TensorType(ctx.dtype(0), tuple(s[:-2]))]


register(OpDef("Det", Pattern.OPAQUE, _det_infer,
               lambda attrs, x: (np.asarray(np.linalg.det(x.astype(np.float64))).astype(x.dtype),)))  # fmt: skip
