"""Commands that run a compiled model: run, bench, profile, tune."""

from __future__ import annotations

import contextlib
import io
import time

import numpy as np

from ..errors import TensorforgeError
from .common import (
    StagedDir,
    add_model,
    add_opt,
    add_shapes,
    add_threads,
    add_tuning,
    command,
    load_model,
    parse_shapes,
    positive_int,
    random_inputs,
    read_inputs,
    seed,
    static_model,
)


def _compile(args, num_threads: int | None = None, model=None):
    import tensorforge as tfg

    model = load_model(args.model) if model is None else model
    shapes = parse_shapes(getattr(args, "input_shape", []))
    return tfg.compile(model, opt_level=args.opt_level, passes=args.passes, input_shapes=shapes,
                       num_threads=num_threads, tuning_db=getattr(args, "tuning_db", None))  # fmt: skip


def _run_args(p):
    add_model(p)
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="input array from a .npy file (repeatable); see --random")  # fmt: skip
    p.add_argument("--random", action="store_true", help="fill missing inputs with random data (seeded)")
    p.add_argument("--seed", type=seed, default=0, help="seed for --random (default 0)")
    p.add_argument("-o", "--output", default=None, help="directory to save outputs as NAME.npy")
    p.add_argument("--repeat", type=positive_int, default=1, help="run N times and print the median latency")
    add_threads(p)
    add_opt(p)
    add_shapes(p)
    add_tuning(p)


@command("run", "run a model on inputs from .npy files (or random ones)", _run_args)
def cmd_run(args) -> int:
    with StagedDir(args.output) if args.output else contextlib.nullcontext() as out:
        return _run(args, out)


def _run(args, out: StagedDir | None) -> int:
    feeds = read_inputs(args.input)
    m = _compile(args, args.threads)
    if args.random:
        symbolic = [s for s in m.inputs if s.name not in feeds and not all(isinstance(d, int) for d in s.shape)]
        if symbolic:
            raise TensorforgeError(f"input '{symbolic[0].name}' has symbolic shape {list(symbolic[0].shape)}; give "
                                   "it with --input (or fix it with --input-shape)")  # fmt: skip
        feeds = random_inputs(m.inputs, args.seed, feeds)
    times = []
    outs = {}
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        outs = m.run(feeds)
        times.append(time.perf_counter() - t0)
    for name, arr in outs.items():
        flat = arr.reshape(-1)
        preview = np.array2string(flat[:8], precision=5, separator=", ")
        print(f"{name}: {arr.dtype}{list(arr.shape)} {preview}{' ...' if flat.size > 8 else ''}")
        if out is not None:
            buf = io.BytesIO()
            np.save(buf, arr)
            out.write(f"{_safe(name)}.npy", buf.getvalue())
    if args.repeat > 1:
        print(f"latency: median {np.median(times) * 1e6:.1f} us over {len(times)} runs")
    return 0


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def _bench_args(p):
    add_model(p)
    p.add_argument("--threads", type=positive_int, default=1,
                   help="threads for both tensorforge and ONNX Runtime (default 1)")  # fmt: skip
    p.add_argument("--no-ort", action="store_true", help="time tensorforge only (no ONNX Runtime comparison)")
    p.add_argument("--seed", type=seed, default=0, help="seed for the random inputs (default 0)")
    add_opt(p)
    add_shapes(p)
    add_tuning(p)


