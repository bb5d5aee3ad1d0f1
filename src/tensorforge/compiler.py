"""The compiler driver: model -> graph -> passes -> kernels -> LLVM -> native code."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .codegen.emit import build_module, emit_assembly, parse_and_optimize, split_assembly, target_machine
from .codegen.targets import Target, get_target
from .errors import InputError, NotConstantError, TensorforgeError, UnsupportedError
from .ir.graph import Graph
from .lower import lower_graph
from .lower.rules import has_lowering
from .passes import PassManager, pipeline_for, specialize
from .passes.specialize import bind_dims
from .runtime.jit import JitModule
from .runtime.model import CompiledModel, format_listing


@dataclass
class Options:
    opt_level: int = 2
    passes: str | None = None  # edits to the pipeline, e.g. "-fuse,+cse"
    verify: bool = False
    print_ir_after: set[str] | str | None = None
    printer: object = print
    lowering: dict = field(default_factory=dict)
    # concrete shapes for inputs with symbolic dims: the "specialize" pass fixes them first
    input_shapes: Mapping[str, Sequence[int]] | None = None


def to_graph(model, name: str | None = None) -> Graph:
    if isinstance(model, Graph):
        return model
    from .frontends.onnx import import_onnx

    return import_onnx(model, name=name)


def check_lowerable(g: Graph) -> None:
    nodes = [m for n in g.nodes for m in (n.attrs.get("body") or (n,))]  # members of fused groups
    problems = [
        f"node '{n.name}' ({n.op}): no code generation for op {n.op}" for n in nodes if not has_lowering(n.op)
    ]
    if problems:
        raise UnsupportedError(f"model '{g.name}' has {len(problems)} op(s) tensorforge cannot compile", problems)


def optimize(g: Graph, options: Options) -> tuple[Graph, list]:
    """Run the pass pipeline of ``options`` (preceded by "specialize" when input shapes are given)."""
    passes = pipeline_for(options.opt_level, options.passes)
    if options.input_shapes and not all(v.type.is_static for v in g.inputs):
        passes = ["specialize", *passes]
    pm = PassManager(passes, verify=options.verify, print_after=options.print_ir_after, printer=options.printer,
                     options={"opt_level": options.opt_level, "input_shapes": options.input_shapes})  # fmt: skip
    out = pm.run(g)
    return out, pm.log


def compile_graph(g: Graph, target: Target, options: Options) -> CompiledModel:
    from .progress import Progress

    t0 = time.perf_counter()
    check_lowerable(g)
    with Progress(4, f"compiling {g.name}: graph passes") as bar:
        og, log = optimize(g, options)
        bar.update(1)
        bar.set_description(f"compiling {g.name}: lowering {len(og.nodes)} nodes")
        program = lower_graph(og, target, options.lowering)
        bar.update(1)
        bar.set_description(f"compiling {g.name}: LLVM IR for {len(program.kernels)} kernels")
        module = build_module(program, target)
        bar.update(1)
        bar.set_description(f"compiling {g.name}: native code")
        jit = JitModule(module.ir, target)
        bar.update(1)
    return CompiledModel(og, program, module, jit, time.perf_counter() - t0, g, log)


class DynamicModel:
    """A model with symbolic input dims: compiled once per concrete input shape, on first use."""

    def __init__(self, graph: Graph, target: Target, options: Options):
        self.graph = graph
        self.name = graph.name
        self.target = target
        self.options = options
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = list(graph.output_names)
        self._cache: dict[tuple, CompiledModel] = {}
        self._lock = threading.Lock()
        check_lowerable(graph)

    def specialize(self, shapes: Mapping[str, Sequence[int]]) -> CompiledModel:
        key = tuple(tuple(int(d) for d in shapes[n]) for n in self.input_names)
        m = self._cache.get(key)
        if m is None:
            with self._lock:
                m = self._cache.get(key)
                if m is None:
                    bind_dims(self.graph, shapes)  # bad shapes fail here, before compiling
                    opts = dataclasses.replace(self.options, input_shapes=dict(zip(self.input_names, key)))
                    m = compile_graph(self.graph, self.target, opts)
                    self._cache[key] = m
        return m

    def _shapes_of(self, args, kwargs) -> dict[str, tuple[int, ...]]:
        if kwargs:
            feeds = kwargs
        else:
            if len(args) != len(self.input_names):
                raise InputError(f"model '{self.name}': expected {len(self.input_names)} input(s) "
                                 f"{self.input_names}, got {len(args)}")  # fmt: skip
            feeds = dict(zip(self.input_names, args))
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise InputError(f"model '{self.name}': missing input(s) {missing}; inputs are {self.input_names}")
        for v in self.graph.inputs:
            x = feeds[v.name]
            if not isinstance(x, np.ndarray):
                raise InputError(f"model '{self.name}': input '{v.name}' must be a numpy array, got {type(x).__name__}")
            if x.dtype != v.dtype.np:
                raise InputError(f"model '{self.name}': input '{v.name}' has dtype {x.dtype}, expected {v.dtype.np}")
        return {n: np.shape(feeds[n]) for n in self.input_names}

    def __call__(self, *args, **kwargs):
        return self.specialize(self._shapes_of(args, kwargs))(*args, **kwargs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.specialize(self._shapes_of((), feeds)).run(feeds)

    @property
    def compiled_shapes(self) -> list[tuple]:
        return list(self._cache)


class ValueSpecializedModel:
    """A model whose shapes depend on the *values* of small integer inputs (a Reshape whose target shape
    is a graph input, axes given as an input, ...). Those inputs are compiled in as constants, once per
    distinct value; every other input is handled as usual."""

    MAX_ELEMS = 64

    def __init__(self, proto, value_inputs: list[str], target: Target, options: Options, kw: dict):
        self.proto = proto
        self.value_inputs = value_inputs
        self.target = target
        self.options = options
        self.kw = kw
        self.name = proto.graph.name or "model"
        inits = {t.name for t in proto.graph.initializer}
        self.input_names = [vi.name for vi in proto.graph.input if vi.name not in inits]
        self.output_names = [vi.name for vi in proto.graph.output]
        self._cache: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def _feeds(self, args, kwargs) -> dict:
        if kwargs:
            return dict(kwargs)
        if len(args) != len(self.input_names):
            raise InputError(f"model '{self.name}': expected {len(self.input_names)} input(s) {self.input_names}, "
                             f"got {len(args)}")  # fmt: skip
        return dict(zip(self.input_names, args))

    def for_values(self, feeds: Mapping[str, np.ndarray]):
        import onnx
        from onnx import numpy_helper

        key = []
        for n in self.value_inputs:
            if n not in feeds:
                raise InputError(f"model '{self.name}': missing input '{n}'")
            v = np.asarray(feeds[n])
            if v.size > self.MAX_ELEMS:
                raise InputError(
                    f"model '{self.name}': input '{n}' sets a shape and must be small, got {v.size} values"
                )
            key.append((v.dtype.str, v.shape, v.tobytes()))
        key = tuple(key)
        m = self._cache.get(key)
        if m is None:
            with self._lock:
                m = self._cache.get(key)
                if m is None:
                    p = onnx.ModelProto()
                    p.CopyFrom(self.proto)
                    keep = [vi for vi in p.graph.input if vi.name not in self.value_inputs]
                    del p.graph.input[:]
                    p.graph.input.extend(keep)
                    for n in self.value_inputs:
                        p.graph.initializer.append(numpy_helper.from_array(np.asarray(feeds[n]), n))
                    m = compile(p, self.target, **self.kw)
                    self._cache[key] = m
        return m

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        m = self.for_values(feeds)
        return m.run({k: v for k, v in feeds.items() if k not in self.value_inputs})

    def __call__(self, *args, **kwargs):
        out = self.run(self._feeds(args, kwargs))
        vals = [out[n] for n in self.output_names]
        return vals[0] if len(vals) == 1 else tuple(vals)


def _value_inputs(proto) -> list[str]:
    """Graph inputs that could be shape-like: small integer tensors with static shapes."""
    import onnx

    inits = {t.name for t in proto.graph.initializer}
    out = []
    for vi in proto.graph.input:
        if vi.name in inits or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        if tt.elem_type not in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        if all(d >= 0 for d in dims) and int(np.prod(dims)) <= ValueSpecializedModel.MAX_ELEMS:
            out.append(vi.name)
    return out


def compile(
    model,
    target: str | Target | None = None,
    *,
    opt_level: int = 2,
    passes: str | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    num_threads: int | None = None,
    name: str | None = None,
    verify: bool = False,
    print_ir_after: set[str] | str | None = None,
) -> CompiledModel | DynamicModel:
    """Compile an ONNX model (path, bytes, ``onnx.ModelProto``) or a ``Graph`` for this machine.

    Models with symbolic input dims return a ``DynamicModel`` that compiles per input shape on first
    use (or pass ``input_shapes`` to fix them now).
    """
    tgt = get_target(target)
    if not tgt.is_host:
        raise TensorforgeError(f"target {tgt.name} cannot run in this process; use tensorforge.assembly(model, "
                               f"target={tgt.name!r}) to see its code")  # fmt: skip
    options = Options(opt_level=opt_level, passes=passes, verify=verify, print_ir_after=print_ir_after)
    try:
        g = to_graph(model, name)
    except NotConstantError:
        if isinstance(model, Graph):
            raise
        from .frontends.onnx import load_model

        proto = load_model(model)
        vins = _value_inputs(proto)
        if not vins:
            raise
        kw = dict(opt_level=opt_level, passes=passes, num_threads=num_threads, verify=verify)
        return ValueSpecializedModel(proto, vins, tgt, options, kw)
    if input_shapes:
        dims = bind_dims(g, input_shapes)
        if all(isinstance(d, int) or d in dims for v in g.inputs for d in v.shape):
            options.input_shapes = dict(input_shapes)  # every dim fixed: the "specialize" pass does it
        else:
            g = specialize(g, input_shapes)
    if not all(v.type.is_static for v in g.inputs) and not options.input_shapes:
        return DynamicModel(g, tgt, options)
    m = compile_graph(g, tgt, options)
    if num_threads is not None:
        m.num_threads = num_threads
    return m


def assembly(model, target: str | Target | None = None, kernel: str | None = None, *, opt_level: int = 2,
             input_shapes: Mapping[str, Sequence[int]] | None = None) -> str:  # fmt: skip
    """Assembly listing of a model's kernels for any target (x86_64, x86_64-avx512, aarch64, nvptx-sm90)."""
    tgt = get_target(target)
    g = to_graph(model)
    if input_shapes:
        g = specialize(g, input_shapes)
    if not all(v.type.is_static for v in g.inputs):
        dims = {v.name: [d if isinstance(d, int) else 1 for d in v.shape] for v in g.inputs}
        g = specialize(g, dims)
    check_lowerable(g)
    og, _ = optimize(g, Options(opt_level=opt_level))
    program = lower_graph(og, tgt)
    module = build_module(program, tgt)
    tm = target_machine(tgt, jit=False)
    mod = parse_and_optimize(module.ir, tm)
    asm = emit_assembly(mod, tm)
    if tgt.is_gpu:
        return asm if kernel is None else _ptx_kernel(asm, program, kernel)
    return format_listing(asm, program, kernel, module.aliases)


def _ptx_kernel(asm: str, program, kernel: str) -> str:
    names = [k.name for k in program.kernels if kernel == k.name or any(kernel in lab for lab in k.labels)]
    if not names:
        raise KeyError(f"no kernel named or labelled {kernel!r}")
    parts = split_assembly(asm, names)
    return "\n".join(parts.get(n, "") for n in names)


__all__ = ["DynamicModel", "Options", "assembly", "compile", "compile_graph", "to_graph"]
