"""Post-training quantization (tfg.quantize / tensorforge quantize): calibration data and observers, QDQ
static quantization checked against ONNX Runtime (which runs our output, and whose own quantize_static is
the yardstick for accuracy), dynamic quantization, fp32-kept layers, zero ranges, and every bad input."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorforge as tfg
from tensorforge.compress.calibrate import Entropy, Histogram, Percentile, kl_threshold
from tensorforge.errors import InputError, TensorforgeError


def _init(name, a):
    return numpy_helper.from_array(np.ascontiguousarray(a), name)


def cnn(seed=0, batch="N"):
    """conv-relu-conv-add(residual)-relu-maxpool, a 1x1 conv concatenated with the pool, global pool, gemm."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)

    inits = [_init("w1", w(8, 3, 3, 3)), _init("b1", (rng.standard_normal(8) * 0.1).astype(np.float32)),
             _init("w2", w(8, 8, 3, 3)), _init("b2", (rng.standard_normal(8) * 0.1).astype(np.float32)),
             _init("w3", w(4, 8, 1, 1)), _init("wf", w(10, 12)), _init("bf", np.zeros(10, np.float32))]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", "w3"], ["c3"], name="conv3"),
        helper.make_node("Concat", ["c3", "p"], ["cat"], name="concat", axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 12, 12])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])], inits)  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def block(seed=0, d=16, t=6):
    """A transformer-style block: attention (Q/K/V projections, QK^T, softmax, @V), residual, MLP."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    inits = [_init("wq", w(d, d)), _init("wk", w(d, d)), _init("wv", w(d, d)), _init("w1", w(d, 2 * d)),
             _init("b1", (rng.standard_normal(2 * d) * 0.1).astype(np.float32)), _init("w2", w(2 * d, d)),
             _init("scale", np.array(1 / np.sqrt(d), np.float32))]  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["x", "wv"], ["v"], name="v_proj"),
        helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["att"], name="scores"),
        helper.make_node("Mul", ["att", "scale"], ["atts"], name="scaled"),
        helper.make_node("Softmax", ["atts"], ["prob"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["prob", "v"], ["ctx"], name="context"),
        helper.make_node("Add", ["ctx", "x"], ["h"], name="residual"),
        helper.make_node("MatMul", ["h", "w1"], ["m1"], name="fc1"),
        helper.make_node("Add", ["m1", "b1"], ["m1b"], name="fc1_bias"),
        helper.make_node("Relu", ["m1b"], ["m1r"], name="act"),
        helper.make_node("MatMul", ["m1r", "w2"], ["y"], name="fc2"),
    ]
    g = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", t, d])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", t, d])], inits)  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def ort_run(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def out_scale(q: onnx.ModelProto, output: str) -> float:
    dq = next(n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == output)
    return float(numpy_helper.to_array(next(t for t in q.graph.initializer if t.name == dq.input[1])))


def inits(q):
    return {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}


@pytest.fixture(scope="module")
def calib():
    return {"x": np.random.default_rng(1).standard_normal((48, 3, 12, 12)).astype(np.float32)}


def ort_static(model, data, tmp_path, method="minmax", activations="uint8"):
    """onnxruntime.quantization.quantize_static's QDQ model (per-channel int8 weights; uint8 asymmetric or
    int8 symmetric activations), the yardstick for our accuracy."""
    from onnxruntime import quantization as oq

    class Reader(oq.CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": data["x"][i : i + 8]} for i in range(0, len(data["x"]), 8)])

        def get_next(self):
            return next(self.it, None)

    src, dst = str(tmp_path / "m.onnx"), str(tmp_path / "m.ort.onnx")
    onnx.save(model, src)
    how = {"minmax": oq.CalibrationMethod.MinMax, "percentile": oq.CalibrationMethod.Percentile,
           "entropy": oq.CalibrationMethod.Entropy}[method]  # fmt: skip
    act = oq.QuantType.QUInt8 if activations == "uint8" else oq.QuantType.QInt8
    oq.quantize_static(src, dst, Reader(), quant_format=oq.QuantFormat.QDQ, per_channel=True, activation_type=act,
                       weight_type=oq.QuantType.QInt8, calibrate_method=how,
                       extra_options={"ActivationSymmetric": activations == "int8"})  # fmt: skip
    return onnx.load(dst)


def test_static_cnn_against_onnxruntime(calib, tmp_path, rng):
    model = cnn()
    q, report = tfg.quantize(model, calib, report=True)
    onnx.checker.check_model(q)
    assert sorted(n for n, _ in report.quantized) == ["conv1", "conv2", "conv3", "fc"] and not report.kept
    w = inits(q)
    # weights: symmetric per-channel int8 (Conv axis 0, Gemm transB=1 along N = axis 0), bias int32 at x_s * w_s
    for name, channels in (("w1", 8), ("w2", 8), ("w3", 4), ("wf", 10)):
        assert w[f"{name}_quantized"].dtype == np.int8 and np.abs(w[f"{name}_quantized"]).max() == 127
        assert w[f"{name}_scale"].shape == (channels,) and not w[f"{name}_zero_point"].any()
        assert name not in w  # the float weight is gone
    dq_w1 = next(n for n in q.graph.node if n.input[0] == "w1_quantized")
    assert helper.get_attribute_value(dq_w1.attribute[0]) == 0
    np.testing.assert_array_equal(w["b1_quantized_scale"], np.float32(w["x_scale"]) * w["w1_scale"])
    assert w["b1_quantized"].dtype == np.int32
    scales = [a for k, a in w.items() if k.endswith("scale")]
    assert all(np.isfinite(s).all() and (s > 0).all() for s in scales)
    # relu1 is absorbed into conv1's output (uint8 range [0, max]); relu2 follows an Add and stays
    assert [n.name for n in q.graph.node if n.op_type == "Relu"] == ["relu2"]
    assert next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "p").input[1] == "p_scale"

    x = rng.standard_normal((32, 3, 12, 12)).astype(np.float32)
    ref = ort_run(model, {"x": x})
    ours = ort_run(q, {"x": x})
    theirs = ort_run(ort_static(model, calib, tmp_path), {"x": x})
    err, ort_err = np.abs(ours - ref).max(), np.abs(theirs - ref).max()
    assert err < 0.1 * np.abs(ref).max(), (err, ort_err, np.abs(ref).max())
    assert err < 2.0 * ort_err + 1e-3, (err, ort_err)  # as accurate as onnxruntime's own quantizer
    assert np.mean(ours.argmax(1) == ref.argmax(1)) >= 0.85
    # tensorforge runs the same QDQ model like ONNX Runtime: within one step of the output's scale
    got = tfg.compile(q)(x)
    step = out_scale(q, "logits")
    assert np.abs(got - ours).max() <= step * 1.001, (np.abs(got - ours).max(), step)


def test_value_preserving_ops_share_scales(rng):
    """small_cnn: conv -> bn -> relu -> maxpool -> flatten -> gemm. The BatchNormalization folds into the
    conv, the Relu is absorbed, and the Gemm's input (through MaxPool and Flatten) takes the Relu's scale."""
    from tensorforge.examples import small_cnn

    model = small_cnn(batch="N")
    q, report = tfg.quantize(model, {"x": rng.standard_normal((16, 3, 16, 16)).astype(np.float32)}, report=True)
    assert [n.op_type for n in q.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")] == [
        "Conv", "MaxPool", "Flatten", "Gemm"]  # fmt: skip
    qf = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "f")
    assert qf.input[1:] == ["r_scale", "r_zero_point"] and "f" not in {t for t in report.tensors if t != "f"}
    assert inits(q)["r_zero_point"] == 0  # the absorbed Relu: range [0, max]
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    ref, ours = ort_run(model, {"x": x}), ort_run(q, {"x": x})
    assert np.abs(ours - ref).max() < 0.05 * np.abs(ref).max()


def test_per_tensor_weights(calib, rng):
    q = tfg.quantize(cnn(), calib, per_channel=False)
    w = inits(q)
    assert w["w1_scale"].shape == () and w["w1_zero_point"].shape == () and w["b1_quantized_scale"].shape == (8,)
    assert not any(a.name == "axis" for n in q.graph.node if n.input[0] == "w1_quantized" for a in n.attribute)
    x = calib["x"][:4]
    ref, ours = ort_run(cnn(), {"x": x}), ort_run(q, {"x": x})
    assert np.abs(ours - ref).max() < 0.1 * np.abs(ref).max()
    assert np.abs(tfg.compile(q)(x) - ours).max() <= out_scale(q, "logits") * 1.001


def test_ort_quantize_static_runs_through_tfg(calib, tmp_path, rng):
    q = ort_static(cnn(seed=3), calib, tmp_path)
    x = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    want = ort_run(q, {"x": x})
    got = tfg.compile(q)(x)
    assert np.abs(got - want).max() <= out_scale(q, "logits") * 1.001


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
@pytest.mark.parametrize("activations", ["uint8", "int8"])
def test_methods_and_activation_types(method, activations, rng, tmp_path):
    from tensorforge.examples import mlp

    model = mlp(batch="N", sizes=(64, 48, 10), softmax=False)
    data = {"x": rng.standard_normal((128, 64)).astype(np.float32)}
    q, report = tfg.quantize(model, data, method=method, activations=activations, report=True, percentile=99.999)
    w = inits(q)
    zp = w["x_zero_point"]
    assert zp.dtype == (np.uint8 if activations == "uint8" else np.int8)
    if activations == "int8":
        assert all(not w[k].any() for k in w if k.endswith("_zero_point"))
        assert any(n.op_type == "Relu" for n in q.graph.node)  # symmetric: the Relu stays
    else:
        assert not any(n.op_type == "Relu" for n in q.graph.node)  # absorbed
    lo, hi, _, _ = report.tensors["x"]
    if method == "minmax":
        assert (lo, hi) == (float(data["x"].min()), float(data["x"].max()))
    else:  # clipping methods never widen the range
        assert data["x"].min() <= lo < 0 < hi <= data["x"].max()
    x = rng.standard_normal((64, 64)).astype(np.float32)
    ref, ours = ort_run(model, {"x": x}), ort_run(q, {"x": x})
    theirs = ort_run(ort_static(model, data, tmp_path, method, activations), {"x": x})
    err, ort_err = np.abs(ours - ref), np.abs(theirs - ref)
    # as accurate as onnxruntime's quantizer with the same method (entropy: TensorRT's threshold search
    # differs from ORT's, so only the typical error is held to it)
    assert np.median(err) <= 2.0 * np.median(ort_err) + 1e-3, (np.median(err), np.median(ort_err))
    if method != "entropy":
        assert err.max() <= 1.5 * ort_err.max() + 1e-3, (err.max(), ort_err.max())
    assert np.mean(ours.argmax(1) == ref.argmax(1)) >= 0.85
    got = tfg.compile(q)(x)
    assert np.abs(got - ours).max() <= out_scale(q, "fc2") * 1.001


def test_transformer_block_static_and_dynamic(rng, tmp_path):
    model = block()
    data = {"x": rng.standard_normal((32, 6, 16)).astype(np.float32)}
    x = rng.standard_normal((16, 6, 16)).astype(np.float32)
    ref = ort_run(model, {"x": x})
    ort_err = np.abs(ort_run(ort_static(model, data, tmp_path), {"x": x}) - ref).max()
    # static: every MatMul, the activation x activation ones (scores, context) with both inputs quantized
    q, report = tfg.quantize(model, data, report=True)
    assert len(report.quantized) == 7
    qs = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert {"q", "kt", "prob", "v"} <= qs  # both inputs of QK^T and of prob @ V
    ours = ort_run(q, {"x": x})
    assert np.abs(ours - ref).max() <= 1.5 * ort_err + 1e-3 and np.median(np.abs(ours - ref)) < 0.01 * np.abs(ref).max()
    assert np.abs(tfg.compile(q)(x) - ours).max() <= out_scale(q, "y") * 1.001
    # dynamic: the four MatMuls with constant weights, as quantize_dynamic writes them
    d, report = tfg.quantize(model, dynamic=True, report=True)
    assert sorted(n for n, _ in report.quantized) == ["fc1", "fc2", "k_proj", "q_proj", "v_proj"]
    ops = [n.op_type for n in d.graph.node]
    # x is quantized once for its three projections; then h and m1r
    assert ops.count("MatMulInteger") == 5 and ops.count("DynamicQuantizeLinear") == 3
    w = inits(d)
    assert w["wq_quantized"].dtype == np.int8 and w["wq_scale"].shape == (16,)
    assert {k for k, _, _ in report.kept} == {"scores", "context"}
    dyn = ort_run(d, {"x": x})
    assert np.abs(dyn - ref).max() < 0.05 * np.abs(ref).max()
    np.testing.assert_allclose(tfg.compile(d)(x), dyn, atol=0.02 * np.abs(ref).max())


def test_dynamic_gemm_forms(rng):
    """Gemm with transB, alpha, beta and a bias, dynamically quantized: ORT runs it close to the float result
    and tensorforge runs it like ORT."""
    w = rng.standard_normal((12, 20)).astype(np.float32)
    c = rng.standard_normal(12).astype(np.float32)
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="fc", transB=1, alpha=0.5, beta=2.0)],
                          "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 20])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12])],
                          [_init("w", w), _init("c", c)])  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((5, 20)).astype(np.float32)
    ref = x @ w.T * 0.5 + 2 * c
    d = tfg.quantize(model, dynamic=True)
    ours = ort_run(d, {"x": x})
    assert np.abs(ours - ref).max() < 0.03 * np.abs(ref).max()
    np.testing.assert_allclose(tfg.compile(d)(x), ours, atol=1e-4 * np.abs(ref).max())


def test_keep_first_last_and_exclude(calib):
    q, report = tfg.quantize(cnn(), calib, keep_first=True, keep_last=True, exclude="conv3", report=True)
    kept = {n: why for n, _, why in report.kept}
    assert set(kept) == {"conv1", "fc", "conv3"} and [n for n, _ in report.quantized] == ["conv2"]
    w = inits(q)
    assert "w1" in w and "wf" in w and "w3" in w and "w2_quantized" in w and "w2" not in w
    q2, report = tfg.quantize(cnn(), calib, exclude=["Gemm"], report=True)
    assert [n for n, op, _ in report.kept] == ["fc"]


def test_zero_range_activation_gets_a_safe_scale(rng):
    """A Conv whose weights and bias are zero: its output is all zeros in calibration; the scale is 1.0,
    never 0 or NaN, and the model still runs (to zeros) in ORT and tensorforge."""
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="dead"),
         helper.make_node("Conv", ["c", "w2"], ["y"], name="next")],
        "dead", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [_init("w", np.zeros((3, 2, 1, 1), np.float32)), _init("b", np.zeros(3, np.float32)),
         _init("w2", rng.standard_normal((3, 3, 1, 1)).astype(np.float32))],
    )  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    q, report = tfg.quantize(model, {"x": rng.standard_normal((8, 2, 4, 4)).astype(np.float32)}, report=True)
    w = inits(q)
    assert w["c_scale"] == 1.0 and w["w_scale"].tolist() == [1.0] * 3 and w["y_scale"] == 1.0
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    assert not ort_run(q, {"x": x}).any() and not tfg.compile(q)(x).any()


def test_constants_through_identity(rng):
    """Exporters (torch.onnx) share a bias between layers through Identity nodes: still a constant bias, quantized
    to int32 per layer, and the Identity left without readers is dropped."""
    g = helper.make_graph(
        [helper.make_node("Identity", ["b"], ["b_copy"], name="share"),
         helper.make_node("Conv", ["x", "w1", "b"], ["c1"], name="c1"),
         helper.make_node("Conv", ["c1", "w2", "b_copy"], ["y"], name="c2")],
        "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [_init("w1", rng.standard_normal((3, 3, 1, 1)).astype(np.float32)),
         _init("w2", rng.standard_normal((3, 3, 1, 1)).astype(np.float32)),
         _init("b", rng.standard_normal(3).astype(np.float32))],
    )  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    calib = rng.standard_normal((8, 3, 4, 4)).astype(np.float32)
    q = tfg.quantize(model, {"x": calib})
    w = inits(q)
    assert w["b_quantized"].dtype == np.int32 and w["b_copy_quantized"].dtype == np.int32
    assert "Identity" not in {n.op_type for n in q.graph.node} and "b" not in w
    x = calib[:2]  # inside the calibrated ranges: only rounding error
    ref, ours = ort_run(model, {"x": x}), ort_run(q, {"x": x})
    assert np.abs(ours - ref).max() < 0.05 * np.abs(ref).max()


def test_bias_beyond_int32_widens_the_weight_scale(rng):
    """A bias that x_scale * w_scale cannot represent in int32 widens its channel's weight scale until it fits
    (as onnxruntime's quantizer does), never a wrapped integer; ONNX Runtime and tensorforge still agree."""
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="tiny")],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 3, 3])],
        [_init("w", (rng.standard_normal((2, 2, 1, 1)) * 1e-7).astype(np.float32)),
         _init("b", np.array([1e4, -2e4], np.float32))],
    )  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    calib = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    q, report = tfg.quantize(model, {"x": calib}, report=True)
    w = inits(q)
    assert w["b_quantized"].dtype == np.int32 and np.abs(w["b_quantized"].astype(np.int64)).max() < 2**31 - 1
    assert any("weight scales widened" in n for n in report.notes)
    np.testing.assert_array_equal(w["b_quantized_scale"], np.float32(w["x_scale"]) * w["w_scale"])
    ref, ours = ort_run(model, {"x": calib}), ort_run(q, {"x": calib})
    assert np.abs(ours - ref).max() <= out_scale(q, "y") and np.abs(tfg.compile(q)(calib) - ours).max() <= out_scale(
        q, "y"
    )


