"""Whole models vs ONNX Runtime at batch 1: every model test that ships inside the onnx package (the nine
"light" CNNs of the ONNX model zoo — AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet,
SqueezeNet, VGG-19, ZFNet-512 — and the small simple / pytorch-converted / pytorch-operator models) plus a
BERT-style encoder (6 layers, hidden 384, 12 heads, sequence 128) built by tensorforge.examples.

Per model: latency of both runtimes (median of alternating blocks, ``benchutil.compare``), their ratio,
tensorforge's compile time from scratch (an empty compile cache) and, for the big models, a cached compile
in a new process (the compile-cache hit a second run of a program gets), ONNX Runtime's session-creation
time, and a check that both give the same outputs. Run alone with
``python benchmarks/bench_models.py [--threads N] [name...]``.
"""

from __future__ import annotations

import glob
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import onnx
import onnx.numpy_helper

import tensorforge as tfg
from harness import compare, fmt_time, markdown_table, ort_session, pyplot, save_figure
from tensorforge.compiler import cache as compiler_cache
from tensorforge.examples import bert_encoder
from torch_models import torch_models

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
CNNS = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
        "vgg19", "zfnet512"]  # fmt: skip


def big_models() -> list[tuple[str, onnx.ModelProto]]:
    out = [(name, onnx.load(os.path.join(DATA, "light", f"light_{name}.onnx"))) for name in CNNS]
    out.append(("bert_encoder_6x384x12_seq128", bert_encoder(batch=1, seq=128, hidden=384, heads=12, layers=6)))
    return out + torch_models()


def small_models() -> list[tuple[str, onnx.ModelProto]]:
    """The other model tests that ship with onnx (each a handful of nodes), minus string/sequence ones."""
    out = []
    for kind in ("simple", "pytorch-converted", "pytorch-operator"):
        for path in sorted(glob.glob(os.path.join(DATA, kind, "*", "model.onnx"))):
            out.append((f"{kind}/{os.path.basename(os.path.dirname(path))}", onnx.load(path)))
    return out


def _test_inputs(name: str, model: onnx.ModelProto) -> dict[str, np.ndarray] | None:
    """The inputs a model test ships with (test_data_set_0/input_*.pb): shape tensors and indices must
    be the test's own values, not random ones."""
    d = os.path.join(DATA, name, "test_data_set_0")
    files = sorted(glob.glob(os.path.join(d, "input_*.pb")), key=lambda f: int(f.rsplit("_", 1)[1][:-3]))
    inits = {t.name for t in model.graph.initializer}
    names = [vi.name for vi in model.graph.input if vi.name not in inits]
    if not files or len(files) != len(names):
        return None
    feeds = {}
    for n, f in zip(names, files):
        t = onnx.TensorProto()
        with open(f, "rb") as fh:
            t.ParseFromString(fh.read())
        feeds[n] = onnx.numpy_helper.to_array(t)
    return feeds


def _feeds(model: onnx.ModelProto, rng, name: str = "") -> dict[str, np.ndarray] | None:
    shipped = _test_inputs(name, model) if name else None
    if shipped is not None:
        return shipped
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or tt.elem_type == onnx.TensorProto.STRING:
            return None
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim]
        dt = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        feeds[vi.name] = (rng.standard_normal(shape).astype(dt) if np.dtype(dt).kind == "f"
                          else rng.integers(0, 3, shape).astype(dt))  # fmt: skip
    return feeds


_CACHED = """
import sys, time
import tensorforge as tfg
t0 = time.perf_counter()
m = tfg.compile(sys.argv[1])
print(time.perf_counter() - t0, m.cache_hit)
"""


def cached_compile_seconds(path: str, cache: str, runs: int = 3) -> float:
    """``tfg.compile(path)`` in a new Python process with the compile cache at ``cache`` (import of
    tensorforge excluded), median of ``runs``."""
    env = {**os.environ, "TENSORFORGE_CACHE_DIR": cache}
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _CACHED, path], env=env, capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
        if out[1] != "True":
            raise RuntimeError(f"{path}: the compile in a new process missed the cache")
        times.append(float(out[0]))
    return float(np.median(times))


def measure(name: str, model: onnx.ModelProto, threads: int, quick: bool = False) -> dict | None:
    rng = np.random.default_rng(0)
    feeds = _feeds(model, rng, name)
    if feeds is None:
        return None
    with tempfile.TemporaryDirectory(prefix="tf-bench-cache-") as cache:
        old = os.environ.get("TENSORFORGE_CACHE_DIR")
        os.environ["TENSORFORGE_CACHE_DIR"] = cache  # an empty cache: compile time from scratch
        try:
            path = os.path.join(cache, "model.onnx")
            onnx.save(model, path)
            t0 = time.perf_counter()
            m = tfg.compile(path, num_threads=threads)
            compile_s = time.perf_counter() - t0
            compiler_cache.wait()  # the entry is written in the background: let it land first
            cached_s = None if quick else cached_compile_seconds(path, cache)
        except tfg.TensorforgeError as e:
            return {"name": name, "error": f"tensorforge: {type(e).__name__}: {str(e).splitlines()[0][:80]}"}
        finally:
            if old is None:
                os.environ.pop("TENSORFORGE_CACHE_DIR", None)
            else:
                os.environ["TENSORFORGE_CACHE_DIR"] = old
    t0 = time.perf_counter()
    try:
        sess = ort_session(model.SerializeToString(), threads)
    except Exception as e:  # noqa: BLE001 - ONNX Runtime rejects some old-opset test models
        sess, ort_err = None, f"{type(e).__name__}: {str(e).splitlines()[0][:60]}"
    ort_init_s = time.perf_counter() - t0
    out_names = [o.name for o in model.graph.output]
    try:
        ours = m.run(feeds)
    except tfg.TensorforgeError as e:
        return {"name": name, "error": f"tensorforge: {type(e).__name__}: {str(e).splitlines()[0][:80]}"}
    rec = {"name": name, "compile_s": compile_s, "cached_s": cached_s, "ort_init_s": ort_init_s,
           "params": _params(model)}  # fmt: skip
    fns = {"tensorforge": lambda: m.run(feeds)}
    if sess is not None:
        theirs = sess.run(None, feeds)
        rec["agree"] = all(np.allclose(ours[n], t, rtol=1e-3, atol=1e-4) for n, t in zip(out_names, theirs))
        fns["onnxruntime"] = lambda: sess.run(None, feeds)
    else:
        rec["ort_error"] = ort_err
    rec.update(compare(fns, blocks=3 if quick else 7, block_s=0.02 if quick else 0.05))
    return rec


