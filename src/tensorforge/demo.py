"""``tensorforge demo`` / ``make demo``: the built-in example end to end."""

from __future__ import annotations

import re
import time

import numpy as np


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

    from .examples import mlp

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
    if not (args is not None and getattr(args, "no_train", False)):
        try:
            from .train_demo import train_demo
        except ImportError:
            return 0
        return train_demo()
    return 0


def _init(model, name):
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    raise KeyError(name)