def test_calibration_forms_agree(tmp_path, rng):
    from tensorforge.examples import mlp

    model = mlp(batch="N", sizes=(16, 8, 4))
    x = rng.standard_normal((40, 16)).astype(np.float32)
    np.savez(tmp_path / "all.npz", x=x)
    os.mkdir(tmp_path / "parts")
    np.savez(tmp_path / "parts" / "a.npz", x=x[:25])
    np.savez(tmp_path / "parts" / "b.npz", x=x[25:])
    feeds = [{"x": x[i : i + 7]} for i in range(0, 40, 7)]
    forms = [str(tmp_path / "all.npz"), str(tmp_path / "parts"), {"x": x}, feeds, (f for f in feeds)]
    tensors = [tfg.quantize(model, f, report=True, batch_size=16)[1].tensors for f in forms]
    assert all(t == tensors[0] for t in tensors[1:])
    fixed = mlp(batch=4, sizes=(16, 8, 4))  # a fixed batch axis: runs of exactly 4 samples
    assert tfg.quantize(fixed, {"x": x}, report=True)[1].tensors == tensors[0]


def test_compile_with_quantize(calib, rng):
    model = cnn()
    x = rng.standard_normal((3, 3, 12, 12)).astype(np.float32)
    m = tfg.compile(model, quantize="int8", calibration=calib)
    np.testing.assert_array_equal(m(x), tfg.compile(tfg.quantize(model, calib))(x))
    xb = rng.standard_normal((2, 6, 16)).astype(np.float32)
    d = tfg.compile(block(), quantize="int8-dynamic", quantize_options={"per_channel": False})
    np.testing.assert_array_equal(d(xb), tfg.compile(tfg.quantize(block(), dynamic=True, per_channel=False))(xb))
    with pytest.raises(TensorforgeError, match="needs calibration data"):
        tfg.compile(model, quantize="int8")
    with pytest.raises(TensorforgeError, match="quantize must be one of"):
        tfg.compile(model, quantize="int4", calibration=calib)
    with pytest.raises(TensorforgeError, match="without quantize="):
        tfg.compile(model, calibration=calib)


