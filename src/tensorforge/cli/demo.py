"""``tensorforge demo`` / ``make demo``: the built-in example end to end — the seed MLP compiled, checked
against ONNX's reference evaluator, timed against numpy, its matmul's inner loop shown; then the same MLP
(64 inputs) trained on scikit-learn's handwritten digits with SGD + momentum for 20 epochs, every batch
one native call running forward, loss, backward and the update."""

from __future__ import annotations

import re
import time

import numpy as np

from ..errors import TensorforgeError

DEMO_TARGET = 0.96  # held-out accuracy the training demo must reach


def _median_us(fn, n: int = 300, repeats: int = 5) -> float:
    fn()
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best.append((time.perf_counter() - t0) / n * 1e6)
    return float(np.median(best))


def run_demo(args=None) -> int:
    from onnx.reference import ReferenceEvaluator

    import tensorforge as tfg

    from ..examples import mlp

    print("== tensorforge demo: the MLP 784 -> 256 (ReLU) -> 10 -> softmax ==")
    model = mlp(batch=1)
    t0 = time.perf_counter()
    m = tfg.compile(model)
    print(f"compiled in {time.perf_counter() - t0:.2f} s for {m.program.target.describe()}")
    print(f"{len(m.kernels)} kernels, one native call per inference:")
    for k in m.kernels:
        print(f"  {k.name:<28} {'; '.join(k.labels)}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 784)).astype(np.float32)
    y = m(x)
    ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    err = float(np.max(np.abs(y - ref) / (np.abs(ref) + 1e-6)))
    print(f"output {y.shape}, argmax {int(y.argmax())}, max relative error vs ONNX reference: {err:.2e}")
    if err > 1e-4:
        print("FAILED: result differs from the reference")
        return 1
    w1, b1 = [np.asarray(a) for a in (_init(model, "W1"), _init(model, "b1"))]
    w2, b2 = [np.asarray(a) for a in (_init(model, "W2"), _init(model, "b2"))]

    def numpy_mlp():
        h = np.maximum(x @ w1 + b1, 0)
        z = h @ w2 + b2
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    ours = _median_us(lambda: m(x))
    theirs = _median_us(numpy_mlp)
    print(f"latency at batch 1: tensorforge {ours:.1f} us, numpy {theirs:.1f} us ({theirs / ours:.2f}x)")
    asm = m.assembly(kernel="fc1")
    fma = [ln for ln in asm.splitlines() if re.search(r"vfmadd\w+ps", ln)]
    print(f"\nthe fc1 matmul kernel ({len(fma)} FMA instructions); its inner loop:")
    lines = asm.splitlines()
    start = next((i for i, ln in enumerate(lines) if "vfmadd" in ln), 0)
    for ln in lines[max(0, start - 1) : start + 10]:
        print("   ", ln.strip())
    print("(see the whole listing with: tensorforge asm mlp)")
    if args is not None and getattr(args, "no_train", False):
        return 0
    return train_demo()


def _init(model, name):
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    raise KeyError(name)


def train_demo() -> int:
    """Train the seed MLP on digits for 20 epochs; returns 1 if it misses the accuracy target."""
    import tensorforge as tfg

    from ..examples import mlp
    from ..train import datasets, trainer

    try:
        ds = datasets.digits()
    except TensorforgeError as e:
        print(f"\n(skipping the training demo: {e})")
        return 0
    print(f"\n== training the MLP {ds.features} -> 256 (ReLU) -> {ds.classes} -> softmax on scikit-learn's digits "
          f"({len(ds.x_train)} training / {len(ds.x_test)} held-out images) ==")  # fmt: skip
    step = tfg.training_step(mlp(batch="N", sizes=(ds.features, 256, ds.classes)), loss="cross_entropy",
                             optimizer=tfg.optim.SGD(lr=0.05, momentum=0.9))  # fmt: skip
    g = step.training_graph(32)
    print(f"the training step is one graph of {len(g.nodes)} nodes (forward, cross-entropy, backward, SGD update), "
          "compiled into one native function; parameters and momenta are updated in place")  # fmt: skip
    t0 = time.perf_counter()
    h = trainer.fit(step, ds.x_train, ds.y_train, 20, 32, ds.x_test, ds.y_test)
    total = time.perf_counter() - t0
    acc = h.metrics[-1]
    per_step = h.step_seconds / max(h.steps - 1, 1)
    print(f"{h.steps} steps in {total:.2f} s including compilation ({h.compile_seconds:.2f} s); "
          f"{per_step * 1e6:.0f} us per step")  # fmt: skip
    print(f"held-out accuracy: {100 * acc:.2f}% ({int(round(acc * len(ds.y_test)))}/{len(ds.y_test)})")
    if acc < DEMO_TARGET:
        print(f"FAILED: below the {100 * DEMO_TARGET:.0f}% target")
        return 1
    return 0
