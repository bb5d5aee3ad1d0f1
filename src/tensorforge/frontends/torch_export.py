"""PyTorch importer: a ``torch.export.ExportedProgram`` (core ATen) -> Graph, without ONNX in between.

    ep = export_program(module, args, dynamic_shapes={"x": {0: Dim("batch")}})   # or a .pt2 file
    g = import_exported(ep, name="Net")

``torch.export`` traces the module into an FX graph of ATen ops; ``run_decompositions`` with
``DECOMPOSITIONS`` (torch.export's core-ATen defaults plus a few more) reduces it to the ops the converter
table ``ATEN`` knows, each mapped onto existing IR ops (``torch_aten_ops.py``: elementwise, reductions,
creation, symbolic sizes; ``torch_aten_nn.py``: movement, matmul, conv, pooling, normalization). A converter
is found by the ATen op's name (``aten.addmm.default``), one per op. Parameters and buffers become
constants named after the module's attributes (``layer1.0.conv1.weight``); user inputs keep the names of
``forward``'s parameters. ``torch.export.Dim`` dims become symbolic dims of the graph inputs, named after
their ``Dim``; the sizes read from them (``sym_size``, arithmetic on SymInts) become small integer IR
computations (``Shape`` -> ``Gather`` ...), which the compiler folds once it specializes a shape, as for an
ONNX model with a symbolic batch. Every op without a converter is reported at once, with the user's
source line PyTorch recorded for it.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import (
    ModelLoadError,
    ShapeError,
    TensorforgeError,
    UnsupportedError,
)
from ..ir.dtype import DType
from ..ir.graph import Graph, Node, TensorType, Value
from ..ops.fold import fold_node
from ..ops.registry import get_op, infer_or_defer
from .torch import import_torch

torch = import_torch()

# ATen op name (``aten.add.Tensor``, ``operator.mul``) -> converter(cx, *args, **kwargs) -> Value | list | None
ATEN: dict[str, Callable] = {}

_DTYPES = {torch.float32: DType.F32, torch.float64: DType.F64, torch.float16: DType.F16,
           torch.bfloat16: DType.BF16, torch.int8: DType.I8, torch.int16: DType.I16, torch.int32: DType.I32,
           torch.int64: DType.I64, torch.uint8: DType.U8, torch.uint16: DType.U16, torch.uint32: DType.U32,
           torch.uint64: DType.U64, torch.bool: DType.BOOL}  # fmt: skip
_SYM = (torch.SymInt, torch.SymBool, torch.SymFloat)


def aten(*names: str):
    """Register a converter for ATen ops (``"addmm.default"`` is ``aten.addmm.default``; Python operators on
    SymInts are ``"operator.mul"``)."""

    def deco(fn):
        for n in names:
            key = n if n.startswith(("operator.", "torch.", "aten.")) else f"aten.{n}"
            if key in ATEN:
                raise ValueError(f"two converters for {key}")
            ATEN[key] = fn
        return fn

    return deco


def op_name(target) -> str:
    """The table key of an FX node's target: ``aten.addmm.default``, ``operator.getitem``, ``torch.sym_max``."""
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", None) or str(target)
    return f"operator.{name}" if mod in ("_operator", "operator") else f"{mod}.{name}" if mod else name


def torch_dtype(dt) -> DType:
    try:
        return _DTYPES[dt]
    except KeyError:
        raise UnsupportedError(f"PyTorch dtype {dt} is not supported") from None


def _extra_decompositions() -> dict:
    """Core-ATen ops with no IR op of their own but a decomposition into ops that have one."""
    aten_ops = torch.ops.aten
    ops = [aten_ops.native_dropout.default, aten_ops.linalg_vector_norm.default]
    return torch._decomp.get_decompositions(ops)


def decompositions():
    """The table ``run_decompositions`` uses: torch.export's core-ATen defaults plus ``_extra_decompositions``."""
    table = torch.export.default_decompositions()
    for op, fn in _extra_decompositions().items():
        table[op] = fn
    return table


