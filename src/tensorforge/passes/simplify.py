"""Algebraic simplification: identities, chains of layout ops, redundant casts.

Every rule is exact (the result is bit-for-bit what the original graph computes), except the two
reassociations of constants (``(x*c1)*c2 -> x*(c1*c2)`` and ``(x+c1)+c2 -> x+(c1+c2)``), which round
once instead of twice. A rule that would change a value's type (x+0 where the zero broadcasts x to a
bigger shape) does not apply.
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from ..ir.graph import Node, Value
from ..ops.registry import InferCtx
from .manager import register_pass
from .rewrite import Rewriter, Rule, apply_rules, is_all


def _same(n: Node, x: Value | None) -> list[Value] | None:
    """Replace ``n``'s output by ``x`` when that keeps the output's type."""
    if x is None or x.type != n.outputs[0].type:
        return None
    return [x]


# -- identities ------------------------------------------------------------------------------------
def identity(n: Node, rw: Rewriter):
    return _same(n, n.inputs[0])


def add_zero(n: Node, rw: Rewriter):
    a, b = n.inputs
    if is_all(b, 0):
        return _same(n, a)
    if is_all(a, 0) and n.op == "Add":
        return _same(n, b)
    return None


def mul_one(n: Node, rw: Rewriter):
    a, b = n.inputs
    if is_all(b, 1):
        return _same(n, a)
    if is_all(a, 1) and n.op == "Mul":
        return _same(n, b)
    return None


def pow_one(n: Node, rw: Rewriter):
    return _same(n, n.inputs[0]) if is_all(n.inputs[1], 1) else None


def double_negation(n: Node, rw: Rewriter):
    p = rw.producer_of(n.inputs[0])
    if p is not None and p.op == n.op:
        return _same(n, p.inputs[0])
    return None


def _scalar_const(v: Value | None) -> bool:
    return v is not None and v.is_const and v.const.size == 1 and v.dtype.is_float


def reassociate_consts(n: Node, rw: Rewriter):
    """(x op c1) op c2 -> x op (c1 op c2) for op in {Add, Mul} and scalar float constants."""
    x, c2 = n.inputs
    if _scalar_const(x) and not _scalar_const(c2):
        x, c2 = c2, x
    if not _scalar_const(c2):
        return None
    p = rw.producer_of(x)
    if p is None or p.op != n.op or not rw.single_use(x):
        return None
    y, c1 = p.inputs
    if _scalar_const(y) and not _scalar_const(c1):
        y, c1 = c1, y
    if not _scalar_const(c1) or c1.dtype != c2.dtype:
        return None
    fn = np.multiply if n.op == "Mul" else np.add
    c = fn(c1.const.astype(np.float64), c2.const.astype(np.float64)).astype(c2.dtype.np)
    shape = np.broadcast_shapes(c1.const.shape, c2.const.shape)
    return _same(n, rw.emit(n.op, [y, rw.const(c.reshape(shape), c2.name)], n.attrs, n.name, n.outputs[0].name))


# -- layout ops ------------------------------------------------------------------------------------
def _perm(n: Node) -> tuple[int, ...]:
    from ..ops.shape import transpose_perm

    return transpose_perm(InferCtx(n), n.inputs[0].type.rank)


def transpose_chain(n: Node, rw: Rewriter):
    """Transpose(Transpose(x, p1), p2) -> Transpose(x, p1[p2]); an identity permutation disappears."""
    perm = _perm(n)
    if perm == tuple(range(len(perm))):
        return _same(n, n.inputs[0])
    p = rw.producer_of(n.inputs[0])
    if p is None or p.op != "Transpose":
        return None
    inner = _perm(p)
    composed = tuple(inner[i] for i in perm)
    if composed == tuple(range(len(composed))):
        return _same(n, p.inputs[0])
    return _same(n, rw.emit("Transpose", [p.inputs[0]], {"perm": composed}, n.name, n.outputs[0].name))


RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def reshape_chain(n: Node, rw: Rewriter):
    """A reshape to the input's own shape disappears; reshape(reshape(x)) is one reshape of x."""
    x = n.inputs[0]
    out = n.outputs[0]
    if not out.type.is_static:
        return None
    if x.type == out.type:
        return [x]
    p = rw.producer_of(x)
    if p is None or p.op not in RESHAPES or not p.inputs[0].type.is_static:
        return None
    src = p.inputs[0]
    if src.type == out.type:
        return [src]
    shape = rw.const(np.array(out.shape, dtype=np.int64), f"{out.name}_shape")
    return _same(n, rw.emit("Reshape", [src, shape], {}, n.name, out.name))


