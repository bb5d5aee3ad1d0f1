"""Graph -> ONNX: write a tensorforge graph (of ONNX-form ops) back out as an ONNX model.

IR ops keep the newest ONNX opset's inputs and attributes, so a node maps to an ONNX node one to one;
constants become initializers (``values`` overrides their data, e.g. with trained parameters) and graph
outputs whose user-facing name differs from their value's name get an Identity node.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..ir.dtype import DType
from ..ir.graph import Graph

OPSET = 18


def _attr(v):
    if isinstance(v, DType):
        return v.onnx
    if isinstance(v, np.ndarray):
        return numpy_helper.from_array(v)
    if isinstance(v, tuple):
        return [_attr(x) for x in v]
    return v


def graph_to_onnx(g: Graph, values: Mapping[str, np.ndarray] | None = None, opset: int = OPSET) -> onnx.ModelProto:
    values = values or {}
    inits = [numpy_helper.from_array(np.asarray(values.get(v.name, v.const)), v.name) for v in g.constants()]
    nodes = [helper.make_node(n.op, [v.name if v is not None else "" for v in n.inputs], [o.name for o in n.outputs],
                              name=n.name or None, **{k: _attr(a) for k, a in n.attrs.items()})
             for n in g.nodes]  # fmt: skip
    outputs = []
    for v, name in zip(g.outputs, g.output_names):
        if name != v.name:
            nodes.append(helper.make_node("Identity", [v.name], [name]))
        outputs.append(helper.make_tensor_value_info(name, v.dtype.onnx, list(v.shape)))
    inputs = [helper.make_tensor_value_info(v.name, v.dtype.onnx, list(v.shape)) for v in g.inputs]
    graph = helper.make_graph(nodes, g.name, inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tensorforge")
