"""tfg.compare / tensorforge compare, and the quantize command line (quantize, compile --quantize): the table's
numbers checked against the models' own outputs, every bad input one line and exit status 1."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

import tensorforge as tfg
from tensorforge.cli import main
from tensorforge.errors import InputError, TensorforgeError
from tensorforge.examples import mlp, small_cnn


@pytest.fixture
def models(tmp_path):
    """A float CNN, its int8 version, and calibration / validation data as .npz files."""
    rng = np.random.default_rng(0)
    ref = tmp_path / "cnn.onnx"
    ref.write_bytes(small_cnn(batch="N").SerializeToString())
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((32, 3, 16, 16)).astype(np.float32))
    np.savez(tmp_path / "val.npz", x=rng.standard_normal((40, 3, 16, 16)).astype(np.float32))
    q = tmp_path / "cnn.int8.onnx"
    tfg.quantize(str(ref), str(tmp_path / "calib.npz"), output=str(q))
    return str(ref), str(q), tmp_path


def test_compare_numbers(models):
    ref, q, d = models
    c = tfg.compare(ref, q, data=str(d / "val.npz"), batch_size=16, blocks=2)
    assert [r.model for r in c.rows] == ["cnn.onnx", "cnn.int8.onnx"] and c.samples == 40 and c.batch == 16
    r0, r1 = c.rows
    assert (r0.max_abs, r0.max_rel, r0.top1, r0.speedup) == (0.0, 0.0, 1.0, 1.0)
    assert r0.size_bytes == (d / "cnn.onnx").stat().st_size and r1.size_bytes == (d / "cnn.int8.onnx").stat().st_size
    assert r1.size_bytes < r0.size_bytes / 2 and r1.quantization == "int8 static"
    # the agreement is what the two models compute on the same samples
    x = np.load(d / "val.npz")["x"]
    a = ort.InferenceSession(ref).run(None, {"x": x})[0]
    b = ort.InferenceSession(q).run(None, {"x": x})[0]
    assert r1.top1 == pytest.approx(np.mean(a.argmax(1) == b.argmax(1)))
    assert r1.max_abs == pytest.approx(np.abs(a - b).max(), rel=0.05, abs=1e-3)
    assert r1.max_rel == pytest.approx(r1.max_abs / np.abs(a).max(), rel=0.05)
    assert r0.latency_s > 0 and r1.latency_s > 0 and r1.speedup == pytest.approx(r0.latency_s / r1.latency_s)
    text = str(c)
    assert "top-1" in text and "cnn.int8.onnx [int8 static]" in text and "speedup" in text
    assert json.loads(json.dumps(c.to_dict()))["rows"][1]["model"] == "cnn.int8.onnx"


def test_compare_runtimes_and_random_data(models):
    ref, q, _ = models
    c = tfg.compare(ref, q, runtime="tfg,ort", samples=8, seed=3, blocks=1)
    assert [(r.model, r.runtime) for r in c.rows] == [("cnn.onnx", "tfg"), ("cnn.onnx", "ort"),
                                                       ("cnn.int8.onnx", "tfg"), ("cnn.int8.onnx", "ort")]  # fmt: skip
    assert c.rows[1].max_rel < 1e-5 and c.data == "random, seed 3" and c.samples == 8
    # ORT and tensorforge run the same QDQ model alike (within a step of the output's scale)
    assert abs(c.rows[2].max_abs - c.rows[3].max_abs) < 0.1
    c2 = tfg.compare(ref, q, runtime="ort", samples=8, seed=3, blocks=1)
    assert [r.runtime for r in c2.rows] == ["ort", "ort"]
    assert c2.rows[1].max_abs == pytest.approx(c.rows[3].max_abs, rel=1e-3)


def test_compare_errors(models, tmp_path):
    ref, q, d = models
    with pytest.raises(TensorforgeError, match="unknown runtime 'trt'; runtimes: tfg, ort"):
        tfg.compare(ref, q, runtime="trt")
    other = tmp_path / "mlp.onnx"
    other.write_bytes(mlp(batch="N").SerializeToString())
    with pytest.raises(TensorforgeError, match=r"model 'mlp.onnx' has inputs \(x: float32\).*|has shape"):
        tfg.compare(ref, str(other), samples=2, blocks=1)
    np.savez(tmp_path / "bad.npz", y=np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(InputError, match=r"for model 'cnn.onnx': missing input 'x'; unknown name 'y'"):
        tfg.compare(ref, q, data=str(tmp_path / "bad.npz"))
    with pytest.raises(TensorforgeError, match="samples must be >= 1"):
        tfg.compare(ref, q, samples=0)


def test_cli_quantize_compile_compare(models, capsys):
    ref, _, d = models
    out = str(d / "cli.int8.onnx")
    assert main(["quantize", ref, "--calibration", str(d / "calib.npz"), "-o", out, "--method", "percentile",
                 "--exclude", "fc"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "1 Conv" in text and "fc (Gemm): excluded" in text and f"wrote {out}" in text
    assert main(["quantize", ref, "--dynamic", "-o", str(d / "dyn.onnx")]) == 0  # the Gemm only
    assert "1 Gemm" in capsys.readouterr().out
    assert main(["compile", ref, "--quantize", "int8", "--calibration", str(d / "calib.npz"), "-o",
                 str(d / "build")]) == 0  # fmt: skip
    assert "x_QuantizeLinear" in (d / "build" / "graph.txt").read_text()  # the quantized model was compiled
    capsys.readouterr()
    assert main(["compare", ref, out, "--data", str(d / "val.npz"), "--blocks", "1", "--json", str(d / "c.json")]) == 0
    text = capsys.readouterr().out
    assert "cli.int8.onnx [int8 static]" in text and "latency" in text
    assert len(json.loads((d / "c.json").read_text())["rows"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["quantize", "{ref}"], "quantize needs --calibration FILE (or --dynamic, which needs none)"),
    (["quantize", "{ref}", "--calibration", "{d}/nope.npz"], "--calibration '{d}/nope.npz': no such file or directory"),
    (["quantize", "{ref}", "--calibration", "{d}/calib.npz", "--method", "kl"], "argument --method: invalid choice"),
    (["quantize", "{ref}", "--calibration", "{d}/val.npz", "--exclude", "conv9"], "exclude 'conv9' matches no node"),
    (["compile", "{ref}", "--calibration", "{d}/calib.npz"], "--calibration needs --quantize int8"),
    (["compile", "{ref}", "--quantize", "int8"], "--quantize int8 needs --calibration FILE"),
    (["compare", "{ref}", "--runtime", "onnx"], "unknown runtime 'onnx'"),
    (["compare", "{ref}", "{d}/missing.onnx"], "model '{d}/missing.onnx': no such file"),
])  # fmt: skip
def test_cli_errors_are_one_line(models, capsys, argv, message):
    ref, _, d = models
    assert main([a.format(ref=ref, d=d) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message.format(d=d) in err, err


def test_digits_mlp_int8_accuracy():
    """The built-in demo MLP trained on scikit-learn's digits, quantized on 512 training images: held-out
    accuracy within one point of the float model's."""
    from tensorforge.train import datasets, trainer

    ds = datasets.digits()
    step = tfg.training_step(mlp(batch="N", sizes=(ds.features, 256, ds.classes)), loss="cross_entropy",
                             optimizer=tfg.optim.SGD(lr=0.05, momentum=0.9))  # fmt: skip
    trainer.fit(step, ds.x_train, ds.y_train, 10, 32, log=lambda s: None)
    model = step.export_onnx()
    q = tfg.quantize(model, {"x": ds.x_train[:512]})

    def accuracy(m):
        return float(np.mean(tfg.compile(m)(ds.x_test).argmax(1) == ds.y_test))

    fp32, int8 = accuracy(model), accuracy(q)
    assert fp32 > 0.95 and abs(fp32 - int8) <= 0.01, (fp32, int8)
