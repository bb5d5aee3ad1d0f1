"""Per-kernel times of a model against ONNX Runtime's per-node profile (``SessionOptions.enable_profiling``).

Each tensorforge kernel is matched with the ONNX Runtime nodes that compute the same graph nodes: ONNX Runtime
names a node it fused or rewrote to NCHWc after one of the original nodes or after an output tensor of one
(``<tensor>_nchwc``), so a kernel takes every ONNX Runtime node named after one of its nodes or their outputs.
Both sides run the same input in alternating blocks (``--rounds``, so that load from elsewhere hits both alike),
ONNX Runtime without spinning threads; a kernel's time is the median over the blocks of its median in a block.
The table is sorted by the time tensorforge loses (``ort/tf`` < 1: ONNX Runtime is faster on that kernel).

    python benchmarks/profile_vs_ort.py model.onnx [--threads 1] [--repeat 30] [--top 30]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict

import numpy as np
import onnx

import tensorforge as tfg


def ort_session(path: str, threads: int):
    """A profiling ONNX Runtime session whose idle threads do not spin."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="tf_ortprof"), "ort")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_node_times(sess, blocks: list[tuple[int, int]]) -> dict[str, float]:
    """Median over ``blocks`` (ranges of run numbers) of each node's median seconds in the block (its
    ``*_kernel_time`` events, in run order)."""
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    times: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times[e["name"][: -len("_kernel_time")]].append(e["dur"] * 1e-6)
    return {k: float(np.median([np.median(v[a:b]) for a, b in blocks if v[a:b]])) for k, v in times.items()}


def match(kernels, model: onnx.ModelProto, ort_times: dict[str, float]) -> tuple[list[tuple], list[str]]:
    """Rows (kernel, node names, tensorforge s, ONNX Runtime s) and the ONNX Runtime nodes left unmatched."""
    outputs = {n.name: list(n.output) for n in model.graph.node}
    used: set[str] = set()
    rows = []
    for name, labels, sec in kernels:
        nodes = [lab.rsplit(" (", 1)[0] for lab in labels]
        keys = set(nodes) | {o for n in nodes for o in outputs.get(n, [])}
        hit = [k for k in ort_times if k not in used and (k in keys or any(k.startswith(x + "_") for x in keys))]
        used.update(hit)
        rows.append((name, nodes, sec, sum(ort_times[k] for k in hit)))
    return rows, [k for k in ort_times if k not in used]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="an ONNX file with static input shapes")
    ap.add_argument("--threads", type=int, default=1, help="threads of both runtimes (default 1)")
    ap.add_argument("--repeat", type=int, default=10, help="measured runs per side and block (default 10)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating blocks per side (default 5)")
    ap.add_argument("--top", type=int, default=30, help="rows to print, biggest losses first (default 30)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    model = onnx.load(args.model)
    m = tfg.compile(args.model, num_threads=args.threads)
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.random(i.shape).astype(i.dtype.np) for i in m.inputs}
    sess = ort_session(args.model, args.threads)
    sess.run(None, feeds)  # warm-up, dropped below
    per_round, totals, blocks = [], [], []
    for _ in range(args.rounds):
        rows_t, total = m.profile(feeds, repeat=args.repeat)
        per_round.append([r.seconds for r in rows_t])
        totals.append(total)
        start = 1 + len(blocks) * args.repeat
        for _ in range(args.repeat):
            sess.run(None, feeds)
        blocks.append((start, start + args.repeat))
    tf_times = np.median(np.array(per_round), axis=0)
    total = float(np.median(totals))
    ort_times = ort_node_times(sess, blocks)
    rows, unmatched = match([(r.name, r.labels, float(t)) for r, t in zip(rows_t, tf_times)], model, ort_times)
    rows.sort(key=lambda r: r[3] - r[2])
    print(f"{'tf ms':>8} {'ort ms':>8} {'ort/tf':>6}  kernel nodes")
    for _, nodes, t, o in rows[: args.top]:
        ratio = f"{o / t:6.2f}" if t > 0 and o > 0 else "     -"
        print(f"{t * 1e3:8.3f} {o * 1e3:8.3f} {ratio}  {', '.join(nodes)}")
    t_sum, o_sum = sum(r[2] for r in rows), sum(ort_times.values())
    print(f"sum of kernels: tensorforge {t_sum * 1e3:.2f} ms (median run {total * 1e3:.2f} ms), "
          f"ONNX Runtime {o_sum * 1e3:.2f} ms, {args.threads} thread(s)")  # fmt: skip
    if unmatched:
        print(f"ONNX Runtime nodes matched to no kernel: {', '.join(unmatched)}", file=sys.stderr)


if __name__ == "__main__":
    main()
