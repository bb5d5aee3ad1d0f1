"""ONNX importer: ``onnx.ModelProto`` -> ``Graph``.

IR ops follow the newest ONNX opset's inputs and attributes. Nodes from older opsets are upgraded by
versioned converters (``@converter("Softmax", until=12)``), so opset differences stay in one place.
Every unsupported op, attribute or dtype in the model is collected and reported at once, with node
names, before anything is compiled. Shape computations whose inputs are known at import time
(``Shape -> Gather -> Concat -> Reshape``) are folded so that later stages see static shapes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import (
    InvalidAttributeError,
    ModelLoadError,
    ShapeError,
    TensorforgeError,
    UnsupportedError,
    node_context,
)
from ..ir.dtype import DType
from ..ir.graph import Graph, Node, TensorType, Value, clean_name
from ..ir.limits import check_fits, type_bytes
from ..ops.fold import fold_node
from ..ops.registry import Attr, attr_problem, describe_value, get_op, has_op, infer_or_defer
from .onnx_functions import expand_function, has_function

DEFAULT_DOMAINS = ("", "ai.onnx")
# The opsets implemented, per domain whose ops change meaning across versions: a model importing a newer one
# may use semantics this importer does not know, so it is refused rather than read by older rules. 28 is
# onnx 1.23's newest, the opset at which the conformance suite (tests/test_onnx_backend.py) builds its tests.
MIN_OPSET, MAX_OPSET = 1, 28
ML_DOMAIN = "ai.onnx.ml"
OPSET_RANGES = {"": (MIN_OPSET, MAX_OPSET), ML_DOMAIN: (1, 5)}

# (op_type) -> list of (until_version, fn, attribute declarations); fn(imp, node, inputs, attrs) -> list[Value]
_CONVERTERS: dict[str, list[tuple[int, Callable, Mapping[str, Attr]]]] = {}


def _key(op_type: str, domain: str) -> str:
    return op_type if domain in DEFAULT_DOMAINS else f"{domain}.{op_type}"


def converter(op_type: str, until: int = 10**6, domain: str = "", attrs: Mapping[str, Attr] | None = None):
    """Register a conversion for ``op_type`` nodes of opset <= ``until`` (newest matching entry wins).
    ``attrs`` declares value ranges of the ONNX attributes it reads, checked before it runs, as an IR op's
    are: an op that exists only as a conversion (LpPool) has no OpDef to declare them on."""

    def deco(fn):
        key = _key(op_type, domain)
        _CONVERTERS.setdefault(key, []).append((until, fn, attrs or {}))
        _CONVERTERS[key].sort(key=lambda t: t[0])
        return fn

    return deco


# Quantized-model folds (frontends/onnx_qdq.py): tried before an op's converter; None declines
_QDQ_FOLDS: dict[str, Callable] = {}


def qdq_fold(op_type: str):
    def deco(fn):
        _QDQ_FOLDS[op_type] = fn
        return fn

    return deco


def _find_converter(key: str, opset: int) -> tuple[Callable, Mapping[str, Attr]] | None:
    for until, fn, specs in _CONVERTERS.get(key, []):
        if opset <= until:
            return fn, specs
    return None


_STRING = 9  # FieldDescriptor.TYPE_STRING
_MESSAGE = 11  # FieldDescriptor.TYPE_MESSAGE


def _check_text(msg, where: str, path: str = "") -> None:
    """Every text field of ``msg`` (names, op types, domains, string attributes...) is UTF-8: protobuf hands
    out the bytes of one that is not, and a name that is not text would fail far from here."""
    for fd, value in msg.ListFields():
        at = f"{path}.{fd.name}" if path else fd.name
        rep = fd.is_repeated
        items = value if rep else [value]
        if fd.type == _STRING:
            for i, v in enumerate(items):
                if isinstance(v, bytes):
                    text = v.decode("utf-8", "replace")
                    where_at = f"{at}[{i}]" if rep else at
                    raise ModelLoadError(f"{where} is not a valid ONNX file: {where_at} ({text!r}) is not UTF-8 text")
        elif fd.type == _MESSAGE:
            for i, v in enumerate(items):
                _check_text(v, where, f"{at}[{i}]" if rep else at)


# -------------------------------------------------------------------------------------------------
# loading
# -------------------------------------------------------------------------------------------------
def load_model(model: str | os.PathLike | bytes | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes | bytearray):
        data, src = bytes(model), "<bytes>"
    else:
        src = os.fspath(model)
        if not os.path.exists(src):
            raise ModelLoadError(f"model file {src!r} does not exist")
        try:
            with open(src, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ModelLoadError(f"model file {src!r} cannot be read: {e.strerror or e}") from None
    if not data:
        raise ModelLoadError(f"model {src!r} is empty")
    try:
        proto = onnx.ModelProto()
        proto.ParseFromString(data)
    except Exception as e:
        raise ModelLoadError(f"model {src!r} is not a valid ONNX file (truncated or corrupt?): {e}") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelLoadError(f"model {src!r} has no graph (is it an ONNX model?)")
    _check_text(proto, f"model {src!r}")
    if not isinstance(model, bytes | bytearray):
        base = os.path.dirname(os.path.abspath(src))
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
            try:
                onnx.external_data_helper.load_external_data_for_model(proto, base)
            except Exception as e:
                raise ModelLoadError(f"model {src!r}: cannot load external data: {e}") from None
    return proto


def _sanitize(name: str) -> str:
    return clean_name(name)


def _dtype(elem_type: int, what: str) -> DType:
    try:
        return DType.from_onnx(elem_type)
    except TypeError:
        name = (
            onnx.TensorProto.DataType.Name(elem_type) if elem_type in onnx.TensorProto.DataType.values() else elem_type
        )
        raise UnsupportedError(f"{what}: element type {name} is not supported") from None


_A = onnx.AttributeProto
_ATTR_KINDS = {_A.FLOAT: "a float", _A.INT: "an int", _A.STRING: "a string", _A.TENSOR: "a tensor", _A.GRAPH: "a graph",
               _A.SPARSE_TENSOR: "a sparse tensor", _A.TYPE_PROTO: "a type", _A.FLOATS: "a list of floats",
               _A.INTS: "a list of ints", _A.STRINGS: "a list of strings", _A.TENSORS: "a list of tensors",
               _A.GRAPHS: "a list of graphs", _A.SPARSE_TENSORS: "a list of sparse tensors",
               _A.TYPE_PROTOS: "a list of types"}  # fmt: skip
_WIDENING = {(_A.INT, _A.FLOAT), (_A.INTS, _A.FLOATS)}  # exact, and what onnx.helper writes for alpha=1


def _schema(n: onnx.NodeProto, opset: int) -> onnx.defs.OpSchema | None:
    try:
        return onnx.defs.get_schema(n.op_type, opset, "" if n.domain in DEFAULT_DOMAINS else n.domain)
    except onnx.defs.SchemaError:
        return None


def check_schema(n: onnx.NodeProto, opset: int, where: str) -> None:
    """A node against its op's ONNX schema at the model's opset: as many inputs and outputs as that version
    of the op takes (ReduceMean-1 has no axes input), and the attributes: no unknown name (a typo such as
    ``stride`` would otherwise be ignored), every required one present, each of its declared kind. This
    runs before any converter reads them; value ranges are the IR ops' declarations (``ops/registry.py``).
    Ops without an ONNX schema (custom domains, model-local functions) are checked by their converters."""
    schema = _schema(n, opset)
    if schema is None:
        if n.domain in DEFAULT_DOMAINS and onnx.defs.has(n.op_type):  # an ONNX op, but a later one
            first = min(s.since_version for s in onnx.defs.get_all_schemas_with_history() if s.name == n.op_type
                        and s.domain in DEFAULT_DOMAINS)  # fmt: skip
            raise ModelLoadError(f"{where}: {n.op_type} does not exist at opset {opset} (the model's "
                                 f"opset_import); it was added in opset {first}")  # fmt: skip
        return
    for what, given, lo, hi in (("inputs", n.input, schema.min_input, schema.max_input),
                                ("outputs", n.output, schema.min_output, schema.max_output)):  # fmt: skip
        count = max((i + 1 for i, name in enumerate(given) if name), default=0)  # trailing "" = omitted
        if not lo <= count <= hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi < 2**30 else f"at least {lo}"
            raise ModelLoadError(f"{where}: {n.op_type} (opset {opset}) takes {want} {what}, the node has {count}")
    for a in n.attribute:
        spec = schema.attributes.get(a.name)
        if spec is None:
            known = ", ".join(sorted(schema.attributes)) or "none"
            raise InvalidAttributeError(f"{where}: {n.op_type} (opset {opset}) has no attribute {a.name!r}; "
                                        f"its attributes are: {known}")  # fmt: skip
        want = int(spec.type)
        if a.type != want and (a.type, want) not in _WIDENING:
            got = _ATTR_KINDS.get(a.type, "an attribute without a type")
            if a.type in (_A.FLOAT, _A.INT, _A.STRING, _A.FLOATS, _A.INTS, _A.STRINGS):
                got = describe_value(_attr_value(a))
            raise InvalidAttributeError(f"{where}: attribute {a.name!r} must be {_ATTR_KINDS[want]}, got {got}")
    given = {a.name for a in n.attribute}
    missing = sorted(k for k, spec in schema.attributes.items() if spec.required and k not in given)
    if missing:
        raise InvalidAttributeError(f"{where}: required attribute(s) {', '.join(map(repr, missing))} missing")


def _attr_value(a: onnx.AttributeProto) -> Any:
    if a.type == onnx.AttributeProto.GRAPH:
        return a.g  # a control-flow body, imported by its op's converter (frontends/onnx_control.py)
    if a.type == onnx.AttributeProto.GRAPHS:
        raise UnsupportedError(f"attribute {a.name!r} holds a list of subgraphs")
    if a.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(a.t)
    if a.type == onnx.AttributeProto.SPARSE_TENSOR:
        raise UnsupportedError(f"attribute {a.name!r} holds a sparse tensor")
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list):
        if v and isinstance(v[0], bytes):
            return tuple(x.decode("utf-8", "replace") for x in v)
        return tuple(v)
    return v


class Importer:
    def __init__(self, proto: onnx.ModelProto, name: str | None = None, fold_shapes: bool = True):
        self.proto = proto
        self.g = proto.graph
        self.name = name or proto.graph.name or "model"
        self.opsets: dict[str, int] = {"": MAX_OPSET}
        for o in proto.opset_import:
            self.opsets["" if o.domain in DEFAULT_DOMAINS else o.domain] = o.version
        self.local_functions = {(f.domain, f.name): f for f in proto.functions}
        self.env: dict[str, Value] = {}
        self.nodes: list[Node] = []
        self.used_names: set[str] = set()
        self.fold_shapes = fold_shapes
        self.current: onnx.NodeProto | None = None
        self.producers: dict[str, onnx.NodeProto] = {o: n for n in proto.graph.node for o in n.output if o}
        self._tmp = 0

    @property
    def opset(self) -> int:
        """The default domain's opset of the node being converted (a function body may differ)."""
        return self.opsets.get("", MAX_OPSET)

    def opset_for(self, domain: str) -> int:
        return self.opsets.get("" if domain in DEFAULT_DOMAINS else domain, 1)

    def supports(self, op_type: str, domain: str) -> bool:
        if _key(op_type, domain) in _CONVERTERS:
            return True
        if domain in DEFAULT_DOMAINS and has_op(op_type):
            return True
        return has_function(self, op_type, domain)

    # -- values -------------------------------------------------------------------------------------
    def fresh_name(self, base: str) -> str:
        base = _sanitize(base)
        name, k = base, 1
        while name in self.used_names:
            name = f"{base}_{k}"
            k += 1
        self.used_names.add(name)
        return name

    def const(self, data: np.ndarray, base: str = "const") -> Value:
        return Value(self.fresh_name(base), const=np.asarray(data))

    def value_type(self, vi: onnx.ValueInfoProto) -> TensorType:
        t = vi.type
        if not t.HasField("tensor_type"):
            kind = t.WhichOneof("value")
            raise UnsupportedError(f"{self.name}: value {vi.name!r} is a {kind}, only tensors are supported")
        tt = t.tensor_type
        dt = _dtype(tt.elem_type, f"{self.name}: value {vi.name!r}")
        if not tt.HasField("shape"):
            raise UnsupportedError(f"{self.name}: value {vi.name!r} has no shape (rank unknown)")
        dims = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                if d.dim_value < 0:
                    raise ModelLoadError(f"model '{self.name}': input {vi.name!r} declares dim {i} as {d.dim_value}; "
                                         "dims must be >= 0 (or symbolic)")  # fmt: skip
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(_sanitize(d.dim_param))
            else:
                dims.append(f"{_sanitize(vi.name)}_d{i}")
        return TensorType(dt, tuple(dims))

    # -- the whole graph ----------------------------------------------------------------------------
    def check_supported(self) -> None:
        problems: list[str] = []
        self._check_nodes(self.g.node, "", problems)
        if problems:
            raise UnsupportedError(f"model '{self.name}' uses {len(problems)} unsupported construct(s)", problems)

    def _check_nodes(self, nodes, scope: str, problems: list[str]) -> None:
        """Every unsupported op, in the graph and in control-flow bodies, so all are reported at once."""
        for i, n in enumerate(nodes):
            label = f"node '{scope}{n.name or f'{n.op_type}_{i}'}' ({_key(n.op_type, n.domain)})"
            if not self.supports(n.op_type, n.domain):
                problems.append(f"{label}: op {_key(n.op_type, n.domain)} is not supported")
                continue
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    self._check_nodes(a.g.node, f"{scope}{n.name or n.op_type}/{a.name}/", problems)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    problems.append(f"{label}: attribute {a.name!r} holds a list of subgraphs")

    def import_subgraph(self, body: onnx.GraphProto, bindings: list[Value | None], scope: str) -> list[Value | None]:
        """Convert a control-flow body in place: its inputs bound to ``bindings``, outer-scope names
        visible, its own names local to this instance (so a body can be imported once per iteration)."""
        outer = self.env
        self.env = dict(outer)
        try:
            for vi, v in zip(body.input, bindings):
                if v is not None:
                    self.env[vi.name] = v
                else:
                    self.env.pop(vi.name, None)
            for t in body.initializer:
                self.env[t.name] = Value(self.fresh_name(t.name), const=numpy_helper.to_array(t))
            for i, n in enumerate(body.node):
                node = onnx.NodeProto()
                node.CopyFrom(n)
                node.name = f"{scope}/{n.name or f'{n.op_type}_{i}'}"
                self.convert(node, i)
            outs = []
            for vi in body.output:
                if vi.name not in self.env:
                    raise ModelLoadError(f"model '{self.name}': {scope}: body output {vi.name!r} is never defined")
                outs.append(self.env[vi.name])
            return outs
        finally:
            self.env = outer

    def check_opsets(self) -> None:
        if not self.proto.opset_import:  # the last field an exporter writes: a file cut just before it parses
            raise ModelLoadError(f"model '{self.name}' declares no opset (opset_import is empty): a truncated file, "
                                 "or not written by an ONNX exporter")  # fmt: skip
        for o in self.proto.opset_import:
            domain = "" if o.domain in DEFAULT_DOMAINS else o.domain
            if domain not in OPSET_RANGES:
                continue  # a custom domain: its ops are model-local functions or reported as unsupported
            lo, hi = OPSET_RANGES[domain]
            if not lo <= o.version <= hi:
                shown = f"domain {domain!r}" if domain else "the default ONNX domain"
                raise UnsupportedError(f"model '{self.name}' imports opset {o.version} of {shown}; tensorforge "
                                       f"implements opsets {lo} to {hi} (onnx.version_converter can convert a "
                                       "model to another opset)")  # fmt: skip

    def run(self) -> Graph:
        self.check_opsets()
        self.check_supported()
        inits = {t.name for t in self.g.initializer}
        for t in self.g.initializer:
            try:
                arr = numpy_helper.to_array(t)
            except Exception as e:
                raise ModelLoadError(f"model '{self.name}': initializer {t.name!r} cannot be read: {e}") from None
            if arr.dtype.kind in "OSU":
                raise UnsupportedError(f"model '{self.name}': initializer {t.name!r} holds strings")
            _dtype(t.data_type, f"model '{self.name}': initializer {t.name!r}")
            self.env[t.name] = Value(self.fresh_name(t.name), const=arr)
        _check_unique(self.name, "inputs", [vi.name for vi in self.g.input if vi.name not in inits])
        _check_unique(self.name, "outputs", [vi.name for vi in self.g.output])
        inputs = []
        for vi in self.g.input:
            if vi.name in inits:
                continue
            # graph inputs keep their ONNX names (users feed them by name); kernels sanitize buffer names
            name = vi.name if vi.name and vi.name not in self.used_names else self.fresh_name(vi.name)
            self.used_names.add(name)
            v = Value(name, self.value_type(vi))
            check_fits(type_bytes(v.type), f"model '{self.name}': input '{vi.name}' {v.type}")
            self.env[vi.name] = v
            inputs.append(v)
        problems: list[str] = []
        for i, n in enumerate(self.g.node):
            self.current = n
            try:
                self.convert(n, i)
            except UnsupportedError as e:
                # keep going, so that every unsupported attribute / mode is reported in one error
                problems += [str(e).splitlines()[0], *e.problems] if e.problems else [str(e)]
                for o in n.output:
                    if o:
                        self.env[o] = Value(self.fresh_name(o))  # untyped: later nodes defer their types
            except Exception:
                if not problems:
                    raise
                # most likely a consequence of an earlier unsupported node: report those
                for o in n.output:
                    if o:
                        self.env[o] = Value(self.fresh_name(o))
        if problems:
            raise UnsupportedError(f"model '{self.name}' uses {len(problems)} unsupported construct(s)", problems)
        outputs = []
        for vi in self.g.output:
            self._check_declared_output(vi)
            if vi.name not in self.env:
                raise ModelLoadError(f"model '{self.name}': graph output {vi.name!r} is not produced by any node")
            outputs.append(self.env[vi.name])
        return Graph(self.nodes, inputs, outputs, name=_sanitize(self.name),
                     output_names=[vi.name for vi in self.g.output])  # fmt: skip

    # -- nodes --------------------------------------------------------------------------------------
    def _check_declared_output(self, vi: onnx.ValueInfoProto) -> None:
        """A graph output declared with an element type must compute that type (ONNX Runtime refuses the model
        otherwise; running it would hand the caller arrays of another dtype than the model promises)."""
        v = self.env.get(vi.name)
        tt = vi.type.tensor_type
        if v is None or v.type is None or not vi.type.HasField("tensor_type") or not tt.elem_type:
            return
        declared = _dtype(tt.elem_type, f"model '{self.name}': graph output {vi.name!r}")
        if declared != v.type.dtype:
            raise ShapeError(f"model '{self.name}': graph output {vi.name!r} is declared {declared} but computes "
                             f"{v.type.dtype}")  # fmt: skip

    def node_name(self, n: onnx.NodeProto, i: int) -> str:
        return n.name or f"{n.op_type}_{i}"

    def convert(self, n: onnx.NodeProto, i: int) -> None:
        name = self.node_name(n, i)
        if (n.domain, n.op_type) not in self.local_functions:
            check_schema(n, self.opset_for(n.domain), node_context(self.name, name, n.op_type))
        inputs: list[Value | None] = []
        for x in n.input:
            if x == "":
                inputs.append(None)
            elif x not in self.env:
                raise ModelLoadError(f"{node_context(self.name, name, n.op_type)}: input {x!r} is not defined "
                                     "(the graph is not topologically sorted or an input is missing)")  # fmt: skip
            else:
                inputs.append(self.env[x])
        attrs = {}
        for a in n.attribute:
            try:
                attrs[a.name] = _attr_value(a)
            except UnsupportedError as e:
                raise UnsupportedError(f"{node_context(self.name, name, n.op_type)}: {e}") from None
        found = _find_converter(_key(n.op_type, n.domain), self.opset_for(n.domain))
        fold = _QDQ_FOLDS.get(n.op_type) if n.domain in DEFAULT_DOMAINS else None
        if fold is not None and (outs := fold(self, name, n, inputs, attrs)) is not None:
            pass
        elif found is not None:
            fn, specs = found
            problem = attr_problem(specs, attrs)
            if problem:
                raise InvalidAttributeError(f"{node_context(self.name, name, n.op_type)}: {problem}")
            outs = fn(self, name, n, inputs, attrs)
        elif n.domain in DEFAULT_DOMAINS and has_op(n.op_type):
            outs = self.emit(n.op_type, inputs, attrs, name, [o for o in n.output])
        elif has_function(self, n.op_type, n.domain):
            outs = expand_function(self, name, n, inputs)
        else:
            raise UnsupportedError(f"{node_context(self.name, name, n.op_type)}: op {_key(n.op_type, n.domain)} "
                                   "is not supported")  # fmt: skip
        for oname, v in zip(n.output, outs):
            if oname:
                self.env[oname] = v

    def emit(self, op: str, inputs, attrs, name: str, out_names: list[str] | int = 1) -> list[Value]:
        """Add an IR node (with type inference and import-time folding) and return its outputs."""
        if isinstance(out_names, int):
            out_names = [f"{name}_out{k}" for k in range(out_names)]
        opdef = get_op(op)
        for k, v in opdef.defaults.items():
            attrs.setdefault(k, v)
        outs = tuple(Value(self.fresh_name(o or f"{name}_unused{k}")) for k, o in enumerate(out_names))
        node = Node(op, tuple(inputs), outs, attrs, name)
        types = self.infer_or_defer(node)
        if types is None:
            self.nodes.append(node)
            return list(outs)
        for v, t in zip(outs, types):
            v.type = t
        folded = self.try_fold(node)
        if folded is not None:
            return folded
        self.nodes.append(node)
        return list(outs)

    def infer_or_defer(self, node: Node) -> list[TensorType] | None:
        return infer_or_defer(node, self.name)

    def try_fold(self, node: Node) -> list[Value] | None:
        """Fold shape computations at import (Shape, Size, small integer ops on constants)."""
        if not self.fold_shapes:
            return None
        return fold_node(node, self.name, shapes_only=True)


