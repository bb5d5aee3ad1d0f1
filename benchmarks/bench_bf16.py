"""precision="bf16": tensorforge's bf16 GEMM (lower/bf16_gemm.py, every path this host runs) vs its own fp32 GEMM,
and ResNet-50 compiled with ``precision="bf16"`` vs the same model in fp32, 1 and 2 threads.

GEMM: A [M, K] float32 activation (converted to bf16 at run time) times a constant [K, N] weight (packed as bf16
at compile time), float32 out: 1024^3 and two model shapes; GFLOP/s, medians of alternating blocks in one run.
ResNet-50: torchvision's architecture with realistic (Kaiming) weights (benchmarks/torch_models.py, cached by
bench_quant), batch 1; latency medians and ranges of alternating blocks, and the bf16 output's largest error
relative to the fp32 output's largest magnitude (bf16 keeps 8 significant bits: errors of 1e-2 are expected).
"""

from __future__ import annotations

import os
import time

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import tensorforge as tfg
from tensorforge.codegen.targets import host
from tensorforge.compiler import Options, compile_graph, to_graph
from tensorforge.lower.bf16_gemm import target_bf16_isa

SHAPES = [(1024, 1024, 1024), (128, 768, 3072), (64, 784, 256)]  # M x K x N


def _paths() -> list[str]:
    best = target_bf16_isa(host())
    return {"amx": ["amx", "avx512bf16"], "avx512bf16": ["avx512bf16"]}.get(best or "", [])


def _matmul(M: int, K: int, N: int, b: np.ndarray):
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], f"MatMul_{M}x{K}x{N}",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [M, K])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(b, "b")])  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def _blocks(fns: dict, rounds: int, reps: int) -> dict[str, list[float]]:
    """Seconds per call of each function, one sample per round; the functions alternate within a round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            times[k].append((time.perf_counter() - t0) / reps)
    return times


def gemm_rows(threads: int, quick: bool) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for M, K, N in SHAPES[:1] if quick else SHAPES:
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.standard_normal((K, N)).astype(np.float32)
        model = to_graph(_matmul(M, K, N, b))
        fns = {}
        for path in _paths():
            m = compile_graph(model, host(), Options(lowering={"precision": "bf16", "bf16_isa": path}))
            m.num_threads = threads
            fns[path] = lambda m=m: m.run({"a": a})
        m32 = compile_graph(model, host(), Options())
        m32.num_threads = threads
        fns["fp32"] = lambda: m32.run({"a": a})
        flops = 2 * M * N * K
        times = _blocks(fns, 3 if quick else 7, max(1, int(4e9 // flops)))
        rows.append({"shape": f"{M}x{K}x{N}", "threads": threads,
                     **{k: flops / float(np.median(v)) / 1e9 for k, v in times.items()}})  # fmt: skip
    return rows


def resnet_rows(threads_list, quick: bool) -> list[dict]:
    from bench_quant import _cached
    from torch_models import resnet50

    model = _cached("resnet50", resnet50)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    name = model.graph.input[0].name
    m32, m16 = tfg.compile(model), tfg.compile(model, precision="bf16")
    y32, y16 = m32.run({name: x}), m16.run({name: x})
    out = next(iter(y32))
    err = float(np.abs(y32[out] - y16[out]).max() / np.abs(y32[out]).max())
    top1 = int(np.argmax(y32[out]) == np.argmax(y16[out]))
    rows = []
    for threads in threads_list:
        m32.num_threads = m16.num_threads = threads
        times = _blocks({"fp32": lambda: m32.run({name: x}), "bf16": lambda: m16.run({name: x})},
                        3 if quick else 9, 2 if quick else 5)  # fmt: skip
        rows.append({"threads": threads, "fp32_ms": 1e3 * float(np.median(times["fp32"])),
                     "bf16_ms": 1e3 * float(np.median(times["bf16"])),
                     "fp32_range": (1e3 * min(times["fp32"]), 1e3 * max(times["fp32"])),
                     "bf16_range": (1e3 * min(times["bf16"]), 1e3 * max(times["bf16"])),
                     "rel_err": err, "top1_agrees": top1})  # fmt: skip
    return rows


def section():
    quick = bool(os.environ.get("TENSORFORGE_BENCH_QUICK"))
    paths = _paths()
    if not paths:
        return "bf16", f"{host().cpu}: neither AMX-BF16 nor AVX512-BF16; precision='bf16' is refused here.", []
    gemm = gemm_rows(1, quick) + ([] if quick else gemm_rows(2, quick))
    lines = ["| M x K x N | threads | " + " | ".join(f"bf16 {p}" for p in paths) + " | tf fp32 | "
             f"{paths[0]} / fp32 |", "|" + "---|" * (len(paths) + 4)]  # fmt: skip
    for r in gemm:
        vals = " | ".join(f"{r[p]:.0f}" for p in paths)
        lines.append(f"| {r['shape']} | {r['threads']} | {vals} | {r['fp32']:.0f} | {r[paths[0]] / r['fp32']:.2f}x |")
    res = resnet_rows((1,) if quick else (1, 2), quick)
    lines += ["", "| ResNet-50, batch 1 | threads | fp32 ms (range) | bf16 ms (range) | bf16 / fp32 speed | "
              "max error / max abs | top-1 agrees |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in res:
        (f0, f1), (b0, b1) = r["fp32_range"], r["bf16_range"]
        agrees = "yes" if r["top1_agrees"] else "no"
        speed = r["fp32_ms"] / r["bf16_ms"]
        lines.append(f"| {paths[0]} | {r['threads']} | {r['fp32_ms']:.1f} ({f0:.1f}-{f1:.1f}) | {r['bf16_ms']:.1f} "
                     f"({b0:.1f}-{b1:.1f}) | {speed:.2f}x | {r['rel_err']:.1e} | {agrees} |")  # fmt: skip
    md = ("GEMM in GFLOP/s (A float32 converted at run time, B a constant packed as bf16; float32 accumulation and "
          "output); medians of alternating blocks in one run.\n\n")  # fmt: skip
    return "bf16 (precision='bf16')", md + "\n".join(lines), gemm + res


if __name__ == "__main__":
    print(section()[1])
