"""A reference interpreter for graphs: every node evaluated with its op's numpy semantics.

Slow and simple on purpose: it is the oracle that pass tests compare a rewritten graph against (the
graph before a pass and after it must compute the same function), and it needs nothing but the op
registry. Nodes with a ``body`` (fused groups) are evaluated through their body.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .graph import Graph, Node, Value


def _run_nodes(nodes: Iterable[Node], env: dict[int, np.ndarray]) -> None:
    from ..ops.registry import evaluate

    for n in nodes:
        body = n.attrs.get("body")
        if body is not None:
            _run_nodes(body, env)
            continue
        args = [None if v is None else (v.const if v.is_const else env[v.id]) for v in n.inputs]
        for v, out in zip(n.outputs, evaluate(n, args)):
            env[v.id] = np.asarray(out).astype(v.dtype.np, copy=False)


def run_graph(g: Graph, feeds: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> list[np.ndarray]:
    """Evaluate ``g`` on numpy inputs (by input name, or positionally); returns the outputs in order."""
    if not isinstance(feeds, Mapping):
        feeds = {v.name: x for v, x in zip(g.inputs, feeds)}
    env: dict[int, np.ndarray] = {}
    for v in g.inputs:
        env[v.id] = np.asarray(feeds[v.name])
    _run_nodes(g.nodes, env)
    return [_value(v, env) for v in g.outputs]


def _value(v: Value, env: dict[int, np.ndarray]) -> np.ndarray:
    return v.const if v.is_const else env[v.id]
