"""The compile pipeline: one list of stages from a model to an ``Artifact``.

    import      model (ONNX path / bytes / ModelProto, or a Graph) -> Graph        frontends/
    specialize  fix the input shapes the caller gave; fold what they determine     passes/specialize.py
    optimize    the pass pipeline of the optimization level                        passes/
    lower       Graph -> Program: kernels (kernel IR) and buffer tables             lower/
    vectorize   vector loops made explicit; identical kernels share one function   lower/vectorize.py
    llvm        Program -> LLVM IR (entry, profiling entry, Python-call entry)      codegen/
    object      LLVM IR -> optimized native object code                            codegen/emit.py

Everything that compiles — ``tfg.compile``, ``tfg.assembly``, the CLI, dynamic-shape stages, training
steps, export — runs these stages through ``Build``; a caller stops where it needs to (``until="llvm"``
for an assembly listing or a cross target, which has no object to load here).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..codegen.emit import build_module_parts, compile_object
from ..codegen.targets import Target
from ..errors import CompileError, UnsupportedError
from ..ir.graph import Graph
from ..ir.limits import check_fits
from ..lower import lower_graph
from ..lower.bf16_gemm import check_precision, precision_note
from ..lower.kir import Kernel
from ..lower.printer import structural_key
from ..lower.program import Program
from ..lower.rules import has_lowering
from ..lower.vectorize import vectorize_kernel
from ..ops.registry import get_op
from ..passes import PassManager, pipeline_for, specialize
from ..passes.specialize import bind_dims
from ..runtime.artifact import Artifact


@dataclass
class Options:
    """How to compile (everything here is part of the compile cache key, except the printing options)."""

    opt_level: int = 2
    passes: str | None = None  # edits to the pass list, e.g. "-fuse,+cse"
    verify: bool = False
    print_ir_after: set[str] | str | None = None
    printer: Callable[[str], None] = print
    lowering: dict = field(default_factory=dict)  # schedule parameters for lowering rules (tests, tuning)
    input_shapes: Mapping[str, Sequence[int]] | None = None  # concrete shapes for symbolic input dims
    symbolic_as_one: bool = False  # remaining symbolic dims become 1 (assembly listings of dynamic models)
    llvm_opt: int = 3  # LLVM optimization level of the object stage

    def cache_fields(self) -> tuple:
        shapes = sorted((k, tuple(v)) for k, v in (self.input_shapes or {}).items())
        return (self.opt_level, self.passes, sorted(self.lowering.items()), shapes, self.symbolic_as_one,
                self.llvm_opt)  # fmt: skip


def to_graph(model, name: str | None = None) -> Graph:
    """The model as a Graph (ONNX models are imported)."""
    if isinstance(model, Graph):
        return model
    from ..frontends.onnx import import_onnx

    return import_onnx(model, name=name)


def check_lowerable(g: Graph) -> None:
    """Every node (members of fused groups included) has a lowering: otherwise one error listing them all."""
    nodes = [m for n in g.nodes for m in (n.attrs.get("body") or (n,))]
    problems = [f"node '{n.name}' ({n.op}): no code generation for op {n.op}" for n in nodes if not has_lowering(n.op)]
    if problems:
        raise UnsupportedError(f"model '{g.name}' has {len(problems)} op(s) tensorforge cannot compile", problems)


def needs_dynamic_values(g: Graph) -> bool:
    """Shapes that depend on values or data (not only on input shapes): staged compilation."""
    untyped = any(v.type is None for n in g.nodes for v in n.outputs)
    return untyped or any(get_op(n.op).data_dependent for n in g.nodes)


def needs_dynamic(g: Graph) -> bool:
    """True when ``g`` cannot be compiled as one static program (symbolic inputs, data-dependent shapes)."""
    if not all(v.type is not None and v.type.is_static for v in g.inputs):
        return True
    return any(get_op(n.op).data_dependent or any(v.type is None for v in n.outputs) for n in g.nodes)


def optimize(g: Graph, options: Options) -> tuple[Graph, list]:
    """Run the pass pipeline of ``options``; returns the graph and the pass log."""
    pm = PassManager(pipeline_for(options.opt_level, options.passes), verify=options.verify,
                     print_after=options.print_ir_after, printer=options.printer,
                     options={"opt_level": options.opt_level})  # fmt: skip
    return pm.run(g), pm.log


def vectorize_program(program: Program, target: Target) -> tuple[list[Kernel | None], dict[str, str]]:
    """The kernels code is generated from: vector and unroll loops made explicit (``lower/vectorize.py``).
    On CPUs a kernel structurally identical to an earlier one (a repeated layer) gets None and an alias:
    it runs the earlier kernel's function."""
    code: list[Kernel | None] = []
    aliases: dict[str, str] = {}
    first: dict[str, str] = {}
    for k in program.kernels:
        key = None if target.is_gpu else structural_key(k)
        if key is not None and key in first:
            aliases[k.name] = first[key]
            code.append(None)
            continue
        if key is not None:
            first[key] = k.name
        code.append(vectorize_kernel(k, 1 if target.is_gpu else None, target.masked_ops))
    return code, aliases


