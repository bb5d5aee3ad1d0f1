"""Property test: random valid graphs compiled at -O0 (no passes, one kernel per node) and at -O3 (every
pass: folding, simplification, BatchNorm folding, CSE, fusion, in-place memory) compute the same outputs.

Graphs are drawn by hypothesis from a menu of ops that exercises every fusion kind: elementwise chains
with broadcasting, reductions (trailing and inner axes) and softmax with their neighbours, MatMul / Gemm /
Conv with epilogues, BatchNormalization after Conv, layout ops, and intermediates used more than once.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import tensorforge as tfg  # noqa: E402
from tensorforge.ir.dtype import DType  # noqa: E402
from tensorforge.ir.graph import Graph, Node, TensorType, Value  # noqa: E402
from tensorforge.ops.registry import infer_node  # noqa: E402

UNARY = ["Relu", "Tanh", "Sigmoid", "Neg", "Abs", "Erf", "Softplus", "Exp"]
BINARY = ["Add", "Sub", "Mul", "Max", "Min"]


class _Builder:
    def __init__(self, draw):
        self.draw = draw
        self.nodes: list[Node] = []
        self.values: list[Value] = []
        self.n = 0
        self.rng = np.random.default_rng(draw(st.integers(0, 2**31)))

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}{self.n}"

    def const(self, shape, low=-1.0, high=1.0) -> Value:
        return Value(self.name("c"), const=self.rng.uniform(low, high, shape).astype(np.float32))

    def ints(self, xs) -> Value:
        return Value(self.name("i"), const=np.array(xs, dtype=np.int64))

    def emit(self, op: str, inputs, **attrs) -> Value:
        v = Value(self.name(op.lower()))
        node = Node(op, tuple(inputs), (v,), attrs, v.name)
        (v.type,) = infer_node(node, "random")
        self.nodes.append(node)
        self.values.append(v)
        return v

    def pick(self, pred=lambda v: True) -> Value | None:
        cands = [v for v in self.values if pred(v)]
        return self.draw(st.sampled_from(cands)) if cands else None


def _broadcast_shape(draw, shape) -> tuple[int, ...]:
    """A shape that broadcasts to ``shape``: some dims kept, others 1, leading dims maybe dropped."""
    keep = [draw(st.booleans()) for _ in shape]
    out = tuple(d if k else 1 for d, k in zip(shape, keep))
    drop = draw(st.integers(0, len(shape) - 1))
    return out[drop:]


def _step(b: _Builder, draw) -> None:
    x = b.pick()
    r = x.type.rank
    kind = draw(st.sampled_from(["unary", "binary", "binary_value", "reduce", "norm", "softmax", "matmul", "layout",
                                 "conv" if r == 4 else "unary", "gemm" if r == 2 else "binary"]))  # fmt: skip
    if kind == "unary":
        b.emit(draw(st.sampled_from(UNARY)), [b.emit("Tanh", [x])] if draw(st.booleans()) else [x])
    elif kind == "binary":
        c = b.const(_broadcast_shape(draw, x.shape), 0.5, 1.5)
        op = draw(st.sampled_from([*BINARY, "Div"]))
        b.emit(op, [x, c] if draw(st.booleans()) or op == "Div" else [c, x])
    elif kind == "binary_value":
        y = b.pick(lambda v: v is not x and v.type.rank <= r and
                   all(d in (1, e) for d, e in zip(v.shape[::-1], x.shape[::-1])))  # fmt: skip
        b.emit(draw(st.sampled_from(BINARY)), [x, y if y is not None else x])
    elif kind == "reduce":
        axes = sorted(draw(st.sets(st.integers(0, r - 1), min_size=1, max_size=r)))
        if draw(st.booleans()):
            axes = list(range(r - len(axes), r))  # trailing axes: a row reduction
        red = b.emit(draw(st.sampled_from(["ReduceMean", "ReduceSum", "ReduceMax"])), [x, b.ints(axes)], keepdims=1)
        if draw(st.booleans()):  # layer-norm-like use of the reduced value
            b.emit("Sub", [x, red])
    elif kind == "norm":  # layer norm over the last k axes, as exporters decompose it
        axes = b.ints(list(range(r - draw(st.integers(1, r)), r)))
        d = b.emit("Sub", [x, b.emit("ReduceMean", [x, axes], keepdims=1)])
        var = b.emit("ReduceMean", [b.emit("Mul", [d, d]), axes], keepdims=1)
        y = b.emit("Div", [d, b.emit("Sqrt", [b.emit("Add", [var, b.const((), 1e-3, 1e-3)])])])
        b.emit("Add", [b.emit("Mul", [y, b.const(x.shape[-1:])]), b.const(x.shape[-1:])])
    elif kind == "softmax":
        b.emit(draw(st.sampled_from(["Softmax", "LogSoftmax"])), [x], axis=draw(st.integers(-r, r - 1)))
    elif kind == "matmul":
        n = draw(st.integers(1, 12))
        y = b.emit("MatMul", [x, b.const((x.shape[-1], n))])
        if draw(st.booleans()):
            b.emit("Add", [y, b.const((n,))])
    elif kind == "gemm":
        n = draw(st.integers(1, 12))
        trans = draw(st.integers(0, 1))
        w = b.const((n, x.shape[1]) if trans else (x.shape[1], n))
        b.emit("Gemm", [x, w, b.const((n,))], transB=trans, alpha=draw(st.sampled_from([1.0, 0.5])))
    elif kind == "layout":
        if draw(st.booleans()) or r < 2:
            perm = draw(st.permutations(list(range(r))))
            b.emit("Transpose", [x], perm=tuple(perm))
        else:
            shape = [*x.shape[:-2], x.shape[-2] * x.shape[-1]]
            b.emit("Reshape", [x, b.ints(shape)])
    elif kind == "conv":
        m, k = draw(st.integers(1, 6)), draw(st.sampled_from([1, 3]))
        y = b.emit("Conv", [x, b.const((m, x.shape[1], k, k)), b.const((m,))], pads=(k // 2,) * 4,
                   kernel_shape=(k, k))  # fmt: skip
        if draw(st.booleans()):
            bn = [b.const((m,), 0.5, 1.5), b.const((m,)), b.const((m,)), b.const((m,), 0.5, 1.5)]
            y = b.emit("BatchNormalization", [y, *bn], epsilon=1e-5)
        if draw(st.booleans()):
            b.emit("Relu", [y])


@st.composite
def random_graphs(draw) -> Graph:
    b = _Builder(draw)
    rank = draw(st.integers(2, 4))
    shape = tuple(draw(st.integers(1, 9)) for _ in range(rank))
    inputs = [Value("x", TensorType(DType.F32, shape))]
    if draw(st.booleans()):
        inputs.append(Value("y", TensorType(DType.F32, _broadcast_shape(draw, shape))))
    b.values = list(inputs)
    for _ in range(draw(st.integers(1, 8))):
        _step(b, draw)
    outs = [b.values[-1]]
    extra = b.pick(lambda v: v not in inputs and v is not outs[0])
    if extra is not None and draw(st.booleans()):
        outs.append(extra)  # an intermediate that is also an output: fusion must keep it
    return Graph(b.nodes, inputs, outs, name="random")


def _check(g: Graph, seed: int) -> None:
    rng = np.random.default_rng(seed)
    feeds = {v.name: rng.uniform(-2, 2, v.shape).astype(np.float32) for v in g.inputs}
    o0 = tfg.compile(g, opt_level=0, verify=True).run(feeds)
    o3 = tfg.compile(g, opt_level=3, verify=True).run(feeds)
    for name in o0:
        a, b = o0[name], o3[name]
        scale = max(1.0, float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else 1.0)
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * scale, equal_nan=True, err_msg=f"output {name}\n{g}")


EXAMPLES = int(os.environ.get("TENSORFORGE_HYPOTHESIS_EXAMPLES", "25"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs(), st.integers(0, 1000))
def test_o0_and_o3_agree_on_random_graphs(g, seed):
    _check(g, seed)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs(), st.integers(0, 1000))
def test_o0_and_o3_agree_on_many_random_graphs(g, seed):
    _check(g, seed)
