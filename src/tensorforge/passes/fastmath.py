"""Fast math (-O3 only): divisions become multiplications by a reciprocal.

A vector division costs an order of magnitude more than a multiplication. ``x / c`` for a constant
``c`` becomes ``x * (1/c)`` with the reciprocal computed at compile time, and ``x / y`` where ``y`` is
broadcast (one divisor shared by many elements, as in layer norm's ``(x - mean) / std``) becomes
``x * Reciprocal(y)``: one division per divisor instead of one per element. Each result differs from
the division by at most about one unit in the last place, which is why this is not on at -O2.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from .manager import register_pass
from .rewrite import Rewriter, Rule, apply_rules


def _numel(shape) -> int:
    return int(np.prod(shape)) if all(isinstance(d, int) for d in shape) else -1


def div_by_constant(n: Node, rw: Rewriter):
    x, c = n.inputs
    if c is None or not c.is_const or not c.dtype.is_float or not np.all(np.isfinite(c.const)) or np.any(c.const == 0):
        return None
    recip = (1.0 / c.const.astype(np.float64)).astype(c.dtype.np)
    out = rw.emit("Mul", [x, rw.const(recip, f"{c.name}_recip")], {}, n.name, n.outputs[0].name)
    return [out] if out.type == n.outputs[0].type else None


def div_by_shared_divisor(n: Node, rw: Rewriter):
    x, y = n.inputs
    out = n.outputs[0]
    if y is None or y.is_const or not out.dtype.is_float or x.type != out.type:
        return None
    if not 0 < _numel(y.shape) * 4 <= _numel(out.shape):  # each divisor shared by at least 4 elements
        return None
    r = rw.emit("Reciprocal", [y], {}, f"{n.name}_recip" if n.name else "", f"{y.name}_recip")
    m = rw.emit("Mul", [x, r], {}, n.name, out.name)
    return [m] if m.type == out.type else None


RULES = [
    Rule("div-by-constant", ("Div",), div_by_constant),
    Rule("div-by-shared-divisor", ("Div",), div_by_shared_divisor),
]


@register_pass("fastmath")
def fastmath(g, options: dict):
    """Divisions by constants and by broadcast divisors become multiplications by reciprocals (-O3)."""
    g, fired = apply_rules(g, RULES)
    return g, {f"rule {k}": v for k, v in sorted(fired.items())}