def test_bad_calibration_data(tmp_path, rng):
    model = cnn()
    x = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    cases = [
        ({"image": x}, InputError, r"model 'cnn': missing input 'x'; unknown name 'image'"),
        ({"x": x.astype(np.float64)}, InputError, r"input 'x' has dtype float64, expected float32"),
        ({"x": x[:, :, :8]}, InputError, r"input 'x' has shape \[4, 3, 8, 12\], expected \[samples, 3, 12, 12\]"),
        ({"x": x[0, 0]}, InputError, r"expected samples stacked along the first axis of \[N, 3, 12, 12\]"),
        ({"x": x[:0]}, InputError, r"calibration data for model 'cnn' is empty"),
        ([], InputError, r"is empty: the iterable yielded no feeds"),
        ([{"x": x}, {"x": x[:, :2]}], InputError, r"\(item 1\) .* input 'x' has shape \[4, 2, 12, 12\]"),
        ([x], InputError, r"item 0 is a ndarray, expected a dict"),
        (str(tmp_path / "missing.npz"), InputError, r"no such file or directory"),
        (str(tmp_path), InputError, r"holds no \.npz files"),
        (3, InputError, r"expected an \.npz file, a directory of \.npz files, a dict of arrays or an iterable"),
    ]
    for data, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            tfg.quantize(model, data)
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(InputError, match="not an .npz archive"):
        tfg.quantize(model, str(tmp_path / "x.npy"))
    from tensorforge.examples import mlp

    with pytest.raises(InputError, match="5 samples, not a multiple of the model's fixed batch size 2"):
        tfg.quantize(mlp(batch=2, sizes=(4, 3, 2)), {"x": np.zeros((5, 4), np.float32)})


