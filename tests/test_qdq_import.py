"""QDQ models written by onnxruntime.quantization import as integer kernels (frontends/onnx_qdq.py) and
match ONNX Runtime on the same quantized model within one quantization step of the output."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorforge as tfg

ort = pytest.importorskip("onnxruntime")
oq = pytest.importorskip("onnxruntime.quantization")


def _cnn(rng) -> onnx.ModelProto:
    inits = []

    def w(name, shape, scale):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))

    w("w1", (16, 3, 3, 3), 0.3), w("b1", (16,), 0.1), w("w2", (24, 16, 3, 3), 0.1), w("b2", (24,), 0.1)
    w("w3", (24, 1, 3, 3), 0.3), w("w4", (20, 24, 1, 1), 0.2)
    w("fw", (20 * 4 * 4, 10), 0.05), w("fb", (10,), 0.1)
    inits.append(numpy_helper.from_array(np.array([0, -1], np.int64), "shp"))
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["c3"], pads=[1, 1, 1, 1], group=24),
             helper.make_node("Conv", ["c3", "w4"], ["c4"]),
             helper.make_node("MaxPool", ["c4"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["p", "shp"], ["f"]),
             helper.make_node("MatMul", ["f", "fw"], ["m"]),
             helper.make_node("Add", ["m", "fb"], ["y"])]  # fmt: skip
    g = helper.make_graph(nodes, "qcnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])], inits)  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _mlp(rng) -> onnx.ModelProto:
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n)
             for n, s in [("w1", (40, 64)), ("b1", (40,)), ("w2", (40, 24)), ("b2", (24,))]]  # fmt: skip
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["m"]),
             helper.make_node("Add", ["m", "b2"], ["y"])]  # fmt: skip
    g = helper.make_graph(nodes, "qmlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 24])], inits)  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


class _Reader(oq.CalibrationDataReader):
    def __init__(self, feeds):
        self.it = iter(feeds)

    def get_next(self):
        return next(self.it, None)


def _quantized(tmp_path, model, samples, act):
    src, dst = tmp_path / "f32.onnx", tmp_path / f"q_{act}.onnx"
    onnx.save(model, src)
    oq.quantize_static(str(src), str(dst), _Reader(samples), quant_format=oq.QuantFormat.QDQ, per_channel=True,
                       activation_type=oq.QuantType.QUInt8 if act == "u8" else oq.QuantType.QInt8,
                       weight_type=oq.QuantType.QInt8)  # fmt: skip
    return onnx.load(dst)


def _output_step(q: onnx.ModelProto) -> float:
    """The scale of the DequantizeLinear that produces the graph output."""
    out = q.graph.output[0].name
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    for n in q.graph.node:
        if out in n.output:
            assert n.op_type == "DequantizeLinear"
            return float(inits[n.input[1]])
    raise AssertionError("no output DequantizeLinear")


def _ort(q: onnx.ModelProto, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(q.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize("act", ["u8", "s8"])
@pytest.mark.parametrize("build", [_cnn, _mlp], ids=["cnn", "mlp"])
def test_qdq_model_runs_integer_kernels_and_matches_ort(tmp_path, rng, act, build):
    model = build(rng)
    name, shape = model.graph.input[0].name, [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    samples = [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(6)]
    q = _quantized(tmp_path, model, samples, act)
    cm = tfg.compile(q)
    ops = {n.op for n in cm.graph.nodes}
    fused = str(cm.graph)
    # the products are integer kernels, not dequantized float Conv/MatMul/Gemm
    assert "ConvInteger" in fused or "MatMulInteger" in fused, ops
    for op in ("Conv", "MatMul", "Gemm"):
        assert f" {op}(" not in fused and f"= {op}(" not in fused, fused
    step = _output_step(q)
    for _ in range(3):
        x = rng.standard_normal(shape).astype(np.float32) * 1.5
        want, got = _ort(q, {name: x}), cm(x)
        err = np.abs(got.astype(np.float64) - want)
        # within one output step everywhere (a rounding tie taken the other way upstream moves a value by at
        # most one step here on these sizes), and exactly equal almost everywhere
        assert err.max() <= step * 1.001 + 1e-6, (err.max(), step)
        assert np.mean(err > 1e-6) < 0.05


def test_unrecognized_qdq_stays_correct(rng):
    """A DequantizeLinear with a blocked scale is not folded: the model still computes its float meaning."""
    w_q = rng.integers(-100, 100, (8, 6)).astype(np.int8)
    scale = (rng.random((2, 6)) * 0.05 + 0.01).astype(np.float32)
    inits = [numpy_helper.from_array(w_q, "wq"), numpy_helper.from_array(scale, "ws")]
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], axis=0, block_size=4),
             helper.make_node("MatMul", ["x", "w"], ["y"])]  # fmt: skip
    g = helper.make_graph(nodes, "blocked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 6])], inits)  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    x = rng.standard_normal((3, 8)).astype(np.float32)
    w = w_q.astype(np.float64) * np.repeat(scale, 4, axis=0)
    np.testing.assert_allclose(tfg.compile(m)(x), x.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)


def _branchy(rng) -> onnx.ModelProto:
    """Conv, LeakyRelu, Sigmoid, Mul, Add, Concat, AveragePool, GlobalAveragePool, Gemm, Softmax: what ONNX
    Runtime's QOperator format turns into com.microsoft QLinear* ops."""
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
             for n, s in [("w1", (8, 3, 3, 3)), ("w2", (8, 3, 1, 1)), ("fw", (12, 16)), ("fb", (12,))]]  # fmt: skip
    inits.append(numpy_helper.from_array(np.array([0, -1], np.int64), "shp"))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("LeakyRelu", ["c1"], ["l1"], alpha=0.1),
             helper.make_node("Sigmoid", ["l1"], ["s1"]),
             helper.make_node("Mul", ["l1", "s1"], ["m1"]),
             helper.make_node("Conv", ["x", "w2"], ["c2"]),
             helper.make_node("Add", ["m1", "c2"], ["a1"]),
             helper.make_node("Concat", ["a1", "c2"], ["cat"], axis=1),
             helper.make_node("AveragePool", ["cat"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["ap"], ["gp"]),
             helper.make_node("Reshape", ["gp", "shp"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["g"], transB=1),
             helper.make_node("Softmax", ["g"], ["y"], axis=-1)]  # fmt: skip
    g = helper.make_graph(nodes, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 12])], inits)  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("build", [_cnn, _mlp, _branchy], ids=["cnn", "mlp", "branchy"])
