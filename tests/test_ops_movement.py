"""Data movement and generation ops (Split, Tile, Pad, Trilu, DepthToSpace, SpaceToDepth, ReverseSequence,
ConstantOfShape, Range, EyeLike) against the ONNX reference evaluator on random inputs, odd sizes and
several dtypes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto, helper

from helpers import check_model, one_node_model, rand


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8, np.float16])
@pytest.mark.parametrize("case", [((5, 7), 1, [2, 5]), ((9, 3), 0, None), ((2, 11, 3), -2, [1, 3, 7]),
                                  ((10,), 0, None)])  # fmt: skip
def test_split(case, dtype, rng):
    shape, axis, sizes = case
    x = rand(rng, shape, dtype, low=0, high=100)
    n = len(sizes) if sizes else 3
    consts = {"s": np.array(sizes, np.int64)} if sizes else {}
    attrs = {"axis": axis} if sizes else {"axis": axis, "num_outputs": n}
    check_model(one_node_model("Split", {"x": x}, attrs, consts=consts, n_outputs=n), {"x": x})


def test_split_legacy_and_after_compute(rng):
    """Opset 11 gives sizes as an attribute; a split of a computed (unmaterialized) tensor indexes it."""
    x = rand(rng, (4, 9))
    check_model(one_node_model("Split", {"x": x}, {"axis": 1, "split": [2, 7]}, n_outputs=2, opset=11), {"x": x})
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Split", ["r"], ["a", "b"], axis=0)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 9])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in "ab"])  # fmt: skip
    check_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), {"x": x})


@pytest.mark.parametrize("shape,reps", [((3, 5), [2, 3]), ((1, 4, 1), [3, 1, 5]), ((7,), [1]), ((2, 3), [0, 2])])
def test_tile(shape, reps, rng):
    x = rand(rng, shape, np.int32, low=-9, high=9)
    check_model(one_node_model("Tile", {"x": x}, consts={"r": np.array(reps, np.int64)}), {"x": x})


PADS = [
    ((3, 5), [1, 2, 0, 3]),
    ((2, 3, 7), [0, 1, 2, 1, 0, 3]),
    ((1, 2, 5, 5), [0, 0, 3, 1, 0, 0, 1, 4]),
]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("case", PADS, ids=str)
def test_pad(mode, case, rng):
    shape, pads = case
    x = rand(rng, shape)
    consts = {"p": np.array(pads, np.int64)}
    order = ["x", "p"]
    if mode == "constant":
        consts["v"] = np.array(1.5, np.float32)
        order.append("v")
    check_model(one_node_model("Pad", {"x": x}, {"mode": mode}, consts=consts, input_order=order), {"x": x})


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_negative_crops(mode, rng):
    """Negative pads crop (compared with numpy: the reference evaluator rejects negative pads)."""
    import tensorforge as tfg

    x = rand(rng, (4, 6))
    m = tfg.compile(one_node_model("Pad", {"x": x}, {"mode": mode}, consts={"p": np.array([-1, 2, 1, -2], np.int64)}))
    want = np.pad(x[1:, :-2], [(0, 1), (2, 0)], mode=mode)
    np.testing.assert_array_equal(m(x), want)


def test_pad_axes_and_runtime_value(rng):
    x = rand(rng, (3, 4, 5), np.int64, low=-50, high=50)
    v = np.array(-7, np.int64)
    consts = {"p": np.array([2, 1, 0, 3], np.int64), "a": np.array([0, -1], np.int64)}
    check_model(one_node_model("Pad", {"x": x, "v": v}, consts=consts, input_order=["x", "p", "v", "a"]),
                {"x": x, "v": v})  # fmt: skip
    check_model(one_node_model("Pad", {"x": x}, {"pads": [1, 0, 0, 0, 2, 1], "value": 3.0}, opset=10), {"x": x})


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, 0, 2, -1, -7])
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 7, 3)])
def test_trilu(upper, k, shape, rng):
    x = rand(rng, shape)
    consts = {} if k is None else {"k": np.array(k, np.int64)}
    check_model(one_node_model("Trilu", {"x": x}, {"upper": upper}, consts=consts), {"x": x})


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_space(mode, rng):
    x = rand(rng, (2, 12, 3, 5))
    check_model(one_node_model("DepthToSpace", {"x": x}, {"blocksize": 2, "mode": mode}), {"x": x})
    y = rand(rng, (2, 3, 6, 4))
    check_model(one_node_model("SpaceToDepth", {"y": y}, {"blocksize": 2}, opset=25), {"y": y})  # ONNX: no mode


@pytest.mark.parametrize("time_axis", [0, 1])
def test_reverse_sequence(time_axis, rng):
    shape = (5, 4, 3) if time_axis == 0 else (4, 5, 3)
    x = rand(rng, shape)
    lens = np.array([5, 1, 3, 0], np.int64)
    attrs = {"time_axis": time_axis, "batch_axis": 1 - time_axis}
    check_model(one_node_model("ReverseSequence", {"x": x, "l": lens}, attrs), {"x": x, "l": lens})


def test_constant_of_shape_and_eyelike(rng):
    value = helper.make_tensor("v", TensorProto.INT32, [1], [7])
    model = one_node_model("ConstantOfShape", {}, {"value": value}, consts={"s": np.array([3, 0, 2], np.int64)})
    check_model(model, {})
    model = one_node_model("ConstantOfShape", {}, {}, consts={"s": np.array([4, 33], np.int64)})
    check_model(model, {})
    for k in (0, 2, -1):
        x = rand(rng, (5, 7))
        check_model(one_node_model("EyeLike", {"x": x}, {"k": k, "dtype": TensorProto.INT32}), {"x": x})


@pytest.mark.parametrize("vals", [(0, 10, 3), (10, 4, -2), (1.5, 7.25, 0.5), (5, 5, 1), (-3.0, 9.0, 0.7)])
def test_range(vals):
    dt = np.float32 if any(isinstance(v, float) for v in vals) else np.int64
    consts = {n: np.array(v, dt) for n, v in zip(("a", "b", "c"), vals)}
    check_model(one_node_model("Range", {}, consts=consts), {})


@pytest.mark.parametrize("c,g,hw", [(12, 3, (5, 7)), (112, 4, (9, 17)), (6, 2, (1, 1)), (8, 8, (3, 1))])
def test_channel_shuffle_of_computed_tensor(c, g, hw, rng):
    """ShuffleNet's channel shuffle (Reshape -> Transpose -> Reshape) of an unmaterialized tensor: exact,
    and the reshapes map indices per group of dims, so the copy kernel divides only channel indices (one
    // and one %), never the vectorized pixel index (a gather per lane)."""
    h, w = hw
    shape5 = np.array([1, g, c // g, h, w], np.int64)
    shape4 = np.array([1, c, h, w], np.int64)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, h, w])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "s5"], ["a"]),
             helper.make_node("Transpose", ["a"], ["t"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "s4"], ["b"]), helper.make_node("Neg", ["b"], ["y"])]  # fmt: skip
    inits = [helper.make_tensor("s5", TensorProto.INT64, [5], shape5), helper.make_tensor("s4", TensorProto.INT64,
                                                                                           [4], shape4)]  # fmt: skip
    model = helper.make_model(helper.make_graph(nodes, "shuffle", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 18)])  # fmt: skip
    xv = rand(rng, (1, c, h, w))
    m = check_model(model, {"x": xv}, rtol=0, atol=0)
    want = -np.maximum(xv, 0).reshape(1, g, c // g, h, w).transpose(0, 2, 1, 3, 4).reshape(1, c, h, w)
    np.testing.assert_array_equal(m(xv), want)
    text = m.kernel_ir()
    simple = re.findall(r"\((\w+) (?://|%) \d+\)", text)  # a loop variable divided by a constant
    inner = re.findall(r"for (\w+) in", text)[-1]
    assert len(simple) == text.count("//") + text.count(" % "), text  # nothing else is divided
    assert inner not in simple, text
