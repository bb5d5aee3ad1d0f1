"""ONNX models as the compressors see them: loaded into a private copy, their inputs, constants,
producers and consumers, unique names for new tensors, and the pre-quantization clean-up (opset 13 or
newer for per-axis Q/DQ, BatchNormalization folded into the Conv before it)."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelLoadError, TensorforgeError

MIN_OPSET = 13  # per-axis QuantizeLinear / DequantizeLinear


@dataclass(frozen=True)
class InputInfo:
    """A model input: name, numpy dtype and shape (symbolic dims as strings, unknown dims as '?')."""

    name: str
    dtype: np.dtype
    shape: tuple


def load_proto(model) -> tuple[onnx.ModelProto, str]:
    """A private copy of ``model`` (an .onnx path, bytes, a ModelProto or a tensorforge Graph) and its name
    for messages (the file's stem, else the graph's name)."""
    from ..ir.graph import Graph

    if isinstance(model, str | os.PathLike):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise ModelLoadError(f"model {path!r}: no such file")
        try:
            proto = onnx.load(path)
        except Exception as e:  # protobuf's DecodeError and friends
            raise ModelLoadError(f"model {path!r} is not a readable ONNX file: {e}") from None
        return proto, os.path.splitext(os.path.basename(path))[0]
    if isinstance(model, bytes | bytearray):
        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as e:
            raise ModelLoadError(f"the model bytes are not an ONNX model: {e}") from None
        return proto, proto.graph.name or "model"
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        return proto, proto.graph.name or "model"
    if isinstance(model, Graph):
        from ..frontends.onnx_export import graph_to_onnx

        return graph_to_onnx(model), model.name or "model"
    raise ModelLoadError(f"expected an ONNX model (a path, bytes or onnx.ModelProto) or a Graph, got "
                         f"{type(model).__name__}")  # fmt: skip


def opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)


def constants(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every tensor of the main graph known before it runs: initializers, Constant nodes' values, and
    Identity nodes of those (exporters share a bias between layers that way)."""
    out = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = numpy_helper.to_array(a.t)
        elif n.op_type == "Identity" and n.input and n.input[0] in out:
            out[n.output[0]] = out[n.input[0]]
    return out


def remove_dead_constants(proto: onnx.ModelProto) -> None:
    """Drop Constant and Identity nodes whose outputs nothing reads any more (repeatedly: chains)."""
    g = proto.graph
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output} | _subgraph_refs(g)
        keep = [n for n in g.node if n.op_type not in ("Constant", "Identity") or any(o in used for o in n.output)]
        if len(keep) == len(g.node):
            return
        del g.node[:]
        g.node.extend(keep)


def inputs(proto: onnx.ModelProto) -> list[InputInfo]:
    """The inputs a caller feeds (graph inputs that are not initializers)."""
    inits = {t.name for t in proto.graph.initializer}
    out = []
    for v in proto.graph.input:
        if v.name in inits:
            continue
        tt = v.type.tensor_type
        if not v.type.HasField("tensor_type"):
            raise TensorforgeError(f"input '{v.name}' is not a tensor; only tensor inputs can be fed")
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim)
        out.append(InputInfo(v.name, helper.tensor_dtype_to_np_dtype(tt.elem_type), dims))
    return out


