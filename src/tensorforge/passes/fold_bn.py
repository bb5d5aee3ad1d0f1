"""Fold batch normalization and constant affine ops into the preceding Conv / Gemm / MatMul.

In inference, ``BatchNormalization(conv(x, W, b))`` is ``conv(x, W * s, (b - mean) * s + beta)`` with
``s = scale / sqrt(var + eps)`` per output channel: the normalization costs nothing at run time. The same
holds for a multiplication, division, addition or subtraction by a constant that varies only along the
output-channel axis (Conv) or the output-column axis (Gemm, MatMul), or by a scalar. New weights are
computed in float64 and rounded once. A producer whose result is also used elsewhere is left alone
(folding would duplicate it).
"""

from __future__ import annotations

import re

import numpy as np

from ..ir.graph import Node, Value
from .manager import register_pass
from .rewrite import Rewriter, Rule, apply_rules


def axis_vector(c: np.ndarray, rank: int, axis: int, length: int) -> np.ndarray | None:
    """``c`` broadcast against a rank-``rank`` tensor, as a float64 vector along ``axis`` (of ``length``),
    or None when ``c`` varies along any other axis."""
    if c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + tuple(c.shape)
    if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, length):
        return None
    return np.broadcast_to(c.astype(np.float64).reshape(-1), (length,)).copy()


def _affine_operand(n: Node) -> tuple[Value, np.ndarray, str] | None:
    """For ``y = x op c`` (c constant) return (x, c, op); constants on the left only for Add and Mul."""
    a, b = n.inputs[0], n.inputs[1]
    if b is not None and b.is_const and not a.is_const:
        return a, b.const, n.op
    if a is not None and a.is_const and not b.is_const and n.op in ("Add", "Mul"):
        return b, a.const, n.op
    return None


def folded(name: str) -> str:
    """The name of a constant recomputed from ``name`` (folding twice does not stack suffixes)."""
    return re.sub(r"_folded(_\d+)?$", "", name) + "_folded"


