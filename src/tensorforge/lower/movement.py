"""Lowering of Split, Tile, Pad, Trilu, DepthToSpace, SpaceToDepth and ReverseSequence as index
expressions (fusable into consumers); Split of a materialized tensor is a set of views (no copy)."""

from __future__ import annotations

import numpy as np

from ..ops.movement import pad_amounts, split_sizes
from ..ops.registry import InferCtx
from . import kir as K
from .kir import Const, Expr, binop
from .rules import LowerCtx, index_rule, view_rule
from .tensor import TExpr


def clamp(e: Expr, lo: int, hi: int) -> Expr:
    """``e`` clamped to [lo, hi] (i64)."""
    return K.maximum(Const(lo), K.minimum(e, Const(hi)))


def floor_mod(e: Expr, m: int) -> Expr:
    """``e mod m`` in [0, m) also for negative ``e``."""
    return binop("mod", binop("add", binop("mod", e, m), m), m)


def scalar_of(t: TExpr) -> Expr:
    """The single element of a one-element tensor."""
    return t([Const(0)] * t.rank)


# -- Split -----------------------------------------------------------------------------------------
def _split_params(node, shape):
    axis = int(node.attrs.get("axis", 0)) % len(shape)
    split = node.inputs[1].const if len(node.inputs) > 1 and node.inputs[1] is not None else None
    sizes = split_sizes(InferCtx(node), shape[axis], len(node.outputs), split, node.attrs.get("num_outputs"))
    return axis, sizes


@view_rule("Split")
def _split_view(ctx: LowerCtx, node, ins):
    x = ins[0]
    if x.view is None:
        return None
    axis, sizes = _split_params(node, x.shape)
    out, off = [], 0
    for n in sizes:
        params = [(0, d, 1, d) for d in x.shape]
        params[axis] = (off, off + n, 1, n)
        out.append(x.view.slice(params))
        off += n
    return out


@index_rule("Split")
def _split_index(ctx: LowerCtx, node, ins):
    x = ins[0]
    axis, sizes = _split_params(node, x.shape)
    out, off = [], 0
    for v, n in zip(node.outputs, sizes):

        def fn(idx, off=off):
            j = list(idx)
            j[axis] = binop("add", j[axis], off)
            return x(j)

        out.append(TExpr.compute(v.shape, x.dtype, fn))
        off += n
    return out


# -- Tile ------------------------------------------------------------------------------------------
@index_rule("Tile")
def _tile(ctx: LowerCtx, node, ins):
    x = ins[0]

    def fn(idx):
        return x([Const(0) if d == 1 else (i if o == d else binop("mod", i, d))
                  for i, d, o in zip(idx, x.shape, node.outputs[0].shape)])  # fmt: skip

    return [TExpr.compute(node.outputs[0].shape, x.dtype, fn)]


# -- Pad -------------------------------------------------------------------------------------------
def _reflect(e: Expr, d: int) -> Expr:
    if d == 1:
        return Const(0)
    p = 2 * (d - 1)
    m = floor_mod(e, p)
    return K.select(K.cmp("ge", m, Const(d)), binop("sub", Const(p), m), m)


@index_rule("Pad")
def _pad(ctx: LowerCtx, node, ins):
    x = ins[0]
    mode = node.attrs.get("mode", "constant")
    axes = ins[3].const if len(ins) > 3 and ins[3] is not None else None
    amounts = pad_amounts(None, x.rank, ins[1].const, axes)
    out = node.outputs[0]
    value = ins[2] if len(ins) > 2 and ins[2] is not None and ins[2].numel > 0 else None

    def fn(idx):
        # negative pads crop first (offset `o`, size `d`), positive pads then extend the cropped range
        src, valid = [], None
        for i, full, (b, e) in zip(idx, x.shape, amounts):
            o, d = max(-b, 0), full - max(-b, 0) - max(-e, 0)
            s = binop("sub", i, b) if b > 0 else i
            if b <= 0 and e <= 0:
                src.append(binop("add", s, o))
                continue
            if mode == "constant":
                ok = K.binop("and", K.cmp("ge", s, Const(0)), K.cmp("lt", s, Const(d)))
                valid = ok if valid is None else K.binop("and", valid, ok)
                s = clamp(s, 0, d - 1)
            elif mode == "edge":
                s = clamp(s, 0, d - 1)
            elif mode == "wrap":
                s = floor_mod(s, d)
            else:
                s = _reflect(s, d)
            src.append(binop("add", s, o))
        v = x(src)
        if valid is not None:
            fill = scalar_of(value) if value is not None else K.const(0, x.dtype)
            v = K.select(valid, v, fill)
        return v

    return [TExpr.compute(out.shape, x.dtype, fn)]


