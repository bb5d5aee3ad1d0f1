"""Benchmark utilities (used by benchmarks/ and `tensorforge bench`): medians of repeats, alternating the
contenders in blocks, ratios in one run.

Machines are shared and noisy, so no contender gets a quiet stretch to itself: each block times every
contender once (in rotating order), and the reported number is the median over blocks.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable


def ort_session(model_bytes: bytes, threads: int = 1):
    """An ONNX Runtime session whose idle threads do not spin (fair alternation with other runtimes)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _calibrate(fn: Callable[[], object], target_s: float) -> int:
    fn()
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= target_s or n >= 1 << 20:
            return max(1, int(n * target_s / max(dt, 1e-9)))
        n *= 2


def compare(fns: dict[str, Callable[[], object]], blocks: int = 7, block_s: float = 0.05) -> dict[str, float]:
    """Median seconds per call of each function, measured in alternating blocks."""
    if os.environ.get("TENSORFORGE_BENCH_QUICK"):
        blocks, block_s = 3, 0.01
    reps = {k: _calibrate(f, block_s) for k, f in fns.items()}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for b in range(blocks):
        order = names[b % len(names) :] + names[: b % len(names)]
        for k in order:
            f, n = fns[k], reps[k]
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            samples[k].append((time.perf_counter() - t0) / n)
    return {k: statistics.median(v) for k, v in samples.items()}


def fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
