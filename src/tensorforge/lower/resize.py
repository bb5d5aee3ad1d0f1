"""Lowering of Resize as an index expression: for each output element, the weighted sum over the product
of the changed axes' taps, with the tap indices and weights read from tables computed at compile time
(``ops/resize.axis_taps``). Nearest mode is a pure gather (one tap, no arithmetic, any dtype)."""

from __future__ import annotations

import itertools

import numpy as np

from ..ir.dtype import DType
from ..ops.resize import resize_taps
from . import kir as K
from .kir import Const
from .rules import LowerCtx, index_rule
from .tensor import TExpr

MAX_TERMS = 1024  # taps per output element (antialiased downsampling by large factors needs many)


def _const(t: TExpr | None):
    return None if t is None else t.const


@index_rule("Resize")
def _resize(ctx: LowerCtx, node, ins):
    x = ins[0]
    roi, scales, sizes = (_const(ins[i]) if len(ins) > i else None for i in (1, 2, 3))
    out_shape, taps = resize_taps(x.shape, node.attrs, roi, scales, sizes)
    out = node.outputs[0]
    nearest = node.attrs.get("mode", "nearest") == "nearest"
    cdt = x.dtype.compute if x.dtype.is_float else DType.F32
    extrap = float(node.attrs.get("extrapolation_value", 0.0))
    n_terms = int(np.prod([t.index.shape[1] for t in taps.values()])) if taps else 1
    if n_terms > MAX_TERMS:
        ctx.unsupported(f"{n_terms} taps per output element (antialiased downsampling by a large factor)")
    tables = {}
    for a, t in taps.items():
        name = f"{node.name or out.name}_ax{a}"
        idx = ctx.const_view(t.index.astype(np.int32), name + "_idx")
        w = None if nearest else ctx.const_view(t.weight.astype(cdt.np), name + "_w")
        mask = None if t.outside is None else ctx.const_view(t.outside.astype(np.bool_), name + "_out")
        tables[a] = (idx, w, mask, t.index.shape[1])
    axes = sorted(tables)

    def fn(idx):
        total = None
        for combo in itertools.product(*(range(tables[a][3]) for a in axes)):
            src, weight = list(idx), None
            for a, k in zip(axes, combo):
                it, wt, _, _ = tables[a]
                src[a] = K.cast(it.load([idx[a], Const(k)]), K.I64)
                if wt is not None:
                    w = wt.load([idx[a], Const(k)])
                    weight = w if weight is None else K.binop("mul", weight, w)
            v = x(src)
            if nearest:
                total = v
                break
            term = K.binop("mul", K.cast(v, cdt), weight) if weight is not None else K.cast(v, cdt)
            total = term if total is None else K.binop("add", total, term)
        if total is None:  # no axis changes: a copy
            total = x(idx) if nearest else K.cast(x(idx), cdt)
        if not nearest and not x.dtype.is_float:  # integers: round to nearest, saturate
            info = np.iinfo(x.dtype.np)
            total = K.binop("max", K.binop("min", K.unop("round", total), K.const(float(info.max), cdt)),
                            K.const(float(info.min), cdt))  # fmt: skip
        for a in axes:
            mask = tables[a][2]
            if mask is not None:
                total = K.select(mask.load([idx[a]]), K.const(extrap, total.dtype), total)
        return K.cast(total, out.dtype)

    return [TExpr.compute(tuple(out_shape), out.dtype, fn)]
