"""MLP (784-256-10, softmax) inference latency: tensorforge vs ONNX Runtime vs numpy, batch 1 and 64."""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper
from threadpoolctl import threadpool_limits

import tensorforge as tfg
from harness import compare, fmt_time, markdown_table, ort_session, pyplot, save_figure
from tensorforge.examples import mlp


def run(threads: int = 1) -> tuple[str, list[dict]]:
    rows, records = [], []
    for batch in (1, 64):
        model = mlp(batch=batch)
        w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        x = np.random.default_rng(0).standard_normal((batch, 784)).astype(np.float32)
        m = tfg.compile(model, num_threads=threads)
        sess = ort_session(model.SerializeToString(), threads)

        def numpy_mlp():
            h = np.maximum(x @ w["W1"] + w["b1"], 0)
            z = h @ w["W2"] + w["b2"]
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)

        ref = sess.run(None, {"x": x})[0]
        assert np.allclose(m(x), ref, rtol=1e-4, atol=1e-6), "tensorforge and ONNX Runtime disagree"
        with threadpool_limits(threads):
            t = compare({"tensorforge": lambda: m(x), "onnxruntime": lambda: sess.run(None, {"x": x}),
                         "numpy": numpy_mlp})  # fmt: skip
        best_other = min(t["onnxruntime"], t["numpy"])
        rows.append([str(batch), str(threads), fmt_time(t["tensorforge"]), fmt_time(t["onnxruntime"]),
                     fmt_time(t["numpy"]), f"{t['onnxruntime'] / t['tensorforge']:.2f}x",
                     f"{t['numpy'] / t['tensorforge']:.2f}x", f"{best_other / t['tensorforge']:.2f}x"])  # fmt: skip
        records.append({"batch": batch, "threads": threads, **t})
    table = markdown_table(["batch", "threads", "tensorforge", "ONNX Runtime", "numpy", "ORT / tf", "numpy / tf",
                            "best other / tf"], rows)  # fmt: skip
    return table, records


def section():
    tables, records = [], []
    for th in (1, 2):
        t, r = run(th)
        tables.append(t)
        records += r
    md = (
        "The seed MLP (784-256 ReLU-10 softmax). Target: batch-1 latency at or under ONNX Runtime's.\n\n"
        + tables[0]
        + "\n\n"
        + "\n".join(tables[1].splitlines()[2:])
    )
    return "MLP inference latency", md, records


def plot(records, outdir):
    plt = pyplot()
    labels = [f"b{r['batch']} t{r['threads']}" for r in records]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = ["tensorforge", "onnxruntime", "numpy"]
    width = 0.27
    for i, n in enumerate(names):
        ax.bar([j + (i - 1) * width for j in range(len(records))], [r[n] * 1e6 for r in records], width, label=n)
    ax.set_xticks(range(len(records)), labels)
    ax.set_ylabel("latency (µs, lower is better)")
    ax.set_yscale("log")
    ax.set_title("MLP 784-256-10 inference")
    ax.legend()
    return save_figure(fig, outdir, "mlp_latency.png")


if __name__ == "__main__":
    print("MLP 784-256-10 inference latency (median of alternating blocks; ratio > 1 means tensorforge is faster)")
    for th in (1, 2):
        table, _ = run(th)
        print(table)
