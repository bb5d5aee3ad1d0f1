"""Reverse-mode differentiation as a graph-to-graph transformation.

``backward`` walks the forward nodes in reverse (micrograd's loop: topological order plus a local chain
rule per op) and, for each node that lies between a differentiated value and the output, applies that
op's vector-Jacobian rule from ``VJP_RULES``. Rules do not compute numbers: they append IR nodes (with
``GraphBuilder``), so the gradient is a graph — printable, verifiable, optimized and compiled to native code
like any model. Cotangents of a value used several times are summed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import CompileError, UnsupportedError, node_context
from ..ir.graph import Node, Value
from .builder import GraphBuilder

# rule(b, node, output cotangents (None = zero), which inputs need one) -> a cotangent per input (or None)
VJPRule = Callable[[GraphBuilder, Node, list[Value | None], list[bool]], Sequence[Value | None]]
VJP_RULES: dict[str, VJPRule] = {}


def vjp(*ops: str):
    """Register a vector-Jacobian rule for ``ops``."""

    def deco(fn: VJPRule) -> VJPRule:
        for op in ops:
            VJP_RULES[op] = fn
        return fn

    return deco


def differentiable(v: Value | None) -> bool:
    return v is not None and v.dtype.is_float


def backward(
    nodes: Sequence[Node], out: Value, seed: Value, wrt: Sequence[Value], b: GraphBuilder
) -> list[Value | None]:
    """Append to ``b`` the nodes computing ``seed``ᵀ · d``out``/d``w`` for each ``w`` in ``wrt``.

    Returns one cotangent per ``wrt`` value, ``None`` where ``out`` does not depend on it.
    """
    active = {v.id for v in wrt}
    for n in nodes:
        if any(v is not None and v.id in active for v in n.inputs):
            active.update(o.id for o in n.outputs if o.dtype.is_float)
    if out.id not in active:
        return [None] * len(wrt)
    cts: dict[int, Value] = {out.id: seed}
    label, prefix = b.label, b.prefix
    b.prefix = "d_"
    for n in reversed(nodes):
        out_cts = [cts.get(o.id) for o in n.outputs]
        if all(c is None for c in out_cts):
            continue
        needs = [differentiable(v) and v.id in active for v in n.inputs]
        if not any(needs):
            continue
        rule = VJP_RULES.get(n.op)
        if rule is None:
            names = ", ".join(f"'{w.name}'" for w in wrt)
            raise UnsupportedError(f"{node_context(b.model, n.name, n.op)}: op {n.op} is not differentiable (no "
                                   f"gradient rule), and it lies between {names} and '{out.name}'")  # fmt: skip
        b.label = n.name or n.outputs[0].name
        in_cts = rule(b, n, out_cts, needs)
        for v, ct, need in zip(n.inputs, in_cts, needs):
            if ct is None or not need:
                continue
            if ct.type != v.type:
                raise CompileError(f"{node_context(b.model, n.name, n.op)}: the gradient rule gave {ct.type} for "
                                   f"input %{v.name}: {v.type} (a gradient-rule bug)")  # fmt: skip
            prev = cts.get(v.id)
            cts[v.id] = ct if prev is None else b.add(prev, ct)
    b.label, b.prefix = label, prefix
    return [cts.get(v.id) for v in wrt]
