"""What the graph optimizer buys: the same model compiled at -O0 (no graph pass: one kernel per node),
at -O3 without fusion (folding, simplification, BatchNorm folding, CSE, fast math) and at -O3, on a
ResNet-50 and a BERT-style encoder (6 layers, hidden 384, sequence 128), batch 1. Latency ratios come
from one run that alternates the three builds in blocks. Because a loaded machine perturbs whole runs,
a second number is given: kernel time, the sum over kernels of each kernel's fastest time in a native
per-kernel profile (no Python, no thread start-up), which is steady under load. Kernel counts, arena
sizes and compile times come from the compiled programs."""

from __future__ import annotations

import os
import time

import numpy as np

import tensorforge as tfg
from harness import compare, fmt_time, markdown_table, pyplot, save_figure
from tensorforge.examples import bert_encoder, resnet50

VARIANTS = {"-O0": dict(opt_level=0), "-O3 -fuse": dict(opt_level=3, passes="-fuse"), "-O3": dict(opt_level=3)}


def _models():
    if os.environ.get("TENSORFORGE_BENCH_QUICK"):
        bert = bert_encoder(seq=32, hidden=128, heads=4, layers=2)
        return [("ResNet-50 (64x64, width 16)", resnet50(size=64, width=16), (1, 3, 64, 64)),
                ("BERT encoder (2x128, seq 32)", bert, (1, 32, 128))]  # fmt: skip
    return [("ResNet-50 (224x224)", resnet50(), (1, 3, 224, 224)),
            ("BERT encoder (6x384, seq 128)", bert_encoder(), (1, 128, 384))]  # fmt: skip


def kernel_time(builds: dict, feeds: dict, rounds: int = 5) -> dict[str, float]:
    """Per build, the sum over its kernels of the fastest time seen (profiles alternate between builds)."""
    best: dict[str, dict[str, float]] = {name: {} for name in builds}
    for _ in range(rounds):
        for name, (m, _) in builds.items():
            rows, _total = m.profile(feeds, repeat=3)
            for r in rows:
                best[name][r.name] = min(best[name].get(r.name, float("inf")), r.seconds)
    return {name: sum(b.values()) for name, b in best.items()}


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def run() -> tuple[str, str, list[dict]]:
    rows, build_rows, records = [], [], []
    for title, model, shape in _models():
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        builds = {}
        for name, kw in VARIANTS.items():
            t0 = time.perf_counter()
            m = tfg.compile(model, **kw)
            builds[name] = (m, time.perf_counter() - t0)
        ref = builds["-O0"][0](x)
        for name, (m, _) in builds.items():
            got = m(x)
            err = float(np.max(np.abs(got - ref)) / max(1.0, float(np.max(np.abs(ref)))))
            assert err < 1e-4, f"{title}: {name} differs from -O0 by {err:.2e} (relative)"
        for threads in sorted({1, os.cpu_count() or 1}):
            for m, _ in builds.values():
                m.num_threads = threads
            t = compare({name: (lambda m=m: m(x)) for name, (m, _) in builds.items()})
            kt = kernel_time(builds, {"x": x})
            rows.append([title, str(threads), *(fmt_time(t[n]) for n in VARIANTS),
                         f"{t['-O0'] / t['-O3 -fuse']:.2f}x", f"{t['-O0'] / t['-O3']:.2f}x",
                         " / ".join(fmt_time(kt[n]) for n in VARIANTS), f"{kt['-O0'] / kt['-O3']:.2f}x"])  # fmt: skip
            records.append({"model": title, "threads": threads, **t, **{f"kernel {n}": v for n, v in kt.items()}})
        for name, (m, secs) in builds.items():
            p = m.program
            build_rows.append([title, name, str(len(m.graph.nodes)), str(len(p.kernels)), _mib(p.intermediate_bytes),
                               _mib(p.arena_bytes), _mib(p.peak_bytes), str(p.in_place), f"{secs:.1f} s"])  # fmt: skip
    speed = markdown_table(["model", "threads", *VARIANTS, "speedup -O3 -fuse", "speedup -O3",
                            "kernel time " + " / ".join(VARIANTS), "kernel-time speedup -O3"], rows)  # fmt: skip
    builds_md = markdown_table(["model", "build", "graph nodes", "kernels", "intermediates", "arena", "peak live",
                                "in place", "compile"], build_rows)  # fmt: skip
    return speed, builds_md, records


def section():
    speed, builds, records = run()
    md = ("Latency at batch 1 (median of alternating blocks; speedup is relative to -O0 in the same run). "
          "`-O3 -fuse` is every pass but fusion, so the two speedup columns separate what folding and "
          "simplification buy from what fusion buys.\n\n" + speed + "\n\n"
          "What each build looks like (compile time includes code generation; a warm compile cache makes "
          "it a fraction of a second):\n\n" + builds)  # fmt: skip
    return "Graph optimizer: -O0 vs -O3", md, records


def plot(records, outdir):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    labels = [f"{r['model'].split(' (')[0]}\n{r['threads']} thread(s)" for r in records]
    width = 0.38
    for i, name in enumerate(["-O3 -fuse", "-O3"]):
        ax.bar([j + (i - 0.5) * width for j in range(len(records))], [r["-O0"] / r[name] for r in records], width,
               label=name)  # fmt: skip
    ax.axhline(1.0, color="#444444", linewidth=0.8)
    ax.set_xticks(range(len(records)), labels)
    ax.set_ylabel("speedup over -O0 (higher is better)")
    ax.set_title("Graph optimizer at batch 1")
    ax.legend()
    return save_figure(fig, outdir, "opt_speedup.png")


if __name__ == "__main__":
    speed, builds, _ = run()
    print(speed)
    print()
    print(builds)