# -- Trilu -----------------------------------------------------------------------------------------
@index_rule("Trilu")
def _trilu(ctx: LowerCtx, node, ins):
    x = ins[0]
    k = int(np.asarray(ins[1].const).reshape(-1)[0]) if len(ins) > 1 and ins[1] is not None else 0
    upper = bool(node.attrs.get("upper", 1))

    def fn(idx):
        diff = binop("sub", idx[-1], idx[-2])  # j - i
        keep = K.cmp("ge", diff, Const(k)) if upper else K.cmp("le", diff, Const(k))
        return K.select(keep, x(idx), K.const(0, x.dtype))

    return [TExpr.compute(x.shape, x.dtype, fn)]


# -- DepthToSpace / SpaceToDepth -------------------------------------------------------------------
@index_rule("DepthToSpace")
def _d2s(ctx: LowerCtx, node, ins):
    x = ins[0]
    b = int(node.attrs["blocksize"])
    crd = node.attrs.get("mode", "DCR") == "CRD"
    out = node.outputs[0]
    c_out = out.shape[1]

    def fn(idx):
        n, c, hh, ww = idx
        h, b1 = binop("floordiv", hh, b), binop("mod", hh, b)
        w, b2 = binop("floordiv", ww, b), binop("mod", ww, b)
        blk = binop("add", binop("mul", b1, b), b2)
        ch = binop("add", binop("mul", c, b * b), blk) if crd else binop("add", binop("mul", blk, c_out), c)
        return x([n, ch, h, w])

    return [TExpr.compute(out.shape, x.dtype, fn)]


@index_rule("SpaceToDepth")
def _s2d(ctx: LowerCtx, node, ins):
    x = ins[0]
    b = int(node.attrs["blocksize"])
    c_in = x.shape[1]
    out = node.outputs[0]
    crd = node.attrs.get("mode", "DCR") == "CRD"

    def fn(idx):
        n, co, h, w = idx
        if crd:  # co = c * b*b + block
            c, blk = binop("floordiv", co, b * b), binop("mod", co, b * b)
        else:  # co = block * C + c
            c, blk = binop("mod", co, c_in), binop("floordiv", co, c_in)
        b1, b2 = binop("floordiv", blk, b), binop("mod", blk, b)
        return x([n, c, binop("add", binop("mul", h, b), b1), binop("add", binop("mul", w, b), b2)])

    return [TExpr.compute(out.shape, x.dtype, fn)]


# -- ReverseSequence -------------------------------------------------------------------------------
@index_rule("ReverseSequence")
def _revseq(ctx: LowerCtx, node, ins):
    x, lens = ins
    tax, bax = int(node.attrs.get("time_axis", 0)), int(node.attrs.get("batch_axis", 1))
    t_len = x.shape[tax]
    ctx.check_range(lens, "sequence_lens", "sequence length", [(0, t_len, f"time axis {tax} has {t_len} steps")])

    def fn(idx):
        n = K.cast(lens([idx[bax]]), K.I64)
        t = idx[tax]
        src = list(idx)
        src[tax] = K.select(K.cmp("lt", t, n), binop("sub", binop("sub", n, 1), t), t)
        return x(src)

    return [TExpr.compute(x.shape, x.dtype, fn)]
