"""Resize (and Upsample, imported as Resize): nearest, linear and cubic interpolation, every coordinate
transformation mode, antialiasing, ``axes`` and ``keep_aspect_ratio_policy``.

Resize is separable: each output position along a resized axis reads a few input positions of that axis
(its *taps*) with fixed weights. Shapes are static when compiled, so ``axis_taps`` computes the tap
indices and weights of every axis once, at compile time, in float64; the kernel is then a weighted sum
over the product of the axes' taps (``lower/resize.py``), and the numpy reference applies the same
tables one axis at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.graph import TensorType
from .registry import InferCtx, OpDef, Pattern, register

MODES = ("nearest", "linear", "cubic")
CTMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
        "tf_crop_and_resize")  # fmt: skip
NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@dataclass(frozen=True)
class Taps:
    """Per output position of one axis: input indices [out, n], weights [out, n], extrapolated [out]."""

    index: np.ndarray
    weight: np.ndarray
    outside: np.ndarray | None


def resize_plan(shape, attrs, roi, scales, sizes) -> tuple[list[int], list[float], list[tuple[float, float]]]:
    """Output shape, per-axis scale and per-axis roi (start, end) for an input of ``shape``."""
    r = len(shape)
    axes = [int(a) % r for a in attrs.get("axes") or range(r)]
    if roi is not None and np.asarray(roi).size == 0:
        roi = None
    if sizes is not None and np.asarray(sizes).size == 0:
        sizes = None
    if scales is not None and np.asarray(scales).size == 0:
        scales = None
    full_roi = [(0.0, 1.0)] * r
    if roi is not None:
        roi = [float(v) for v in np.asarray(roi).reshape(-1)]
        n = len(axes)
        for i, a in enumerate(axes):
            full_roi[a] = (roi[i], roi[n + i])
    out = [int(d) for d in shape]
    sc = [1.0] * r
    if sizes is not None:
        sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
        for i, a in enumerate(axes):
            out[a] = sizes[i]
            sc[a] = sizes[i] / shape[a] if shape[a] else 1.0
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            s = min(sc[a] for a in axes) if policy == "not_larger" else max(sc[a] for a in axes)
            for a in axes:
                sc[a] = s
                out[a] = int(s * shape[a] + 0.5)
    elif scales is not None:
        scales = [float(v) for v in np.asarray(scales).reshape(-1)]
        for i, a in enumerate(axes):
            sc[a] = scales[i]
            out[a] = int(shape[a] * scales[i])  # truncated, as the reference does
    return out, sc, full_roi


def _source_coords(ctm: str, y, scale: float, in_len: int, out_len: int, roi) -> tuple[np.ndarray, np.ndarray | None]:
    out_f = scale * in_len
    if ctm == "align_corners":
        return (np.zeros(out_len) if out_f == 1 else y * (in_len - 1) / (out_f - 1)), None
    if ctm == "asymmetric":
        return y / scale, None
    if ctm == "tf_crop_and_resize":
        if out_f == 1:
            x = np.full(out_len, (roi[1] - roi[0]) * (in_len - 1) / 2)
        else:
            x = y * (roi[1] - roi[0]) * (in_len - 1) / (out_f - 1)
        x = x + roi[0] * (in_len - 1)
        return x, (x < 0) | (x > in_len - 1)
    if ctm == "pytorch_half_pixel":
        return (np.full(out_len, -0.5) if out_f == 1 else (y + 0.5) / scale - 0.5), None
    if ctm == "half_pixel":
        return (y + 0.5) / scale - 0.5, None
    if ctm == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / out_f)
        return offset + (y + 0.5) / scale - 0.5, None
    raise ValueError(f"coordinate_transformation_mode={ctm!r}")


def _coeffs(mode: str, ratio: float, scale: float, attrs) -> np.ndarray:
    """Filter weights for a source position ``ratio`` past its floor (1.0 when exactly on a sample)."""
    if mode == "nearest":
        if ratio == 1.0:
            return np.array([0.0, 1.0])
        nm = attrs.get("nearest_mode", "round_prefer_floor")
        up = {"round_prefer_floor": ratio > 0.5, "round_prefer_ceil": ratio >= 0.5, "floor": False, "ceil": True}[nm]
        return np.array([0.0, 1.0]) if up else np.array([1.0, 0.0])
    aa = bool(attrs.get("antialias", 0))
    s = min(scale, 1.0)
    if mode == "linear":
        if not aa:
            return np.array([1 - ratio, ratio])
        start = int(np.floor(-1 / s) + 1)
        args = (np.arange(start, 2 - start) - ratio) * s
        c = np.clip(1 - np.abs(args), 0, 1)
        return c / c.sum()
    a = float(attrs.get("cubic_coeff_a", -0.75))

    def k(x):
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0

    if not aa:
        return np.array([k(1 + ratio), k(ratio), k(1 - ratio), k(2 - ratio)])
    start = int(np.floor(-2 / s) + 1)
    c = np.array([k(s * (i - ratio)) for i in range(start, 2 - start)])
    return c / c.sum()


def axis_taps(attrs, in_len: int, out_len: int, scale: float, roi) -> Taps:
    mode = attrs.get("mode", "nearest")
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    y = np.arange(out_len, dtype=np.float64)
    x, outside = _source_coords(ctm, y, scale, in_len, out_len, roi)
    base = np.floor(x)
    ratio = np.where(x == base, 1.0, x - base)
    coeffs = np.array([_coeffs(mode, float(r), scale, attrs) for r in ratio]).reshape(out_len, -1)
    n = coeffs.shape[1]
    # the n samples nearest to x, preferring the lower ones (edge-padded input)
    frac = x - base
    if n % 2 == 0:
        first = base + np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        first = base + np.where(frac <= 0.5, -((n - 1) // 2), -((n - 1) // 2) + 1)
    idx = (first[:, None] + np.arange(n)[None, :]).astype(np.int64)
    if attrs.get("exclude_outside", 0):
        coeffs = np.where((idx < 0) | (idx >= in_len), 0.0, coeffs)
        total = coeffs.sum(axis=1, keepdims=True)
        coeffs = coeffs / np.where(total == 0, 1.0, total)
    idx = np.clip(idx, 0, max(in_len - 1, 0))
    if mode == "nearest":  # one tap
        pick = np.argmax(coeffs, axis=1)
        idx = idx[np.arange(out_len), pick][:, None]
        coeffs = np.ones((out_len, 1))
    return Taps(idx, coeffs, outside if outside is not None and outside.any() else None)


def resize_taps(shape, attrs, roi, scales, sizes) -> tuple[list[int], dict[int, Taps]]:
    """Output shape and the taps of every axis that actually changes."""
    out, sc, rois = resize_plan(shape, attrs, roi, scales, sizes)
    taps = {}
    for a, (n_in, n_out) in enumerate(zip(shape, out)):
        ident = n_in == n_out and np.isclose(sc[a], 1.0) and np.allclose(rois[a], (0.0, 1.0))
        if not ident:
            taps[a] = axis_taps(attrs, n_in, n_out, sc[a], rois[a])
    return out, taps


def _infer(ctx: InferCtx):
    s = ctx.shape(0)
    for k, allowed in (("mode", MODES), ("coordinate_transformation_mode", CTMS), ("nearest_mode", NEAREST),
                       ("keep_aspect_ratio_policy", ("stretch", "not_larger", "not_smaller"))):  # fmt: skip
        if ctx.attr(k) is not None and ctx.attr(k) not in allowed:
            ctx.fail(f"{k}={ctx.attr(k)!r} is not one of {', '.join(allowed)}")
    if ctx.attr("mode", "nearest") == "nearest" and ctx.attr("antialias", 0):
        ctx.unsupported("antialias applies to linear and cubic modes only")
    if not all(isinstance(d, int) for d in s):
        ctx.fail(f"Resize needs a static input shape, got {list(s)}")
    roi = ctx.require_const(1, "roi") if ctx.has(1) else None
    scales = ctx.require_const(2, "scales") if ctx.has(2) else None
    sizes = ctx.require_const(3, "sizes") if ctx.has(3) else None
    if (scales is None or scales.size == 0) and (sizes is None or sizes.size == 0):
        ctx.fail("one of scales and sizes must be given")
    out, _, _ = resize_plan(s, ctx.attrs, roi, scales, sizes)
    return [TensorType(ctx.dtype(0), tuple(out))]


def _reference(attrs, x, roi=None, scales=None, sizes=None):
    out, taps = resize_taps(x.shape, attrs, roi, scales, sizes)
    y = x.astype(np.float64)
    for a, t in taps.items():
        g = np.take(y, t.index, axis=a)  # [..., out, n, ...]
        w = t.weight.reshape((1,) * a + t.weight.shape + (1,) * (y.ndim - a - 1))
        y = (g * w).sum(axis=a + 1)
        if t.outside is not None:
            mask = t.outside.reshape((1,) * a + (-1,) + (1,) * (y.ndim - a - 1))
            y = np.where(mask, float(attrs.get("extrapolation_value", 0.0)), y)
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        y = np.clip(np.round(y), info.min, info.max)
    return (y.astype(x.dtype).reshape(out),)


register(OpDef("Resize", Pattern.INJECTIVE, _infer, _reference,
               {"mode": "nearest", "coordinate_transformation_mode": "half_pixel"}, (1, 4)))  # fmt: skip
