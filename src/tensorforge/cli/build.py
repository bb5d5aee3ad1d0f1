"""Commands that compile and show: compile, asm, info, graph, export."""

from __future__ import annotations

import os
import time

from ..errors import TensorforgeError
from .common import (
    StagedDir,
    add_library_args,
    add_model,
    add_opt,
    add_shapes,
    add_target,
    add_tuning,
    check_output,
    command,
    load_model,
    note,
    parse_shapes,
    write_file,
)
from .compress import add_compile_quantize_args, quantized_model


def _artifact(args, until: str, symbolic_as_one: bool = True, **options):
    """The artifact of the command's model through stage ``until`` (notes such as symbolic dims taken as 1
    go to stderr)."""
    from ..codegen.targets import get_target
    from ..compiler import Options, build_artifact
    from ..compiler.api import tuning_lowering
    from ..compiler.gpu import cuda_target, is_cuda

    name = getattr(args, "target", None)
    target = cuda_target(int(name.partition(":")[2] or 0)) if is_cuda(name) else get_target(name)
    lowering = tuning_lowering(getattr(args, "tuning_db", None), target)
    if getattr(args, "precision", "fp32") != "fp32":  # compile --precision bf16 (a lowering option)
        lowering["precision"] = args.precision
    opts = Options(opt_level=args.opt_level, passes=args.passes, input_shapes=parse_shapes(args.input_shape),
                   symbolic_as_one=symbolic_as_one, lowering=lowering, **options)  # fmt: skip
    art, _, _ = build_artifact(quantized_model(args, load_model(args.model)), target, opts, until=until)
    for text in art.metadata.get("notes", []):
        note(text)
    return art


def add_precision(p):
    p.add_argument("--precision", choices=["fp32", "bf16", "tf32", "fp16"], default="fp32",
                   help="bf16: GEMMs and convolutions multiply bfloat16 operands with float32 accumulation "
                        "(AMX-BF16 or AVX512-BF16 targets; on NVIDIA GPUs bf16 tensor cores), everything else and "
                        "the inputs/outputs stay float32 (default fp32); GPU targets only: tf32 / fp16 tensor "
                        "cores (sm_80+)")  # fmt: skip


def _compile_args(p):
    add_model(p)
    p.add_argument("-o", "--output", default="out", help="output directory (default: out/)")
    add_target(p)
    add_opt(p)
    add_shapes(p)
    add_tuning(p)
    p.add_argument("--tune", type=float, default=None, metavar="SECONDS",
                   help="first tune the model's GEMMs on this machine for about SECONDS (as 'tensorforge tune')")
    p.add_argument("--print-ir-after-all", action="store_true", help="print the graph after every pass, with timings")
    p.add_argument("--print-ir-after", action="append", default=[], metavar="PASS",
                   help="print the graph after the named pass (repeatable)")  # fmt: skip
    p.add_argument("--verify", action="store_true", help="run the IR verifier between passes")
    add_precision(p)
    add_compile_quantize_args(p)


@command("compile", "compile a model; write assembly, IR and a report to a directory", _compile_args)
def cmd_compile(args) -> int:
    from ..ir.dot import to_dot
    from ..runtime.model import format_listing
    from ..runtime.report import format_report

    t0 = time.perf_counter()
    print_after = "all" if args.print_ir_after_all else (set(args.print_ir_after) or None)
    if args.tune is not None:
        import sys

        import tensorforge as tfg

        from ..compiler.tuning import default_db_path

        if args.tune <= 0:
            raise TensorforgeError(f"--tune must be > 0 seconds, got {args.tune}")
        if getattr(args, "target", "host") not in (None, "host"):
            raise TensorforgeError("--tune measures on this machine: it needs --target host")
        args.tuning_db = args.tuning_db or default_db_path()
        tfg.tune(load_model(args.model), budget_seconds=args.tune, db_path=args.tuning_db,
                 progress=lambda s: print(s, file=sys.stderr, flush=True))  # fmt: skip
    with StagedDir(args.output) as out:
        art = _artifact(args, "llvm", verify=args.verify, print_ir_after=print_after)
        target = art.target
        asm = art.assembly() if target.is_gpu else format_listing(art.assembly(), art.program, None, art.aliases)
        files = {
            f"model.{'ptx' if target.is_gpu else 's'}": asm,
            "graph.txt": str(art.graph) + "\n",
            "graph.dot": to_dot(art.graph),
            "kernels.txt": art.kernel_ir() + "\n",
            "model.ll": art.llvm_ir,
            "report.txt": format_report(art),
        }
        for name, text in files.items():
            out.write(name, text)
    dt = time.perf_counter() - t0
    print(f"compiled {art.name} for {target.name} in {dt:.2f} s -> {args.output}/ ({', '.join(files)})")
    if not target.is_gpu:
        print(f"model.s is a listing to read; for a library to link and run: tensorforge export {args.model} "
              f"--target {args.target or 'host'} -o DIR")  # fmt: skip
    return 0


def _asm_args(p):
    add_model(p)
    p.add_argument("--kernel", default=None, help="only the kernel with this name, or whose graph node matches")
    add_target(p, "any target works here")
    p.add_argument("-o", "--output", default=None, help="write to a file instead of stdout")
    add_opt(p)
    add_shapes(p)