# -------------------------------------------------------------------------------------------------
# Converters for ops whose ONNX form differs from the IR form, or that change meaning across opsets
# -------------------------------------------------------------------------------------------------
@converter("Constant")
def _constant(imp: Importer, name, n, inputs, attrs):
    if "value" in attrs:
        arr = attrs["value"]
    elif "value_float" in attrs:
        arr = np.array(attrs["value_float"], np.float32)
    elif "value_floats" in attrs:
        arr = np.array(attrs["value_floats"], np.float32)
    elif "value_int" in attrs:
        arr = np.array(attrs["value_int"], np.int64)
    elif "value_ints" in attrs:
        arr = np.array(attrs["value_ints"], np.int64)
    else:
        raise UnsupportedError(
            f"{node_context(imp.name, name, 'Constant')}: only tensor/float/int values are supported"
        )
    if np.asarray(arr).dtype.kind in "OSU":
        raise UnsupportedError(f"{node_context(imp.name, name, 'Constant')}: string constants are not supported")
    return [imp.const(arr, n.output[0])]


@converter("Identity")
def _identity(imp: Importer, name, n, inputs, attrs):
    return imp.emit("Identity", inputs, attrs, name, list(n.output))


def _softmax_legacy(op):
    def conv(imp: Importer, name, n, inputs, attrs):
        # opset < 13: softmax over the flattened trailing dims starting at `axis` (default 1)
        x = inputs[0]
        axis = int(attrs.get("axis", 1))
        rank = x.type.rank
        if axis < 0:
            axis += rank
        if axis == rank - 1:
            return imp.emit(op, [x], {"axis": -1}, name, list(n.output))
        (flat,) = imp.emit("Flatten", [x], {"axis": axis}, name + "_flatten")
        (sm,) = imp.emit(op, [flat], {"axis": 1}, name)
        shape = imp.const(np.array(x.type.shape, np.int64) if x.type.is_static else np.array([0] * rank, np.int64))
        return imp.emit("Reshape", [sm, shape], {}, name + "_reshape", list(n.output))

    return conv


