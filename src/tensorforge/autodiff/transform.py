"""``grad``: a model in, its gradient graph out.

    g = tfg.grad(model, wrt=["W1", "b1"])      # outputs: the model's outputs, then grad_W1, grad_b1
    print(g)                                    # IR text; tfg.compile(g) runs it natively

Parameters named in ``wrt`` that are constants (initializers) become graph inputs first ("promoted"), so
the gradient graph takes them at run time instead of folding them away. For an ONNX model this happens
in the model itself, before import: the importer folds small constant subgraphs, which could otherwise
fold a small parameter (a bias through an Unsqueeze) into a constant before it is ever differentiated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import ShapeError, TensorforgeError
from ..ir.graph import Graph, Value
from .builder import GraphBuilder
from .core import backward


def source_names(proto) -> dict[str, str]:
    """ONNX initializer and input name -> the name of the graph value the importer makes of it (the
    importer's order and renaming: initializers first, sanitized, then made unique; graph inputs keep
    their ONNX name unless an initializer took it)."""
    from ..frontends.onnx import _sanitize

    used: set[str] = set()
    out: dict[str, str] = {}
    inits = [t.name for t in proto.graph.initializer]
    for n in [*inits, *(vi.name for vi in proto.graph.input if vi.name not in set(inits))]:
        if n not in set(inits) and n and n not in used:
            name = n
        else:
            base = name = _sanitize(n)
            k = 1
            while name in used:
                name = f"{base}_{k}"
                k += 1
        used.add(name)
        out[n] = name
    return out


def import_with_inputs(model, names: Sequence[str], name: str | None = None):
    """Import an ONNX model with the initializers ``names`` turned into graph inputs. Returns the graph,
    their values (by graph value name) and ``source_names`` of the model as imported."""
    import onnx
    from onnx import helper, numpy_helper

    from ..frontends.onnx import import_onnx, load_model

    proto = load_model(model)
    wanted = set(names)
    moved = [t for t in proto.graph.initializer if t.name in wanted]
    if moved:
        p = onnx.ModelProto()
        p.CopyFrom(proto)
        keep = [t for t in p.graph.initializer if t.name not in wanted]
        del p.graph.initializer[:]
        p.graph.initializer.extend(keep)
        listed = {vi.name for vi in p.graph.input}
        p.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in moved if t.name not in listed)  # fmt: skip
        proto = p
    if name is None and not isinstance(model, onnx.ModelProto | bytes | bytearray):
        import os

        name = os.path.splitext(os.path.basename(os.fspath(model)))[0]
    mapping = source_names(proto)
    return import_onnx(proto, name=name), {mapping[t.name]: numpy_helper.to_array(t) for t in moved}, mapping


def promote(g: Graph, names: Sequence[str]) -> tuple[Graph, list[Value]]:
    """``g`` with the constants named ``names`` turned into graph inputs; returns (graph, those inputs)
    — each name may also be an existing input, which is returned as is."""
    by_name = {v.name: v for v in g.values()}
    new: dict[int, Value] = {}
    found: list[Value] = []
    for name in names:
        v = by_name.get(name)
        if v is None:
            params = [u.name for u in g.constants() if u.dtype.is_float and u.const.ndim > 0]
            raise TensorforgeError(f"model '{g.name}' has no input or parameter named '{name}'; inputs: "
                                   f"{[u.name for u in g.inputs]}, parameters: {params}")  # fmt: skip
        if not v.dtype.is_float:
            raise TensorforgeError(f"model '{g.name}': '{name}' has dtype {v.dtype}; only float values have gradients")
        if v.is_const:
            if v.id not in new:
                new[v.id] = Value(v.name, v.type)
            v = new[v.id]
        found.append(v)
    if not new:
        return g, found
    nodes = [n.replace(inputs=tuple(new.get(x.id, x) if x is not None else None for x in n.inputs)) for n in g.nodes]
    added = [v for v in new.values()]
    outputs = [new.get(v.id, v) for v in g.outputs]
    return Graph(nodes, [*g.inputs, *added], outputs, g.name, g.output_names), found


def grad(model, wrt: Sequence[str], *, of: str | None = None, keep_outputs: bool = True,
         input_shapes: Mapping[str, Sequence[int]] | None = None) -> Graph:  # fmt: skip
    """The graph of the gradient of output ``of`` (default: the first) with respect to ``wrt``.

    A scalar output is differentiated directly; for any other output the graph takes its cotangent as an
    extra input ``d_<of>`` (a vector-Jacobian product). Outputs: the model's own outputs (unless
    ``keep_outputs=False``), then ``grad_<name>`` for each name in ``wrt``.
    """
    from ..passes import specialize

    g = model if isinstance(model, Graph) else import_with_inputs(model, list(wrt))[0]
    if input_shapes:
        g = specialize(g, input_shapes)
    dynamic = [f"{v.name}: {v.type}" for v in g.inputs if not v.type.is_static]
    if dynamic:
        raise ShapeError(f"model '{g.name}': gradients need static shapes, but {', '.join(dynamic)} "
                         "(pass input_shapes={...})")  # fmt: skip
    g, params = promote(g, list(wrt))
    names = list(g.output_names)
    if of is None:
        idx = 0
    elif of in names:
        idx = names.index(of)
    else:
        raise TensorforgeError(f"model '{g.name}' has no output '{of}'; outputs: {names}")
    out = g.outputs[idx]
    if not out.dtype.is_float:
        raise TensorforgeError(f"model '{g.name}': output '{names[idx]}' has dtype {out.dtype}; it has no gradient")
    b = GraphBuilder(g.name, taken=[v.name for v in g.values()])
    inputs = list(g.inputs)
    if out.type.numel == 1:
        seed = b.const(np.ones(out.shape, out.dtype.np), "one")
    else:
        seed = b.input(f"d_{names[idx]}", out.type)
        inputs.append(seed)
    grads = backward(g.nodes, out, seed, params, b)
    outs = [gv if gv is not None else b.const(np.zeros(p.shape, p.dtype.np), f"zero_{p.name}")
            for p, gv in zip(params, grads)]  # fmt: skip
    gnames = [f"grad_{p.name}" for p in params]
    keep_o, keep_n = (list(g.outputs), names) if keep_outputs else ([], [])
    return Graph([*g.nodes, *b.nodes], inputs, [*keep_o, *outs], f"{g.name}_grad", [*keep_n, *gnames])