def expand_noop(n: Node, rw: Rewriter):
    return _same(n, n.inputs[0])


def slice_noop(n: Node, rw: Rewriter):
    """A slice that takes every element, in order, is the input itself (a reversing slice is not)."""
    from ..ops.shape import slice_params

    x = n.inputs[0]
    if not x.type.is_static:
        return None
    params = slice_params(InferCtx(n), x.shape)
    if all(start == 0 and step == 1 and size == d for (start, _, step, size), d in zip(params, x.shape)):
        return _same(n, x)
    return None


def concat_single(n: Node, rw: Rewriter):
    return _same(n, n.inputs[0]) if len([v for v in n.inputs if v is not None]) == 1 else None


# -- casts -----------------------------------------------------------------------------------------
def _widens(a: DType, b: DType) -> bool:
    """Every value of dtype ``a`` is exactly representable in dtype ``b``."""
    if a == b:
        return True
    if a is DType.BOOL:
        return True
    if a.is_float:  # float16 and bfloat16 are both 2 bytes, but neither holds the other
        return b.is_float and b.itemsize > a.itemsize
    if b.is_float:  # integers that fit the float's significand
        return a.bits < {DType.F16: 11, DType.BF16: 8, DType.F32: 24, DType.F64: 53}[b]
    if a.is_signed and not b.is_signed:
        return False
    return b.itemsize > a.itemsize or (b.itemsize == a.itemsize and a.is_signed == b.is_signed)


def cast_chain(n: Node, rw: Rewriter):
    """Cast to the input's own dtype disappears; Cast(Cast(x, B), C) is Cast(x, C) when B holds every
    value of x's dtype exactly (a widening first cast loses nothing)."""
    x = n.inputs[0]
    out = n.outputs[0]
    if x.dtype == out.dtype:
        return [x]
    p = rw.producer_of(x)
    if p is None or p.op != "Cast" or not _widens(p.inputs[0].dtype, x.dtype):
        return None
    src = p.inputs[0]
    if src.dtype == out.dtype:
        return [src]
    return _same(n, rw.emit("Cast", [src], {**n.attrs, "to": out.dtype.onnx}, n.name, out.name))


RULES = [
    Rule("identity", ("Identity",), identity),
    Rule("x+0", ("Add", "Sub"), add_zero),
    Rule("x*1", ("Mul", "Div"), mul_one),
    Rule("x^1", ("Pow",), pow_one),
    Rule("double-negation", ("Neg", "Not", "BitwiseNot"), double_negation),
    Rule("reassociate-constants", ("Add", "Mul"), reassociate_consts),
    Rule("transpose-chain", ("Transpose",), transpose_chain),
    Rule("reshape-chain", RESHAPES, reshape_chain),
    Rule("expand-noop", ("Expand",), expand_noop),
    Rule("slice-noop", ("Slice",), slice_noop),
    Rule("concat-single", ("Concat",), concat_single),
    Rule("cast-chain", ("Cast",), cast_chain),
]


@register_pass("simplify")
def simplify(g, options: dict):
    """Algebraic identities (x*1, x+0), transpose/reshape chains, redundant casts."""
    g, fired = apply_rules(g, RULES)
    return g, {f"rule {k}": v for k, v in sorted(fired.items())}
