"""Int8 GEMM: tensorforge's MatMulInteger (the int8 kernels of lower/int8_gemm.py, on every path this host
runs) vs ONNX Runtime's MatMulInteger and vs tensorforge's own fp32 MatMul, 1 and 2 threads.

A [M, K] uint8 activation times a constant [K, N] int8 weight (zero point on A): 1024^3 and a few model
shapes (an MLP layer, a BERT FFN at 128 tokens). Each row: GOP/s of each contender, medians of alternating
blocks in one run, and the ratios of the host's own path to ONNX Runtime and to fp32.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tensorforge.codegen.targets import get_target, host
from tensorforge.compiler import Options, compile_graph, to_graph

SHAPES = [(1024, 1024, 1024), (64, 784, 256), (128, 768, 3072)]  # M x K x N
PATHS = ["amx", "vnni512", "avx2"]


def _model(op: str, M: int, K: int, N: int, b: np.ndarray, adt: int, ydt: int, zp: np.ndarray | None = None):
    ins = ["a", "b"] + (["za"] if zp is not None else [])
    inits = [numpy_helper.from_array(b, "b")] + ([numpy_helper.from_array(zp, "za")] if zp is not None else [])
    g = helper.make_graph([helper.make_node(op, ins, ["y"])], f"{op}_{M}x{K}x{N}",
                          [helper.make_tensor_value_info("a", adt, [M, K])],
                          [helper.make_tensor_value_info("y", ydt, None)], inits)  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def _runnable() -> list[str]:
    t = host()
    ok = {"amx": t.int8_isa == "amx", "vnni512": t.int8_isa in ("amx", "vnni512"),
          "avx2": t.has_feature("avx2")}  # fmt: skip
    return [p for p in PATHS if ok[p]]


def _medians(fns: dict, rounds: int, reps: int) -> dict:
    times: dict = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            times[k].append((time.perf_counter() - t0) / reps)
    return {k: float(np.median(v)) for k, v in times.items()}


def run(threads: int, quick: bool) -> list[dict]:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    rows = []
    for M, K, N in SHAPES[:2] if quick else SHAPES:
        a = rng.integers(0, 256, (M, K)).astype(np.uint8)
        b = rng.integers(-128, 128, (K, N)).astype(np.int8)
        zp = np.array(3, np.uint8)
        q = _model("MatMulInteger", M, K, N, b, TensorProto.UINT8, TensorProto.INT32, zp)
        f = _model("MatMul", M, K, N, b.astype(np.float32), TensorProto.FLOAT, TensorProto.FLOAT)
        fns = {}
        for path in _runnable():
            m = compile_graph(to_graph(q), host(), Options(lowering={"int8_isa": path}))
            m.num_threads = threads
            fns[path] = lambda m=m: m.run({"a": a})
        m32 = compile_graph(to_graph(f), host(), Options())
        m32.num_threads = threads
        af = a.astype(np.float32)
        fns["fp32"] = lambda: m32.run({"a": af})
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(q.SerializeToString(), so, providers=["CPUExecutionProvider"])
        fns["ort"] = lambda: sess.run(None, {"a": a})
        ops = 2 * M * N * K
        med = _medians(fns, 3 if quick else 7, max(1, int(2e8 // ops)))
        rows.append({"shape": f"{M}x{K}x{N}", "threads": threads, **{k: ops / v / 1e9 for k, v in med.items()}})
    return rows


def run_avx2_target(quick: bool) -> list[dict]:
    """The AVX2 path against fp32 both compiled for the AVX2 target ``x86_64`` (ymm, 16 registers), 1 thread:
    what an AVX2-only host gets. Run here (an x86_64 target's code loads on any AVX2 host)."""
    if not host().has_feature("avx2") or host().arch != "x86_64":
        return []
    t = replace(get_target("x86_64"), is_host=True)
    rng = np.random.default_rng(1)
    rows = []
    for M, K, N in SHAPES[:1] if quick else SHAPES[:1] + SHAPES[2:]:
        a = rng.integers(0, 256, (M, K)).astype(np.uint8)
        b = rng.integers(-128, 128, (K, N)).astype(np.int8)
        q = _model("MatMulInteger", M, K, N, b, TensorProto.UINT8, TensorProto.INT32, np.array(3, np.uint8))
        f = _model("MatMul", M, K, N, b.astype(np.float32), TensorProto.FLOAT, TensorProto.FLOAT)
        mi, mf = compile_graph(to_graph(q), t, Options()), compile_graph(to_graph(f), t, Options())
        mi.num_threads = mf.num_threads = 1
        af = a.astype(np.float32)
        ops = 2 * M * N * K
        med = _medians({"avx2": lambda: mi.run({"a": a}), "fp32": lambda: mf.run({"a": af})}, 3 if quick else 9,
                       max(1, int(1e8 // ops)))  # fmt: skip
        rows.append({"shape": f"{M}x{K}x{N}", **{k: ops / v / 1e9 for k, v in med.items()}})
    return rows


def section():
    quick = bool(os.environ.get("TENSORFORGE_BENCH_QUICK"))
    records = run(1, quick) + run(2, quick)
    best = host().int8_isa if host().int8_isa in PATHS else "avx2"
    cols = _runnable()
    head = "| M x K x N | threads | " + " | ".join(f"int8 {c}" for c in cols) + " | ORT int8 | tf fp32 | " \
        f"{best} / ORT | {best} / fp32 |"  # fmt: skip
    lines = [head, "|" + "---|" * (len(cols) + 6)]
    for r in records:
        vals = " | ".join(f"{r[c]:.0f}" for c in cols)
        lines.append(f"| {r['shape']} | {r['threads']} | {vals} | {r['ort']:.0f} | {r['fp32']:.0f} | "
                     f"{r[best] / r['ort']:.2f}x | {r[best] / r['fp32']:.2f}x |")  # fmt: skip
    md = "GOP/s (medians of alternating blocks, one run); A uint8 with a zero point, B a constant int8.\n\n"
    avx2 = run_avx2_target(quick)
    if avx2:
        lines += ["", "Compiled for the AVX2 target `x86_64` (1 thread): int8 `vpmaddwd` vs fp32 FMA.", "",
                  "| M x K x N | int8 avx2 | tf fp32 | avx2 / fp32 |", "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r['shape']} | {r['avx2']:.0f} | {r['fp32']:.0f} | {r['avx2'] / r['fp32']:.2f}x |" for r in avx2]
        records += [{**r, "target": "x86_64"} for r in avx2]
    return "Int8 GEMM", md + "\n".join(lines), records


if __name__ == "__main__":
    print(section()[1])