def test_bad_requests(calib):
    model = cnn()
    with pytest.raises(TensorforgeError, match="unknown calibration method 'kl'; methods: minmax, percentile, entropy"):
        tfg.quantize(model, calib, method="kl")
    with pytest.raises(TensorforgeError, match="static quantization needs calibration data"):
        tfg.quantize(model)
    with pytest.raises(TensorforgeError, match=r"percentile must be in \(50, 100\], got 30"):
        tfg.quantize(model, calib, method="percentile", percentile=30)
    with pytest.raises(TensorforgeError, match="activations must be one of uint8, int8"):
        tfg.quantize(model, calib, activations="int4")
    with pytest.raises(TensorforgeError, match="exclude 'conv9' matches no node name or op type"):
        tfg.quantize(model, calib, exclude="conv9")
    with pytest.raises(TensorforgeError, match="every candidate stays in float"):
        tfg.quantize(model, calib, exclude="Conv,Gemm")
    with pytest.raises(TensorforgeError, match="dynamic quantization takes no calibration data"):
        tfg.quantize(model, calib, dynamic=True)
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu_only",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])  # fmt: skip
    with pytest.raises(TensorforgeError, match=r"model 'relu_only': nothing to quantize: it has no Conv, Gemm, "
                                               r"MatMul node \(its ops: Relu\)"):  # fmt: skip
        tfg.quantize(helper.make_model(g), {"x": np.zeros((1, 2), np.float32)})
    q = tfg.quantize(model, calib)
    with pytest.raises(TensorforgeError, match="is already quantized"):
        tfg.quantize(q, calib)
    with pytest.raises(TensorforgeError, match="nothing to quantize dynamically: .*conv1 \\(Conv\\)|no Gemm, MatMul"):
        tfg.quantize(helper.make_model(helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"], name="conv1")], "c",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])],
            [_init("w", np.ones((1, 1, 1, 1), np.float32))])), dynamic=True)  # fmt: skip


