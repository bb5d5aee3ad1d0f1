"""Models whose shapes are known only at run time (dynamic.py): symbolic dims compiled per shape with a
cache, shape-only subgraphs folded at specialization, shapes computed from input values, and
data-dependent output shapes (NonZero, Compress, Unique, TopK with a tensor k)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorforge as tfg
from helpers import assert_close, reference
from tensorforge.errors import InputError


def _model(nodes, inputs, outputs, inits=(), opset=18):
    g = helper.make_graph(nodes, "dyn", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _check(model, feeds, m=None):
    m = m or tfg.compile(model)
    got = m.run(feeds)
    for (name, g), w in zip(got.items(), reference(model, feeds)):
        assert_close(g, w, what=name)
    return m


def _vi(name, dt, shape):
    return helper.make_tensor_value_info(name, dt, shape)


def test_symbolic_batch_and_sequence_fold_shape_subgraph(rng):
    """Shape -> Gather -> Concat -> Reshape on symbolic (batch, seq) dims: one stage per shape, and the
    shape computation is folded away at specialization (no Shape/Gather/Concat kernel runs)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
        helper.make_node("Gather", ["s", "i1"], ["t"], axis=0),
        helper.make_node("Mul", ["t", "four"], ["t4"]),
        helper.make_node("Concat", ["b", "t4", "m1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("i0", 0), ("i1", 1), ("four", 4),
                                                                               ("m1", -1))]  # fmt: skip
    x_info = _vi("x", TensorProto.FLOAT, ["batch", "seq", 8])
    model = _model(nodes, [x_info], [_vi("y", TensorProto.FLOAT, None)], inits)
    m = tfg.compile(model)
    assert isinstance(m, tfg.DynamicModel)
    for b, t in [(2, 5), (1, 3), (2, 5)]:
        _check(model, {"x": rng.standard_normal((b, t, 8)).astype(np.float32)}, m)
    assert m.compiled_shapes == [((1, 3, 8),), ((2, 5, 8),)]
    for st in m.stages:
        ops = {n.op for n in st.graph.nodes}
        assert ops == {"Reshape", "Relu"}, ops


def test_shape_input_compiled_in_per_value(rng):
    """A Reshape target given as a graph input is compiled in as a constant, once per distinct value."""
    model = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                   [_vi("x", TensorProto.FLOAT, [4, 6]), _vi("shape", TensorProto.INT64, [2])],
                   [_vi("y", TensorProto.FLOAT, None)])  # fmt: skip
    m = tfg.compile(model)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    for s in ([3, 8], [-1, 2], [3, 8]):
        _check(model, {"x": x, "shape": np.array(s, np.int64)}, m)
    assert len(m.stages) == 2


def test_range_and_onehot_from_runtime_scalars(rng):
    nodes = [helper.make_node("Range", ["a", "b", "c"], ["r"]), helper.make_node("OneHot", ["i", "d", "v"], ["o"])]
    model = _model(nodes, [_vi("a", TensorProto.FLOAT, []), _vi("b", TensorProto.FLOAT, []),
                           _vi("c", TensorProto.FLOAT, []), _vi("i", TensorProto.INT64, [5]),
                           _vi("d", TensorProto.FLOAT, []), _vi("v", TensorProto.FLOAT, [2])],
                   [_vi("r", TensorProto.FLOAT, None), _vi("o", TensorProto.FLOAT, None)])  # fmt: skip
    m = tfg.compile(model)
    for a, b, c, d in [(0.5, 4.0, 0.75, 6.0), (2.0, -3.0, -1.5, 3.0)]:
        feeds = {"a": np.array(a, np.float32), "b": np.array(b, np.float32), "c": np.array(c, np.float32),
                 "i": rng.integers(-3, 5, 5).astype(np.int64), "d": np.array(d, np.float32),
                 "v": np.array([0.0, 2.5], np.float32)}  # fmt: skip
        _check(model, feeds, m)


def test_nonzero_between_compiled_segments(rng):
    """x -> Relu -> NonZero -> Transpose -> GatherND(x): the graph runs as segment, NonZero, segment."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NonZero", ["r"], ["nz"]),
             helper.make_node("Transpose", ["nz"], ["idx"], perm=[1, 0]),
             helper.make_node("GatherND", ["x", "idx"], ["g"]), helper.make_node("Mul", ["g", "g"], ["y"])]  # fmt: skip
    model = _model(nodes, [_vi("x", TensorProto.FLOAT, [3, 7])], [_vi("y", TensorProto.FLOAT, None)])
    m = tfg.compile(model)
    assert isinstance(m, tfg.DynamicModel)
    for _ in range(3):
        _check(model, {"x": rng.standard_normal((3, 7)).astype(np.float32)}, m)
    x = -np.ones((3, 7), np.float32)  # nothing selected: empty tensors flow through
    assert m(x).shape == (0,)


def test_topk_with_tensor_k_compress_unique(rng):
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1),
             helper.make_node("Compress", ["x", "c"], ["cx"], axis=0),
             helper.make_node("Unique", ["u"], ["uy", "ui", "uinv", "uc"], sorted=1)]  # fmt: skip
    model = _model(nodes, [_vi("x", TensorProto.FLOAT, [4, 9]), _vi("k", TensorProto.INT64, [1]),
                           _vi("c", TensorProto.BOOL, [4]), _vi("u", TensorProto.INT32, [12])],
                   [_vi(n, TensorProto.UNDEFINED, None) for n in ("v", "i", "cx", "uy", "ui", "uinv", "uc")],
                   )  # fmt: skip
    m = tfg.compile(model)
    for k in (2, 5):
        feeds = {"x": rng.standard_normal((4, 9)).astype(np.float32), "k": np.array([k], np.int64),
                 "c": rng.random(4) > 0.4, "u": rng.integers(0, 5, 12).astype(np.int32)}  # fmt: skip
        _check(model, feeds, m)


def test_dynamic_input_errors(rng):
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, ["n", 4])],
                   [_vi("y", TensorProto.FLOAT, None)])  # fmt: skip
    m = tfg.compile(model)
    with pytest.raises(InputError, match="expected"):
        m(np.zeros((2, 5), np.float32))
    with pytest.raises(InputError, match="dtype"):
        m(np.zeros((2, 4), np.float64))
    with pytest.raises(InputError, match="missing"):
        m.run({})
    _ = onnx
