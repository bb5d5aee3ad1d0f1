"""The ``tensorforge`` command line.

tensorforge compile model.onnx -o out/        # out/model.s, out/graph.txt, out/report.txt, ...
tensorforge run model.onnx --input x=x.npy    # run it, print / save outputs
tensorforge asm model.onnx --target aarch64   # assembly of every kernel, labelled by graph node
tensorforge info model.onnx                   # inputs, outputs, ops, parameters, FLOPs
tensorforge graph model.onnx -o g.svg         # the optimized graph drawn (Graphviz), fused groups boxed
tensorforge demo                              # the built-in example, end to end
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

from . import __version__
from .errors import TensorforgeError

COMMANDS: dict[str, tuple[Callable, str]] = {}
ARGS: dict[str, Callable] = {}  # command name -> function adding its flags to an argparse parser


def command(name: str, help: str, args: Callable | None = None):
    """Register a subcommand; ``args(parser)`` declares its flags (or put it in ARGS)."""

    def deco(fn):
        COMMANDS[name] = (fn, help)
        if args is not None:
            ARGS[name] = args
        return fn

    return deco


# -------------------------------------------------------------------------------------------------
# shared options
# -------------------------------------------------------------------------------------------------
def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="path to an .onnx file, or 'mlp' / 'cnn' for a built-in example")


def _add_shapes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="fix the shape of an input with symbolic dims (repeatable), e.g. x=1,784")  # fmt: skip


def _add_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument("-O", dest="opt_level", type=int, default=2, choices=[0, 1, 2, 3],
                   help="optimization level: 0 runs no graph passes, 3 runs all (default 2)")  # fmt: skip
    p.add_argument("--passes", default=None, metavar="EDITS",
                   help="edit the pass list by name: '-fuse,-fold' switches passes off, '+cse' adds one")  # fmt: skip


def _load(model: str):
    from .examples import mlp, small_cnn

    if model == "mlp":
        return mlp(batch=1)
    if model == "cnn":
        return small_cnn(batch=1)
    return model


def _parse_shapes(items: list[str]) -> dict[str, list[int]] | None:
    if not items:
        return None
    out = {}
    for it in items:
        if "=" not in it:
            raise TensorforgeError(f"--input-shape expects NAME=D0,D1,..., got {it!r}")
        name, dims = it.split("=", 1)
        try:
            out[name] = [int(d) for d in dims.split(",") if d.strip()]
        except ValueError:
            raise TensorforgeError(f"--input-shape {it!r}: dims must be integers") from None
    return out


def _static_graph(args, symbolic: str = "one"):
    """The model's graph with --input-shape applied. Remaining symbolic dims are set to 1 with a note
    (``symbolic="one"``) or rejected (``symbolic="error"``)."""
    from .compiler import to_graph
    from .passes import specialize

    g = to_graph(_load(args.model))
    shapes = _parse_shapes(getattr(args, "input_shape", []))
    if shapes:
        g = specialize(g, shapes)
    if not all(v.type.is_static for v in g.inputs):
        if symbolic == "error":
            raise TensorforgeError(f"model '{g.name}' has symbolic input dims {[str(v.type) for v in g.inputs]}; "
                                   "fix them with --input-shape")  # fmt: skip
        dims = {v.name: [d if isinstance(d, int) else 1 for d in v.shape] for v in g.inputs}
        print(f"note: symbolic input dims set to 1 for compilation: {dims} (use --input-shape)", file=sys.stderr)
        g = specialize(g, dims)
    return g


def _atomic_write(path: str, text: str | bytes) -> None:
    """Write via a temp file + rename, so a failure never leaves a partial file."""
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    mode = "wb" if isinstance(text, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -------------------------------------------------------------------------------------------------
# commands
# -------------------------------------------------------------------------------------------------
def _compile_args(p):
    _add_model(p)
    p.add_argument("-o", "--output", default="out", help="output directory (default: out/)")
    p.add_argument("--target", default="host",
                   help="host (default), x86_64, x86_64-avx512, aarch64, nvptx-sm90; non-host targets emit "
                        "assembly only")  # fmt: skip
    _add_opt(p)
    _add_shapes(p)
    p.add_argument("--print-ir-after-all", action="store_true", help="print the graph after every pass, with timings")
    p.add_argument("--print-ir-after", action="append", default=[], metavar="PASS",
                   help="print the graph after the named pass (repeatable)")  # fmt: skip
    p.add_argument("--verify", action="store_true", help="run the IR verifier between passes")


@command("compile", "compile a model; write assembly, IR and a report to a directory")
def cmd_compile(args) -> int:
    from . import compiler
    from .codegen.emit import build_module
    from .codegen.targets import get_target
    from .compiler import Options, check_lowerable, optimize
    from .ir.dot import to_dot
    from .lower import lower_graph

    target = get_target(args.target)
    g = _static_graph(args)
    print_after = "all" if args.print_ir_after_all else (set(args.print_ir_after) or None)
    opts = Options(opt_level=args.opt_level, passes=args.passes, verify=args.verify, print_ir_after=print_after)
    out = args.output
    t0 = time.perf_counter()
    if target.is_host:
        m = compiler.compile_graph(g, target, opts)
        files = {
            "model.s": m.assembly(),
            "graph.txt": str(m.graph) + "\n",
            "graph.dot": to_dot(m.graph),
            "kernels.txt": m.kernel_ir() + "\n",
            "model.ll": m.llvm_ir(),
            "report.txt": m.report(),
        }
    else:
        check_lowerable(g)
        og, log = optimize(g, opts)
        program = lower_graph(og, target)
        module = build_module(program, target)
        asm = compiler.assembly(og, target=target, opt_level=0)
        ext = "ptx" if target.is_gpu else "s"
        files = {
            f"model.{ext}": asm,
            "graph.txt": str(og) + "\n",
            "kernels.txt": "\n\n".join(str(k) for k in program.kernels) + "\n",
            "model.ll": module.ir,
            "report.txt": f"model: {og.name}\ntarget: {target.describe()}\nkernels: {len(program.kernels)}\n"
                          f"flops per run: {program.flops:,}\n",
        }  # fmt: skip
    for name, text in files.items():
        _atomic_write(os.path.join(out, name), text)
    dt = time.perf_counter() - t0
    print(f"compiled {g.name} for {target.name} in {dt:.2f} s -> {out}/ ({', '.join(files)})")
    return 0


def _run_args(p):
    _add_model(p)
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="input array from a .npy file (repeatable); see --random")  # fmt: skip
    p.add_argument("--random", action="store_true", help="fill missing inputs with random data (seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed for --random (default 0)")
    p.add_argument("-o", "--output", default=None, help="directory to save outputs as NAME.npy")
    p.add_argument("--repeat", type=int, default=1, help="run N times and print the median latency")
    p.add_argument(
        "--threads", type=int, default=None, help="worker threads (default: TENSORFORGE_NUM_THREADS or all cores)"
    )
    _add_opt(p)


@command("run", "run a model on inputs from .npy files (or random ones)")
def cmd_run(args) -> int:
    import tensorforge as tfg

    feeds = {}
    for it in args.input:
        if "=" not in it:
            raise TensorforgeError(f"--input expects NAME=FILE.npy, got {it!r}")
        name, path = it.split("=", 1)
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise TensorforgeError(f"--input {name}: cannot read {path!r}: {e}") from None
    m = tfg.compile(_load(args.model), opt_level=args.opt_level, passes=args.passes)
    from .compiler import DynamicModel

    graph = m.graph
    rng = np.random.default_rng(args.seed)
    for v in graph.inputs:
        if v.name not in feeds and args.random:
            if isinstance(m, DynamicModel) and not v.type.is_static:
                raise TensorforgeError(f"input '{v.name}' has symbolic shape {v.type}; give it with --input")
            feeds[v.name] = (rng.standard_normal(v.shape).astype(v.dtype.np) if v.dtype.is_float
                             else rng.integers(0, 3, v.shape).astype(v.dtype.np))  # fmt: skip
    if args.threads and not isinstance(m, DynamicModel):
        m.num_threads = args.threads
    times = []
    outs = None
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        outs = m.run(feeds)
        times.append(time.perf_counter() - t0)
    for name, arr in outs.items():
        flat = arr.reshape(-1)
        preview = np.array2string(flat[:8], precision=5, separator=", ")
        print(f"{name}: {arr.dtype}{list(arr.shape)} {preview}{' ...' if flat.size > 8 else ''}")
        if args.output:
            os.makedirs(args.output, exist_ok=True)
            buf = __import__("io").BytesIO()
            np.save(buf, arr)
            _atomic_write(os.path.join(args.output, f"{_safe(name)}.npy"), buf.getvalue())
    if args.repeat > 1:
        print(f"latency: median {np.median(times) * 1e6:.1f} us over {len(times)} runs")
    return 0


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def _asm_args(p):
    _add_model(p)
    p.add_argument("--kernel", default=None, help="only the kernel with this name, or whose graph node matches")
    p.add_argument("--target", default="host", help="host (default), x86_64, x86_64-avx512, aarch64, nvptx-sm90")
    p.add_argument("-o", "--output", default=None, help="write to a file instead of stdout")
    _add_opt(p)
    _add_shapes(p)


@command("asm", "print the assembly of a model's kernels (any target)")
def cmd_asm(args) -> int:
    from . import compiler

    text = compiler.assembly(_load(args.model), target=args.target, kernel=args.kernel, opt_level=args.opt_level,
                             input_shapes=_parse_shapes(args.input_shape))  # fmt: skip
    if args.output:
        _atomic_write(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def _info_args(p):
    _add_model(p)
    _add_shapes(p)


@command("info", "inputs, outputs, ops, parameter count and FLOPs of a model")
def cmd_info(args) -> int:
    from .compiler import to_graph
    from .ops.registry import get_op
    from .passes import specialize

    g = to_graph(_load(args.model))
    print(f"model: {g.name}")
    print("inputs:")
    for v in g.inputs:
        print(f"  {v.name}: {v.type}")
    print("outputs:")
    for v, n in zip(g.outputs, g.output_names):
        print(f"  {n}: {v.type}")
    counts = g.op_counts()
    print(f"ops ({len(g.nodes)} nodes):")
    for op, c in sorted(counts.items(), key=lambda t: -t[1]):
        print(f"  {op:<24} {c}")
    print(f"parameters: {g.parameter_count():,}")
    shapes = _parse_shapes(args.input_shape)
    sg = g
    note = ""
    if shapes:
        sg = specialize(g, shapes)
    if not all(v.type.is_static for v in sg.inputs):
        dims = {v.name: [d if isinstance(d, int) else 1 for d in v.shape] for v in sg.inputs}
        sg = specialize(sg, dims)
        note = " (symbolic dims taken as 1)"
    flops = 0
    for n in sg.nodes:
        od = get_op(n.op)
        if od.flops:
            flops += od.flops(n)
    print(f"FLOPs per run: {flops:,}{note}")
    return 0


def _graph_args(p):
    _add_model(p)
    p.add_argument("-o", "--output", default="graph.svg", metavar="FILE",
                   help="where to draw the graph; the extension picks the format: .dot (Graphviz source, no "
                        "Graphviz needed), .svg, .png or .pdf (rendered with Graphviz's 'dot', which must be "
                        "installed; the .dot source is written next to it either way). Default: graph.svg")  # fmt: skip
    _add_opt(p)
    _add_shapes(p)


@command("graph", "draw the optimized graph (Graphviz): fused groups as clusters, edges with tensor types",
         args=_graph_args)  # fmt: skip
def cmd_graph(args) -> int:
    from .compiler import Options, check_lowerable, optimize
    from .ir.dot import render, to_dot

    out = args.output
    stem, ext = os.path.splitext(out)
    fmt = ext.lstrip(".").lower()
    if fmt not in ("dot", "gv", "svg", "png", "pdf"):
        raise TensorforgeError(f"--output {out!r}: use a .dot, .svg, .png or .pdf file name")
    g = _static_graph(args)
    check_lowerable(g)
    og, _ = optimize(g, Options(opt_level=args.opt_level, passes=args.passes))
    text = to_dot(og)
    dot_path = out if fmt in ("dot", "gv") else stem + ".dot"
    _atomic_write(dot_path, text)
    if fmt not in ("dot", "gv"):
        try:
            render(text, out, fmt)
        except TensorforgeError as e:
            raise TensorforgeError(f"{e}. The Graphviz source was written to {dot_path}") from None
        print(f"drew {og.name} ({len(og.nodes)} nodes) -> {out} (source: {dot_path})")
    else:
        print(f"wrote {og.name} ({len(og.nodes)} nodes) -> {out}; render it with: dot -Tsvg {out} -o {stem}.svg")
    return 0


@command("demo", "the built-in example: build, compile, run and check the MLP; train it on digits")
def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


def _demo_args(p):
    p.add_argument("--no-train", action="store_true", help="skip the training part")


def _export_args(p):
    _add_model(p)
    p.add_argument("-o", "--output", default="out", help="output directory (default: out/)")
    p.add_argument("--name", default="model", help="library name: writes lib<NAME>.so and <NAME>.h (default: model)")
    p.add_argument("--target", default="host",
                   help="host (default: this CPU's ISA) or x86_64 / x86_64-avx512 for a portable build")  # fmt: skip
    _add_opt(p)
    _add_shapes(p)


@command("export", "write a standalone shared library (.so) and C header for a model")
def cmd_export(args) -> int:
    from .codegen.targets import get_target
    from .compiler import Options, check_lowerable, optimize
    from .lower import lower_graph
    from .runtime.aot import export_library

    target = get_target(args.target)
    g = _static_graph(args, symbolic="error")
    check_lowerable(g)
    og, _ = optimize(g, Options(opt_level=args.opt_level, passes=args.passes))
    program = lower_graph(og, target)
    files = export_library(program, args.output, args.name)
    print(f"exported {g.name} for {target.name}: {files['library']}, {files['header']}")
    return 0


def _bench_args(p):
    _add_model(p)
    p.add_argument("--threads", type=int, default=1, help="threads for both tensorforge and ONNX Runtime (default 1)")
    p.add_argument("--no-ort", action="store_true", help="time tensorforge only (no ONNX Runtime comparison)")
    p.add_argument("--seed", type=int, default=0, help="seed for the random inputs (default 0)")
    _add_opt(p)
    _add_shapes(p)


@command("bench", "time a model against ONNX Runtime on random inputs (alternating, medians)", args=_bench_args)
def cmd_bench(args) -> int:
    import onnx

    import tensorforge as tfg

    from .benchutil import compare, fmt_time, ort_session
    from .compiler import DynamicModel
    from .frontends.onnx import load_model

    src = _load(args.model)
    proto = src if isinstance(src, onnx.ModelProto) else load_model(src)
    t0 = time.perf_counter()
    m = tfg.compile(proto, opt_level=args.opt_level, passes=args.passes,
                    input_shapes=_parse_shapes(args.input_shape), num_threads=args.threads)  # fmt: skip
    ct = time.perf_counter() - t0
    if isinstance(m, DynamicModel):
        raise TensorforgeError(f"model '{m.name}' has symbolic input dims; fix them with --input-shape")
    if not hasattr(m, "program"):
        raise TensorforgeError("bench needs a model whose shapes do not depend on input values")
    rng = np.random.default_rng(args.seed)
    feeds = {n: (rng.standard_normal(s).astype(dt.np) if dt.is_float else rng.integers(0, 3, s).astype(dt.np))
             for n, dt, s in m.inputs}  # fmt: skip
    fns = {"tensorforge": lambda: m.run(feeds)}
    if not args.no_ort:
        shapes = _parse_shapes(args.input_shape)
        if shapes:
            for vi in proto.graph.input:
                if vi.name in shapes:
                    for d, n in zip(vi.type.tensor_type.shape.dim, shapes[vi.name]):
                        d.dim_value = n
        sess = ort_session(proto.SerializeToString(), args.threads)
        fns["onnxruntime"] = lambda: sess.run(None, feeds)
        ref = sess.run(None, feeds)
        got = m.run(feeds)
        for (name, g), r in zip(got.items(), ref):
            if g.dtype.kind == "f" and not np.allclose(g, r, rtol=1e-3, atol=1e-4 * (np.abs(r).max() + 1)):
                print(f"warning: output {name} differs from ONNX Runtime (max abs diff {np.abs(g - r).max():.3g})")
    t = compare(fns)
    print(f"model {m.name}: compiled in {ct:.2f} s, {len(m.kernels)} kernels, {args.threads} thread(s)")
    for k, v in t.items():
        print(f"  {k:<12} {fmt_time(v):>10}")
    if "onnxruntime" in t:
        r = t["onnxruntime"] / t["tensorforge"]
        faster = "tensorforge faster" if r > 1 else "ONNX Runtime faster"
        print(f"  ratio ONNX Runtime / tensorforge = {r:.2f}x ({faster})")
    return 0


def _train_args(p):
    p.add_argument("model", nargs="?", default=None,
                   help="an .onnx model whose float initializers are the parameters (or use --model)")  # fmt: skip
    p.add_argument("--model", dest="builtin", choices=["mlp", "cnn"], default=None,
                   help="a built-in model sized to the data: mlp (hidden 256, ReLU, softmax; linear output for "
                        "mse) or cnn (conv-batchnorm-relu-maxpool-linear, image datasets)")  # fmt: skip
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", choices=["digits"], default=None,
                     help="a built-in dataset: digits (scikit-learn's 8x8 images, 80/20 train/test split)")  # fmt: skip
    src.add_argument("--data", default=None, metavar="FILE.npz",
                     help="training data: arrays 'x' (inputs) and 'y' (class indices or targets)")  # fmt: skip
    p.add_argument("--test-data", default=None, metavar="FILE.npz", help="held-out data (arrays 'x' and 'y')")
    p.add_argument("--epochs", type=int, default=20, help="passes over the training data (default 20)")
    p.add_argument("--batch-size", type=int, default=32, help="rows per step (default 32); the last partial "
                   "batch of each epoch is dropped")  # fmt: skip
    p.add_argument("--loss", choices=["cross_entropy", "mse"], default="cross_entropy",
                   help="cross_entropy (logits, or a Softmax output) or mse (default cross_entropy)")  # fmt: skip
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd", help="default sgd")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 0.05 for sgd, 0.001 for adam / adamw)")  # fmt: skip
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--nesterov", action="store_true", help="SGD with Nesterov momentum")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="L2 weight decay (sgd, adam; default 0) or decoupled decay (adamw; default 0.01)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed for the shuffling and the built-in model (default 0)")
    p.add_argument("--threads", type=int, default=None,
                   help="worker threads (default: TENSORFORGE_NUM_THREADS or all cores)")  # fmt: skip
    p.add_argument("-o", "--output", default=None, metavar="FILE.onnx", help="write the trained model as ONNX")
    p.add_argument("--save-state", default=None, metavar="FILE.npz",
                   help="write parameters, optimizer state and step count (to resume with --resume)")  # fmt: skip
    p.add_argument("--resume", default=None, metavar="FILE.npz", help="start from a state written by --save-state")
    p.add_argument("--print-graph", action="store_true",
                   help="print the training step's graph (forward, loss, backward, update) first")  # fmt: skip
    p.add_argument("--profile", action="store_true", help="after training, print the time of every kernel of the step")
    _add_opt(p)


@command("train", "train a model: forward, loss, backward and optimizer compiled into one native call per batch",
         args=_train_args)  # fmt: skip
def cmd_train(args) -> int:
    from .train_demo import train_command

    return train_command(args)


def _profile_args(p):
    _add_model(p)
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="input array from a .npy file (repeatable); missing inputs are random (seeded)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None,
                   help="worker threads (default: TENSORFORGE_NUM_THREADS or all cores)")  # fmt: skip
    p.add_argument("--repeat", type=int, default=20, help="runs to take the per-kernel medians over (default 20)")
    p.add_argument("--top", type=int, default=None, help="show only the N slowest kernels")
    p.add_argument("--peak", action="store_true", help="re-measure the machine's peak (clock, FMA, memory) first")
    _add_opt(p)
    _add_shapes(p)


@command("profile", "per-kernel time, GFLOP/s and % of the machine's peak, slowest first", args=_profile_args)
def cmd_profile(args) -> int:
    import tensorforge as tfg

    from .compiler import DynamicModel
    from .runtime.peak import machine_peak
    from .runtime.profile import format_profile, profile

    peak = machine_peak(refresh=args.peak)
    m = tfg.compile(_load(args.model), opt_level=args.opt_level, passes=args.passes,
                    input_shapes=_parse_shapes(args.input_shape))  # fmt: skip
    if isinstance(m, DynamicModel):
        raise TensorforgeError(f"model '{m.name}' has symbolic input dims; fix them with --input-shape")
    if not hasattr(m, "program"):
        raise TensorforgeError("profile needs a model whose shapes do not depend on input values")
    if args.threads:
        m.num_threads = args.threads
    feeds = {}
    for it in args.input:
        if "=" not in it:
            raise TensorforgeError(f"--input expects NAME=FILE.npy, got {it!r}")
        name, path = it.split("=", 1)
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise TensorforgeError(f"--input {name}: cannot read {path!r}: {e}") from None
    rng = np.random.default_rng(0)
    for n, dt, shape in m.inputs:
        if n not in feeds:
            feeds[n] = rng.standard_normal(shape).astype(dt.np) if dt.is_float else np.zeros(shape, dt.np)
    rows, total = profile(m, feeds, repeat=max(1, args.repeat))
    print(f"model {m.name}: {peak.describe()}")
    print(format_profile(rows, total, m.num_threads, peak, args.top))
    return 0


ARGS.update(
    {
        "compile": _compile_args,
        "run": _run_args,
        "asm": _asm_args,
        "info": _info_args,
        "demo": _demo_args,
        "export": _export_args,
    }
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tensorforge",
        description="A deep-learning compiler: ONNX models to native code through LLVM.",
        epilog="Environment: TENSORFORGE_NUM_THREADS (worker threads), TENSORFORGE_CACHE_DIR / "
        "TENSORFORGE_CACHE=0 (compile cache). Run 'tensorforge COMMAND --help' for a command's flags.",
    )
    p.add_argument("--version", action="version", version=f"tensorforge {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (fn, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_.replace("%", "%%"), description=help_)  # help is %-formatted
        if name in ARGS:
            ARGS[name](sp)
        sp.set_defaults(func=fn)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TensorforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyError as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
