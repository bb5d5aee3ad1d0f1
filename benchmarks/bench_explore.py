"""Explorer reports of the benchmark models (`make bench`): one HTML report per model of bench_models' table
(graph, kernels, assembly with the hot loop, roofline; docs/EXPLORER.md), written to docs/explorer/ and
linked from docs/BENCHMARKS.md. TENSORFORGE_BENCH_EXPLORE=0 skips them; TENSORFORGE_BENCH_EXPLORE=resnet50,bert
makes only the models whose names contain one of the words."""

from __future__ import annotations

import os
import re
import sys
import time

import tensorforge as tfg
from bench_models import big_models

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "docs", "explorer")


def reports(out_dir: str = OUT, only: list[str] | None = None) -> list[tuple[str, str, float, int]]:
    """(model, path, seconds, bytes) per report written."""
    os.makedirs(out_dir, exist_ok=True)
    threads = int(os.environ.get("TENSORFORGE_BENCH_THREADS", "1"))
    done = []
    for name, model in big_models():
        if only and not any(w in name for w in only):
            continue
        print(f"  explore {name} ...", file=sys.stderr, flush=True)
        path = os.path.join(out_dir, re.sub(r"[^\w.-]", "_", name) + ".html")
        t0 = time.perf_counter()
        tfg.explore(model, path, num_threads=threads, title=name, model_hint=f"{name}.onnx")
        done.append((name, path, time.perf_counter() - t0, os.path.getsize(path)))
    return done


def section():
    setting = os.environ.get("TENSORFORGE_BENCH_EXPLORE", "1")
    if setting == "0":
        return "Explorer reports", "(skipped: TENSORFORGE_BENCH_EXPLORE=0)", []
    only = None if setting == "1" else [w for w in setting.split(",") if w]
    rows = reports(only=only)
    docs = os.path.dirname(OUT)
    lines = [
        "One self-contained HTML report per model (`tensorforge explore`, docs/EXPLORER.md): the fused graph, "
        "every kernel's kernel IR, LLVM IR and assembly with its hot loop summarized, measured times and the "
        "roofline. Download and open in a browser.",
        "",
        "| model | report | built in | size |",
        "|---|---|---|---|",
    ]
    for name, path, secs, size in rows:
        lines.append(
            f"| {name} | [{os.path.basename(path)}]({os.path.relpath(path, docs)}) | {secs:.1f} s | "
            f"{size / 2**20:.1f} MiB |"
        )
    return "Explorer reports", "\n".join(lines), [{"model": n, "seconds": s, "bytes": b} for n, _, s, b in rows]
