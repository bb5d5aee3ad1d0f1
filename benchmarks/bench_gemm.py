"""GEMM (fp32): tensorforge vs numpy (OpenBLAS), PyTorch and ONNX Runtime, 1 and 2 threads.

Square sizes 64..2048 and the MLP / transformer shapes (M x K x N: a [M, K] activation times a [K, N]
weight): tensorforge and ONNX Runtime compile a MatMul whose weight is an initializer (both may pack it
ahead of time). Then products of two activations (B an input: attention's QK^T and PV, batched over 12
heads): nobody can prepare B. numpy and PyTorch multiply two arrays in every row. Each row: GFLOP/s of
every contender (medians of alternating blocks), tensorforge's % of the machine's fp32 peak on that many threads
(``runtime/peak.py``: the measured FMA throughput per core x threads), and the ratio to the best of the
others (> 1: tensorforge is faster).
"""

from __future__ import annotations

import os

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from threadpoolctl import threadpool_limits

import tensorforge as tfg
from harness import compare, markdown_table, ort_session, pyplot, save_figure
from tensorforge.runtime.peak import machine_peak

SQUARE = [64, 128, 256, 512, 1024, 2048]
MODEL_SHAPES = [(1, 784, 256), (64, 784, 256), (256, 768, 3072)]  # M x K x N: MLP layer, batch 64, BERT FFN
# products of two activations (B computed at run time): the MLP shapes, an odd size, and attention's
# QK^T and PV (batched: 12 heads, 128 tokens, head size 64)
RUNTIME_B = [((1, 784), (784, 256)), ((64, 784), (784, 256)), ((333, 517), (517, 129)),
             ((12, 128, 64), (12, 64, 128)), ((12, 128, 128), (12, 128, 64))]  # fmt: skip
OTHERS = ["numpy", "pytorch", "onnxruntime"]


def cases() -> list[tuple[tuple[int, ...], tuple[int, ...], bool]]:
    """(A shape, B shape, B constant) of every row."""
    sq = SQUARE[:4] if os.environ.get("TENSORFORGE_BENCH_QUICK") else SQUARE
    const = [((n, n), (n, n)) for n in sq] + [((m, k), (k, n)) for m, k, n in MODEL_SHAPES]
    return [(a, b, True) for a, b in const] + [(a, b, False) for a, b in RUNTIME_B]


def matmul_model(a_shape, b_shape, b: np.ndarray | None):
    """``c = a @ b`` with b an initializer (``b`` given) or a second input."""
    node = helper.make_node("MatMul", ["a", "b"], ["c"])
    ins = [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(a_shape))]
    if b is None:
        ins.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, list(b_shape)))
    out = helper.make_tensor_value_info("c", TensorProto.FLOAT, None)
    name = "gemm_" + "x".join(map(str, a_shape)) + "_" + "x".join(map(str, b_shape))
    graph = helper.make_graph([node], name, ins, [out], [] if b is None else [numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _label(a_shape, b_shape) -> str:
    batch = "x".join(map(str, a_shape[:-2]))
    return (f"{batch} x " if batch else "") + f"{a_shape[-2]}x{a_shape[-1]}x{b_shape[-1]}"


def run(threads: int) -> tuple[str, list[dict]]:
    import torch

    torch.set_num_threads(threads)
    peak = machine_peak()
    rows, records = [], []
    for a_shape, b_shape, const_b in cases():
        rng = np.random.default_rng(0)
        a = rng.standard_normal(a_shape).astype(np.float32)
        b = rng.standard_normal(b_shape).astype(np.float32)
        model = matmul_model(a_shape, b_shape, b if const_b else None)
        tf = tfg.compile(model, num_threads=threads)
        sess = ort_session(model.SerializeToString(), threads)
        feeds = {"a": a} if const_b else {"a": a, "b": b}
        args = (a,) if const_b else (a, b)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        want = a.astype(np.float64) @ b
        k = a_shape[-1]
        got = tf(*args)
        label = _label(a_shape, b_shape)
        assert np.allclose(got, want, rtol=1e-3, atol=1e-3 * np.sqrt(k)), f"tensorforge wrong at {label}"
        with threadpool_limits(threads):
            t = compare({"tensorforge": lambda: tf(*args), "numpy": lambda: a @ b,
                         "pytorch": lambda: torch.matmul(ta, tb),
                         "onnxruntime": lambda: sess.run(None, feeds)})  # fmt: skip
        flop = 2 * int(np.prod(a_shape)) * b_shape[-1]
        gf = {name: flop / s / 1e9 for name, s in t.items()}
        best = min(OTHERS, key=lambda o: t[o])
        ratio = t[best] / t["tensorforge"]
        rows.append([label, "constant" if const_b else "run time", str(threads),
                     *(f"{gf[c]:.1f}" for c in ["tensorforge", *OTHERS]),
                     f"{peak.percent(gf['tensorforge'], threads):.0f}%", f"{ratio:.2f}x ({best})"])  # fmt: skip
        records.append({"shape": label + ("" if const_b else " (B run time)"), "threads": threads,
                        "peak": peak.gflops(threads), **gf})  # fmt: skip
    head = ["M x K x N", "B", "threads", "tensorforge GFLOP/s", "numpy", "PyTorch", "ONNX Runtime", "tf % of peak",
            "tf vs best other"]  # fmt: skip
    return markdown_table(head, rows), records


def section():
    peak = machine_peak()
    tables, records = [], []
    for th in (1, 2):
        table, recs = run(th)
        tables.append(table)
        records += recs
    md = (f"fp32 GEMM, GFLOP/s (higher is better). Peak model: {peak.describe()}. The last column is the "
          "ratio of the best other library's time to tensorforge's (> 1: tensorforge is faster).\n\n"
          + tables[0] + "\n\n" + "\n".join(tables[1].splitlines()[2:]))  # fmt: skip
    return "GEMM", md, records


def plot(records, outdir):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    names = ["tensorforge", *OTHERS]
    for ax, th in zip(axes, (1, 2)):
        recs = [r for r in records if r["threads"] == th]
        width = 0.8 / len(names)
        for i, nm in enumerate(names):
            ax.bar([j + (i - 1.5) * width for j in range(len(recs))], [r[nm] for r in recs], width, label=nm)
        if recs:
            ax.axhline(recs[0]["peak"], color="k", ls="--", lw=1, label="fp32 peak")
        ax.set_xticks(range(len(recs)), [r["shape"] for r in recs], rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{th} thread{'s' if th > 1 else ''}")
        ax.set_ylabel("GFLOP/s")
    axes[0].legend(fontsize=8)
    fig.suptitle("fp32 GEMM (M x K x N)")
    return save_figure(fig, outdir, "gemm_gflops.png")


if __name__ == "__main__":
    title, md, recs = section()
    print(md)
