"""Built-in example models, built as ONNX in code (no downloads)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(arr), name)


def mlp(batch: int | str = 1, sizes=(784, 256, 10), seed: int = 0, softmax: bool = True) -> onnx.ModelProto:
    """The classic MLP: 784 -> 256 (ReLU) -> 10 -> softmax, with He-initialized weights."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "x"
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        inits += [_init(f"W{i + 1}", w), _init(f"b{i + 1}", b)]
        out = f"fc{i + 1}"
        nodes.append(helper.make_node("Gemm", [x, f"W{i + 1}", f"b{i + 1}"], [out], name=f"fc{i + 1}"))
        x = out
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"relu{i + 1}"], name=f"relu{i + 1}"))
            x = f"relu{i + 1}"
    if softmax:
        nodes.append(helper.make_node("Softmax", [x], ["probs"], name="softmax", axis=-1))
        x = "probs"
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, sizes[0]])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, sizes[-1]])],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tensorforge")


def small_cnn(
    batch: int | str = 1, channels: int = 3, size: int = 16, classes: int = 10, seed: int = 0
) -> onnx.ModelProto:
    """conv3x3 -> batchnorm -> relu -> maxpool -> flatten -> gemm."""
    rng = np.random.default_rng(seed)
    c1 = 8
    w = (rng.standard_normal((c1, channels, 3, 3)) * np.sqrt(2.0 / (channels * 9))).astype(np.float32)
    b = (rng.standard_normal(c1) * 0.1).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, c1).astype(np.float32)
    shift = (rng.standard_normal(c1) * 0.1).astype(np.float32)
    mean = (rng.standard_normal(c1) * 0.1).astype(np.float32)
    var = rng.uniform(0.5, 1.5, c1).astype(np.float32)
    pooled = size // 2
    fc_in = c1 * pooled * pooled
    fw = (rng.standard_normal((classes, fc_in)) * np.sqrt(1.0 / fc_in)).astype(np.float32)
    fb = (rng.standard_normal(classes) * 0.01).astype(np.float32)
    inits = [_init(n, a) for n, a in [("conv_w", w), ("conv_b", b), ("bn_scale", scale), ("bn_shift", shift),
                                      ("bn_mean", mean), ("bn_var", var), ("fc_w", fw), ("fc_b", fb)]]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c", "bn_scale", "bn_shift", "bn_mean", "bn_var"], ["bn"], name="bn", epsilon=1e-5
        ),  # fmt: skip
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tensorforge")