converter("Softmax", until=12)(_softmax_legacy("Softmax"))
converter("LogSoftmax", until=12)(_softmax_legacy("LogSoftmax"))


def _axes_attr_to_input(op):
    def conv(imp: Importer, name, n, inputs, attrs):
        axes = attrs.pop("axes", None)
        ins = list(inputs[:1])
        if axes is not None:
            ins.append(imp.const(np.array(axes, np.int64), name + "_axes"))
        return imp.emit(op, ins, attrs, name, list(n.output))

    return conv


converter("Squeeze", until=12)(_axes_attr_to_input("Squeeze"))
converter("Unsqueeze", until=12)(_axes_attr_to_input("Unsqueeze"))
for _r in ("ReduceSum",):
    converter(_r, until=12)(_axes_attr_to_input(_r))
for _r in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
           "ReduceLogSumExp", "ReduceSumSquare"):  # fmt: skip
    converter(_r, until=17)(_axes_attr_to_input(_r))


@converter("Clip", until=10)
def _clip_legacy(imp: Importer, name, n, inputs, attrs):
    x = inputs[0]
    dt = x.type.dtype.np
    lo = imp.const(np.array(attrs.get("min", -3.4028234663852886e38), dt), name + "_min")
    hi = imp.const(np.array(attrs.get("max", 3.4028234663852886e38), dt), name + "_max")
    return imp.emit("Clip", [x, lo, hi], {}, name, list(n.output))