# -- the stages ---------------------------------------------------------------------------------------
class Build:
    """One model going through the stages; each stage reads and fills fields of the build."""

    def __init__(self, model, target: Target, options: Options, name: str | None = None,
                 state: dict[int, int] | None = None):  # fmt: skip
        self.model = model
        self.target = target
        self.options = options
        self.name = name
        self.state = state  # output index -> input index updated in place (training steps)
        self.done: list[str] = []
        self.seconds: dict[str, float] = {}
        self.source: Graph | None = None
        self.graph: Graph | None = None
        self.pass_log: list = []
        self.program: Program | None = None
        self.code: list[Kernel | None] = []
        self.aliases: dict[str, str] = {}
        self.llvm_parts: list[str] = []  # the LLVM IR: one module, or an entry module and parts
        self.object: bytes | None = None
        self.notes: list[str] = []  # what a stage decided that the user should know

    def run(self, until: str = "object", progress=None) -> Build:
        """Run the stages not run yet, up to and including ``until``."""
        names = [s.name for s in STAGES]
        if until not in names:
            raise ValueError(f"unknown stage {until!r}; stages: {', '.join(names)}")
        for stage in STAGES[: names.index(until) + 1]:
            if stage.name in self.done:
                continue
            if progress is not None:
                progress.set_description(f"compiling {self.name or 'model'}: {stage.describe(self)}")
            t0 = time.perf_counter()
            stage.fn(self)
            self.seconds[stage.name] = time.perf_counter() - t0
            self.done.append(stage.name)
            if progress is not None:
                progress.update(1)
        return self

    def with_options(self, **changes) -> Build:
        """A copy of this build whose remaining stages run with changed options (the stages already run are
        shared), e.g. the object stage at another LLVM level."""
        other = copy.copy(self)
        other.options = dataclasses.replace(self.options, **changes)
        other.done, other.seconds = list(self.done), dict(self.seconds)
        return other

    def artifact(self) -> Artifact:
        """The artifact of the stages run so far (at least through ``llvm``)."""
        if "llvm" not in self.done:
            raise CompileError("an artifact needs the stages through 'llvm'")
        g, src = self.graph, self.source
        meta = {
            "compile_seconds": sum(self.seconds.values()),
            "stage_seconds": dict(self.seconds),
            "source_nodes": len(src.nodes),
            "parameters": src.parameter_count(),
            "graph_nodes": len(g.nodes),
            "passes": [{"name": r.name, "seconds": r.seconds, "nodes_before": r.nodes_before,
                        "nodes_after": r.nodes_after, "stats": {k: str(v) for k, v in r.stats.items()}}
                       for r in self.pass_log],  # fmt: skip
            "llvm_opt": self.options.llvm_opt,
            "notes": list(self.notes),
        }
        if self.target.is_gpu:  # how each kernel is launched (runtime/cuda.py)
            from ..lower.gpu_map import launches

            meta["gpu_launch"] = launches(self.program)
        return Artifact(g.name, self.target, self.program, self.llvm_parts, self.object, self.aliases, meta, graph=g)


