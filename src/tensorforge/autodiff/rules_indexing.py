"""Gradient rules of the ops that read or write at indices: a gather's adjoint scatter-adds the cotangent
back to where it read (``ScatterND`` / ``ScatterElements`` with ``reduction="add"``, so repeated indices —
an embedding row used twice — accumulate), a scatter's adjoint gathers it."""

from __future__ import annotations

from ..errors import UnsupportedError, node_context
from ..ir.graph import Node
from .builder import GraphBuilder
from .core import vjp


@vjp("Gather")
def gather_vjp(b: GraphBuilder, node: Node, cts, needs):
    data, ind = node.inputs
    ct = cts[0]
    r, k = len(data.shape), len(ind.shape)
    axis = int(node.attr("axis", 0)) % r
    # move the indexed axis to the front: data_t = (S[a], S[:a], S[a+1:]), ct_t = (I, S[:a], S[a+1:])
    ct_t = b.transpose(ct, [*range(axis, axis + k), *range(axis), *range(axis + k, r + k - 1)])
    shape_t = (data.shape[axis], *data.shape[:axis], *data.shape[axis + 1 :])
    idx = b.op("Unsqueeze", [ind, b.ints([k], "axes")])
    d_t = b.op("ScatterND", [b.zeros(shape_t, data), idx, ct_t], reduction="add")
    return [b.transpose(d_t, [*range(1, axis + 1), 0, *range(axis + 1, r)]), None]


@vjp("GatherElements")
def gather_elements_vjp(b: GraphBuilder, node: Node, cts, needs):
    data, ind = node.inputs
    axis = int(node.attr("axis", 0))
    return [b.op("ScatterElements", [b.zeros(data.shape, data), ind, cts[0]], axis=axis, reduction="add"), None]


@vjp("GatherND")
def gather_nd_vjp(b: GraphBuilder, node: Node, cts, needs):
    data, ind = node.inputs
    if int(node.attr("batch_dims", 0)):
        raise UnsupportedError(f"{node_context(b.model, node.name, node.op)}: no gradient for batch_dims > 0")
    return [b.op("ScatterND", [b.zeros(data.shape, data), ind, cts[0]], reduction="add"), None]


def _scatter_vjp(gather: str):
    def rule(b: GraphBuilder, node: Node, cts, needs):
        data, ind, upd = node.inputs
        ct = cts[0]
        red = node.attr("reduction", "none")
        if red not in ("none", "add"):
            raise UnsupportedError(f"{node_context(b.model, node.name, node.op)}: no gradient for reduction={red!r}")
        attrs = {"axis": int(node.attr("axis", 0))} if node.op == "ScatterElements" else {}
        d_data = d_upd = None
        if needs[0]:  # positions overwritten by the scatter get no gradient (with "add" they all do)
            d_data = ct if red == "add" else b.op(node.op, [ct, ind, b.zeros(upd.shape, upd)], **attrs)
        if needs[2]:
            d_upd = b.op(gather, [ct, ind], **attrs)
        return [d_data, None, d_upd]

    return rule


vjp("ScatterElements")(_scatter_vjp("GatherElements"))
vjp("ScatterND")(_scatter_vjp("GatherND"))