@converter("Reshape", until=4)
def _reshape_legacy(imp: Importer, name, n, inputs, attrs):
    shape = imp.const(np.array(attrs["shape"], np.int64), name + "_shape")
    return imp.emit("Reshape", [inputs[0], shape], {}, name, list(n.output))


@converter("Slice", until=9)
def _slice_legacy(imp: Importer, name, n, inputs, attrs):
    ins = [inputs[0], imp.const(np.array(attrs["starts"], np.int64)), imp.const(np.array(attrs["ends"], np.int64))]
    if "axes" in attrs:
        ins.append(imp.const(np.array(attrs["axes"], np.int64)))
    return imp.emit("Slice", ins, {}, name, list(n.output))


@converter("BatchNormalization")
def _batchnorm(imp: Importer, name, n, inputs, attrs):
    attrs.pop("spatial", None)
    attrs.pop("is_test", None)
    attrs.pop("consumed_inputs", None)
    if len(n.output) > 1 and any(n.output[1:]) and attrs.get("training_mode", 0):
        raise UnsupportedError(f"{node_context(imp.name, name, 'BatchNormalization')}: training_mode=1 outputs "
                               "(running mean/var) are not supported in inference graphs")  # fmt: skip
    return imp.emit("BatchNormalization", inputs, attrs, name, [n.output[0]])


