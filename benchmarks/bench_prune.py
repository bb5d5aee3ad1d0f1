"""Pruning that turns into speed: the sparse GEMM against the dense one by weight density (where the crossover
lies: ``lower/sparse_gemm.py:SPARSE_MAX_DENSITY``), and the digits MLP dense, 80% unstructured (sparse kernel)
and with half its hidden channels removed, each fine-tuned, with accuracy, size and latency side by side."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from threadpoolctl import threadpool_limits

import tensorforge as tfg
from harness import compare, fmt_time, markdown_table
from tensorforge.codegen.targets import host
from tensorforge.compiler import Options, compile_graph, to_graph
from tensorforge.train.prune_finetune import prune_report

GEMMS = [(256, 784, 256), (1024, 1024, 1024)]
DENSITIES = [0.1, 0.2, 0.35, 0.5]


def _matmul(a_shape, b):
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "mm",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(a_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [a_shape[0], b.shape[1]])],
                          [numpy_helper.from_array(b, "b")])  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def gemm_table(threads: int = 1) -> tuple[str, list[dict]]:
    rng = np.random.default_rng(0)
    rows, records = [], []
    for m, k, n in GEMMS:
        a = rng.standard_normal((m, k)).astype(np.float32)
        for d in DENSITIES:
            b = rng.standard_normal((k, n)).astype(np.float32)
            b[rng.random(b.shape) >= d] = 0
            g = to_graph(_matmul(a.shape, b))
            sp = compile_graph(g, host(), Options(lowering={"sparse_gemm": {"max_density": 1.0, "cost_model": False}}))
            de = compile_graph(g, host(), Options(lowering={"sparse_gemm": False}))
            sp.num_threads = de.num_threads = threads
            want = a.astype(np.float64) @ b
            for mod in (sp, de):
                assert np.abs(mod.run({"a": a})["y"] - want).max() < 1e-3 * np.abs(want).max()
            t = compare({"sparse": lambda: sp.run({"a": a}), "dense": lambda: de.run({"a": a})})
            flops = 2 * m * n * k
            rows.append([f"{m}x{k}x{n}", f"{d:.2f}", fmt_time(t["dense"]), fmt_time(t["sparse"]),
                         f"{t['dense'] / t['sparse']:.2f}x", f"{flops / t['dense'] / 1e9:.0f}",
                         f"{flops * d / t['sparse'] / 1e9:.0f}"])  # fmt: skip
            records.append({"shape": (m, k, n), "density": d, **t})
    table = markdown_table(["M x K x N", "density", "dense", "sparse", "dense / sparse", "dense GFLOP/s",
                            "sparse useful GFLOP/s"], rows)  # fmt: skip
    return table, records


def mlp_table(batch: int = 256, threads: int = 1) -> tuple[str, list[dict]]:
    from tensorforge.train import datasets, trainer

    ds = datasets.load("digits")
    step = tfg.training_step(trainer.builtin_model("mlp", ds.x_train, 10), optimizer=trainer.make_optimizer("sgd"))
    h = trainer.fit(step, ds.x_train, ds.y_train, 20, 32, ds.x_test, ds.y_test, log=lambda s: None)
    dense = step.export_onnx()
    variants = {"dense": (dense, h.metrics[-1], None)}
    for label, kw in [("80% unstructured", {"sparsity": 0.8}),
                      ("50% channels", {"sparsity": 0.5, "structured": "channels"})]:  # fmt: skip
        r = prune_report(dense, finetune={"data": "digits", "epochs": 5}, **kw)
        variants[label] = (r.model, r.finetune["accuracy_after"], r)
    x = np.random.default_rng(0).standard_normal((batch, 64)).astype(np.float32)
    models = {k: tfg.compile(v[0], input_shapes={"x": [batch, 64]}) for k, v in variants.items()}
    for m in models.values():
        m.num_threads = threads
    with threadpool_limits(threads):
        t = compare({k: (lambda m=m: m.run({"x": x})) for k, m in models.items()})
    rows, records = [], []
    for k, (model, acc, _) in variants.items():
        inits = [numpy_helper.to_array(i) for i in model.graph.initializer]
        params = sum(a.size for a in inits)
        nonzero = sum(int(np.count_nonzero(a)) for a in inits)
        sparse = "_Bval" in models[k].kernel_ir()
        rows.append([k, f"{params:,}", f"{nonzero:,}", f"{100 * acc:.2f}%", "yes" if sparse else "no",
                     fmt_time(t[k]), f"{t['dense'] / t[k]:.2f}x"])  # fmt: skip
        records.append({"variant": k, "params": params, "nonzero": nonzero, "accuracy": acc, "seconds": t[k]})
    table = markdown_table(["digits MLP 64-256-10", "parameters", "nonzero", "held-out accuracy",
                            "sparse kernel", f"latency (batch {batch})", "dense / this"], rows)  # fmt: skip
    return table, records


def section():
    gt, gr = gemm_table()
    mt, mr = mlp_table()
    md = ("Sparse GEMM (constant B, unstructured zeros) against the dense GEMM, one thread: where the sparse "
          "kernel pays.\n\n" + gt + "\n\nThe digits MLP pruned and fine-tuned 5 epochs (accuracy on the held-out "
          "split), one thread:\n\n" + mt)  # fmt: skip
    return "Pruning: sparse GEMM and pruned MLPs", md, gr + mr


if __name__ == "__main__":
    print(section()[1])
