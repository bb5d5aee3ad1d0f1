"""The compiler driver: model -> graph -> passes -> kernels -> LLVM -> native code."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .codegen.emit import build_module, emit_assembly, parse_and_optimize, split_assembly, target_machine
from .codegen.targets import Target, get_target
from .dynamic import DynamicModel, needs_dynamic
from .errors import TensorforgeError, UnsupportedError
from .ir.graph import Graph
from .lower import lower_graph
from .lower.rules import has_lowering
from .ops.registry import get_op
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
    problems = [f"node '{n.name}' ({n.op}): no code generation for op {n.op}" for n in nodes if not has_lowering(n.op)]
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
    g = to_graph(model, name)
    if input_shapes and not needs_dynamic_values(g):
        dims = bind_dims(g, input_shapes)
        if all(isinstance(d, int) or d in dims for v in g.inputs for d in v.shape):
            options.input_shapes = dict(input_shapes)  # every dim fixed: the "specialize" pass does it
        else:
            g = specialize(g, input_shapes)
    if options.input_shapes is None and needs_dynamic(g):
        return DynamicModel(g, tgt, options, num_threads)
    m = compile_graph(g, tgt, options)
    if num_threads is not None:
        m.num_threads = num_threads
    return m


def needs_dynamic_values(g: Graph) -> bool:
    """Shapes that depend on values or data (not only on input shapes): staged compilation."""
    untyped = any(v.type is None for n in g.nodes for v in n.outputs)
    return untyped or any(get_op(n.op).data_dependent for n in g.nodes)


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
