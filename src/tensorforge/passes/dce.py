"""Dead-code elimination: drop nodes none of whose outputs reach a graph output."""

from __future__ import annotations

from ..ir.graph import Graph
from .manager import register_pass


@register_pass("dce")
def dce(g: Graph, options: dict) -> Graph:
    """Remove nodes whose results are never used."""
    live = {v.id for v in g.outputs}
    keep = []
    for n in reversed(g.nodes):
        if any(v.id in live for v in n.outputs):
            keep.append(n)
            for v in n.inputs:
                if v is not None:
                    live.add(v.id)
    keep.reverse()
    return g.with_nodes(keep)
