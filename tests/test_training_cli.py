"""`tensorforge train` and the training demo: the digits MLP reaches the accuracy target, trained models
are written as ONNX that runs in ONNX Runtime, state resumes, bad requests fail with a clear message."""

from __future__ import annotations

import re

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge.cli import main
from tensorforge.examples import mlp
from tensorforge.train import datasets


def test_digits_dataset_split():
    ds = datasets.digits()
    assert ds.x_train.shape == (1438, 64) and ds.x_test.shape == (359, 64) and ds.classes == 10
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert np.bincount(ds.y_test).min() >= 30  # stratified: every class held out
    assert abs(float(ds.x_train.mean())) < 1e-5  # standardized with the training statistics
    assert ds.as_images().x_train.shape == (1438, 1, 8, 8)


def test_train_digits_mlp_20_epochs_reaches_96_percent(capsys, tmp_path):
    assert main(["train", "--dataset", "digits", "--model", "mlp", "--epochs", "20", "-o",
                 str(tmp_path / "digits.onnx")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    acc = float(re.search(r"held-out accuracy: ([\d.]+)%", out).group(1))
    assert acc >= 96.0, out
    assert "880 steps" in out
    ort = pytest.importorskip("onnxruntime")
    ds = datasets.digits()
    theirs = ort.InferenceSession(str(tmp_path / "digits.onnx"), providers=["CPUExecutionProvider"])
    probs = theirs.run(None, {"x": ds.x_test})[0]
    assert abs(100 * (probs.argmax(1) == ds.y_test).mean() - acc) < 0.01  # printed with 2 decimals
    np.testing.assert_allclose(tfg.compile(str(tmp_path / "digits.onnx"))(ds.x_test), probs, rtol=1e-4, atol=1e-6)


def test_train_an_onnx_file_on_npz_data_and_resume(capsys, tmp_path, rng):
    import onnx

    onnx.save(mlp(batch="N", sizes=(6, 8, 3), softmax=False), tmp_path / "m.onnx")
    x = rng.standard_normal((40, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "test.npz", x=x[:10], y=y[:10])
    args = [
        "train",
        str(tmp_path / "m.onnx"),
        "--data",
        str(tmp_path / "train.npz"),
        "--test-data",
        str(tmp_path / "test.npz"),
        "--optimizer",
        "adam",
        "--lr",
        "1e-2",
        "--epochs",
        "3",
        "--batch-size",
        "8",
    ]
    assert main([*args, "--save-state", str(tmp_path / "s.npz"), "-o", str(tmp_path / "t.onnx")]) == 0
    out = capsys.readouterr().out
    assert "15 steps" in out and "held-out accuracy" in out and (tmp_path / "t.onnx").exists()
    assert main([*args, "--resume", str(tmp_path / "s.npz"), "--print-graph", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "graph m_train(%x: f32[8,6], %target: i64[8], %lr: f32[]" in out and "AdamUpdate(" in out
    assert "GFLOP/s" in out
    state = dict(np.load(tmp_path / "s.npz"))
    assert int(state["__steps__"]) == 15 and "W1.m" in state


def test_mse_regression_with_a_builtin_model(capsys, tmp_path, rng):
    x = rng.standard_normal((64, 5)).astype(np.float32)
    y = np.stack([x.sum(1), x[:, 0] - x[:, 1]], 1).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    assert main(["train", "--model", "mlp", "--data", str(tmp_path / "d.npz"), "--test-data", str(tmp_path / "d.npz"),
                 "--loss", "mse", "--epochs", "30", "--batch-size", "16", "--lr", "0.01"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert float(re.search(r"held-out mse: ([\d.e-]+)", out).group(1)) < 0.5


def test_train_errors(capsys, tmp_path):
    assert main(["train", "--model", "mlp"]) == 1
    assert "give training data" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", inputs=np.zeros((4, 2), np.float32))
    assert main(["train", "--model", "mlp", "--data", str(tmp_path / "bad.npz")]) == 1
    assert "expected arrays 'x' and 'y', found ['inputs']" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits"]) == 1
    assert "give a model" in capsys.readouterr().err


def test_demo_trains_digits(capsys):
    from tensorforge.cli.demo import train_demo

    assert train_demo() == 0
    out = capsys.readouterr().out
    assert "one native function" in out and "held-out accuracy" in out
