"""The command line: every command runs, writes what it promises, and reports errors cleanly."""

from __future__ import annotations

import builtins
import errno
import os

import numpy as np
import pytest

from tensorforge.cli import COMMANDS, main
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


# -- every error is one line, exit status 1, no traceback, no partial output -----------------------
def fails(argv, capsys, expected: str) -> str:
    """Run the command; it must fail with exit status 1 and one line on stderr that contains ``expected``."""
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if not ln.startswith("note:")]
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert expected in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def bad_model(tmp_path):
    from onnx import helper

    from helpers import one_node_model

    x = np.zeros((1, 3, 8, 8), np.float32)
    m = one_node_model("Conv", {"x": x}, {"pads": [1, 1, 1, 1]}, {"w": np.ones((4, 3, 3, 3), np.float32)})
    m.graph.node[0].attribute[0].CopyFrom(helper.make_attribute("pads", 1))  # an int where ints belong
    p = tmp_path / "bad.onnx"
    p.write_bytes(m.SerializeToString())
    return str(p)


@pytest.fixture
def a_file(tmp_path):
    p = tmp_path / "a_file"
    p.write_text("not a directory")
    return str(p)


@pytest.mark.parametrize("argv, expected", [
    (["compile", "{model}", "-o", "{file}"], "-o '{file}' exists and is not a directory"),
    (["compile", "{model}", "-o", "{file}/sub"], "'{file}' is a file, not a directory"),
    (["run", "{model}", "--random", "-o", "{file}/sub"], "'{file}' is a file, not a directory"),
    (["export", "{model}", "-o", "{file}"], "exists and is not a directory"),
    (["asm", "{model}", "-o", "{tmp}"], "is a directory; give a file name"),
    (["graph", "{model}", "-o", "{file}/g.svg"], "'{file}' is a file, not a directory"),
    (["train", "--model", "mlp", "--dataset", "digits", "-o", "{file}/m.onnx"], "is a file, not a directory"),
    (["train", "--model", "mlp", "--dataset", "digits", "--save-state", "{tmp}"], "is a directory; give a file"),
    (["train", "--model", "mlp", "--dataset", "digits", "--resume", "{tmp}/none.npz"], "none.npz': no such file"),
])  # fmt: skip
def test_output_paths_are_checked_before_any_work(argv, expected, model_path, a_file, tmp_path, capsys):
    def fill(s):
        return s.format(model=model_path, file=a_file, tmp=tmp_path)

    fails([fill(a) for a in argv], capsys, fill(expected))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "mlp.onnx"]  # nothing written, no temp dirs
    assert "training" not in capsys.readouterr().out


def test_unwritable_directory(model_path, tmp_path, capsys, monkeypatch):
    real = os.access
    ro = tmp_path / "ro"
    ro.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: p != str(ro) and real(p, mode))  # (root may write anywhere)
    fails(["compile", model_path, "-o", str(ro / "out")], capsys, f"directory '{ro}' is not writable")
    fails(["train", "--model", "mlp", "--dataset", "digits", "-o", str(ro / "m.onnx")], capsys, "not writable")


def test_compile_failing_half_way_leaves_the_directory_as_it_was(model_path, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.s").write_text("old")
    opened = []

    def open_until_the_disk_fills(path, *args, **kwargs):  # the third file of six does not fit
        opened.append(path)
        if len(opened) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr("tensorforge.cli.common.open", open_until_the_disk_fills, raising=False)
    fails(["compile", model_path, "-o", str(out)], capsys, "graph.dot': cannot write: No space left on device")
    assert [p.name for p in out.iterdir()] == ["model.s"] and (out / "model.s").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx", "out"]  # the staging directory is gone
    monkeypatch.undo()
    assert main(["compile", model_path, "-o", str(out)]) == 0 and (out / "model.s").read_text() != "old"


def test_a_full_disk_is_one_line(model_path, tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tensorforge.cli.common.atomic_write", full)
    fails(["asm", model_path, "-o", str(tmp_path / "m.s")], capsys, "m.s': cannot write: No space left on device")


@pytest.mark.parametrize("argv, expected", [
    (["compile", "{bad}", "-o", "{tmp}/o"], "(Conv): attribute 'pads' must be a list of ints, got the int 1"),
    (["info", "{bad}"], "attribute 'pads' must be a list of ints"),
    (["compile", "{tmp}", "-o", "{tmp}/o"], "cannot be read: Is a directory"),
    (["compile", "mlp", "--input-shape", "y=1,784", "-o", "{tmp}/o"], "unknown input(s) ['y']"),
    (["compile", "mlp", "--input-shape", "x=-1,784", "-o", "{tmp}/o"], "dims must be >= 0"),
    (["run", "mlp", "--random", "--threads", "0"], "argument --threads: must be an integer >= 1, got '0'"),
    (["run", "mlp", "--random", "--seed", "-1"], "argument --seed: must be an integer >= 0"),
    (["run", "mlp", "--random", "--repeat", "0"], "argument --repeat: must be an integer >= 1"),
    (["train", "--model", "mlp", "--dataset", "digits", "--batch-size", "0"], "argument --batch-size"),
    (["export", "mlp", "--name", "a/b", "-o", "{tmp}/o"], "argument --name: must be a C identifier"),
    (["export", "mlp", "--target", "sparc", "-o", "{tmp}/o"], "invalid choice: 'sparc'"),
    (["export", "mlp", "--weights", "cloud", "-o", "{tmp}/o"], "invalid choice: 'cloud'"),
    (["compile", "mlp", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])  # fmt: skip
def test_bad_inputs_are_one_line(argv, expected, bad_model, tmp_path, capsys):
    fails([a.format(bad=bad_model, tmp=tmp_path) for a in argv], capsys, expected)
    assert not (tmp_path / "o").exists()


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    def boom(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setitem(COMMANDS, "info", (boom, "info"))
    fails(["info", "mlp"], capsys, "internal error: RuntimeError: boom second line (rerun with --debug")
    for argv in (["--debug", "info", "mlp"], ["info", "mlp", "--debug"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and err.splitlines()[-1].startswith("error: internal error: RuntimeError")


def test_help_documents_debug(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--debug" in capsys.readouterr().out


def test_a_list_of_problems_is_one_line(tmp_path, capsys):
    from onnx import TensorProto, helper

    nodes = [helper.make_node("FancyOp", ["x"], ["a"], name="first"),
             helper.make_node("OtherOp", ["a"], ["y"], name="second")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])  # fmt: skip
    p = tmp_path / "u.onnx"
    p.write_bytes(helper.make_model(g).SerializeToString())
    line = fails(["info", str(p)], capsys, "uses 2 unsupported construct(s): node 'first' (FancyOp): op FancyOp")
    assert "; node 'second' (OtherOp)" in line
