"""Exported training (``tensorforge export-train``, ``TrainingStep.export_c``): the C step computes what the
Python step computes, step by step; state files round-trip and are checked; a non-finite step or a bad class
index changes nothing; the C example trains digits to the Python run's accuracy on x86-64 and under qemu on
AArch64; the portable shuffle is the same in C and Python."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import tensorforge as tfg
from aot_helpers import CC, CROSS_CC, QEMU, SYSROOT, needs_cc, needs_cross
from tensorforge.cli import main
from tensorforge.errors import TensorforgeError, TrainingError
from tensorforge.examples import mlp
from tensorforge.train import datasets, trainer
from tensorforge.train.datasets import shuffled_order

pytestmark = needs_cc

SGD = dict(lr=0.05, momentum=0.9)


def _step(model=None, **kw):
    model = model if model is not None else mlp(batch="N", sizes=(64, 32, 10))
    opts = {"loss": "cross_entropy", "optimizer": tfg.optim.SGD(**SGD), "tiered": False, "num_threads": 1, **kw}
    return tfg.training_step(model, **opts)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A small MLP (64 -> 32 -> 10) exported at batch 8."""
    out = tmp_path_factory.mktemp("small")
    _step().export_c(out, "small", batch_size=8)
    return out


def _batches(rng, n, batch=8, features=64, classes=10):
    return [(rng.standard_normal((batch, features)).astype(np.float32), rng.integers(0, classes, batch))
            for _ in range(n)]  # fmt: skip


def test_shuffled_order_is_a_fixed_permutation_per_seed_and_epoch():
    a = shuffled_order(1000, 3, 1)
    assert sorted(a.tolist()) == list(range(1000))
    np.testing.assert_array_equal(a, shuffled_order(1000, 3, 1))
    assert not np.array_equal(a, shuffled_order(1000, 3, 2))
    assert not np.array_equal(a, shuffled_order(1000, 4, 1))
    assert shuffled_order(0, 0, 1).tolist() == [] and shuffled_order(1, 5, 1).tolist() == [0]
    with pytest.raises(ValueError):
        shuffled_order(5, -1, 1)


def test_the_c_example_shuffles_like_python(small, tmp_path):
    """The shuffle of train_example.c, compiled on its own, draws numpy's order (64-bit wrap-around included)."""
    src = (small / "train_example.c").read_text()
    funcs = re.search(r"static uint64_t mix64.*?\n}\n\nstatic void shuffled_order.*?\n}\n", src, re.S).group(0)
    (tmp_path / "order.c").write_text("#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n" + funcs + r"""
int main(int argc, char **argv) {
    int64_t n = atoll(argv[1]), *o = malloc(sizeof(int64_t) * (n + 1));
    shuffled_order(o, n, strtoull(argv[2], 0, 10), strtoull(argv[3], 0, 10));
    for (int64_t i = 0; i < n; i++) printf("%lld\n", (long long)o[i]);
    return 0;
}
""")
    subprocess.run([CC, "-O2", "-o", "order", "order.c"], cwd=tmp_path, check=True)
    for n, seed, epoch in ((1437, 0, 1), (1000, 2**63 + 12345, 7), (3, 1, 20)):
        out = subprocess.run(["./order", str(n), str(seed), str(epoch)], cwd=tmp_path, capture_output=True, text=True)
        assert [int(v) for v in out.stdout.split()] == shuffled_order(n, seed, epoch).tolist()


def test_exported_step_matches_the_python_step(small, rng):
    e = tfg.load(str(small))
    py = _step()
    assert type(e).__name__ == "ExportedTrainer" and e.batch_size == 8 and e.num_classes == 10
    assert e.learning_rate == pytest.approx(0.05) and e.steps == 0
    assert [s.name for s in e.state_specs] == [s.name for s in py.slots]
    for x, y in _batches(rng, 12):
        np.testing.assert_allclose(e.train_step(x, y), py(x, y), rtol=1e-5)
    assert e.steps == 12
    state = e.state_dict()
    for name, a in py.state_dict().items():
        if name != "__steps__":
            np.testing.assert_allclose(state[name], a, rtol=1e-5, atol=1e-6, err_msg=name)
    x = rng.standard_normal((8, 64)).astype(np.float32)
    np.testing.assert_allclose(e.predict(x), py.predict(x), rtol=1e-5, atol=1e-7)
    e.learning_rate = 0.01
    py.optimizer.lr = 0.01
    x, y = _batches(rng, 1)[0]
    np.testing.assert_allclose(e.train_step(x, y), py(x, y), rtol=1e-5)
    np.testing.assert_allclose(e.state_dict()["W1"], py.parameters["W1"], rtol=1e-5, atol=1e-6)


