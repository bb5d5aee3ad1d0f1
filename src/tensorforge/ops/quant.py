"""Integer ops with ONNX semantics: MatMulInteger and ConvInteger.

Both take 8-bit operands (uint8 or int8, each side independently) and optional zero points, and produce
the exact int32 product of the zero-point-shifted operands:

* ``MatMulInteger(A, B, a_zero_point?, b_zero_point?)``: numpy-broadcast batched product like MatMul;
  ``a_zero_point`` is a scalar or per row of A (``[M]``, or ``[..., M, 1]`` for a batched A),
  ``b_zero_point`` a scalar or per column of B (``[N]``, or ``[..., 1, N]``).
* ``ConvInteger(x, w, x_zero_point?, w_zero_point?)`` with Conv's attributes: ``x_zero_point`` a scalar,
  ``w_zero_point`` a scalar or one per output channel (``[M]``).

The references accumulate in int64 (exact) and return int32, as the kernels do. The QLinear forms and
QDQ-folded models are these ops followed by elementwise float rescaling and requantization, which fuse
into the integer kernel's epilogue (``Pattern.OUT_FUSABLE``; lowered in ``lower/qgemm.py``).
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from ..ir.graph import Node, TensorType
from .common import prod
from .nn import WINDOW_ATTRS, _conv_window, _static, conv_accumulate, matmul_shape
from .registry import Attr, InferCtx, OpDef, Pattern, register

INT8_TYPES = (DType.U8, DType.I8)


def _need_8bit(ctx: InferCtx, i: int, what: str) -> DType:
    dt = ctx.dtype(i)
    if dt not in INT8_TYPES:
        ctx.fail(f"{what} must be uint8 or int8, got {dt}")
    return dt


def _check_zero_point(ctx: InferCtx, i: int, what: str, operand: str, dt: DType, ok_shapes) -> None:
    """A zero point (input ``i``, optional) must have its operand's dtype and one of ``ok_shapes``."""
    if not ctx.has(i):
        return
    if ctx.dtype(i) is not dt:
        ctx.fail(f"{what} must have the dtype of {operand} ({dt}), got {ctx.dtype(i)}")
    shape = tuple(ctx.shape(i))
    if not any(_shape_ok(shape, s) for s in ok_shapes):
        want = " or ".join(str(list(s)) for s in ok_shapes)
        ctx.fail(f"{what} has shape {list(shape)}, expected a scalar or {want}")


def _shape_ok(shape, want) -> bool:
    """``shape`` matches ``want`` where ``want`` is a tuple of ints or None (any extent)."""
    return len(shape) == len(want) and all(
        w is None or not isinstance(d, int) or d in (w, 1) for d, w in zip(shape, want)
    )


def _matmul_integer_infer(ctx: InferCtx):
    adt = _need_8bit(ctx, 0, "A")
    bdt = _need_8bit(ctx, 1, "B")
    a, b = ctx.shape(0), ctx.shape(1)
    out = matmul_shape(ctx, a, b)
    if ctx.has(2):
        m = a[-2] if len(a) >= 2 else 1
        ok = [(), (1,), (m,)] + ([(*a[:-2], m, 1)] if len(a) > 2 else [(m, 1)] if len(a) == 2 else [])
        _check_zero_point(ctx, 2, "a_zero_point", "A", adt, ok)
    if ctx.has(3):
        n = b[-1] if len(b) >= 2 else 1
        ok = [(), (1,), (n,)] + ([(*b[:-2], 1, n)] if len(b) > 2 else [])
        _check_zero_point(ctx, 3, "b_zero_point", "B", bdt, ok)
    return [TensorType(DType.I32, out)]


def a_zero_point_array(zp: np.ndarray | None, a_shape) -> np.ndarray:
    """A's zero point as an int64 array broadcasting against A (a vector is per row: ``[M] -> [M, 1]``)."""
    if zp is None:
        return np.zeros((), np.int64)
    z = np.asarray(zp).astype(np.int64)
    if z.ndim == 1 and len(a_shape) >= 2:
        return z.reshape(-1, 1)
    return z


