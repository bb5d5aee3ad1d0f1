"""BitCast, BitShift edge cases, NonMaxSuppression and exact double -> half casts."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from helpers import check_model, one_node_model, rand


@pytest.mark.parametrize("src,dst", [(np.float32, TensorProto.INT32), (np.int64, TensorProto.DOUBLE),
                                     (np.float16, TensorProto.INT16), (np.bool_, TensorProto.UINT8),
                                     (np.int8, TensorProto.UINT8)])  # fmt: skip
def test_bitcast(src, dst, rng):
    x = rand(rng, (3, 17), src, low=-100, high=100)
    check_model(one_node_model("BitCast", {"x": x}, {"to": dst}, opset=26), {"x": x})


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.int64])
def test_bitshift_out_of_range_amounts(direction, dtype):
    """Shifts by >= the bit width (or negative, read as unsigned) move every bit out."""
    import tensorforge as tfg

    info = np.iinfo(dtype)
    bits = info.bits
    x = np.array([info.min, -5 if info.min < 0 else 5, 7, info.max, 1, 3], dtype)
    y = np.array([1, bits, bits + 3, 0, bits - 1, -1 if info.min < 0 else 200], dtype)
    m = tfg.compile(one_node_model("BitShift", {"x": x, "y": y}, {"direction": direction}))
    want = []
    for a, s in zip(x.tolist(), y.tolist()):
        s = s % (1 << bits)  # unsigned amount
        if s >= bits:
            want.append(0 if direction == "LEFT" or a >= 0 else -1)
        else:
            want.append((a << s) if direction == "LEFT" else (a >> s))
    want = np.array([w % (1 << bits) for w in want], np.uint64).astype(np.dtype(dtype).str.replace("i", "u"))
    np.testing.assert_array_equal(m(x, y).view(want.dtype), want)


@pytest.mark.parametrize("center", [0, 1])
def test_non_max_suppression(center, rng):
    boxes = rand(rng, (2, 12, 4), low=0, high=10)
    if center:
        boxes[..., 2:] = np.abs(boxes[..., 2:]) + 0.5
    scores = rand(rng, (2, 3, 12), low=0, high=1)
    consts = {"m": np.array([4], np.int64), "iou": np.array([0.3], np.float32), "st": np.array([0.2], np.float32)}
    feeds = {"b": boxes, "s": scores}
    check_model(one_node_model("NonMaxSuppression", feeds, {"center_point_box": center}, consts=consts), feeds)


def test_double_to_half_is_correctly_rounded():
    """Doubles just off half-precision ties: rounding through float to nearest would be off by one ulp."""
    import tensorforge as tfg

    ties = np.array([1 + 2**-11, 1 + 3 * 2**-11, 2048 + 1, 0.1], np.float64)
    x = np.concatenate([ties, ties + 2**-40, ties - 2**-40, -ties, [65520.0, 1e-8, np.inf, np.nan]])
    m = tfg.compile(one_node_model("Cast", {"x": x}, {"to": TensorProto.FLOAT16}))
    np.testing.assert_array_equal(m(x), x.astype(np.float16))


def test_inputs_keep_their_onnx_names(rng):
    """Inputs are fed by the names the model gives them, even names that are not identifiers."""
    from onnx import helper

    import tensorforge as tfg

    g = helper.make_graph([helper.make_node("Relu", ["gpu_0/data:0"], ["out/y"])], "g",
                          [helper.make_tensor_value_info("gpu_0/data:0", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("out/y", TensorProto.FLOAT, [2, 3])])  # fmt: skip
    m = tfg.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    x = rand(rng, (2, 3))
    assert m.input_names == ["gpu_0/data:0"]
    np.testing.assert_array_equal(m.run({"gpu_0/data:0": x})["out/y"], np.maximum(x, 0))