@converter("MaxPool")
def _maxpool(imp: Importer, name, n, inputs, attrs):
    if len(n.output) > 1 and n.output[1]:  # the argmax positions: a separate kernel (ops/pooling.py)
        return imp.emit("MaxPoolWithIndices", inputs, attrs, name, list(n.output))
    return imp.emit("MaxPool", inputs, attrs, name, [n.output[0]])


def _same_shapes(imp: Importer, name: str, n, inputs, why: str) -> None:
    shapes = [list(v.type.shape) for v in inputs if v is not None]
    if any(s != shapes[0] for s in shapes):
        raise ShapeError(f"{node_context(imp.name, name, n.op_type)}: inputs of shapes {shapes} at opset "
                         f"{imp.opset}: {why}")  # fmt: skip


def _legacy_broadcast(op):
    def conv(imp: Importer, name, n, inputs, attrs):
        # opset < 7: 'broadcast'/'axis' attributes; with axis, align B to A starting at axis
        a, b = inputs
        axis = attrs.pop("axis", None)
        if not attrs.pop("broadcast", 0):
            _same_shapes(imp, name, n, inputs, "without broadcast=1 the shapes must be equal (before opset 7)")
        attrs.pop("consumed_inputs", None)
        if axis is not None and b.type.rank < a.type.rank:
            axis = int(axis) % a.type.rank
            trail = a.type.rank - axis - b.type.rank
            if trail > 0:
                shape = imp.const(np.array(list(b.type.shape) + [1] * trail, np.int64))
                (b,) = imp.emit("Reshape", [b, shape], {}, name + "_align")
        return imp.emit(op, [a, b], attrs, name, list(n.output))

    return conv