def test_histogram_growth_is_exact(rng):
    h = Histogram()
    parts = [rng.standard_normal(1000) * s for s in (0.5, 3.0, 40.0)]
    for p in parts:
        h.update(p.astype(np.float32))
    counts, edges = h.signed()
    allx = np.concatenate(parts).astype(np.float32)
    assert counts.sum() == allx.size
    want, _ = np.histogram(allx, bins=edges)
    # values exactly on an edge can fall either side; the bins agree everywhere else
    assert np.abs(counts - want).sum() <= 2 * np.sum(np.isin(allx, edges.astype(np.float32)))


def test_percentile_and_entropy_clip_outliers(rng):
    x = np.concatenate([rng.standard_normal(200_000), [50.0, -60.0]]).astype(np.float32)
    p = Percentile(percentile=99.9)
    p.update(x)
    lo, hi = p.range()
    want_lo, want_hi = np.percentile(x, [0.1, 99.9])
    assert abs(lo - want_lo) < 0.1 and abs(hi - want_hi) < 0.1
    e = Entropy()
    e.update(x)
    lo, hi = e.range()
    assert 2.0 < hi < 10.0 and -10.0 < lo < -2.0  # the threshold sits well inside the outliers
    assert kl_threshold(np.zeros(10, np.int64)) is None and kl_threshold(np.array([0, 3, 1, 0])) == 3