def _params(model: onnx.ModelProto) -> int:
    return int(sum(np.prod(t.dims) for t in model.graph.initializer))


def _row(r: dict) -> list[str]:
    if "error" in r:
        return [r["name"], r["error"], "", "", "", "", ""]
    ort = r.get("onnxruntime")
    ratio = f"{ort / r['tensorforge']:.2f}x" if ort else "—"
    check = "yes" if r.get("agree") else ("no" if "agree" in r else "—")
    cached = f"{r['cached_s']:.2f} s" if r.get("cached_s") is not None else "—"
    return [r["name"], fmt_time(r["tensorforge"]), fmt_time(ort) if ort else r.get("ort_error", "—"), ratio,
            f"{r['compile_s']:.1f} s", cached, f"{r['ort_init_s']:.2f} s", check]  # fmt: skip


def run(threads: int, names: list[str] | None = None) -> tuple[str, str, list[dict]]:
    big, records = [], []
    for name, model in big_models():
        if names and not any(n in name for n in names):
            continue
        print(f"  {name} ...", file=sys.stderr, flush=True)
        r = measure(name, model, threads)
        big.append(_row(r))
        records.append({**r, "threads": threads, "group": "big"})
    headers = ["model", "tensorforge", "ONNX Runtime", "ORT / tf", "compile", "cached compile", "ORT session",
               "same output"]  # fmt: skip
    table = markdown_table(headers, big)
    small_rows, ratios, compiles = [], [], []
    if not names:
        for name, model in small_models():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = measure(name, model, threads, quick=True)
            if r is None:
                continue
            small_rows.append(_row(r))
            records.append({**r, "threads": threads, "group": "small"})
            if "onnxruntime" in r:
                ratios.append(r["onnxruntime"] / r["tensorforge"])
            if "compile_s" in r:
                compiles.append(r["compile_s"])
    summary = ""
    if small_rows:
        geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios)) if ratios else float("nan")
        summary = (f"The {len(small_rows)} small model tests (simple, pytorch-converted, pytorch-operator; models "
                   f"with string inputs left out, unsupported ones listed with their error): geometric-mean "
                   f"ORT / tf latency ratio {geo:.2f}x over the "
                   f"{len(ratios)} that ONNX Runtime runs; median compile time {np.median(compiles):.2f} s.\n\n"
                   "<details><summary>every small model</summary>\n\n" + markdown_table(headers, small_rows)
                   + "\n\n</details>")  # fmt: skip
    return table, summary, records


def section():
    threads = int(os.environ.get("TENSORFORGE_BENCH_THREADS", "1"))
    table, summary, records = run(threads)
    md = (f"Batch 1, {threads} thread(s). Ratio > 1: tensorforge is faster. Compile: from scratch, with an empty "
          "compile cache; cached compile: `tfg.compile(path)` of the same model file in a new process (a hit in the "
          "compile cache: no import, passes, lowering or LLVM; the import of tensorforge itself is not counted), "
          "median of 3. The light CNNs are the ONNX model zoo "
          "architectures with their weights generated in the graph (ConstantOfShape), folded at compile time by both "
          "runtimes. The torch.nn rows are transformers written with PyTorch's own modules and exported by "
          "torch.onnx (benchmarks/torch_models.py, random weights).\n\n" + table + "\n\n" + summary)  # fmt: skip
    return "Whole models (onnx package model tests, BERT encoder, torch.nn transformers) vs ONNX Runtime", md, records


def plot(records, outdir):
    plt = pyplot()
    big = [r for r in records if r.get("group") == "big" and "onnxruntime" in r]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["name"].replace("_6x384x12_seq128", "") for r in big]
    a1.barh(names, [r["onnxruntime"] / r["tensorforge"] for r in big], color="tab:blue")
    a1.axvline(1.0, color="k", lw=0.8)
    a1.set_xlabel("ONNX Runtime latency / tensorforge latency (> 1: tensorforge faster)")
    a1.set_title("batch-1 latency ratio")
    a2.barh(names, [r["compile_s"] for r in big], color="tab:orange", label="tensorforge compile")
    a2.barh(names, [r["ort_init_s"] for r in big], color="tab:green", label="ORT session")
    a2.set_xlabel("seconds")
    a2.set_title("compile / session-creation time")
    a2.legend()
    return save_figure(fig, outdir, "models.png")


if __name__ == "__main__":
    args = sys.argv[1:]
    threads = 1
    if "--threads" in args:
        i = args.index("--threads")
        threads = int(args[i + 1])
        del args[i : i + 2]
    table, summary, _ = run(threads, args or None)
    print(table)
    print(summary)
