"""Common-subexpression elimination: nodes that apply the same op, with the same attributes, to the same
inputs compute the same values, so all but the first are dropped. Equal constants (same dtype, shape
and bytes) are merged first, so that two nodes reading two copies of one weight are recognized too."""

from __future__ import annotations

import hashlib

import numpy as np

from ..ir.graph import Graph, Node, Value
from .manager import register_pass


def _attr_key(v) -> object:
    if isinstance(v, np.ndarray):
        return ("nd", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, list | tuple):
        return tuple(_attr_key(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _attr_key(x)) for k, x in v.items()))
    if isinstance(v, Node | Value):
        return ("obj", id(v))
    return v


def _const_key(v: Value) -> tuple:
    data = np.asarray(v.const)  # not ascontiguousarray: it turns a 0-d array into shape (1,)
    # a broadcast constant (zero strides: a folded ConstantOfShape) is hashed by the elements it stores;
    # tobytes() would materialize all of them
    stored = data[tuple(slice(0, 1) if s == 0 else slice(None) for s in data.strides)]
    broadcast = tuple(s == 0 for s in data.strides)
    return (data.dtype.str, data.shape, broadcast, hashlib.blake2b(stored.tobytes(), digest_size=16).digest())


@register_pass("cse")
def cse(g: Graph, options: dict) -> Graph:
    """Merge identical nodes and identical constants."""
    canon_const: dict[tuple, Value] = {}
    env: dict[int, Value] = {}

    def canon(v: Value | None) -> Value | None:
        if v is None:
            return None
        if v.is_const:
            return canon_const.setdefault(_const_key(v), v)
        return env.get(v.id, v)

    seen: dict[tuple, Node] = {}
    nodes = []
    for n in g.nodes:
        ins = tuple(canon(v) for v in n.inputs)
        if ins != n.inputs:
            n = n.replace(inputs=ins)
        key = (n.op, tuple(None if v is None else v.id for v in ins), _attr_key(dict(n.attrs)))
        prev = seen.get(key)
        if prev is not None and len(prev.outputs) == len(n.outputs):
            for old, new in zip(n.outputs, prev.outputs):
                env[old.id] = new
            continue
        seen[key] = n
        nodes.append(n)
    return g.with_nodes(nodes, [canon(v) for v in g.outputs])