def test_border_checks_before_native_code(small, rng):
    e = tfg.load(str(small))
    before = e.state_dict()
    x, y = _batches(rng, 1)[0]
    with pytest.raises(TensorforgeError, match=r"input 'x' has shape \[4, 64\], expected \[8, 64\]"):
        e.train_step(x[:4], y[:4])
    for bad in (10, -1):
        yb = y.copy()
        yb[5] = bad
        with pytest.raises(TrainingError, match=rf"class index {bad} at position 5 is out of range; the output "
                                                r"'probs' has 10 classes \(0..9\)"):  # fmt: skip
            e.train_step(x, yb)
    with pytest.raises(TensorforgeError, match="learning rate must be a finite number"):
        e.learning_rate = float("nan")
    assert e.steps == 0
    for k, a in e.state_dict().items():
        np.testing.assert_array_equal(a, before[k])


def test_non_finite_step_leaves_the_state_unchanged(small, rng):
    e = tfg.load(str(small))
    for x, y in _batches(rng, 2):
        e.train_step(x, y)
    before = e.state_dict()
    x, y = _batches(rng, 1)[0]
    xn = x.copy()
    xn[2, 3] = np.nan
    with pytest.raises(TrainingError, match=r"the loss is nan at step 3; the parameters and optimizer state were "
                                            "left unchanged"):  # fmt: skip
        e.train_step(xn, y)
    e.learning_rate = 3e38  # the loss is finite, the update overflows
    with pytest.raises(TrainingError, match=r"step 3 would make parameter 'W1'.* non-finite \(the loss, .* is "
                                            "finite\\)"):  # fmt: skip
        e.train_step(100 * x, y)
    assert e.steps == 2
    for k, a in e.state_dict().items():
        np.testing.assert_array_equal(a, before[k], err_msg=k)
    e.learning_rate = 0.05
    assert np.isfinite(e.train_step(x, y)) and e.steps == 3


def test_state_file_round_trip(small, rng, tmp_path):
    a = tfg.load(str(small))
    for x, y in _batches(rng, 3):
        a.train_step(x, y)
    a.learning_rate = 0.02
    path = tmp_path / "s.state"
    a.save_state(path)
    assert not [p for p in tmp_path.iterdir() if p.name != "s.state"]  # the temporary file was renamed
    b = tfg.load(str(small))
    assert b.steps == 0
    b.load_state(path)
    assert b.steps == 3 and b.learning_rate == pytest.approx(0.02)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)
    for x, y in _batches(rng, 2):
        assert a.train_step(x, y) == b.train_step(x, y)
    a.save_state(path)  # over an existing file
    b.load_state(path)
    assert b.steps == 5


def test_bad_state_files_are_refused(small, rng, tmp_path):
    a = tfg.load(str(small))
    a.train_step(*_batches(rng, 1)[0])
    good = tmp_path / "good.state"
    a.save_state(good)
    data = good.read_bytes()
    b = tfg.load(str(small))
    before = b.state_dict()
    cases = {
        "missing": (None, "cannot open the state file"),
        "magic": (b"NOTSTATE" + data[8:], "is not a tensorforge training state file"),
        "short": (data[:100], "is not a tensorforge training state file"),
        "truncated": (data[:-10], "is truncated"),
        "longer": (data + b"x", "is longer than its header says"),
        "version": (data[:8] + (2).to_bytes(4, "little") + data[12:], "has state format version 2"),
        "flipped": (data[:200] + bytes([data[200] ^ 1]) + data[201:], r"is corrupt \(its checksum"),
    }  # fmt: skip
    for name, (content, msg) in cases.items():
        p = tmp_path / f"{name}.state"
        if content is not None:
            p.write_bytes(content)
        with pytest.raises(TensorforgeError, match=msg):
            b.load_state(p)
    other = tmp_path / "other"
    _step(mlp(batch="N", sizes=(64, 16, 10))).export_c(other, "other", batch_size=8)
    tfg.load(str(other)).save_state(tmp_path / "other.state")
    with pytest.raises(TensorforgeError, match="holds the state of another model or optimizer"):
        b.load_state(tmp_path / "other.state")
    assert b.steps == 0
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(TensorforgeError, match="cannot write the state file"):
        a.save_state(tmp_path / "no" / "dir" / "x.state")


