"""GridSample: sample X (N, C, spatial...) at the normalized positions of a grid (N, out..., ndim), with
nearest, linear or cubic interpolation and zeros / border / reflection padding, for any number of
spatial dims.

Per spatial dim, a grid coordinate in [-1, 1] is mapped to the input (``denormalize``), moved inside
the borders by the padding mode, and sampled with 1 (nearest), 2 (linear) or 4 (cubic, Keys a=-0.75)
taps; a tap outside the input reads zero (zeros) or the clamped / reflected position. The N-d value is
the tensor product of the per-dim taps. The numpy reference below and the lowering
(``lower/grid_sample.py``) follow these steps through the same helpers over a ``math`` vocabulary.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..ir.graph import TensorType
from .registry import InferCtx, OpDef, Pattern, register

MODES = {"nearest": "nearest", "linear": "linear", "bilinear": "linear", "cubic": "cubic", "bicubic": "cubic"}
PADDINGS = ("zeros", "border", "reflection")
CUBIC_A = -0.75


def borders(size: int, align_corners: bool) -> tuple[float, float]:
    return (0.0, size - 1.0) if align_corners else (-0.5, size - 0.5)


def denormalize(m, g, size: int, align_corners: bool):
    if align_corners:
        return m.mul(m.add(g, m.c(1.0)), m.c((size - 1) / 2.0))
    return m.div(m.sub(m.mul(m.add(g, m.c(1.0)), m.c(float(size))), m.c(1.0)), m.c(2.0))


def reflect(m, x, lo: float, hi: float):
    """Fold x into [lo, hi] by reflecting at the borders (repeatedly)."""
    span = hi - lo
    if span <= 0:
        return m.c(lo)
    below, above = m.lt(x, m.c(lo)), m.gt(x, m.c(hi))
    d = m.select(below, m.sub(m.c(lo), x), m.sub(x, m.c(hi)))
    k = m.trunc(m.div(d, m.c(span)))
    r = m.sub(d, m.mul(k, m.c(span)))
    even = m.eq(m.sub(k, m.mul(m.floor(m.div(k, m.c(2.0))), m.c(2.0))), m.c(0.0))
    low_side = m.select(even, m.add(m.c(lo), r), m.sub(m.c(hi), r))
    high_side = m.select(even, m.sub(m.c(hi), r), m.add(m.c(lo), r))
    return m.select(below, low_side, m.select(above, high_side, x))


def cubic_weights(m, t):
    a = CUBIC_A

    def far(u):  # 1 < |u| < 2
        return m.sub(m.mul(m.add(m.mul(m.sub(m.mul(m.c(a), u), m.c(5 * a)), u), m.c(8 * a)), u), m.c(4 * a))

    def near(u):  # |u| <= 1
        return m.add(m.mul(m.mul(m.sub(m.mul(m.c(a + 2), u), m.c(a + 3)), u), u), m.c(1.0))

    one = m.c(1.0)
    return [far(m.add(t, one)), near(t), near(m.sub(one, t)), far(m.sub(m.c(2.0), t))]


def axis_taps(m, g, size: int, mode: str, padding: str, align_corners: bool):
    """Per spatial dim: list of (integer position, weight or None, valid or None) taps."""
    x = denormalize(m, g, size, align_corners)
    lo, hi = borders(size, align_corners)
    if mode == "nearest":
        x = m.rint(x)
    if padding == "border":
        x = m.select(m.logical_or(m.lt(x, m.c(lo)), m.gt(x, m.c(hi))), m.clamp(x, 0.0, size - 1.0), x)
    elif padding == "reflection":
        x = reflect(m, x, lo, hi)
    if mode == "nearest":
        starts, weights = [m.trunc(x)], [None]
    else:
        x0 = m.floor(x)
        t = m.sub(x, x0)
        if mode == "linear":
            starts, weights = [x0, m.add(x0, m.c(1.0))], [m.sub(m.c(1.0), t), t]
        else:
            starts = [m.add(x0, m.c(float(k))) for k in (-1, 0, 1, 2)]
            weights = cubic_weights(m, t)
    taps = []
    for p, w in zip(starts, weights):
        if padding == "zeros":
            valid = m.logical_and(m.ge(p, m.c(0.0)), m.le(p, m.c(size - 1.0)))
            taps.append((m.clamp(p, 0.0, size - 1.0), w, valid))
        elif padding == "border":
            taps.append((m.clamp(p, 0.0, size - 1.0), w, None))
        else:
            taps.append((m.clamp(m.trunc(reflect(m, p, lo, hi)), 0.0, size - 1.0), w, None))
    return taps


def sample(m, load, grid_coord, sizes, attrs):
    """The sampled value at one output position: ``load(positions)`` reads X at integer positions
    (one per spatial dim), ``grid_coord(d)`` is the grid value for spatial dim d."""
    mode = MODES[attrs.get("mode", "linear")]
    padding = attrs.get("padding_mode", "zeros")
    ac = bool(attrs.get("align_corners", 0))
    per_dim = [axis_taps(m, grid_coord(d), s, mode, padding, ac) for d, s in enumerate(sizes)]
    total = None
    for combo in itertools.product(*per_dim):
        v = load([p for p, _, _ in combo])
        for _, w, ok in combo:
            if w is not None:
                v = m.mul(v, w)
            if ok is not None:
                v = m.select(ok, v, m.c(0.0))
        total = v if total is None else m.add(total, v)
    return total


class _NumpyMath:
    """The ``m`` vocabulary on numpy arrays (float64)."""

    def c(self, v):
        return np.float64(v)

    add, sub, mul, div = np.add, np.subtract, np.multiply, np.divide
    lt, gt, le, ge, eq = np.less, np.greater, np.less_equal, np.greater_equal, np.equal
    select, floor, trunc, rint = staticmethod(np.where), np.floor, np.trunc, np.rint
    logical_and, logical_or = np.logical_and, np.logical_or

    def clamp(self, x, lo, hi):
        return np.clip(x, lo, hi)


def _infer(ctx: InferCtx):
    x, g = ctx.shape(0), ctx.shape(1)
    if not ctx.dtype(0).is_float or not ctx.dtype(1).is_float:
        ctx.fail(f"X and grid must be float, got {ctx.dtype(0)} and {ctx.dtype(1)}")
    sp = len(x) - 2
    if sp < 1 or len(g) != sp + 2 or g[-1] != sp or g[0] != x[0]:
        ctx.fail(f"grid {list(g)} must be (N, out..., {sp}) for X{list(x)}")
    if ctx.attr("mode", "linear") not in MODES or ctx.attr("padding_mode", "zeros") not in PADDINGS:
        ctx.fail(f"mode={ctx.attr('mode')!r} / padding_mode={ctx.attr('padding_mode')!r} not supported")
    return [TensorType(ctx.dtype(0), (x[0], x[1], *g[1:-1]))]


def _reference(attrs, x, grid):
    n, c = x.shape[:2]
    sizes = x.shape[2:]
    sp = len(sizes)
    out = np.zeros((n, c, *grid.shape[1:-1]))
    m = _NumpyMath()
    g = grid.astype(np.float64)
    for b in range(n):
        coords = g[b]  # (out..., sp): last axis is (x, y, z...) = reversed spatial order

        def load(pos, b=b):
            idx = tuple(p.astype(np.int64) for p in pos)
            return x[b][(slice(None), *idx)].astype(np.float64)  # (C, out...)

        out[b] = sample(m, load, lambda d, coords=coords: coords[..., sp - 1 - d], sizes, attrs)
    return (out.astype(x.dtype),)


register(OpDef("GridSample", Pattern.INJECTIVE, _infer, _reference,
               {"mode": "linear", "padding_mode": "zeros", "align_corners": 0}, (2, 2)))  # fmt: skip
