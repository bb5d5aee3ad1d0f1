"""Ops that create tensors from a shape or a few scalars: ConstantOfShape, Range, EyeLike.

ConstantOfShape with a known shape folds to a zero-stride (broadcast) numpy array: exported models
(the ONNX "light" model zoo among them) create whole weight tensors this way, and a broadcast array of
any size costs one element until a kernel needs it packed.
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from ..ir.graph import TensorType
from .fold import within_fold_budget
from .registry import Attr, InferCtx, OpDef, Pattern, register


def _fill_value(attrs) -> np.ndarray:
    v = attrs.get("value")
    if v is None:
        return np.zeros((), np.float32)
    v = np.asarray(v)
    return v.reshape(-1)[0] if v.size else np.zeros((), v.dtype)


def _cos_shape(ctx: InferCtx) -> tuple[int, ...]:
    shape = ctx.require_const(0, "the shape")
    if shape.ndim != 1:
        ctx.fail(f"shape input must be 1-D, got shape {list(shape.shape)}")
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        ctx.fail(f"shape {list(dims)} has a negative dim")
    return dims


def _cos_infer(ctx: InferCtx):
    dt = DType.from_numpy(np.asarray(_fill_value(ctx.attrs)).dtype)
    return [TensorType(dt, _cos_shape(ctx))]


def _cos_ref(attrs, shape):
    v = np.asarray(_fill_value(attrs))
    return (np.full(tuple(int(d) for d in shape), v, dtype=v.dtype),)


def _cos_value(ctx: InferCtx):
    if ctx.const(0) is None:
        return None
    v = np.asarray(_fill_value(ctx.attrs))
    return [np.broadcast_to(v, _cos_shape(ctx))]


register(OpDef("ConstantOfShape", Pattern.INJECTIVE, _cos_infer, _cos_ref, {}, (1, 1), value=_cos_value))


# -- Range -----------------------------------------------------------------------------------------
def range_len(start, limit, delta) -> int:
    start, limit, delta = (np.asarray(v).reshape(-1)[0] for v in (start, limit, delta))
    if delta == 0:
        raise ValueError("Range delta is 0")
    return max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)


def _range_infer(ctx: InferCtx):
    dts = {ctx.dtype(i) for i in range(3)}
    if len(dts) != 1:
        ctx.fail(f"start, limit and delta must have one dtype, got {sorted(str(d) for d in dts)}")
    vals = [ctx.require_const(i, name) for i, name in enumerate(("start", "limit", "delta"))]
    if any(v.size != 1 for v in vals):
        ctx.fail("start, limit and delta must be scalars")
    try:
        n = range_len(*vals)
    except ValueError as e:
        ctx.fail(str(e))
    return [TensorType(dts.pop(), (n,))]


def _range_ref(attrs, start, limit, delta):
    n = range_len(start, limit, delta)
    s, d = np.asarray(start).reshape(-1)[0], np.asarray(delta).reshape(-1)[0]
    return ((s + np.arange(n).astype(np.asarray(start).dtype) * d).astype(np.asarray(start).dtype),)


register(OpDef("Range", Pattern.INJECTIVE, _range_infer, _range_ref, {}, (3, 3)))


# -- EyeLike ---------------------------------------------------------------------------------------
def _eyelike_infer(ctx: InferCtx):
    s = ctx.shape(0)
    if len(s) != 2:
        ctx.fail(f"input must be 2-D, got {list(s)}")
    dt = ctx.attr("dtype")
    return [TensorType(ctx.dtype(0) if dt is None else DType.from_onnx(int(dt)), tuple(s))]


def _eyelike_ref(attrs, x):
    dt = attrs.get("dtype")
    dtype = x.dtype if dt is None else DType.from_onnx(int(dt)).np
    return (np.eye(*x.shape, k=int(attrs.get("k", 0)), dtype=dtype),)


def _eyelike_value(ctx: InferCtx):
    s = ctx.shape(0)
    if not all(isinstance(d, int) for d in s) or s[0] * s[1] > 1 << 16:
        return None
    return list(_eyelike_ref(ctx.attrs, np.empty(s, ctx.dtype(0).np)))


register(OpDef("EyeLike", Pattern.INJECTIVE, _eyelike_infer, _eyelike_ref, {"k": 0, "dtype": Attr(kind="dtype")},
               (1, 1), value=_eyelike_value))  # fmt: skip


# -- MelWeightMatrix -------------------------------------------------------------------------------
_MEL_INPUTS = ("num_mel_bins", "dft_length", "sample_rate", "lower_edge_hertz", "upper_edge_hertz")


def mel_weight_matrix(bins: int, dft: int, rate: int, low: float, high: float) -> np.ndarray:
    """Triangular filters between mel-spaced frequencies, on the dft // 2 + 1 spectrogram bins."""

    def to_mel(hz):
        return 2595 * np.log10(1 + hz / 700)

    mel = np.arange(bins + 2) * ((to_mel(high) - to_mel(low)) / (bins + 2)) + to_mel(low)
    edges = (((dft + 1) * (700 * (10 ** (mel / 2595) - 1))) // rate).astype(np.int64)
    out = np.zeros((dft // 2 + 1, bins))
    for i in range(bins):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        if mid == lo:
            out[mid, i] = 1
        else:
            out[lo : mid + 1, i] = (np.arange(lo, mid + 1) - lo) / (mid - lo)
        if hi > mid:
            out[mid:hi, i] = (hi - np.arange(mid, hi)) / (hi - mid)
    return out


def _mel_args(ctx_or_vals):
    vals = [np.asarray(v).reshape(-1)[0] for v in ctx_or_vals]
    return int(vals[0]), int(vals[1]), int(vals[2]), float(vals[3]), float(vals[4])


def _mel_dtype(attrs) -> DType:
    return DType.from_onnx(int(attrs.get("output_datatype", 1)))


def _mel_infer(ctx: InferCtx):
    bins, dft, _, _, _ = _mel_args([ctx.require_const(i, n) for i, n in enumerate(_MEL_INPUTS)])
    return [TensorType(_mel_dtype(ctx.attrs), (dft // 2 + 1, bins))]


def _mel_ref(attrs, *vals):
    return (mel_weight_matrix(*_mel_args(vals)).astype(_mel_dtype(attrs).np),)


def _mel_value(ctx: InferCtx):
    if any(ctx.const(i) is None for i in range(5)) or not within_fold_budget(ctx.node):  # a dense matrix
        return None
    return list(_mel_ref(ctx.attrs, *(ctx.const(i) for i in range(5))))


register(OpDef("MelWeightMatrix", Pattern.OPAQUE, _mel_infer, _mel_ref, {"output_datatype": Attr(1, kind="dtype")},
               (5, 5), value=_mel_value))  # fmt: skip