def _import(b: Build) -> None:
    b.source = b.graph = to_graph(b.model, b.name)
    b.name = b.graph.name


def _specialize(b: Build) -> None:
    g, shapes = b.graph, b.options.input_shapes
    if shapes:
        bind_dims(g, shapes)  # checks every shape given, those of fixed inputs too (never silently ignored)
    if shapes and not all(v.type.is_static for v in g.inputs) and not needs_dynamic_values(g):
        g = specialize(g, shapes)
    if b.options.symbolic_as_one and not all(v.type.is_static for v in g.inputs):
        dims = {v.name: [d if isinstance(d, int) else 1 for d in v.shape] for v in g.inputs}
        b.notes.append(f"symbolic input dims set to 1 for compilation: {dims} (fix them with input shapes)")
        g = specialize(g, dims)
    b.source = b.graph = g


def _optimize(b: Build) -> None:
    check_lowerable(b.graph)
    g, b.pass_log = optimize(b.graph, b.options)
    if [v.name for v in g.inputs] != [v.name for v in b.graph.inputs] or len(g.outputs) != len(b.graph.outputs):
        raise CompileError(f"model {g.name!r}: the graph passes changed its inputs or outputs (a pass bug)")
    b.graph = g


def _lower(b: Build) -> None:
    check_precision(b.target, b.options.lowering, b.graph.name)  # precision="bf16" needs bf16 instructions
    b.program = lower_graph(b.graph, b.target, b.options.lowering, state=b.state)
    note = precision_note(b.graph, b.program, b.options.lowering)  # which ops run in bf16
    if note:
        b.notes.append(note)
    # every tensor fits, yet all of them at once may not: refuse here rather than die allocating the arena
    check_fits(b.program.resident_bytes, f"model '{b.graph.name}': running it (weights, intermediates, inputs "
               "and outputs)")  # fmt: skip


def _vectorize(b: Build) -> None:
    if b.target.is_gpu:  # every kernel as a launch nest over the grid (lower/gpu_map.py)
        from ..codegen import ptx  # noqa: F401  (registers the GPU vocabulary's code generation)
        from ..lower.gpu_map import map_program

        b.program, notes = map_program(b.program, b.target)
        b.notes += notes
    b.code, b.aliases = vectorize_program(b.program, b.target)


def _llvm(b: Build) -> None:
    b.llvm_parts = build_module_parts(b.program, b.code, b.aliases, b.target)


def _object(b: Build) -> None:
    if not b.target.is_host:
        raise CompileError(f"target {b.target.name} is not this machine: its code cannot be loaded here; stop at "
                           "the 'llvm' stage for its assembly")  # fmt: skip
    b.object = compile_object(b.llvm_parts, b.target, b.options.llvm_opt)


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[[Build], None]
    what: str

    def describe(self, b: Build) -> str:
        if self.name == "lower" and b.graph is not None:
            return f"lowering {len(b.graph.nodes)} nodes"
        if self.name == "llvm" and b.program is not None:
            return f"LLVM IR for {len(b.program.kernels)} kernels"
        return self.what


STAGES: list[Stage] = [
    Stage("import", _import, "importing"),
    Stage("specialize", _specialize, "fixing input shapes"),
    Stage("optimize", _optimize, "graph passes"),
    Stage("lower", _lower, "lowering"),
    Stage("vectorize", _vectorize, "vectorizing"),
    Stage("llvm", _llvm, "LLVM IR"),
    Stage("object", _object, "native code"),
]

__all__ = ["STAGES", "Build", "Options", "Stage", "check_lowerable", "needs_dynamic", "needs_dynamic_values",
           "optimize", "to_graph", "vectorize_program"]  # fmt: skip