def elem_types(proto: onnx.ModelProto) -> dict[str, int]:
    """The ONNX element type of every tensor shape inference can type (inputs, outputs, value_info,
    initializers)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # a model shape inference cannot handle: what the file declares
        inferred = proto
    g = inferred.graph
    out = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]
           if v.type.HasField("tensor_type")}  # fmt: skip
    out.update({t.name: t.data_type for t in g.initializer})
    return out


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in graph.node:
        for name in n.input:
            if name:
                out[name].append(n)
    return out


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output if o}


class Names:
    """Fresh tensor and node names: ``take(base)`` is ``base`` if unused, else ``base_1``, ``base_2``..."""

    def __init__(self, proto: onnx.ModelProto):
        g = proto.graph
        self.used = {t.name for t in g.initializer} | {v.name for v in [*g.input, *g.output]}
        for n in g.node:
            self.used.update(n.input)
            self.used.update(n.output)
            if n.name:
                self.used.add(n.name)

    def take(self, base: str) -> str:
        name, i = base, 0
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name


def node_label(n: onnx.NodeProto) -> str:
    return n.name or (n.output[0] if n.output else n.op_type)


def upgrade_opset(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """``proto`` at opset 13 or newer (per-axis DequantizeLinear needs it)."""
    if opset(proto) >= MIN_OPSET:
        return proto
    from onnx import version_converter

    try:
        return version_converter.convert_version(proto, MIN_OPSET)
    except Exception as e:
        raise TensorforgeError(f"model '{name}': opset {opset(proto)} is older than the {MIN_OPSET} per-channel "
                               f"quantization needs, and converting it failed: {e}") from None  # fmt: skip


def fold_batchnorm(proto: onnx.ModelProto) -> list[str]:
    """Fold every inference BatchNormalization whose input is a Conv with constant weights (and nothing else
    reads the Conv's output) into that Conv's weights and bias, in place; returns the folded nodes' names.
    Quantizing the Conv's output before a float BatchNormalization would waste its range."""
    g = proto.graph
    consts, users, folded = constants(proto), consumers(g), []
    prod, names = producers(g), Names(proto)
    init_names = {t.name for t in g.initializer}
    drop: set[int] = set()
    new_inits: dict[str, np.ndarray] = {}
    outputs = {o.name for o in g.output}
    for bn in g.node:
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1 or len(bn.input) != 5:
            continue
        conv = prod.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or len(users[bn.input[0]]) != 1 or bn.input[0] in outputs:
            continue
        if not all(i in consts for i in bn.input[1:]) or conv.input[1] not in init_names:
            continue
        if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in init_names:
            continue
        has_b = len(conv.input) > 2 and bool(conv.input[2])
        if len(users[conv.input[1]]) != 1 or (has_b and len(users[conv.input[2]]) != 1):
            continue  # a weight or bias shared with another node keeps its values
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        scale, shift, mean, var = (consts[i].astype(np.float64) for i in bn.input[1:])
        w = consts[conv.input[1]].astype(np.float64)
        b = consts[conv.input[2]].astype(np.float64) if has_b else np.zeros(w.shape[0])
        k = scale / np.sqrt(var + eps)
        new_inits[conv.input[1]] = (w * k.reshape(-1, *[1] * (w.ndim - 1))).astype(consts[conv.input[1]].dtype)
        b_name = conv.input[2] if has_b else names.take(f"{conv.input[1]}_bias")
        new_inits[b_name] = ((b - mean) * k + shift).astype(np.float32)
        while len(conv.input) < 3:
            conv.input.append("")
        conv.input[2] = b_name
        conv.output[0] = bn.output[0]
        drop.add(id(bn))
        folded.append(node_label(bn))
    if not folded:
        return []
    keep = [n for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(keep)
    set_initializers(proto, new_inits)
    return folded


def set_initializers(proto: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> None:
    """Replace or add initializers by name."""
    g = proto.graph
    index = {t.name: i for i, t in enumerate(g.initializer)}
    for name, a in arrays.items():
        a = np.asarray(a)
        t = numpy_helper.from_array(a if a.flags.c_contiguous else a.copy(), name)  # 0-d stays 0-d
        if name in index:
            g.initializer[index[name]].CopyFrom(t)
        else:
            g.initializer.append(t)


def remove_unused_initializers(proto: onnx.ModelProto) -> None:
    remove_dead_constants(proto)
    g = proto.graph
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output} | _subgraph_refs(g)
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    keep_in = [v for v in g.input if v.name in used or v.name not in {t.name for t in proto.graph.initializer}]
    del g.input[:]
    g.input.extend(keep_in)


def _subgraph_refs(g: onnx.GraphProto) -> set[str]:
    """Names read inside the subgraphs of control-flow nodes (outer-scope references)."""
    out: set[str] = set()
    for n in g.node:
        for a in n.attribute:
            for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                for m in sub.node:
                    out.update(m.input)
                out |= _subgraph_refs(sub)
    return out


__all__ = ["InputInfo", "Names", "constants", "consumers", "elem_types", "fold_batchnorm", "inputs", "load_proto",
           "node_label", "opset", "producers", "remove_unused_initializers", "set_initializers",
           "upgrade_opset"]  # fmt: skip
