"""Numerical checks of gradients (JAX's ``check_grads``): the reference semantics of a graph evaluated
node by node in numpy — in float64 when fed float64 — and central finite differences over it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..ir.dtype import is_float_dtype
from ..ir.graph import Graph
from ..ops.registry import evaluate


def evaluate_graph(g: Graph, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``g`` with every op's reference implementation; returns its outputs."""
    env: dict[int, np.ndarray] = {}
    for v in g.inputs:
        env[v.id] = np.asarray(feeds[v.name])
    for n in g.nodes:
        args = [None if v is None else (v.const if v.is_const else env[v.id]) for v in n.inputs]
        for v, r in zip(n.outputs, evaluate(n, args)):
            env[v.id] = r
    return [v.const if v.is_const else env[v.id] for v in g.outputs]


def numerical_vjp(g: Graph, feeds: Mapping[str, np.ndarray], wrt: Sequence[str], cotangent: np.ndarray,
                  output: int = 0, eps: float = 1e-6) -> list[np.ndarray]:  # fmt: skip
    """d sum(cotangent * output) / d feeds[w] for each w, by central differences in float64."""
    base = {k: np.array(v, dtype=np.float64) if is_float_dtype(np.asarray(v).dtype) else np.asarray(v)
            for k, v in feeds.items()}  # fmt: skip
    ct = np.asarray(cotangent, dtype=np.float64)

    def f(fd) -> float:
        return float(np.sum(ct * evaluate_graph(g, fd)[output]))

    out = []
    for name in wrt:
        x = base[name]
        grad = np.zeros_like(x)
        flat, gflat = x.reshape(-1), grad.reshape(-1)
        for i in range(flat.size):
            keep = flat[i]
            h = eps * max(1.0, abs(keep))
            flat[i] = keep + h
            up = f(base)
            flat[i] = keep - h
            down = f(base)
            flat[i] = keep
            gflat[i] = (up - down) / (2 * h)
        out.append(grad)
    return out


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """||got - want|| / ||want|| (0 when both vanish) — the norm-wise error gradients are compared by."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    den = float(np.linalg.norm(want))
    num = float(np.linalg.norm(got - want))
    return num / den if den > 0 else num