@command("bench", "time a model against ONNX Runtime on random inputs (alternating, medians)", _bench_args)
def cmd_bench(args) -> int:
    import onnx

    from ..frontends.onnx import load_model as load_onnx
    from ..ir.dtype import is_float_dtype
    from .benchutil import compare, fmt_time, ort_session

    src = load_model(args.model)
    proto = src if isinstance(src, onnx.ModelProto) else load_onnx(src)
    t0 = time.perf_counter()
    m = static_model(_compile(args, args.threads, proto), "bench")
    ct = time.perf_counter() - t0
    feeds = random_inputs(m.inputs, args.seed)
    fns = {"tensorforge": lambda: m.run(feeds)}
    if not args.no_ort:
        shapes = parse_shapes(args.input_shape)
        for vi in proto.graph.input:
            for d, n in zip(vi.type.tensor_type.shape.dim, (shapes or {}).get(vi.name, [])):
                d.dim_value = n
        sess = ort_session(proto.SerializeToString(), args.threads)
        fns["onnxruntime"] = lambda: sess.run(None, feeds)
        for (name, g), r in zip(m.run(feeds).items(), sess.run(None, feeds)):
            if is_float_dtype(g.dtype) and not np.allclose(g, r, rtol=1e-3,
                                                                       atol=1e-4 * (np.abs(r).max() + 1)):  # fmt: skip
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


def _profile_args(p):
    add_model(p)
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="input array from a .npy file (repeatable); missing inputs are random (seeded)")  # fmt: skip
    add_threads(p)
    p.add_argument("--repeat", type=positive_int, default=20,
                   help="runs to take the per-kernel medians over (default 20)")  # fmt: skip
    p.add_argument("--top", type=positive_int, default=None, help="show only the N slowest kernels")
    p.add_argument("--peak", action="store_true", help="re-measure the machine's peak (clock, FMA, memory) first")
    add_opt(p)
    add_shapes(p)
    add_tuning(p)


@command("profile", "per-kernel time, GFLOP/s and % of the machine's peak, slowest first", _profile_args)
def cmd_profile(args) -> int:
    from ..runtime.peak import machine_peak
    from ..runtime.profile import format_profile

    peak = machine_peak(refresh=args.peak)
    m = static_model(_compile(args, args.threads), "profile")
    feeds = random_inputs(m.inputs, 0, read_inputs(args.input))
    rows, total = m.profile(feeds, repeat=args.repeat)
    print(f"model {m.name}: {peak.describe()}")
    print(format_profile(rows, total, m.num_threads, peak, args.top))
    return 0


def _tune_args(p):
    add_model(p)
    p.add_argument("--budget", type=float, default=60.0, metavar="SECONDS",
                   help="about how long to search, all layers together (default 60)")  # fmt: skip
    add_tuning(p)
    add_threads(p)
    add_opt(p)
    add_shapes(p)


@command("tune", "search the GEMM and conv plans of a model on this machine; record the best for this CPU",
         _tune_args)  # fmt: skip
def cmd_tune(args) -> int:
    import sys

    import tensorforge as tfg

    from ..compiler import Options
    from ..compiler.tuning import cpu_key, default_db_path

    if args.budget <= 0:
        raise TensorforgeError(f"--budget must be > 0 seconds, got {args.budget}")
    path = args.tuning_db or default_db_path()
    if path is None:
        raise TensorforgeError("the compile cache is off (TENSORFORGE_CACHE=0): name a database with --tuning-db")
    opts = Options(opt_level=args.opt_level, passes=args.passes, input_shapes=parse_shapes(args.input_shape))
    results = tfg.tune(load_model(args.model), budget_seconds=args.budget, db_path=path, num_threads=args.threads,
                       options=opts, progress=lambda s: print(s, file=sys.stderr, flush=True))  # fmt: skip
    print(f"tuned on {cpu_key()}, {args.threads} thread(s); recorded in {path}")
    print(f"{'GEMM / convolution':<44} {'plans':>5} {'default':>10} {'best':>10} {'speedup':>8}  best plan")
    for r in results:
        plan = ", ".join(f"{k}={v}" for k, v in sorted(r.plan.items())) or "the default"
        print(f"{r.signature:<44} {r.candidates:>5} {r.default_seconds * 1e6:>8.1f}us {r.best_seconds * 1e6:>8.1f}us "
              f"{r.speedup:>7.2f}x  {plan}")  # fmt: skip
    if not results:
        print("no GEMM or convolution to tune in this model")
    return 0