@command("asm", "print the assembly of a model's kernels (any target)", _asm_args)
def cmd_asm(args) -> int:
    import sys

    from ..compiler import assembly

    if args.output:
        check_output(args.output, "-o")
    text = assembly(load_model(args.model), target=args.target, kernel=args.kernel, opt_level=args.opt_level,
                    input_shapes=parse_shapes(args.input_shape))  # fmt: skip
    if args.output:
        write_file(args.output, text, "-o")
    else:
        sys.stdout.write(text)
    return 0


def _info_args(p):
    add_model(p)
    add_shapes(p)


@command("info", "inputs, outputs, ops, parameter count and FLOPs of a model", _info_args)
def cmd_info(args) -> int:
    from ..compiler import to_graph
    from ..ops.registry import get_op
    from ..passes import specialize

    g = to_graph(load_model(args.model))
    print(f"model: {g.name}")
    print("inputs:")
    for v in g.inputs:
        print(f"  {v.name}: {v.type}")
    print("outputs:")
    for v, n in zip(g.outputs, g.output_names):
        print(f"  {n}: {v.type}")
    print(f"ops ({len(g.nodes)} nodes):")
    for op, c in sorted(g.op_counts().items(), key=lambda t: -t[1]):
        print(f"  {op:<24} {c}")
    print(f"parameters: {g.parameter_count():,}")
    shapes = parse_shapes(args.input_shape)
    sg = specialize(g, shapes) if shapes else g
    suffix = ""
    if not all(v.type.is_static for v in sg.inputs):
        sg = specialize(sg, {v.name: [d if isinstance(d, int) else 1 for d in v.shape] for v in sg.inputs})
        suffix = " (symbolic dims taken as 1)"
    flops = sum(get_op(n.op).flops(n) for n in sg.nodes if get_op(n.op).flops)
    print(f"FLOPs per run: {flops:,}{suffix}")
    return 0


def _graph_args(p):
    add_model(p)
    p.add_argument("-o", "--output", default="graph.svg", metavar="FILE",
                   help="where to draw the graph; the extension picks the format: .dot (Graphviz source, no "
                        "Graphviz needed), .svg, .png or .pdf (rendered with Graphviz's 'dot', which must be "
                        "installed; the .dot source is written next to it either way). Default: graph.svg")  # fmt: skip
    add_opt(p)
    add_shapes(p)


@command("graph", "draw the optimized graph (Graphviz): fused groups as clusters, edges with tensor types",
         _graph_args)  # fmt: skip
def cmd_graph(args) -> int:
    from ..codegen.targets import get_target
    from ..compiler import Build, Options
    from ..ir.dot import render, to_dot

    out = args.output
    stem, ext = os.path.splitext(out)
    fmt = ext.lstrip(".").lower()
    if fmt not in ("dot", "gv", "svg", "png", "pdf"):
        raise TensorforgeError(f"--output {out!r}: use a .dot, .svg, .png or .pdf file name")
    dot_path = out if fmt in ("dot", "gv") else stem + ".dot"
    check_output(out, "--output")
    check_output(dot_path, "--output")
    opts = Options(opt_level=args.opt_level, passes=args.passes, input_shapes=parse_shapes(args.input_shape),
                   symbolic_as_one=True)  # fmt: skip
    b = Build(load_model(args.model), get_target(None), opts).run("optimize")
    for text in b.notes:
        note(text)
    og = b.graph
    text = to_dot(og)
    write_file(dot_path, text, "--output")
    if fmt not in ("dot", "gv"):
        try:
            render(text, out, fmt)
        except TensorforgeError as e:
            raise TensorforgeError(f"{e}. The Graphviz source was written to {dot_path}") from None
        print(f"drew {og.name} ({len(og.nodes)} nodes) -> {out} (source: {dot_path})")
    else:
        print(f"wrote {og.name} ({len(og.nodes)} nodes) -> {out}; render it with: dot -Tsvg {out} -o {stem}.svg")
    return 0


def _export_args(p):
    add_model(p)
    p.add_argument("-o", "--output", default="out", help="output directory (default: out/)")
    add_library_args(p)
    p.add_argument("--weights", default="embedded", choices=["embedded", "file"],
                   help="embedded (default: in the library) or file: <NAME>.weights, read by <NAME>_session_create")
    add_opt(p)
    add_shapes(p)
    add_precision(p)
    add_compile_quantize_args(p)  # export an int8 library straight from a float model


@command("export", "write a standalone C library (.so, .a, header, example program) for a model", _export_args)
def cmd_export(args) -> int:
    from ..runtime.aot import export_library

    if args.target == "cuda" or args.target.startswith("nvptx"):  # a GPU library with its PTX (runtime/aot_cuda.py)
        from ..runtime import cuda
        from ..runtime.aot_cuda import export_cuda_library as export_library  # noqa: F811

        if args.target == "cuda" and not cuda.available():
            note("no CUDA driver/GPU here: exporting PTX for sm_80 (the driver's JIT compiles it for newer GPUs)")
            args.target = "nvptx-sm80"
    with StagedDir(args.output) as out:
        art = _artifact(args, "llvm", symbolic_as_one=False)
        files = export_library(art, out.tmp, args.name, weights=args.weights)
    names = ", ".join(os.path.basename(f) for f in files["files"])
    print(f"exported {art.name} for {art.target.name} ({art.target.triple}) to {args.output}/: {names}")
    return 0
