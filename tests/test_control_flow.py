"""If, Loop and Scan: resolved at import when the condition / trip count is known, or by the dynamic
runtime once it is (compiled in per value); unsupported constructs are reported with node names."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorforge as tfg
from helpers import assert_close, reference
from tensorforge.errors import UnsupportedError


def _vi(name, dt, shape):
    return helper.make_tensor_value_info(name, dt, shape)


def _model(nodes, inputs, outputs, inits=(), opset=18):
    return helper.make_model(helper.make_graph(nodes, "cf", inputs, outputs, list(inits)),
                             opset_imports=[helper.make_opsetid("", opset)])  # fmt: skip


def _check(model, feeds, m=None):
    m = m or tfg.compile(model)
    for (name, g), w in zip(m.run(feeds).items(), reference(model, feeds)):
        assert_close(g, w, what=name)
    return m


def _branches():
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["t"])], "then", [],
                               [_vi("t", TensorProto.FLOAT, None)])  # fmt: skip
    else_g = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["e"], keepdims=0)], "else", [],
                               [_vi("e", TensorProto.FLOAT, None)])  # fmt: skip
    return then_g, else_g


def test_if_runtime_condition_branches_of_different_shapes(rng):
    then_g, else_g = _branches()
    node = helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)
    model = _model([node], [_vi("c", TensorProto.BOOL, []), _vi("x", TensorProto.FLOAT, [3, 4])],
                   [_vi("y", TensorProto.FLOAT, None)])  # fmt: skip
    m = tfg.compile(model)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    for c in (True, False, True):
        _check(model, {"c": np.array(c), "x": x}, m)


def test_if_condition_known_at_import(rng):
    then_g, else_g = _branches()
    nodes = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(False))),
             helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)]  # fmt: skip
    model = _model(nodes, [_vi("x", TensorProto.FLOAT, [3, 4])], [_vi("y", TensorProto.FLOAT, None)])
    m = tfg.compile(model)
    assert isinstance(m, tfg.CompiledModel)  # no control flow left
    _check(model, {"x": rng.standard_normal((3, 4)).astype(np.float32)}, m)


def _loop_body():
    # carried s -> s + x * i ; scan output: s
    nodes = [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "fi"], ["xi"]), helper.make_node("Add", ["s_in", "xi"], ["s_out"]),
             helper.make_node("Identity", ["s_out"], ["scan"])]  # fmt: skip
    return helper.make_graph(nodes, "body", [_vi("i", TensorProto.INT64, []), _vi("cond_in", TensorProto.BOOL, []),
                                             _vi("s_in", TensorProto.FLOAT, [4])],
                             [_vi("cond_out", TensorProto.BOOL, []), _vi("s_out", TensorProto.FLOAT, [4]),
                              _vi("scan", TensorProto.FLOAT, [4])])  # fmt: skip


@pytest.mark.parametrize("trip_input", [False, True])
def test_loop(trip_input, rng):
    node = helper.make_node("Loop", ["n", "", "s0"], ["s", "scans"], body=_loop_body())
    inputs = [_vi("x", TensorProto.FLOAT, [4]), _vi("s0", TensorProto.FLOAT, [4])]
    inits = []
    if trip_input:
        inputs.append(_vi("n", TensorProto.INT64, []))
    else:
        inits.append(numpy_helper.from_array(np.array(5, np.int64), "n"))
    model = _model([node], inputs, [_vi("s", TensorProto.FLOAT, None), _vi("scans", TensorProto.FLOAT, None)], inits)
    m = tfg.compile(model)
    for n in (5, 2, 5) if trip_input else (5,):
        # compared with numpy: the reference evaluator cannot run a Loop without a condition input
        x, s0 = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
        feeds = {"x": x, "s0": s0, **({"n": np.array(n, np.int64)} if trip_input else {})}
        s, scans = m.run(feeds).values()
        want = [s0 + x * sum(range(k + 1)) for k in range(n)]
        np.testing.assert_allclose(scans, np.stack(want), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(s, want[-1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reverse", [0, 1])
def test_scan(reverse, rng):
    body = helper.make_graph([helper.make_node("Add", ["acc", "xt"], ["acc2"]),
                              helper.make_node("Mul", ["acc2", "xt"], ["out"])], "b",
                             [_vi("acc", TensorProto.FLOAT, [3]), _vi("xt", TensorProto.FLOAT, [3])],
                             [_vi("acc2", TensorProto.FLOAT, [3]), _vi("out", TensorProto.FLOAT, [3])])  # fmt: skip
    node = helper.make_node("Scan", ["a0", "x"], ["a", "ys"], body=body, num_scan_inputs=1,
                            scan_input_axes=[1], scan_input_directions=[reverse], scan_output_axes=[1])  # fmt: skip
    model = _model([node], [_vi("a0", TensorProto.FLOAT, [3]), _vi("x", TensorProto.FLOAT, [3, 6])],
                   [_vi("a", TensorProto.FLOAT, None), _vi("ys", TensorProto.FLOAT, None)])  # fmt: skip
    # compared with numpy: the reference evaluator only scans axis 0, forwards
    a0, x = rng.standard_normal(3).astype(np.float32), rng.standard_normal((3, 6)).astype(np.float32)
    a, ys = tfg.compile(model)(a0, x)
    acc, outs = a0.astype(np.float64), []
    for t in (range(5, -1, -1) if reverse else range(6)):
        acc = acc + x[:, t]
        outs.append(acc * x[:, t])
    np.testing.assert_allclose(a, acc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ys, np.stack(outs, 1), rtol=1e-5, atol=1e-6)


def test_loop_with_data_dependent_exit_is_reported():
    body = helper.make_graph([helper.make_node("ReduceSum", ["v"], ["t"], keepdims=0),
                              helper.make_node("Less", ["t", "lim"], ["go"]),
                              helper.make_node("Add", ["v", "v"], ["v2"])], "body",
                             [_vi("i", TensorProto.INT64, []), _vi("c", TensorProto.BOOL, []),
                              _vi("v", TensorProto.FLOAT, [2])],
                             [_vi("go", TensorProto.BOOL, []), _vi("v2", TensorProto.FLOAT, [2])])  # fmt: skip
    node = helper.make_node("Loop", ["", "c0", "v0"], ["v"], body=body, name="grow")
    inits = [numpy_helper.from_array(np.array(True), "c0"), numpy_helper.from_array(np.array(100.0, np.float32), "lim")]
    model = _model([node], [_vi("v0", TensorProto.FLOAT, [2])], [_vi("v", TensorProto.FLOAT, None)], inits)
    with pytest.raises(UnsupportedError, match="grow.*computed from tensor data"):
        tfg.compile(model)


def test_unsupported_ops_inside_bodies_reported_at_once():
    bad = helper.make_graph([helper.make_node("StringNormalizer", ["x"], ["y"], name="norm")], "then", [],
                            [_vi("y", TensorProto.FLOAT, None)])  # fmt: skip
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=bad, else_branch=bad, name="branchy"),
             helper.make_node("ImageDecoder", ["y"], ["z"], name="decode")]  # fmt: skip
    model = _model(nodes, [_vi("c", TensorProto.BOOL, []), _vi("x", TensorProto.FLOAT, [2])],
                   [_vi("z", TensorProto.FLOAT, None)])  # fmt: skip
    with pytest.raises(UnsupportedError) as e:
        tfg.compile(model)
    text = str(e.value)
    assert "branchy/then_branch/norm" in text and "branchy/else_branch/norm" in text and "decode" in text
