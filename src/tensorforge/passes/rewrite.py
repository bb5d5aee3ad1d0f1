"""Rewrite rules as data, and the driver that applies them to a fixpoint.

A rule is ``(name, ops, fn)``: for a node whose op is in ``ops``, ``fn(node, rw)`` returns the values
that replace the node's outputs, or None when it does not apply. ``rw`` (a ``Rewriter``) lets a rule look
at producers and use counts, create constants and emit new nodes (typed by the op registry). A pass is
then a list of rules, and reads like a table:

    SIMPLIFY = [Rule("add-zero", ("Add",), add_zero), Rule("transpose-transpose", ("Transpose",), ...)]

The driver sweeps the graph in order, applies the first matching rule per node, drops dead nodes and
repeats until a sweep changes nothing, so rules compose (x*1+0 simplifies in one pass).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import TensorforgeError
from ..ir.graph import Graph, Node, Value
from ..ops.registry import get_op, infer_node
from .dce import dce

RuleFn = Callable[[Node, "Rewriter"], Sequence[Value] | None]


@dataclass(frozen=True)
class Rule:
    name: str
    ops: tuple[str, ...]
    fn: RuleFn


class Rewriter:
    """The state of one sweep: the nodes emitted so far and the graph's use counts at its start."""

    def __init__(self, g: Graph):
        self.g = g
        self.nodes: list[Node] = []
        self.env: dict[int, Value] = {}
        self.producer: dict[int, Node] = {}
        self.uses: dict[int, int] = {}
        for n in g.nodes:
            for v in n.inputs:
                if v is not None:
                    self.uses[v.id] = self.uses.get(v.id, 0) + 1
        for v in g.outputs:
            self.uses[v.id] = self.uses.get(v.id, 0) + 1
        self.fired: dict[str, int] = {}
        self._names = {v.name for v in g.values()}
        self.current: Node | None = None  # the node rules are looking at

    # -- what rules ask -----------------------------------------------------------------------------
    def producer_of(self, v: Value | None) -> Node | None:
        return None if v is None else self.producer.get(v.id)

    def single_use(self, v: Value) -> bool:
        """True when ``v`` has exactly one consumer and is not a graph output (so it may disappear)."""
        return self.uses.get(v.id, 0) == 1

    def fresh_name(self, base: str) -> str:
        name, k = base, 1
        while name in self._names:
            name = f"{base}_{k}"
            k += 1
        self._names.add(name)
        return name

    def const(self, data: np.ndarray, base: str) -> Value:
        return Value(self.fresh_name(base), const=np.array(data, order="C"))

    def emit(self, op: str, inputs: Sequence[Value | None], attrs: dict | None = None, name: str = "",
             out: str | None = None) -> Value:  # fmt: skip
        """Append a new single-output node, typed by the op's rule. Its output is named ``out``: as is when
        that is the name of an output of the node being rewritten (which the new node replaces), else made
        unique."""
        base = out or name or op.lower()
        reuse = self.current is not None and any(v.name == base for v in self.current.outputs)
        v = Value(base if reuse else self.fresh_name(base))
        node = Node(op, tuple(inputs), (v,), dict(attrs or {}), name)
        (v.type,) = infer_node(node, self.g.name)[:1]
        self.nodes.append(node)
        self.producer[v.id] = node
        return v

    # -- the sweep ----------------------------------------------------------------------------------
    def keep(self, n: Node) -> None:
        self.nodes.append(n)
        for v in n.outputs:
            self.producer[v.id] = n


def _rebind(n: Node, env: dict[int, Value]) -> Node:
    if not any(v is not None and v.id in env for v in n.inputs):
        return n
    return n.replace(inputs=tuple(None if v is None else env.get(v.id, v) for v in n.inputs))


def _sweep(g: Graph, table: dict[str, list[Rule]]) -> tuple[Graph, dict[str, int]]:
    rw = Rewriter(g)
    for n in g.nodes:
        n = _rebind(n, rw.env)
        rw.current = n
        replaced = None
        for rule in table.get(n.op, ()):
            replaced = rule.fn(n, rw)
            if replaced is not None:
                rw.fired[rule.name] = rw.fired.get(rule.name, 0) + 1
                break
        if replaced is None:
            rw.keep(n)
            continue
        if len(replaced) != len(n.outputs):
            raise TensorforgeError(f"rewrite rule for {n.label} returned {len(replaced)} values for "
                                   f"{len(n.outputs)} outputs")  # fmt: skip
        for old, new in zip(n.outputs, replaced):
            if new.type != old.type:
                raise TensorforgeError(f"rewrite of {n.label} changed %{old.name} from {old.type} to {new.type}")
            rw.env[old.id] = new
    outputs = [rw.env.get(v.id, v) for v in g.outputs]
    return dce(Graph(rw.nodes, g.inputs, outputs, name=g.name, output_names=g.output_names), {}), rw.fired


def apply_rules(g: Graph, rules: Iterable[Rule], max_sweeps: int = 20) -> tuple[Graph, dict[str, int]]:
    """Apply ``rules`` until none fires (or ``max_sweeps``); returns the graph and how often each rule fired."""
    table: dict[str, list[Rule]] = {}
    for r in rules:
        for op in r.ops:
            get_op(op)  # a typo in a rule's op name fails loudly
            table.setdefault(op, []).append(r)
    total: dict[str, int] = {}
    for _ in range(max_sweeps):
        g, fired = _sweep(g, table)
        for k, c in fired.items():
            total[k] = total.get(k, 0) + c
        if not fired:
            break
    return g, total


# -- helpers shared by rule tables -------------------------------------------------------------------
def const_value(v: Value | None) -> np.ndarray | None:
    return None if v is None else v.const


def is_all(v: Value | None, x: float) -> bool:
    """``v`` is a constant whose every element equals ``x``."""
    c = const_value(v)
    return c is not None and c.size > 0 and bool(np.all(c == x))