# -------------------------------------------------------------------------------------------------
# module / file -> ExportedProgram
# -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet():
    """Warnings PyTorch gives while exporting that are not the user's to act on (deprecations inside torch,
    the LSTM's flat weights 'assigned during export'): hidden on our path."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*were assigned during export.*")
        yield


def _as_tuple(args) -> tuple:
    if args is None:
        return ()
    return tuple(args) if isinstance(args, tuple | list) else (args,)


def batch_dynamic_shapes(module, args: tuple):
    """``dynamic_batch=True``: dim 0 of every tensor argument is one ``Dim("batch")``; examples of batch 1
    are traced at batch 2 (torch.export specializes dims of size 1)."""
    batch = torch.export.Dim("batch")
    args = tuple(torch.cat([a, a]) if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == 1 else a
                 for a in args)  # fmt: skip
    return args, tuple({0: batch} if isinstance(a, torch.Tensor) and a.dim() else None for a in args)


def export_program(model, args=None, dynamic_shapes=None, kwargs=None):
    """``model`` (an ``nn.Module``, an ``ExportedProgram`` or the path of a ``.pt2`` file written by
    ``torch.export.save``) as an ExportedProgram in the op set the converters cover."""
    if isinstance(model, str | os.PathLike):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise ModelLoadError(f"model file {path!r} does not exist")
        try:
            with _quiet():
                ep = torch.export.load(path)
        except Exception as e:
            raise ModelLoadError(f"model file {path!r} is not a torch.export program (.pt2): {e}") from None
    elif isinstance(model, torch.export.ExportedProgram):
        ep = model
    elif isinstance(model, torch.nn.Module):
        was_training = model.training
        model.eval()
        try:
            with _quiet():
                ep = torch.export.export(model, _as_tuple(args), kwargs=kwargs, dynamic_shapes=dynamic_shapes)
        except Exception as e:
            raise ModelLoadError(f"torch.export could not export {type(model).__name__}: "
                                 f"{type(e).__name__}: {_first_lines(str(e))}") from e  # fmt: skip
        finally:
            model.train(was_training)
    else:
        raise TensorforgeError(f"from_torch takes an nn.Module, a torch.export.ExportedProgram or a .pt2 path, "
                               f"not {type(model).__name__}")  # fmt: skip
    try:
        with _quiet():
            return ep.run_decompositions(decompositions())
    except Exception as e:
        raise ModelLoadError(f"PyTorch could not decompose the exported program to core ATen: "
                             f"{type(e).__name__}: {_first_lines(str(e))}") from e  # fmt: skip


def _first_lines(text: str, n: int = 6) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[:n]) + ("\n..." if len(lines) > n else "")


def dim_names(module, args: tuple, dynamic_shapes) -> list[dict[int, str]]:
    """Per positional argument, the names of its ``Dim`` dims: ``{0: "batch"}``. ``dynamic_shapes`` given
    as a tuple/list (by position) or a dict (by ``forward``'s parameter names)."""
    if dynamic_shapes is None:
        return []
    specs: list = []
    if isinstance(dynamic_shapes, dict):
        try:
            params = list(inspect.signature(module.forward).parameters)
        except (TypeError, ValueError, AttributeError):
            params = []
        specs = [dynamic_shapes.get(p) for p in params[: len(args)]]
    elif isinstance(dynamic_shapes, tuple | list):
        specs = list(dynamic_shapes)
    out = []
    for spec in specs:
        items = spec.items() if isinstance(spec, dict) else enumerate(spec) if isinstance(spec, tuple | list) else ()
        out.append({int(d): str(dim.__name__) for d, dim in items if dim is not None and hasattr(dim, "__name__")})
    return out


# -------------------------------------------------------------------------------------------------
# ExportedProgram -> Graph
# -------------------------------------------------------------------------------------------------
def source_of(node) -> str:
    """Where the user wrote the op: 'file:line in fn: code (in module 'a.b' (Linear))', from the stack trace
    torch.export records per node; frames inside torch itself are skipped when the user's are there."""
    st = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)(?:\n[ \t]*(?!File ")([^\n]*))?', st)
    torch_dir = os.path.dirname(torch.__file__)
    user = [f for f in frames if not f[0].startswith(torch_dir)]
    parts = []
    if user or frames:
        file, line, fn, code = (user or frames)[-1]
        parts.append(f"{file}:{line} in {fn}" + (f": {code.strip()}" if code.strip() else ""))
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        cls_name = cls.rsplit(".", 1)[-1] if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
        if path:
            parts.append(f"in module '{path}' ({cls_name})")
    return ", ".join(parts) if parts else "no source location recorded"


def _to_numpy(t) -> np.ndarray:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


_BOOL_OUT = {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN",
             "IsInf"}  # fmt: skip
_I64_OUT = {"Shape", "Size", "ArgMax", "ArgMin"}


class TorchImporter:
    """Converts one ExportedProgram; ``run()`` returns the Graph."""

    def __init__(self, ep, name: str = "model", input_names: Sequence[str] | None = None,
                 dim_names: Sequence[dict[int, str]] = ()):  # fmt: skip
        self.ep = ep
        self.name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name) or "model"
        self.current_source = ""  # source_of the FX node being converted (each IR node it emits keeps it)
        self.input_names = list(input_names) if input_names is not None else None
        self.dim_names = list(dim_names)
        self.env: dict[Any, Any] = {}
        self.nodes: list[Node] = []
        self.used: set[str] = set()
        self.node_names: set[str] = set()
        self.dtypes: dict[int, DType] = {}
        self.symbols: dict[str, str] = {}
        self.vals: dict[Any, Any] | None = None  # traced values per FX node, when not the nodes' own meta

    def val(self, node):
        """What PyTorch traced for an FX node (a FakeTensor, a SymInt, ...)."""
        if self.vals is not None and node in self.vals:
            return self.vals[node]
        return node.meta.get("val")

    def fx_nodes(self):
        return self.ep.graph.nodes

    # -- names and values ---------------------------------------------------------------------------
    def fresh(self, base: str, taken: set[str] | None = None) -> str:
        taken = self.used if taken is None else taken
        base = re.sub(r"[^A-Za-z0-9_.\-]", "_", base) or "v"
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    def const(self, data, base: str = "const") -> Value:
        return Value(self.fresh(base), const=np.asarray(data))

    def dtype_of(self, v: Value) -> DType:
        return v.type.dtype if v.type is not None else self.dtypes[v.id]

    def emit(self, op: str, inputs: Sequence[Value | None], attrs: dict, name: str, n: int = 1,
             dtype: DType | None = None) -> list[Value]:  # fmt: skip
        """An IR node, typed by its op's rule (left untyped while its shape needs values known only at run
        time, as the ONNX importer does), folded when it computes a shape from known sizes."""
        opdef = get_op(op)
        attrs = {**opdef.defaults, **attrs}
        outs = tuple(Value(self.fresh(name)) for _ in range(n))
        node = Node(op, tuple(inputs), outs, attrs, self.fresh(name, self.node_names),
                    source=self.current_source)  # fmt: skip
        types = infer_or_defer(node, self.name)
        if types is None:
            guess = dtype or self._deferred_dtype(node)
            for v in outs:
                self.dtypes[v.id] = guess
            self.nodes.append(node)
            return list(outs)
        for v, t in zip(outs, types):
            v.type = t
        folded = fold_node(node, self.name, shapes_only=True)
        if folded is not None:
            return folded
        self.nodes.append(node)
        return list(outs)

    def _deferred_dtype(self, node: Node) -> DType:
        if node.op in _BOOL_OUT:
            return DType.BOOL
        if node.op in _I64_OUT:
            return DType.I64
        if node.op == "Cast":
            return DType.from_onnx(int(node.attrs["to"]))
        if node.op == "ConstantOfShape":
            return DType.from_numpy(np.asarray(node.attrs["value"]).dtype)
        first = node.inputs[1] if node.op == "Where" else node.inputs[0]
        return self.dtype_of(first)

    # -- the program --------------------------------------------------------------------------------
    def check_supported(self) -> None:
        problems = []
        for node in self.fx_nodes():
            if node.op == "call_function" and op_name(node.target) not in ATEN:
                problems.append(f"node '{node.name}' ({op_name(node.target)}): ATen op {op_name(node.target)} "
                                f"is not supported; at {source_of(node)}")  # fmt: skip
            elif node.op in ("call_module", "call_method", "get_attr"):
                problems.append(f"node '{node.name}': FX {node.op} {node.target!r} is not supported (control "
                                f"flow or a submodule); at {source_of(node)}")  # fmt: skip
        if problems:
            raise UnsupportedError(f"model '{self.name}' uses {len(problems)} unsupported op(s)", problems)

    def run(self) -> Graph:
        self.check_supported()
        sig = self.ep.graph_signature
        specs = {s.arg.name: s for s in sig.input_specs if hasattr(s.arg, "name")}
        user = [s for s in sig.input_specs if s.kind.name == "USER_INPUT"]
        if self.input_names is not None and len(self.input_names) != len(user):
            raise TensorforgeError(f"model '{self.name}': input_names has {len(self.input_names)} name(s) but "
                                   f"the model takes {len(user)} input(s)")  # fmt: skip
        inputs: list[Value] = []
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                v = self._placeholder(node, specs.get(node.name), user)
                if isinstance(v, Value) and v.const is None:
                    inputs.append(v)
                self.env[node] = v
            elif node.op == "call_function":
                self._convert(node)
            elif node.op == "output":
                outputs = self._outputs(node)
        return Graph(
            self.nodes,
            inputs,
            outputs,
            name=self.name,
            output_names=[f"output{i}" if len(outputs) > 1 else "output" for i in range(len(outputs))],
        )

    def _placeholder(self, node, spec, user: list):
        if spec is None:
            raise ModelLoadError(f"model '{self.name}': placeholder {node.name!r} is not in the graph signature")
        kind = spec.kind.name
        val = self.val(node)
        if kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
            t = self.ep.state_dict.get(spec.target)
            if t is None:
                t = self.ep.constants.get(spec.target)
            if t is None:
                raise ModelLoadError(f"model '{self.name}': {kind.lower()} {spec.target!r} has no value")
            torch_dtype(t.dtype)  # one tensorforge has
            return self.const(_to_numpy(t), spec.target)
        if kind != "USER_INPUT":
            raise UnsupportedError(f"model '{self.name}': input {node.name!r} is a {kind.lower()}, which is not "
                                   "supported")  # fmt: skip
        if not isinstance(val, torch.Tensor):
            return val  # a Python value the program was specialized to
        k = user.index(spec)
        name = self.input_names[k] if self.input_names is not None else node.name
        names = self.dim_names[k] if k < len(self.dim_names) else {}
        dims = []
        for i, d in enumerate(val.shape):
            if isinstance(d, int):
                dims.append(d)
                continue
            key = str(d)
            if key not in self.symbols:
                self.symbols[key] = self.fresh(names.get(i) or f"{name}_d{i}", set(self.symbols.values()))
            dims.append(self.symbols[key])
        if name in self.used:
            raise TensorforgeError(f"model '{self.name}': two inputs are named {name!r}")
        self.used.add(name)
        return Value(name, TensorType(torch_dtype(val.dtype), tuple(dims)))

    def _convert(self, node) -> None:
        key = op_name(node.target)
        fn = ATEN[key]
        args = _map_args(node.args, self.env)
        kwargs = _map_args(node.kwargs, self.env)
        cx = Ctx(self, node, key)
        # the user's source line, kept on every IR node this FX node becomes (the explorer shows it)
        known = node.meta.get("stack_trace") or node.meta.get("nn_module_stack")
        self.current_source = " ".join(source_of(node).split()) if known else ""  # one line, as printed
        try:
            out = fn(cx, *args, **kwargs)
        except TensorforgeError as e:
            e.add_note(f"while converting node '{node.name}' ({key}) at {source_of(node)}")
            raise
        except Exception as e:
            raise ModelLoadError(f"model '{self.name}', node '{node.name}' ({key}): could not be converted: "
                                 f"{type(e).__name__}: {e}; at {source_of(node)}") from e  # fmt: skip
        self._bind(node, out)

    def _bind(self, node, out) -> None:
        val = self.val(node)
        self.env[node] = out
        outs = out if isinstance(out, list | tuple) else [out]
        vals = val if isinstance(val, list | tuple) else [val]
        for v, m in zip(outs, vals):
            if not isinstance(v, Value):
                continue
            if isinstance(m, torch.Tensor):
                self.dtypes.setdefault(v.id, torch_dtype(m.dtype))
                self._check_type(node, v, m)
            elif isinstance(m, (*_SYM, int, bool, float)):
                self.dtypes.setdefault(v.id, v.type.dtype if v.type is not None else DType.I64)

    def _check_type(self, node, v: Value, m) -> None:
        """A converter's result against the shape and dtype PyTorch traced: a mistake here would otherwise
        surface far away, as wrong numbers."""
        if v.type is None:
            return
        want = tuple(int(d) if isinstance(d, int) else None for d in m.shape)
        got = v.type.shape
        same = len(want) == len(got) and all(w is None or not isinstance(g, int) or w == g for w, g in zip(want, got))
        if not same or v.type.dtype != torch_dtype(m.dtype):
            raise ShapeError(
                f"model '{self.name}', node '{node.name}' ({op_name(node.target)}): converted to "
                f"{v.type}, PyTorch computes {torch_dtype(m.dtype)}{list(m.shape)}; at {source_of(node)}"
            )

    def _outputs(self, node) -> list[Value]:
        kinds = [s.kind.name for s in self.ep.graph_signature.output_specs]
        results = list(node.args[0]) if isinstance(node.args[0], list | tuple) else [node.args[0]]
        outputs: list[Value] = []
        for kind, r in zip(kinds, results):
            if kind != "USER_OUTPUT":
                continue  # buffer updates (a training-mode BatchNorm's statistics): the compiled model is pure
            v = self.env.get(r) if hasattr(r, "op") else r
            if not isinstance(v, Value):
                if v is None:
                    raise UnsupportedError(f"model '{self.name}': output {len(outputs)} is None")
                v = self.const(np.asarray(v), "output_const")
            if v.is_const or any(v is o for o in outputs) or self._is_input(v):
                (v,) = self.emit("Identity", [v], {}, f"output{len(outputs)}")
            outputs.append(v)
        return outputs

    def random_seed(self, cx) -> Value:
        """The int64 seed of the graph's random numbers: only the torch.compile importer has one (a run-time
        input drawn per call); an exported program gets none."""
        cx.unsupported("random numbers (dropout in training) are drawn per call only under torch.compile; "
                       "export the model in eval mode")  # fmt: skip

    def random_offset(self) -> int:
        """A new counter stream for the next random op of this graph."""
        self.rng_streams = getattr(self, "rng_streams", 0) + 1
        return self.rng_streams - 1

    def _is_input(self, v: Value) -> bool:
        return any(v is x for n, x in self.env.items() if getattr(n, "op", None) == "placeholder")


def _map_args(a, env):
    if hasattr(a, "op") and hasattr(a, "target"):  # an fx.Node
        return env[a]
    if isinstance(a, list | tuple):
        return type(a)(_map_args(x, env) for x in a)
    if isinstance(a, dict):
        return {k: _map_args(x, env) for k, x in a.items()}
    return a


def _meta(a, imp=None):
    if hasattr(a, "meta"):
        return imp.val(a) if imp is not None else a.meta.get("val")
    if isinstance(a, list | tuple):
        return type(a)(_meta(x, imp) for x in a)
    return a


class Ctx:
    """What a converter sees: the FX node (its traced shapes and dtypes) and ways to add IR nodes."""

    def __init__(self, imp: TorchImporter, node, op: str):
        self.imp = imp
        self.node = node
        self.op = op

    @property
    def out(self):
        return self.imp.val(self.node)

    @property
    def out_dtype(self) -> DType:
        m = self.out
        m = m[0] if isinstance(m, list | tuple) else m
        return torch_dtype(m.dtype)

    def meta(self, i: int):
        """The traced value (FakeTensor, SymInt, ...) of positional argument ``i``."""
        return _meta(self.node.args[i], self.imp)

    def used_outputs(self) -> set[int]:
        """Which results of a multi-result op some node reads (``getitem`` users)."""
        return {u.args[1] for u in self.node.users if op_name(u.target) == "operator.getitem"}

    def rank(self, i: int) -> int:
        return len(self.meta(i).shape)

    def unsupported(self, why: str):
        raise UnsupportedError(f"model '{self.imp.name}', node '{self.node.name}' ({self.op}): {why}; at "
                               f"{source_of(self.node)}")  # fmt: skip

    def emit(self, op: str, *inputs: Value | None, n: int = 1, dtype: DType | None = None, **attrs):
        outs = self.imp.emit(op, inputs, attrs, self.node.name, n, dtype)
        return outs[0] if n == 1 else outs

    def const(self, value, dtype: DType) -> Value:
        return self.imp.const(np.asarray(value, dtype=dtype.np), f"{self.node.name}_c")

    def ints(self, values) -> Value:
        """A 1-D int64 tensor from ints and SymInt values (a shape, starts, sizes)."""
        if all(isinstance(x, int) for x in values):
            return self.const(np.array(list(values), np.int64).reshape(-1), DType.I64)
        parts = [self.emit("Reshape", self.scalar(x, DType.I64), self.const([1], DType.I64)) for x in values]
        return self.emit("Concat", *parts, axis=0)

    def dtype(self, v: Value) -> DType:
        return self.imp.dtype_of(v)

    def cast(self, v: Value, dtype: DType) -> Value:
        return v if self.dtype(v) == dtype else self.emit("Cast", v, to=dtype.onnx)

    def scalar(self, x, dtype: DType) -> Value:
        """A Python number or a tensor/SymInt value as ``dtype``."""
        return self.cast(x, dtype) if isinstance(x, Value) else self.const(x, dtype)


from . import torch_aten_fused, torch_aten_grad, torch_aten_nn, torch_aten_ops, torch_aten_random  # noqa: E402, F401


def import_exported(ep, name: str = "model", input_names: Sequence[str] | None = None,
                    dim_names: Sequence[dict[int, str]] = ()) -> Graph:  # fmt: skip
    """An ExportedProgram (already decomposed by ``export_program``) as a Graph."""
    return TorchImporter(ep, name, input_names, dim_names).run()