for _op in ("Add", "Sub", "Mul", "Div", "Pow"):
    converter(_op, until=6)(_legacy_broadcast(_op))


def _no_broadcast(op):
    def conv(imp: Importer, name, n, inputs, attrs):
        _same_shapes(imp, name, n, inputs, f"{op} broadcasts its inputs only from opset 8 on")
        attrs.pop("consumed_inputs", None)
        return imp.emit(op, inputs, attrs, name, list(n.output))

    return conv


for _op in ("Max", "Min", "Sum", "Mean"):
    converter(_op, until=7)(_no_broadcast(_op))


def _check_unique(model: str, what: str, names: list[str]) -> None:
    """Two graph inputs (or outputs) of one name: a caller could feed (or read) only one of them."""
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            raise ModelLoadError(f"model '{model}': graph {what} {first[name]} and {i} are both named {name!r}")
        first[name] = i


def import_onnx(model, name: str | None = None, fold_shapes: bool = True) -> Graph:
    """Read an ONNX model (path, bytes or ModelProto) into a Graph."""
    proto = load_model(model)
    if name is None and not isinstance(model, onnx.ModelProto | bytes | bytearray):
        name = os.path.splitext(os.path.basename(os.fspath(model)))[0]
    try:
        return Importer(proto, name, fold_shapes).run()
    except (ShapeError, UnsupportedError, ModelLoadError):
        raise
    except TensorforgeError:
        raise
    except Exception as e:  # a malformed proto that got past parsing
        raise ModelLoadError(
            f"model '{name or proto.graph.name}' could not be imported: {type(e).__name__}: {e}"
        ) from e


from . import onnx_control, onnx_ml, onnx_ops, onnx_qdq, onnx_quant, onnx_quant_ms, onnx_rnn  # noqa: E402, F401  (registers more converters)
