"""Constant folding: evaluate at compile time every node whose inputs are all constants (and every node
whose result follows from input types alone, such as ``Shape`` of a static tensor), so that whole
constant subgraphs (weight preprocessing, shape arithmetic) disappear before lowering."""

from __future__ import annotations

from ..ir.graph import Graph, Value
from ..ir.limits import stored_bytes
from ..ops.fold import fold_node
from .manager import register_pass

# A folded result may be larger than its inputs (Expand, Tile, ConstantOfShape). Such results are kept
# as computations when they would grow the constant data by more than this many elements: a broadcast
# costs nothing at run time, a materialized one costs memory. A broadcast constant counts the elements it
# stores (ConstantOfShape folds to one element), not its size. (Memory safety is ``fold_node``'s budget.)
MAX_GROWTH = 1 << 16


def _numel(v: Value) -> int | None:
    return v.type.numel if v.type.is_static else None


@register_pass("fold")
def fold(g: Graph, options: dict) -> Graph:
    """Evaluate constant subgraphs at compile time."""
    env: dict[int, Value] = {}
    nodes = []
    for n in g.nodes:
        if any(v is not None and v.id in env for v in n.inputs):
            n = n.replace(inputs=tuple(None if v is None else env.get(v.id, v) for v in n.inputs))
        folded = None
        if n.inputs and all(v is None or v.is_const for v in n.inputs):
            in_size = sum(stored_bytes(v.const) // v.const.itemsize for v in n.inputs if v is not None)
            if all(_numel(v) is not None and _numel(v) <= in_size + MAX_GROWTH for v in n.outputs):
                folded = fold_node(n, g.name, shapes_only=False)
        else:
            folded = fold_node(n, g.name, shapes_only=True)  # Shape, Size: known from input types
        if folded is None:
            nodes.append(n)
            continue
        for old, new in zip(n.outputs, folded):
            env[old.id] = new
    return g.with_nodes(nodes, [env.get(v.id, v) for v in g.outputs])
