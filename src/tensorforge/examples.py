"""Built-in example models, built as ONNX in code (no downloads)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18


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


class _Builder:
    """Tiny helper to write ONNX graphs in code: b.op("Conv", [x, w], pads=[...]) -> output name."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def init(self, base: str, arr: np.ndarray) -> str:
        nm = self.name(base)
        self.inits.append(_init(nm, np.asarray(arr)))
        return nm

    def op(self, op: str, inputs: list[str], base: str | None = None, **attrs) -> str:
        out = self.name(base or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv_bn_relu(self, x: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True,
                     groups: int = 1) -> str:  # fmt: skip
        w = self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / (cin // groups * k * k))
        y = self.op("Conv", [x, self.init("w", w.astype(np.float32))], "conv", kernel_shape=[k, k],
                    strides=[stride, stride], pads=[k // 2] * 4, group=groups)  # fmt: skip
        bn = [self.rng.uniform(0.5, 1.5, cout), self.rng.standard_normal(cout) * 0.1,
              self.rng.standard_normal(cout) * 0.1, self.rng.uniform(0.5, 1.5, cout)]  # fmt: skip
        y = self.op("BatchNormalization", [y, *[self.init("bn", a.astype(np.float32)) for a in bn]], "bn")
        return self.op("Relu", [y], "relu") if relu else y

    def model(self, name: str, inputs, outputs) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tensorforge")


def resnet50(batch: int | str = 1, size: int = 224, classes: int = 1000, width: int = 64, blocks=(3, 4, 6, 3),
             seed: int = 0) -> onnx.ModelProto:  # fmt: skip
    """ResNet-50 (v1.5 bottleneck blocks, batchnorm unfolded, random weights); ``width``/``blocks``/``size``
    shrink it for tests."""
    b = _Builder(seed)
    x = b.conv_bn_relu("x", 3, width, 7, stride=2)
    x = b.op("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = width
    for stage, n in enumerate(blocks):
        mid = width * 2**stage
        cout = mid * 4
        for i in range(n):
            stride = 2 if (i == 0 and stage > 0) else 1
            y = b.conv_bn_relu(x, cin, mid, 1)
            y = b.conv_bn_relu(y, mid, mid, 3, stride=stride)
            y = b.conv_bn_relu(y, mid, cout, 1, relu=False)
            sc = b.conv_bn_relu(x, cin, cout, 1, stride=stride, relu=False) if (i == 0) else x
            x = b.op("Relu", [b.op("Add", [y, sc], "add")], "relu")
            cin = cout
    x = b.op("GlobalAveragePool", [x], "gap")
    x = b.op("Flatten", [x], "flatten", axis=1)
    w = (b.rng.standard_normal((classes, cin)) * np.sqrt(1.0 / cin)).astype(np.float32)
    x = b.op("Gemm", [x, b.init("fc_w", w), b.init("fc_b", np.zeros(classes, np.float32))], "fc", transB=1)
    return b.model("resnet50", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
                   [helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, classes])])  # fmt: skip


def mobilenet_v2(batch: int | str = 1, size: int = 224, classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """MobileNet-v2 (inverted residual blocks: 1x1 expand, 3x3 depthwise, 1x1 project; ReLU6 as Clip;
    batchnorm unfolded, random weights)."""
    b = _Builder(seed)
    six = b.init("six", np.array(6.0, np.float32))
    zero = b.init("zero", np.array(0.0, np.float32))

    def cbr(x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> str:
        y = b.conv_bn_relu(x, cin, cout, k, stride, relu=False, groups=groups)
        return b.op("Clip", [y, zero, six], "relu6") if act else y

    x = cbr("x", 3, 32, 3, 2)
    cin = 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)]:  # fmt: skip
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = cbr(x, cin, hidden, 1) if t != 1 else x
            y = cbr(y, hidden, hidden, 3, stride, groups=hidden)
            y = cbr(y, hidden, c, 1, act=False)
            x = b.op("Add", [x, y], "add") if stride == 1 and cin == c else y
            cin = c
    x = cbr(x, cin, 1280, 1)
    x = b.op("GlobalAveragePool", [x], "gap")
    x = b.op("Flatten", [x], "flatten", axis=1)
    w = (b.rng.standard_normal((classes, 1280)) * np.sqrt(1.0 / 1280)).astype(np.float32)
    x = b.op("Gemm", [x, b.init("fc_w", w), b.init("fc_b", np.zeros(classes, np.float32))], "fc", transB=1)
    return b.model("mobilenet_v2", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
                   [helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, classes])])  # fmt: skip


def bert_encoder(batch: int | str = 1, seq: int | str = 128, hidden: int = 384, heads: int = 12, layers: int = 6,
                 ffn: int | None = None, seed: int = 0) -> onnx.ModelProto:  # fmt: skip
    """A BERT-style encoder stack as PyTorch exports it (layer norm and GELU decomposed into primitive ops):
    input hidden states [batch, seq, hidden] -> output [batch, seq, hidden]."""
    b = _Builder(seed)
    ffn = ffn or 4 * hidden
    dh = hidden // heads

    def lin(x, n_in, n_out):
        w = (b.rng.standard_normal((n_in, n_out)) * np.sqrt(1.0 / n_in)).astype(np.float32)
        y = b.op("MatMul", [x, b.init("w", w)], "matmul")
        return b.op("Add", [y, b.init("b", (b.rng.standard_normal(n_out) * 0.02).astype(np.float32))], "bias")

    def layer_norm(x):
        mu = b.op("ReduceMean", [x, b.init("axes", np.array([-1], np.int64))], "ln_mean")
        d = b.op("Sub", [x, mu], "ln_sub")
        var = b.op("ReduceMean", [b.op("Mul", [d, d], "ln_sq"), b.init("axes", np.array([-1], np.int64))], "ln_var")
        den = b.op("Sqrt", [b.op("Add", [var, b.init("eps", np.array(1e-12, np.float32))], "ln_add")], "ln_sqrt")
        y = b.op("Div", [d, den], "ln_div")
        y = b.op("Mul", [y, b.init("gamma", b.rng.uniform(0.8, 1.2, hidden).astype(np.float32))], "ln_scale")
        return b.op("Add", [y, b.init("beta", (b.rng.standard_normal(hidden) * 0.02).astype(np.float32))], "ln_shift")

    def heads_split(x):
        x = b.op("Reshape", [x, b.init("shape", np.array([0, 0, heads, dh], np.int64))], "reshape")
        return b.op("Transpose", [x], "transpose", perm=[0, 2, 1, 3])

    x = "x"
    for _ in range(layers):
        q, k, v = (heads_split(lin(x, hidden, hidden)) for _ in range(3))
        kt = b.op("Transpose", [k], "transpose", perm=[0, 1, 3, 2])
        s = b.op("MatMul", [q, kt], "scores")
        s = b.op("Div", [s, b.init("scale", np.array(np.sqrt(dh), np.float32))], "scale")
        p = b.op("Softmax", [s], "softmax", axis=-1)
        ctx = b.op("MatMul", [p, v], "context")
        ctx = b.op("Transpose", [ctx], "transpose", perm=[0, 2, 1, 3])
        ctx = b.op("Reshape", [ctx, b.init("shape", np.array([0, 0, hidden], np.int64))], "reshape")
        x = layer_norm(b.op("Add", [lin(ctx, hidden, hidden), x], "residual"))
        h = lin(x, hidden, ffn)
        # GELU(h) = 0.5 * h * (1 + erf(h / sqrt(2)))
        e = b.op("Erf", [b.op("Div", [h, b.init("sqrt2", np.array(np.sqrt(2.0), np.float32))], "gelu_div")], "erf")
        g = b.op("Mul", [b.op("Mul", [h, b.op("Add", [e, b.init("one", np.array(1.0, np.float32))], "gelu_add")],
                              "gelu_mul"), b.init("half", np.array(0.5, np.float32))], "gelu")  # fmt: skip
        x = layer_norm(b.op("Add", [lin(g, ffn, hidden), x], "residual"))
    return b.model("bert_encoder", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, seq, hidden])],
                   [helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, seq, hidden])])  # fmt: skip