def test_qoperator_models_match_ort(tmp_path, rng, build):
    """ONNX Runtime's QOperator format (QLinearConv/QLinearMatMul and its com.microsoft QGemm, QLinearAdd,
    QLinearMul, QLinearLeakyRelu, QLinearSigmoid, QLinearConcat, QLinearAveragePool, QLinearGlobalAveragePool,
    QLinearSoftmax) runs and matches ONNX Runtime within one output step."""
    model = build(rng)
    name, shape = model.graph.input[0].name, [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    samples = [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(6)]
    src, dst = tmp_path / "f32.onnx", tmp_path / "qop.onnx"
    onnx.save(model, src)
    oq.quantize_static(str(src), str(dst), _Reader(samples), quant_format=oq.QuantFormat.QOperator, per_channel=True)
    q = onnx.load(dst)
    ms_ops = {n.op_type for n in q.graph.node if n.domain == "com.microsoft"}
    assert ms_ops, [n.op_type for n in q.graph.node]
    if build is _branchy:
        assert {"QLinearLeakyRelu", "QLinearSigmoid", "QLinearConcat", "QLinearGlobalAveragePool", "QGemm"} <= ms_ops
    step = _output_step(q)
    cm = tfg.compile(q)
    for _ in range(3):
        x = rng.standard_normal(shape).astype(np.float32)
        err = np.abs(cm(x).astype(np.float64) - _ort(q, {name: x}))
        assert err.max() <= step * 1.001 + 1e-6, (err.max(), step)


def test_bias_through_identity_folds(rng):
    """onnxruntime.quantization writes a bias shared by several convolutions as Identity(DequantizeLinear(b_q)):
    the conv still folds into ConvInteger (in torchvision's ResNet-50, 41 of 53 convolutions), and computes the
    float meaning of the QDQ graph."""
    xq = rng.integers(0, 256, (1, 4, 6, 6)).astype(np.uint8)
    wq = rng.integers(-100, 100, (5, 4, 3, 3)).astype(np.int8)
    bq = rng.integers(-500, 500, 5).astype(np.int32)
    xs, ws = np.float32(0.02), (rng.random(5) * 0.01 + 0.005).astype(np.float32)
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in [
            (wq, "wq"),
            (ws, "ws"),
            (np.zeros(5, np.int8), "wz"),
            (bq, "bq"),
            ((xs * ws).astype(np.float32), "bs"),
            (np.array(xs), "xs"),
            (np.array(7, np.uint8), "xz"),
        ]
    ]
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wf"], axis=0),
             helper.make_node("DequantizeLinear", ["bq", "bs"], ["bf"], axis=0),
             helper.make_node("Identity", ["bf"], ["b"]),
             helper.make_node("Conv", ["xf", "wf", "b"], ["y"], pads=[1, 1, 1, 1])]  # fmt: skip
    g = helper.make_graph(nodes, "idbias", [helper.make_tensor_value_info("x", TensorProto.UINT8, list(xq.shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    from tensorforge.compiler import to_graph

    assert [n.op for n in to_graph(m).nodes].count("ConvInteger") == 1
    compiled = tfg.compile(m)
    want = onnx.reference.ReferenceEvaluator(m).run(None, {"x": xq})[0]
    np.testing.assert_allclose(compiled.run({"x": xq})["y"], want, rtol=1e-4, atol=1e-4)
