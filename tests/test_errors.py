"""Every bad-input case raises a tensorforge error that names the node, op, expected and actual values."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import tensorforge as tfg
from helpers import one_node_model
from tensorforge.examples import mlp


def test_missing_file(tmp_path):
    with pytest.raises(tfg.ModelLoadError, match="does not exist"):
        tfg.compile(str(tmp_path / "nope.onnx"))


def test_truncated_file(tmp_path):
    data = mlp().SerializeToString()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(tfg.ModelLoadError, match="not a valid ONNX file|truncated"):
        tfg.compile(str(p))


def test_garbage_file(tmp_path):
    p = tmp_path / "garbage.onnx"
    p.write_bytes(b"\x00\x01 this is not a protobuf \xff" * 10)
    with pytest.raises(tfg.ModelLoadError):
        tfg.compile(str(p))


def test_empty_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(tfg.ModelLoadError, match="empty"):
        tfg.compile(str(p))


def test_missing_input():
    m = tfg.compile(mlp())
    with pytest.raises(tfg.InputError, match=r"missing input\(s\) \['x'\]"):
        m()
    with pytest.raises(tfg.InputError, match="missing"):
        m.run({})


def test_unknown_input_name():
    m = tfg.compile(mlp())
    with pytest.raises(tfg.InputError, match="unknown input.*'y'"):
        m(y=np.zeros((1, 784), np.float32))


def test_wrong_shape():
    m = tfg.compile(mlp())
    with pytest.raises(tfg.InputError, match=r"model 'mlp': input 'x' has shape \[1, 783\], expected \[1, 784\]"):
        m(np.zeros((1, 783), np.float32))


def test_wrong_dtype():
    m = tfg.compile(mlp())
    with pytest.raises(tfg.InputError, match=r"input 'x' has dtype float64, expected float32"):
        m(np.zeros((1, 784), np.float64))


def test_not_an_array():
    m = tfg.compile(mlp())
    with pytest.raises(tfg.InputError, match="numpy array"):
        m("hello")


def test_dynamic_model_wrong_rank():
    m = tfg.compile(mlp(batch="N"))
    with pytest.raises(tfg.InputError, match="rank"):
        m(np.zeros((784,), np.float32))


def test_unsupported_ops_reported_all_at_once():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="ok"),
        helper.make_node("FancyOp", ["a"], ["b"], name="first_bad"),
        helper.make_node("OtherFancyOp", ["b"], ["y"], name="second_bad"),
    ]
    g = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(tfg.UnsupportedError) as e:
        tfg.compile(model)
    msg = str(e.value)
    assert "first_bad" in msg and "FancyOp" in msg and "second_bad" in msg and "OtherFancyOp" in msg
    assert len(e.value.problems) == 2


def test_unsupported_domain():
    node = helper.make_node("Foo", ["x"], ["y"], name="custom", domain="com.example")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    with pytest.raises(tfg.UnsupportedError, match="custom.*com.example"):
        tfg.compile(model)


def test_unsupported_attribute():
    x = np.zeros((1, 2, 4, 4), np.float32)
    model = one_node_model("Resize", {"x": x}, {"mode": "nearest", "antialias": 1},
                           consts={"r": np.array([], np.float32), "s": np.array([1, 1, 2, 2], np.float32)})  # fmt: skip
    with pytest.raises(tfg.UnsupportedError, match="resize_node.*Resize.*antialias"):
        tfg.compile(model)
    model = one_node_model("Conv", {"x": x}, {"auto_pad": "WEIRD"}, consts={"w": np.zeros((1, 2, 1, 1), np.float32)})
    with pytest.raises(tfg.ShapeError, match="conv_node.*Conv.*auto_pad"):
        tfg.compile(model)


def test_shape_mismatch_names_node_and_shapes():
    a = np.zeros((3, 5), np.float32)
    model = one_node_model("Gemm", {"a": a}, consts={"b": np.zeros((4, 2), np.float32)})
    with pytest.raises(tfg.ShapeError, match=r"gemm_node.*Gemm.*inner dimensions differ.*K=5.*K=4"):
        tfg.compile(model)
    with pytest.raises(tfg.ShapeError, match=r"add_node.*Add.*cannot be broadcast"):
        tfg.compile(one_node_model("Add", {"a": a, "b": np.zeros((4,), np.float32)}))


def test_dtype_mismatch_names_node():
    with pytest.raises(tfg.ShapeError, match=r"add_node.*Add.*one dtype.*f32.*f64"):
        tfg.compile(one_node_model("Add", {"a": np.zeros(3, np.float32), "b": np.zeros(3, np.float64)}))
    with pytest.raises(tfg.ShapeError, match=r"sigmoid_node.*Sigmoid.*dtype i32.*float"):
        tfg.compile(one_node_model("Sigmoid", {"a": np.zeros(3, np.int32)}))


def test_unknown_target():
    with pytest.raises(tfg.TargetError, match="unknown target 'riscv'.*known targets"):
        tfg.assembly(mlp(), target="riscv")
    with pytest.raises(tfg.TensorforgeError, match="cannot run in this process"):
        tfg.compile(mlp(), target="aarch64")


def test_string_inputs_unsupported():
    node = helper.make_node("Identity", ["x"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.STRING, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.STRING, [2])])  # fmt: skip
    with pytest.raises(tfg.UnsupportedError, match="STRING"):
        tfg.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_undefined_input_reference():
    node = helper.make_node("Relu", ["nope"], ["y"], name="r")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])  # fmt: skip
    with pytest.raises(tfg.ModelLoadError, match="'r'.*'nope' is not defined"):
        tfg.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_native_code_never_sees_bad_input():
    """After any rejected call the model still works (nothing was written into its buffers)."""
    m = tfg.compile(mlp())
    x = np.random.default_rng(0).standard_normal((1, 784)).astype(np.float32)
    y = m(x)
    for bad in (np.zeros((2, 784), np.float32), np.zeros((1, 784), np.int32), np.zeros((784,), np.float32)):
        with pytest.raises(tfg.InputError):
            m(bad)
    np.testing.assert_array_equal(m(x), y)
    _ = onnx


def test_unsupported_ops_and_attributes_reported_at_once():
    """Unsupported ops are found before converting; unsupported attributes and modes while converting —
    all of them, with their node names, in one error."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Resize", ["x", "", "s"], ["a"], mode="nearest", antialias=1, name="resize_a"),
             helper.make_node("Dropout", ["x", "r", "t"], ["b"], name="dropout_b"),
             helper.make_node("Add", ["a", "b"], ["y"], name="add")]  # fmt: skip
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 2, 2]),
             helper.make_tensor("r", TensorProto.FLOAT, [], [0.5]), helper.make_tensor("t", TensorProto.BOOL, [], [1])]
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(tfg.UnsupportedError) as e:
        tfg.compile(model)
    msg = str(e.value)
    assert "2 unsupported" in msg and "resize_a" in msg and "antialias" in msg and "dropout_b" in msg, msg
