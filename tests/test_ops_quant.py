"""Quantization ops (QuantizeLinear, DequantizeLinear per tensor / axis / block, MatMulInteger,
ConvInteger, QLinearMatMul, QLinearConv, DynamicQuantizeLinear) against the ONNX reference evaluator on
random data, int8 and uint8."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import check_model, one_node_model, rand


@pytest.mark.parametrize("qtype", [np.uint8, np.int8, np.int16])
@pytest.mark.parametrize("granularity", ["tensor", "axis", "block"])
def test_quantize_dequantize(qtype, granularity, rng):
    x = rand(rng, (3, 4, 6), low=-40, high=40)
    attrs = {"axis": 2}
    if granularity == "tensor":
        s, zshape = np.array(0.37, np.float32), ()
        attrs = {}
    elif granularity == "axis":
        s, zshape = rand(rng, (6,), low=0.1, high=0.5), (6,)
    else:
        s, zshape = rand(rng, (3, 4, 2), low=0.1, high=0.5), (3, 4, 2)
        attrs["block_size"] = 3
    lo = 0 if np.dtype(qtype).kind == "u" else -10
    zp = rand(rng, zshape, qtype, low=lo, high=10)
    check_model(one_node_model("QuantizeLinear", {"x": x, "s": s, "z": zp}, attrs, opset=21), {"x": x, "s": s, "z": zp})
    q = rand(rng, x.shape, qtype, low=lo, high=100)
    check_model(one_node_model("DequantizeLinear", {"q": q, "s": s, "z": zp}, attrs, opset=21),
                {"q": q, "s": s, "z": zp})  # fmt: skip


def test_matmul_integer_and_qlinear_matmul(rng):
    a = rand(rng, (5, 17), np.uint8, low=0, high=255)
    b = rand(rng, (17, 9), np.int8, low=-128, high=127)
    azp, bzp = np.array(12, np.uint8), rand(rng, (9,), np.int8, low=-5, high=5)
    feeds = {"a": a, "b": b, "az": azp, "bz": bzp}
    check_model(one_node_model("MatMulInteger", feeds), feeds)
    feeds = {"a": a, "as": np.array(0.02, np.float32), "az": azp, "b": b, "bs": rand(rng, (9,), low=0.01, high=0.05),
             "bz": bzp, "ys": np.array(0.3, np.float32), "yz": np.array(120, np.uint8)}  # fmt: skip
    check_model(one_node_model("QLinearMatMul", feeds), feeds)


def test_conv_integer_and_qlinear_conv(rng):
    x = rand(rng, (1, 3, 6, 5), np.uint8, low=0, high=255)
    w = rand(rng, (4, 3, 3, 3), np.uint8, low=0, high=255)
    feeds = {"x": x, "w": w, "xz": np.array(100, np.uint8), "wz": rand(rng, (4,), np.uint8, low=0, high=255)}
    check_model(one_node_model("ConvInteger", feeds, {"pads": [1, 1, 1, 1]}), feeds)
    feeds = {"x": x, "xs": np.array(0.01, np.float32), "xz": np.array(100, np.uint8), "w": w,
             "ws": rand(rng, (4,), low=0.001, high=0.01), "wz": rand(rng, (4,), np.uint8, low=0, high=255),
             "ys": np.array(0.5, np.float32), "yz": np.array(30, np.uint8),
             "b": rand(rng, (4,), np.int32, low=-1000, high=1000)}  # fmt: skip
    check_model(one_node_model("QLinearConv", feeds, {"strides": [2, 1]}), feeds)


def test_dynamic_quantize_linear(rng):
    x = rand(rng, (4, 13), low=-3, high=5)
    check_model(one_node_model("DynamicQuantizeLinear", {"x": x}, n_outputs=3), {"x": x}, rtol=1e-6)
