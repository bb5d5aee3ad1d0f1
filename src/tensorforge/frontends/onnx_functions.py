"""ONNX function ops, expanded into the ops they are defined by.

Many ONNX ops are *functions*: their schema carries a body written in other ONNX ops (Attention,
RMSNormalization, NegativeLogLikelihoodLoss, Range, MeanVarianceNormalization, ...), sometimes one that
depends on the node's attributes and input types ("context-dependent"). A model may also define its own
functions (``ModelProto.functions``). An op that tensorforge does not implement natively is imported by
expanding its body in place, as ONNX Runtime does, so coverage grows with every primitive; ops that
matter for speed (LayerNormalization, Softmax, Gelu, ...) keep their native definitions, which take
precedence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx
from onnx import helper

from ..errors import UnsupportedError, node_context
from ..ir.graph import Value

if TYPE_CHECKING:
    from .onnx import Importer


def _schema(op_type: str, domain: str, opset: int):
    try:
        return onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None


def has_function(imp: Importer, op_type: str, domain: str) -> bool:
    """True when ``op_type`` can be imported by expanding a function body (schema or model-local)."""
    if (domain, op_type) in imp.local_functions:
        return True
    s = _schema(op_type, domain, imp.opset_for(domain))
    return s is not None and (bool(s.function_opset_versions) or bool(s.context_dependent_function_opset_versions))


def _body(imp: Importer, n: onnx.NodeProto, inputs: list[Value | None]) -> onnx.FunctionProto:
    local = imp.local_functions.get((n.domain, n.op_type))
    if local is not None:
        return local
    opset = imp.opset_for(n.domain)
    s = _schema(n.op_type, n.domain, opset)
    # the body written for the newest function version not newer than the model's opset
    cd = [v for v in s.context_dependent_function_opset_versions if v <= opset] or list(
        s.context_dependent_function_opset_versions
    )
    st = [v for v in s.function_opset_versions if v <= opset] or list(s.function_opset_versions)
    if cd and (not st or max(cd) >= max(st)):
        types = []
        for v in inputs:
            if v is None:
                types.append(onnx.TypeProto().SerializeToString())
                continue
            dims = [d if isinstance(d, int) else str(d) for d in v.type.shape]
            types.append(helper.make_tensor_type_proto(v.type.dtype.onnx, dims).SerializeToString())
        raw = s.get_context_dependent_function_with_opset_version(max(cd), n.SerializeToString(), types)
        fn = onnx.FunctionProto()
        fn.ParseFromString(raw)
        return fn
    body = s.get_function_with_opset_version(max(st))
    if isinstance(body, bytes):
        fn = onnx.FunctionProto()
        fn.ParseFromString(body)
        return fn
    return body


def _defaults(imp: Importer, n: onnx.NodeProto, fn: onnx.FunctionProto) -> dict[str, onnx.AttributeProto]:
    """Attribute values visible inside the body: the node's, else the function's or the schema's defaults."""
    out: dict[str, onnx.AttributeProto] = {}
    for a in fn.attribute_proto:
        out[a.name] = a
    s = _schema(n.op_type, n.domain, imp.opset_for(n.domain))
    if s is not None:
        for name, a in s.attributes.items():
            if a.default_value.type != onnx.AttributeProto.UNDEFINED:
                d = onnx.AttributeProto()
                d.CopyFrom(a.default_value)
                d.name = name
                out[name] = d
    for a in n.attribute:
        out[a.name] = a
    return out


def expand_function(imp: Importer, name: str, n: onnx.NodeProto, inputs: list[Value | None]) -> list[Value | None]:
    """Import node ``n`` by converting its function body; returns the values of ``n``'s outputs."""
    fn = _body(imp, n, inputs)
    attrs = _defaults(imp, n, fn)
    prefix = imp.fresh_name(name) + "/"
    rename: dict[str, str] = {"": ""}
    for formal, v in zip(fn.input, inputs):
        if v is not None:
            actual = prefix + formal
            imp.env[actual] = v
            rename[formal] = actual
        else:
            rename[formal] = ""
    for formal in list(fn.input)[len(inputs) :]:
        rename[formal] = ""
    body_opsets = {o.domain: o.version for o in fn.opset_import}
    saved = dict(imp.opsets)
    imp.opsets.update(body_opsets)
    try:
        for i, inner in enumerate(fn.node):
            node = onnx.NodeProto()
            node.CopyFrom(inner)
            del node.input[:]
            node.input.extend(rename.get(x, prefix + x) if x else "" for x in inner.input)
            del node.output[:]
            for o in inner.output:
                rename[o] = prefix + o if o else ""
                node.output.append(rename[o])
            del node.attribute[:]
            for a in inner.attribute:
                if a.type == onnx.AttributeProto.GRAPH:  # a control-flow body reads function-scope names
                    b = onnx.AttributeProto()
                    b.CopyFrom(a)
                    _rename_free(b.g, rename, prefix)
                    node.attribute.append(b)
                elif a.ref_attr_name:
                    ref = attrs.get(a.ref_attr_name)
                    if ref is None:
                        continue  # the caller left an optional attribute unset
                    b = onnx.AttributeProto()
                    b.CopyFrom(ref)
                    b.name = a.name
                    node.attribute.append(b)
                else:
                    node.attribute.append(a)
            node.name = f"{name}/{inner.name or f'{inner.op_type}_{i}'}"
            imp.convert(node, i)
    finally:
        imp.opsets = saved
    outs: list[Value | None] = []
    for k, oname in enumerate(n.output):
        if not oname:
            outs.append(None)
            continue
        formal = fn.output[k] if k < len(fn.output) else None
        v = imp.env.get(rename.get(formal, "")) if formal else None
        if v is None:
            raise UnsupportedError(f"{node_context(imp.name, name, n.op_type)}: output {k} ({oname!r}) is not "
                                   "defined by the op's function body")  # fmt: skip
        outs.append(v)
    return outs


def _rename_free(g: onnx.GraphProto, rename: dict[str, str], prefix: str) -> None:
    """Rename, in place, the names a body reads from the enclosing function (not those it defines)."""
    defined = {vi.name for vi in g.input} | {t.name for t in g.initializer}
    for nd in g.node:
        for k, x in enumerate(nd.input):
            if x and x not in defined:
                nd.input[k] = rename.get(x, prefix + x)
        for a in nd.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                inner = {x: rename.get(x, prefix + x) for x in rename if x not in defined}
                _rename_free(a.g, {**inner, **{d: d for d in defined}}, prefix)
        defined.update(nd.output)