def shifted_operands(a, b, azp=None, bzp=None) -> tuple[np.ndarray, np.ndarray]:
    """``(A - a_zp, B - b_zp)`` as int64 arrays, zero points laid out as ONNX specifies."""
    a64 = a.astype(np.int64) - a_zero_point_array(azp, a.shape)
    b64 = b.astype(np.int64) - (np.zeros((), np.int64) if bzp is None else np.asarray(bzp).astype(np.int64))
    return a64, b64


def _matmul_integer_ref(attrs, a, b, azp=None, bzp=None):
    a64, b64 = shifted_operands(a, b, azp, bzp)
    return (np.matmul(a64, b64).astype(np.int32),)


def _matmul_integer_flops(node: Node) -> int:
    out = node.outputs[0].shape
    k = node.inputs[0].shape[-1]
    return 2 * prod(out) * k if _static((*out, k)) else 0


register(OpDef("MatMulInteger", Pattern.OUT_FUSABLE, _matmul_integer_infer, _matmul_integer_ref, {}, (2, 4),
               flops=_matmul_integer_flops,
               doc="int32 = (A - a_zero_point) @ (B - b_zero_point), 8-bit operands"))  # fmt: skip


def _conv_integer_infer(ctx: InferCtx):
    xdt = _need_8bit(ctx, 0, "x")
    wdt = _need_8bit(ctx, 1, "w")
    x, w = ctx.shape(0), ctx.shape(1)
    if len(x) < 3 or len(w) != len(x):
        ctx.fail(f"x{list(x)} and w{list(w)} must both be (N, C, spatial...) of the same rank")
    if not _static(x[1:]) or not _static(w):
        ctx.fail(f"ConvInteger needs static channel and spatial sizes, got x{list(x)} w{list(w)}")
    group = int(ctx.attr("group", 1))
    c, m = x[1], w[0]
    if c % group or m % group:
        ctx.fail(f"group={group} does not divide input channels {c} and output channels {m}")
    if w[1] * group != c:
        ctx.fail(f"w{list(w)} expects {w[1] * group} input channels (w.shape[1] x group={group}), x{list(x)} has {c}")
    ks = ctx.attr("kernel_shape")
    if ks and tuple(ks) != tuple(w[2:]):
        ctx.fail(f"kernel_shape={list(ks)} does not match w{list(w)}")
    _check_zero_point(ctx, 2, "x_zero_point", "x", xdt, [(), (1,)])
    _check_zero_point(ctx, 3, "w_zero_point", "w", wdt, [(), (1,), (m,)])
    win = _conv_window(ctx, x, w, ctx.attrs)
    return [TensorType(DType.I32, (x[0], m, *win.out_size))]


def conv_integer_reference(attrs, x, w, xzp=None, wzp=None) -> np.ndarray:
    """The exact int64 convolution of ``x - x_zp`` and ``w - w_zp`` (w_zp scalar or per output channel); the
    padding is the zero point (0 once shifted)."""
    x64 = x.astype(np.int64) - (0 if xzp is None else np.int64(np.asarray(xzp).reshape(-1)[0]))
    w64 = w.astype(np.int64)
    if wzp is not None:
        w64 = w64 - np.asarray(wzp).astype(np.int64).reshape((-1,) + (1,) * (w.ndim - 1))
    return conv_accumulate(attrs, x64, w64, np.int64)


def _conv_integer_ref(attrs, x, w, xzp=None, wzp=None):
    return (conv_integer_reference(attrs, x, w, xzp, wzp).astype(np.int32),)


def _conv_integer_flops(node: Node) -> int:
    out = node.outputs[0].shape
    w = node.inputs[1].shape
    return 2 * prod(out) * prod(w[1:]) if _static(out) and _static(w) else 0


register(OpDef("ConvInteger", Pattern.OUT_FUSABLE, _conv_integer_infer, _conv_integer_ref,
               {**WINDOW_ATTRS, "group": Attr(1, min=1)}, (2, 4), flops=_conv_integer_flops,
               doc="int32 = conv(x - x_zero_point, w - w_zero_point), 8-bit operands"))  # fmt: skip
