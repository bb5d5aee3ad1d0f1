"""The command line: every command runs, writes what it promises, and reports errors cleanly."""

from __future__ import annotations

import numpy as np
import pytest

from tensorforge.cli import main
from tensorforge.examples import mlp


@pytest.fixture
def model_path(tmp_path):
    p = tmp_path / "mlp.onnx"
    p.write_bytes(mlp().SerializeToString())
    return str(p)


def test_compile_writes_outputs(model_path, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", model_path, "-o", str(out)]) == 0
    for f in ("model.s", "graph.txt", "report.txt", "kernels.txt", "model.ll"):
        assert (out / f).stat().st_size > 0
    assert "vfmadd" in (out / "model.s").read_text()
    assert "Gemm" in (out / "graph.txt").read_text()


def test_compile_cross_targets(model_path, tmp_path):
    assert main(["compile", model_path, "--target", "aarch64", "-o", str(tmp_path / "a")]) == 0
    assert "fmla" in (tmp_path / "a" / "model.s").read_text()
    assert main(["compile", model_path, "--target", "nvptx-sm90", "-o", str(tmp_path / "p")]) == 0
    assert ".entry" in (tmp_path / "p" / "model.ptx").read_text()


def test_run_with_input_file(model_path, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((1, 784)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", model_path, "--input", f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "o")]) == 0
    y = np.load(tmp_path / "o" / "probs.npy")
    assert y.shape == (1, 10) and abs(float(y.sum()) - 1) < 1e-5
    assert "probs: float32[1, 10]" in capsys.readouterr().out


def test_run_random(model_path, capsys):
    assert main(["run", model_path, "--random", "--repeat", "3"]) == 0
    assert "latency" in capsys.readouterr().out


def test_asm_and_info(model_path, capsys):
    assert main(["asm", model_path, "--kernel", "fc1", "--target", "x86_64"]) == 0
    out = capsys.readouterr().out
    assert "fc1 (Gemm)" in out and "vfmadd" in out
    assert main(["info", model_path]) == 0
    out = capsys.readouterr().out
    assert "parameters: 203,530" in out and "FLOPs per run" in out and "Gemm" in out


def test_errors_are_clean(tmp_path, capsys):
    assert main(["compile", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o")]) == 1
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["asm", "mlp", "--target", "mips"]) == 1
    assert "unknown target" in capsys.readouterr().err
    x = np.zeros((2, 3), np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", "mlp", "--input", f"x={tmp_path / 'x.npy'}"]) == 1
    assert "has shape [2, 3], expected [1, 784]" in capsys.readouterr().err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    from tensorforge.cli import COMMANDS

    for c in COMMANDS:
        assert c in out
    assert "% of the machine's peak" in out and "%%" not in out


@pytest.mark.parametrize("command", ["compile", "profile", "train", "export", "graph", "bench"])
def test_command_help_reads_as_written(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: tensorforge " + command) and "%%" not in out


def test_bench_command(model_path, capsys, monkeypatch):
    monkeypatch.setenv("TENSORFORGE_BENCH_QUICK", "1")
    assert main(["bench", model_path]) == 0
    out = capsys.readouterr().out
    assert "tensorforge" in out and "onnxruntime" in out and "ratio" in out