def test_mse_export_and_names_stay_data(tmp_path, rng):
    """A regression step (float targets) whose tensor names would end a C comment or string."""
    import onnx

    m = mlp(batch="N", sizes=(6, 5, 3), softmax=False)
    weird = {"W1": 'W1 */ int x; /* "', "b2": "b2\\n%s"}
    for t in m.graph.initializer:
        t.name = weird.get(t.name, t.name)
    for n in m.graph.node:
        n.input[:] = [weird.get(i, i) for i in n.input]
    onnx.checker.check_model(m)
    py = _step(m, loss="mse")
    py2 = _step(m, loss="mse")
    py2.export_c(tmp_path, "reg", batch_size=4)
    e = tfg.load(str(tmp_path))
    assert e.num_classes == 0 and e.target.shape == (4, 3)
    assert [s.name for s in e.state_specs][:4] == ['W1 */ int x; /* "', "b1", "W2", "b2\\n%s"]
    for _ in range(5):
        x = rng.standard_normal((4, 6)).astype(np.float32)
        y = rng.standard_normal((4, 3)).astype(np.float32)
        np.testing.assert_allclose(e.train_step(x, y), py(x, y), rtol=1e-5)
    assert "int x;" not in re.sub(r'"(?:[^"\\]|\\.)*"', '""', (tmp_path / "reg.h").read_text())


def _python_digits_run(epochs: int, seed: int = 0) -> tuple[list[float], float]:
    """The Python run the C example must match: `tensorforge train --model mlp --dataset digits`'s model,
    data and shuffle, with the optimized build from the first step (no tiering) on one thread."""
    ds = datasets.digits(seed=seed)
    model = trainer.builtin_model("mlp", ds.x_train, 10, seed)
    step = tfg.training_step(model, optimizer=trainer.make_optimizer("sgd"), tiered=False, num_threads=1)
    h = trainer.fit(step, ds.x_train, ds.y_train, epochs, 32, ds.x_test, ds.y_test, seed, log=lambda s: None)
    return h.losses, 100 * h.metrics[-1]


def _run_example(out: Path, epochs: int, qemu: bool = False) -> tuple[list[float], float]:
    cmd = ["./train_example", "-e", str(epochs), "-s", "0", "-o", "trained.state", "train_x.npy", "train_y.npy",
           "test_x.npy", "test_y.npy"]  # fmt: skip
    if qemu:
        cmd = [QEMU, "-L", str(SYSROOT), *cmd]
    r = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    losses = [float(v) for v in re.findall(r"^epoch \d+/\d+: loss ([\d.]+)", r.stdout, re.M)]
    acc = float(re.search(r"held-out accuracy: ([\d.]+)%", r.stdout).group(1))
    assert len(losses) == epochs
    return losses, acc


