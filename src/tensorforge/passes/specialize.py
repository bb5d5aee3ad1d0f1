"""Shape specialization: give symbolic input dims concrete values and re-infer the whole graph,
folding the shape computations that become constant (Shape -> Gather -> Concat -> Reshape)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import InputError
from ..ir.graph import Graph, Node, TensorType, Value
from ..ir.signature import InputSpec, check_shape
from ..ops.fold import fold_node
from ..ops.registry import infer_node
from .manager import register_pass


def bind_dims(g: Graph, shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """Resolve symbolic dim names from concrete input shapes (checked like any input, ``ir/signature.py``;
    a shape for an input the model does not have is an error, not ignored)."""
    unknown = sorted(set(shapes) - {v.name for v in g.inputs})
    if unknown:
        raise InputError(f"model '{g.name}': input shapes given for unknown input(s) {unknown}; inputs are "
                         f"{[v.name for v in g.inputs]}")  # fmt: skip
    dims: dict[str, int] = {}
    for v in g.inputs:
        if v.name in shapes:
            check_shape(g.name, InputSpec(v.name, v.dtype, tuple(v.shape)), shapes[v.name], dims)
    return dims


def specialize(g: Graph, shapes: Mapping[str, Sequence[int]]) -> Graph:
    """A copy of ``g`` with input shapes fixed to ``shapes`` (by input name)."""
    dims = bind_dims(g, shapes)
    env: dict[int, Value] = {}
    inputs = []
    for v in g.inputs:
        shape = tuple(dims.get(d, d) if isinstance(d, str) else d for d in v.shape)
        nv = Value(v.name, TensorType(v.dtype, shape))
        env[v.id] = nv
        inputs.append(nv)
    return reinfer(g, inputs, env)


def reinfer(g: Graph, inputs: list[Value], env: dict[int, Value]) -> Graph:
    nodes: list[Node] = []
    for n in g.nodes:
        ins = tuple(None if v is None else env.get(v.id, v) for v in n.inputs)
        outs = tuple(Value(v.name) for v in n.outputs)
        node = Node(n.op, ins, outs, n.attrs, n.name)
        for v, t in zip(outs, infer_node(node, g.name)):
            v.type = t
        folded = fold_node(node, g.name, shapes_only=True)
        if folded is not None:
            for old, new in zip(n.outputs, folded):
                env[old.id] = new
            continue
        for old, new in zip(n.outputs, outs):
            env[old.id] = new
        nodes.append(node)
    outputs = [env.get(v.id, v) for v in g.outputs]
    return Graph(nodes, inputs, outputs, name=g.name, output_names=g.output_names)


@register_pass("specialize")
def specialize_pass(g: Graph, options: dict) -> Graph:
    """Fix symbolic input dims to the shapes the caller gave (options["input_shapes"]) and fold what follows."""
    shapes = options.get("input_shapes")
    if not shapes or all(v.type.is_static for v in g.inputs):
        return g
    return specialize(g, shapes)
