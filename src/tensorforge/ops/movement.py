"""Data-movement ops beyond views: Split, Tile, Pad, Trilu, DepthToSpace, SpaceToDepth, ReverseSequence.

Each output element reads one input element at an index computed from its own (pattern INJECTIVE), so all
of them lower to index expressions that fuse into their consumers (``lower/movement.py``).
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import TensorType
from .common import norm_axes, norm_axis
from .registry import Attr, InferCtx, OpDef, Pattern, flag, register


def _int_list(a) -> list[int]:
    return [int(x) for x in np.asarray(a).reshape(-1)]


# -- Split -----------------------------------------------------------------------------------------
def split_sizes(ctx: InferCtx | None, dim: int, n_out: int, split, num_outputs) -> list[int]:
    """Sizes of the pieces along the split axis (explicit, or equal pieces with a smaller last one)."""

    def fail(msg):
        if ctx is None:
            raise ValueError(msg)
        ctx.fail(msg)

    if split is not None:
        sizes = _int_list(split)
        if sum(sizes) != dim or any(s < 0 for s in sizes):
            fail(f"split sizes {sizes} do not add up to the axis size {dim}")
        if len(sizes) != n_out:
            fail(f"split gives {len(sizes)} sizes but the node has {n_out} outputs")
        return sizes
    n = int(num_outputs) if num_outputs is not None else n_out
    if n <= 0:
        fail(f"cannot split into {n} pieces")
    if not isinstance(dim, int):
        fail("cannot split a symbolic dim into equal pieces")
    chunk = -(-dim // n)
    sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
    if sizes[-1] < 0:
        fail(f"cannot split {dim} into {n} pieces of {chunk}")
    return sizes


def _split_infer(ctx: InferCtx):
    s = ctx.shape(0)
    axis = norm_axis(ctx, int(ctx.attr("axis", 0)), len(s))
    split = ctx.require_const(1, "split sizes") if ctx.has(1) else None
    sizes = split_sizes(ctx, s[axis], len(ctx.node.outputs), split, ctx.attr("num_outputs"))
    return [TensorType(ctx.dtype(0), tuple(n if i == axis else d for i, d in enumerate(s))) for n in sizes]


def _split_ref(attrs, x, split=None):
    axis = int(attrs.get("axis", 0)) % x.ndim
    n_out = attrs.get("_n_outputs") or attrs.get("num_outputs") or (len(split) if split is not None else 1)
    sizes = split_sizes(None, x.shape[axis], int(n_out), split, attrs.get("num_outputs"))
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


register(OpDef("Split", Pattern.INJECTIVE, _split_infer, _split_ref,
               {"axis": 0, "num_outputs": Attr(kind="int", min=1)}, (1, 2)))  # fmt: skip


# -- Tile ------------------------------------------------------------------------------------------
def _tile_infer(ctx: InferCtx):
    s = ctx.shape(0)
    reps = _int_list(ctx.require_const(1, "repeats"))
    if len(reps) != len(s):
        ctx.fail(f"repeats {reps} must have one entry per dim of the input {list(s)}")
    if any(r < 0 for r in reps):
        ctx.fail(f"repeats {reps} must be non-negative")
    out = tuple(d * r if isinstance(d, int) else (d if r == 1 else ctx.fail("tiling a symbolic dim")) for d, r in
                zip(s, reps))  # fmt: skip
    return [TensorType(ctx.dtype(0), out)]


register(OpDef("Tile", Pattern.INJECTIVE, _tile_infer, lambda attrs, x, r: (np.tile(x, _int_list(r)),), {}, (2, 2)))


# -- Pad -------------------------------------------------------------------------------------------
PAD_MODES = ("constant", "reflect", "edge", "wrap")


def pad_amounts(ctx: InferCtx | None, rank: int, pads, axes) -> list[tuple[int, int]]:
    """(before, after) per dim; negative amounts crop."""
    pads = _int_list(pads)
    axes_l = list(range(rank)) if axes is None else [int(a) % rank if rank else 0 for a in _int_list(axes)]
    if ctx is not None and axes is not None:
        norm_axes(ctx, _int_list(axes), rank)
    if len(pads) != 2 * len(axes_l):
        msg = f"pads {pads} must have 2 entries per padded axis ({len(axes_l)} axes)"
        if ctx is None:
            raise ValueError(msg)
        ctx.fail(msg)
    out = [(0, 0)] * rank
    for i, a in enumerate(axes_l):
        out[a] = (pads[i], pads[i + len(axes_l)])
    return out


def _pad_infer(ctx: InferCtx):
    s = ctx.shape(0)
    mode = ctx.attr("mode", "constant")
    if mode not in PAD_MODES:
        ctx.fail(f"mode={mode!r} is not one of {', '.join(PAD_MODES)}")
    amounts = pad_amounts(ctx, len(s), ctx.require_const(1, "pads"),
                          ctx.require_const(3, "axes") if ctx.has(3) else None)  # fmt: skip
    if ctx.has(2) and ctx.dtype(2) != ctx.dtype(0):
        ctx.fail(f"constant_value has dtype {ctx.dtype(2)}, input has {ctx.dtype(0)}")
    out = []
    for d, (b, e) in zip(s, amounts):
        if not isinstance(d, int):
            if b or e:
                ctx.fail(f"padding symbolic dim {d}")
            out.append(d)
            continue
        n = d + b + e
        if n < 0:
            ctx.fail(f"pads {b}, {e} crop more than the dim size {d}")
        if mode != "constant" and (b > 0 or e > 0) and d == 0:
            ctx.fail(f"mode={mode} cannot pad an empty dim")
        if mode == "reflect" and (b >= d or e >= d) and (b > 0 or e > 0) and d > 1:
            pass  # numpy reflects repeatedly; ONNX Runtime rejects it: we follow numpy
        out.append(n)
    return [TensorType(ctx.dtype(0), tuple(out))]


def _pad_ref(attrs, x, pads, value=None, axes=None):
    mode = attrs.get("mode", "constant")
    amounts = pad_amounts(None, x.ndim, pads, axes)
    crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(amounts))
    x = x[crop]
    widths = [(max(b, 0), max(e, 0)) for b, e in amounts]
    if mode == "constant":
        v = 0 if value is None or np.asarray(value).size == 0 else np.asarray(value).reshape(-1)[0]
        return (np.pad(x, widths, mode="constant", constant_values=v),)
    return (np.pad(x, widths, mode=mode),)


register(OpDef("Pad", Pattern.INJECTIVE, _pad_infer, _pad_ref,
               {"mode": Attr("constant", choices=("constant", "reflect", "edge", "wrap"))}, (2, 4)))  # fmt: skip


# -- Trilu -----------------------------------------------------------------------------------------
def _trilu_infer(ctx: InferCtx):
    if ctx.type(0).rank < 2:
        ctx.fail(f"input must be at least 2-D, got {list(ctx.shape(0))}")
    if ctx.has(1):
        ctx.require_const(1, "k")
    return [ctx.type(0)]


def _trilu_ref(attrs, x, k=None):
    k = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    return ((np.triu(x, k) if attrs.get("upper", 1) else np.tril(x, k)).astype(x.dtype),)


register(OpDef("Trilu", Pattern.INJECTIVE, _trilu_infer, _trilu_ref, {"upper": flag(1)}, (1, 2)))


# -- DepthToSpace / SpaceToDepth -------------------------------------------------------------------
def _d2s_infer(ctx: InferCtx):
    s = ctx.shape(0)
    b = int(ctx.attr("blocksize"))
    if len(s) != 4:
        ctx.fail(f"input must be 4-D (N, C, H, W), got {list(s)}")
    n, c, h, w = s
    if ctx.node.op == "DepthToSpace":
        if c % (b * b):
            ctx.fail(f"channels {c} are not divisible by blocksize^2 = {b * b}")
        out = (n, c // (b * b), h * b, w * b)
    else:
        if h % b or w % b:
            ctx.fail(f"spatial size {h}x{w} is not divisible by blocksize {b}")
        out = (n, c * b * b, h // b, w // b)
    return [TensorType(ctx.dtype(0), out)]


def depth_to_space(x, b: int, mode: str):
    n, c, h, w = x.shape
    if mode == "DCR":
        t = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        t = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return t.reshape(n, c // (b * b), h * b, w * b)


def space_to_depth(x, b: int, mode: str = "DCR"):
    n, c, h, w = x.shape
    perm = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)
    t = x.reshape(n, c, h // b, b, w // b, b).transpose(*perm)
    return t.reshape(n, c * b * b, h // b, w // b)


def _d2s_ref(a, x):
    return (depth_to_space(x, int(a["blocksize"]), a.get("mode", "DCR")),)


def _s2d_ref(a, x):
    return (space_to_depth(x, int(a["blocksize"]), a.get("mode", "DCR")),)


_BLOCK_ATTRS = {"blocksize": Attr(kind="int", min=1), "mode": Attr("DCR", choices=("DCR", "CRD"))}
register(OpDef("DepthToSpace", Pattern.INJECTIVE, _d2s_infer, _d2s_ref, _BLOCK_ATTRS))
register(OpDef("SpaceToDepth", Pattern.INJECTIVE, _d2s_infer, _s2d_ref, _BLOCK_ATTRS))


# -- ReverseSequence -------------------------------------------------------------------------------
def _revseq_infer(ctx: InferCtx):
    s = ctx.shape(0)
    if len(s) < 2:
        ctx.fail(f"input must be at least 2-D, got {list(s)}")
    tax, bax = int(ctx.attr("time_axis", 0)), int(ctx.attr("batch_axis", 1))
    if {tax, bax} != {0, 1}:
        ctx.fail(f"time_axis={tax} and batch_axis={bax} must be 0 and 1")
    if ctx.shape(1) != (s[bax],):
        ctx.fail(f"sequence_lens has shape {list(ctx.shape(1))}, expected [{s[bax]}]")
    return [ctx.type(0)]


def _revseq_ref(attrs, x, lens):
    tax, bax = int(attrs.get("time_axis", 0)), int(attrs.get("batch_axis", 1))
    y = x.copy()
    for b, n in enumerate(np.asarray(lens).reshape(-1)):
        n = int(n)
        if not 0 <= n <= x.shape[tax]:
            raise IndexError(f"sequence length {n} is out of range [0, {x.shape[tax]}]")
        src = [slice(None)] * x.ndim
        src[bax], src[tax] = b, slice(n - 1, None, -1) if n > 0 else slice(0, 0)
        dst = [slice(None)] * x.ndim
        dst[bax], dst[tax] = b, slice(0, n)
        y[tuple(dst)] = x[tuple(src)]
    return (y,)


register(OpDef("ReverseSequence", Pattern.INJECTIVE, _revseq_infer, _revseq_ref, {"time_axis": 0, "batch_axis": 1},
               (2, 2)))  # fmt: skip