def _scale_shift(op: str, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y = x op vec written as y = x * scale + shift."""
    one, zero = np.ones_like(vec), np.zeros_like(vec)
    return {"Mul": (vec, zero), "Div": (1.0 / vec, zero), "Add": (one, vec), "Sub": (one, -vec)}[op]


def _conv_producer(x: Value, rw: Rewriter) -> Node | None:
    p = rw.producer_of(x)
    if p is None or p.op != "Conv" or not rw.single_use(x) or not p.inputs[1].is_const:
        return None
    if p.input(2) is not None and not p.inputs[2].is_const:
        return None
    return p


def _refold_conv(conv: Node, n: Node, scale: np.ndarray, shift: np.ndarray, rw: Rewriter) -> list[Value]:
    """conv(x, W, b) * scale + shift (per output channel) as one Conv."""
    w = conv.inputs[1]
    m = w.shape[0]
    b = conv.inputs[2].const.astype(np.float64) if conv.input(2) is not None else np.zeros(m)
    w_new = (w.const.astype(np.float64) * scale.reshape((m,) + (1,) * (w.type.rank - 1))).astype(w.dtype.np)
    b_new = (b * scale + shift).astype(w.dtype.np)
    bias_name = conv.inputs[2].name if conv.input(2) is not None else f"{conv.name or 'conv'}_bias"
    ins = [conv.inputs[0], rw.const(w_new, folded(w.name)), rw.const(b_new, folded(bias_name))]
    out = rw.emit("Conv", ins, conv.attrs, conv.name, n.outputs[0].name)
    return [out] if out.type == n.outputs[0].type else None


def bn_into_conv(n: Node, rw: Rewriter):
    x, scale, beta, mean, var = n.inputs[:5]
    if not all(v is not None and v.is_const for v in (scale, beta, mean, var)):
        return None
    conv = _conv_producer(x, rw)
    if conv is None:
        return None
    eps = float(n.attr("epsilon", 1e-5))
    s = scale.const.astype(np.float64) / np.sqrt(var.const.astype(np.float64) + eps)
    return _refold_conv(conv, n, s, beta.const.astype(np.float64) - mean.const.astype(np.float64) * s, rw)


def affine_into_conv(n: Node, rw: Rewriter):
    got = _affine_operand(n)
    if got is None:
        return None
    x, c, op = got
    conv = _conv_producer(x, rw)
    if conv is None or not x.dtype.is_float:
        return None
    vec = axis_vector(c, x.type.rank, 1, x.shape[1])
    if vec is None:
        return None
    return _refold_conv(conv, n, *_scale_shift(op, vec), rw)


def affine_into_gemm(n: Node, rw: Rewriter):
    """Gemm(A, B, C) op c, with c constant along the output columns: scale B's columns, fold into C."""
    got = _affine_operand(n)
    if got is None:
        return None
    x, c, op = got
    p = rw.producer_of(x)
    if p is None or p.op not in ("Gemm", "MatMul") or not rw.single_use(x) or not x.dtype.is_float:
        return None
    if not p.inputs[1].is_const:
        return None
    cols = x.shape[-1]
    vec = axis_vector(c, x.type.rank, x.type.rank - 1, cols)
    if vec is None:
        return None
    scale, shift = _scale_shift(op, vec)
    bmat = p.inputs[1]
    b64 = bmat.const.astype(np.float64)
    if p.op == "Gemm":
        b_new = b64 * (scale[:, None] if p.attr("transB", 0) else scale[None, :])
        c_in = p.input(2)
        if c_in is not None and not c_in.is_const:
            return None
        c_new = None
        if c_in is not None or shift.any():  # beta is folded into the new C
            c64 = float(p.attr("beta", 1.0)) * c_in.const.astype(np.float64) if c_in is not None else 0.0
            c_new = c64 * scale + shift
            c_new = np.broadcast_to(c_new, np.broadcast_shapes(np.shape(c_new), (cols,))).copy()
        attrs = {k: v for k, v in p.attrs.items() if k != "beta"}
        ins = [p.inputs[0], rw.const(b_new.astype(bmat.dtype.np), folded(bmat.name))]
        if c_new is not None:
            c_name = c_in.name if c_in is not None else f"{p.name or 'gemm'}_bias"
            ins.append(rw.const(c_new.astype(bmat.dtype.np), folded(c_name)))
        out = rw.emit("Gemm", ins, attrs, p.name, n.outputs[0].name)
    elif p.op == "MatMul" and bmat.type.rank == 2:
        b_new = (b64 * scale[None, :]).astype(bmat.dtype.np)
        if shift.any():
            if p.inputs[0].type.rank != 2:
                return None  # MatMul has no bias input; a batched one keeps its Add (fused later)
            bias = rw.const(shift.astype(bmat.dtype.np), folded(f"{p.name or 'matmul'}_bias"))
            ins = [p.inputs[0], rw.const(b_new, folded(bmat.name)), bias]
            out = rw.emit("Gemm", ins, {}, p.name, n.outputs[0].name)
        else:
            out = rw.emit("MatMul", [p.inputs[0], rw.const(b_new, folded(bmat.name))], {}, p.name, n.outputs[0].name)
    else:
        return None
    return [out] if out.type == n.outputs[0].type else None


RULES = [
    Rule("batchnorm-into-conv", ("BatchNormalization",), bn_into_conv),
    Rule("affine-into-conv", ("Mul", "Div", "Add", "Sub"), affine_into_conv),
    Rule("affine-into-gemm", ("Mul", "Div", "Add", "Sub"), affine_into_gemm),
]


@register_pass("fold_bn")
def fold_bn(g, options: dict):
    """Fold BatchNormalization and constant scale/shift ops into the preceding Conv/Gemm/MatMul."""
    g, fired = apply_rules(g, RULES)
    return g, {f"rule {k}": v for k, v in sorted(fired.items())}
