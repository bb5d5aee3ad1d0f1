"""Converters of ATen's random ops: dropout in training with a real random mask, drawn in the compiled code.

``native_dropout(x, p, train)`` becomes ``PhiloxUniform(seed, offset) >= p`` (``ops/random.py``, Philox4x32-10
per element) and ``x * mask * 1/(1-p)``; the mask is an output, so the backward graph that AOTAutograd
builds reads the same mask (``native_dropout_backward`` or ``mul`` by the mask). The seed is one int64 graph
input the importer adds (``TorchImporter.random_seed``): under ``torch.compile`` the runner draws it from
PyTorch's default CPU generator at every call (as inductor draws its Philox seeds), so ``torch.manual_seed``
reproduces a run, and each dropout node of a graph has its own offset (its counter stream).
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from .torch_export import Ctx, aten


def _static_shape(cx: Ctx) -> list[int]:
    shape = list(cx.meta(0).shape)
    if not all(isinstance(d, int) for d in shape):
        cx.unsupported(f"a random mask of symbolic shape {shape}")
    return [int(d) for d in shape]


@aten("native_dropout.default")
def _native_dropout(cx: Ctx, x, p, train=None):
    dt = cx.dtype(x)
    p = float(p)
    shape = _static_shape(cx)
    if train is False or p == 0.0:
        ones = cx.emit("ConstantOfShape", cx.ints(shape), value=np.ones(1, bool))
        return [x, ones]
    if not 0.0 <= p <= 1.0:
        cx.unsupported(f"dropout probability {p} outside [0, 1]")
    seed, offset = cx.imp.random_seed(cx), cx.imp.random_offset()
    u = cx.emit("PhiloxUniform", seed, cx.const(offset, DType.I64), shape=shape)
    keep = cx.emit("GreaterOrEqual", u, cx.const(p, DType.F32))
    if p == 1.0:
        return [cx.emit("Mul", x, cx.const(0, dt)), keep]
    y = cx.emit("Mul", cx.emit("Mul", x, cx.cast(keep, dt)), cx.const(1.0 / (1.0 - p), dt))
    return [y, keep]


@aten("native_dropout_backward.default")
def _native_dropout_backward(cx: Ctx, grad, mask, scale):
    dt = cx.dtype(grad)
    return cx.emit("Mul", cx.emit("Mul", grad, cx.cast(mask, dt)), cx.const(float(scale), dt))