def _export_digits(out: Path, target: str) -> None:
    assert main(["export-train", "--builtin", "mlp", "--dataset", "digits", "-o", str(out), "--name", "digits",
                 "--target", target]) == 0  # fmt: skip
    r = subprocess.run(["make", "-s"], cwd=out, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _check_digits(out: Path, epochs: int, qemu: bool = False) -> None:
    c_losses, c_acc = _run_example(out, epochs, qemu)
    py_losses, py_acc = _python_digits_run(epochs)
    assert abs(c_acc - py_acc) <= 0.5, (c_acc, py_acc)
    np.testing.assert_allclose(c_losses, py_losses, rtol=1e-3, atol=1.5e-4)  # printed with 4 decimals
    if epochs >= 20:
        assert c_acc >= 96.0
    # the saved state evaluates to the same accuracy (a session created from a state file)
    cmd = ["./train_example", "-e", "0", "-i", "trained.state", "train_x.npy", "train_y.npy", "test_x.npy",
           "test_y.npy"]  # fmt: skip
    r = subprocess.run([QEMU, "-L", str(SYSROOT), *cmd] if qemu else cmd, cwd=out, capture_output=True, text=True)
    assert r.returncode == 0 and f"held-out accuracy: {c_acc:.2f}%" in r.stdout, r.stdout + r.stderr


def test_c_example_trains_digits_like_python_x86_64(tmp_path, capsys):
    pytest.importorskip("sklearn")
    _export_digits(tmp_path, "host")
    assert "make run" in capsys.readouterr().out
    for f in ("libdigits.so", "libdigits.a", "digits.h", "digits.s", "digits.json", "README.md", "train_x.npy"):
        assert (tmp_path / f).exists(), f
    syms = subprocess.run(["nm", "-D", "--defined-only", "libdigits.so"], cwd=tmp_path, capture_output=True,
                          text=True).stdout  # fmt: skip
    names = [ln.split()[-1] for ln in syms.splitlines() if " T " in ln]
    assert "digits_train_step" in names and all(n.startswith("digits_") for n in names), names
    _check_digits(tmp_path, 20)


@needs_cross
def test_c_example_trains_digits_like_python_aarch64_qemu_short(tmp_path):
    pytest.importorskip("sklearn")
    assert CROSS_CC is not None
    _export_digits(tmp_path, "aarch64")
    assert "ARM aarch64" in subprocess.run(["file", "libdigits.so"], cwd=tmp_path, capture_output=True,
                                           text=True).stdout  # fmt: skip
    _check_digits(tmp_path, 2, qemu=True)


@pytest.mark.slow
@needs_cross
def test_c_example_trains_digits_like_python_aarch64_qemu_20_epochs(tmp_path):
    pytest.importorskip("sklearn")
    _export_digits(tmp_path, "aarch64")
    _check_digits(tmp_path, 20, qemu=True)


def test_export_train_cli_errors(tmp_path, capsys):
    assert main(["export-train", "--builtin", "mlp", "-o", str(tmp_path)]) == 1
    assert "give --dataset NAME or --data FILE.npz" in capsys.readouterr().err
    assert main(["export-train", "--builtin", "mlp", "--dataset", "digits", "--name", "1bad"]) == 1
    assert "must be a C identifier" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export-train", "--help"])
    out = capsys.readouterr().out
    for flag in ("--loss", "--optimizer", "--lr", "--momentum", "--batch-size", "--target", "--name", "--dataset"):
        assert flag in out
    with pytest.raises(TensorforgeError, match="batch size must be an integer >= 1"):
        _step().export_c(tmp_path / "x", "x", batch_size=0)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_batchnorm_cnn_statistics_and_optimizer_state_match(opt, tmp_path, rng):
    """Batch-norm statistics are state too (updated by the step, read by predict in inference mode); Adam's
    state includes a scalar step count."""
    from tensorforge.examples import small_cnn

    m = small_cnn(batch="N", channels=1, size=8, classes=10)
    make = lambda: tfg.training_step(m, optimizer=trainer.make_optimizer(opt), tiered=False, num_threads=1)  # noqa: E731
    py = make()
    make().export_c(tmp_path, "cnn", batch_size=4)
    e = tfg.load(str(tmp_path))
    assert {"bn_mean": "statistic", "bn_var": "statistic", "conv_w": "parameter"}.items() <= e.state_kinds.items()
    for _ in range(4):
        x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
        y = rng.integers(0, 10, 4)
        np.testing.assert_allclose(e.train_step(x, y), py(x, y), rtol=1e-5)
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(e.predict(x), py.predict(x), rtol=1e-4, atol=1e-6)
    state = e.state_dict()
    for name, a in py.state_dict().items():
        if name != "__steps__":
            np.testing.assert_allclose(state[name], a, rtol=1e-4, atol=1e-6, err_msg=name)
    assert not np.array_equal(state["bn_mean"], np.zeros_like(state["bn_mean"]))
