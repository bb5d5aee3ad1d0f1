"""fork() while another thread is inside a model call: the child must not inherit the held lock
(util/forksafe.py) — it runs the model and exits, every time."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorforge as tfg
from tensorforge.examples import mlp

FORKS = 20


def _matmul(n: int, batch: int | str = 256):
    """A model whose call takes tens of milliseconds on one thread (the lock is held that long)."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32) / n, "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("MatMul", ["h", "w"], ["y"])]
    return helper.make_model(helper.make_graph(nodes, "slow", [x], [y], [w]),
                             opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip


def _fork_while_busy(busy, in_child) -> list[int]:
    """Fork FORKS times while a thread runs ``busy()`` in a loop; each child runs ``in_child()`` (True: ok)
    and exits. Returns the children's exit codes (-1: still running after 60 s, killed)."""
    stop, inside = threading.Event(), threading.Event()

    def loop():
        while not stop.is_set():
            inside.set()
            busy()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    codes = []
    try:
        for _ in range(FORKS):
            inside.wait()
            time.sleep(0.003)  # well inside a call of tens of milliseconds
            pid = os.fork()
            if pid == 0:  # the child: no pytest machinery, leave with os._exit whatever happens
                code = 3
                try:
                    code = 0 if in_child() else 2
                finally:
                    os._exit(code)
            deadline = time.monotonic() + 60
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes.append(os.waitstatus_to_exitcode(status))
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    codes.append(-1)
                    break
                time.sleep(0.005)
    finally:
        stop.set()
        t.join()
    return codes


def test_fork_during_a_compiled_model_call(rng):
    m = tfg.compile(_matmul(512), num_threads=1)
    x = rng.standard_normal((256, 512)).astype(np.float32)
    want = m(x)
    assert _fork_while_busy(lambda: m(x), lambda: np.allclose(m(x), want)) == [0] * FORKS


def test_fork_during_a_dynamic_model_call(rng):
    m = tfg.compile(_matmul(512, "batch"), num_threads=1)
    assert isinstance(m, tfg.DynamicModel)
    x = rng.standard_normal((256, 512)).astype(np.float32)
    want = m(x)
    assert _fork_while_busy(lambda: m(x), lambda: np.allclose(m(x), want)) == [0] * FORKS


def test_fork_during_a_training_step(rng):
    step = tfg.training_step(mlp(batch=64), optimizer=tfg.optim.SGD(lr=0.01), num_threads=1, tiered=False)
    x = rng.standard_normal((64, 784)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    step(x, y)
    assert _fork_while_busy(lambda: step(x, y), lambda: np.isfinite(step(x, y))) == [0] * FORKS


@pytest.mark.parametrize("module", ["tensorforge.runtime.jit", "tensorforge.codegen.emit"])
def test_module_locks_are_renewed_in_the_child(module):
    """A compile running in another thread at the fork would leave these held: the child gets new ones."""
    import importlib

    mod = importlib.import_module(module)
    r, w = os.pipe()
    with mod._LOCK:
        pid = os.fork()
        if pid == 0:
            ok = mod._LOCK.acquire(timeout=5)
            os.write(w, b"1" if ok else b"0")
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"
    os.close(r)
    os.close(w)
