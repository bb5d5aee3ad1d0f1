"""tensorforge's thread pool (codegen/threadpool.py): every chunk of a parallel loop runs exactly once
whoever runs it, concurrent callers, fork, thread counts above the core count, exported libraries."""

from __future__ import annotations

import ctypes
import multiprocessing
import shutil
import threading

import numpy as np
import pytest
from onnx import TensorProto, helper

import tensorforge as tfg
from tensorforge.errors import CompileError
from tensorforge.examples import mlp
from tensorforge.runtime.jit import _POOL, load_runtime_libraries, pool_spin


def _pool_fn():
    load_runtime_libraries()
    cb_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    return cb_t, ctypes.CFUNCTYPE(None, cb_t, ctypes.c_void_p, ctypes.c_int32)(_POOL[0].address("tf_parallel"))


def _big_elementwise(n: int):
    """One elementwise kernel large enough to be a parallel loop."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])
    nodes = [helper.make_node("Add", ["x", "x"], ["t"]), helper.make_node("Neg", ["t"], ["y"])]  # exact: -2x
    g = helper.make_graph(nodes, "big_elementwise", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_every_call_runs_the_job_on_the_caller_and_at_most_n_minus_1_workers():
    cb_t, par = _pool_fn()
    seen: list[int] = []
    lock = threading.Lock()

    def job(_):
        with lock:
            seen.append(threading.get_ident())

    cb = cb_t(job)
    for n in (1, 2, 3, 5):
        for _ in range(30):
            seen.clear()
            par(cb, None, n)
            assert threading.get_ident() in seen  # the caller always runs the job itself
            assert 1 <= len(seen) <= n and len(set(seen)) == len(seen)


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_parallel_loops_are_exact_for_any_thread_count(threads, rng):
    m = tfg.compile(_big_elementwise(1 << 18 | 37), num_threads=threads)
    assert 'call void @"tf_parallel"' in m.llvm_ir(), "the test needs a parallel kernel"
    for _ in range(60):
        x = rng.standard_normal(1 << 18 | 37).astype(np.float32)
        np.testing.assert_array_equal(m(x), -2 * x)


def test_models_called_from_several_python_threads_at_once(rng):
    """One job at a time: a caller that finds the pool busy runs its loop alone, still exactly."""
    model = mlp(batch=256)
    m1 = tfg.compile(model, num_threads=2)
    m2 = tfg.compile(model, num_threads=2)
    xs = [rng.standard_normal((256, 784)).astype(np.float32) for _ in range(4)]
    want = [m1(x) for x in xs]
    errors: list[str] = []

    def work(k: int) -> None:
        m = (m1, m2)[k % 2]
        for i in range(40):
            got = m(xs[(k + i) % 4])
            if not np.array_equal(got, want[(k + i) % 4]):
                errors.append(f"thread {k} call {i}")

    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in ts), "a caller hung"
    assert not errors


def _child(q) -> None:
    m = tfg.compile(_big_elementwise(1 << 18), num_threads=2)
    x = np.arange(1 << 18, dtype=np.float32) / 1000
    q.put(bool(np.array_equal(m(x), -2 * x)))


def test_a_forked_child_runs_parallel_models(rng):
    """After fork the child has none of the parent's workers: it starts its own (pthread_atfork)."""
    m = tfg.compile(_big_elementwise(1 << 18), num_threads=2)
    x = rng.standard_normal(1 << 18).astype(np.float32)
    m(x)  # the parent's pool has workers now
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q,))
    p.start()
    p.join(timeout=120)
    assert p.exitcode == 0, "the child crashed or hung"
    assert q.get(timeout=5) is True


def test_spin_follows_the_environment(monkeypatch):
    monkeypatch.delenv("TENSORFORGE_SPIN", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert pool_spin() == 1000
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert pool_spin() == 0
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert pool_spin() > 10**8
    monkeypatch.setenv("TENSORFORGE_SPIN", "50")
    assert pool_spin() == 50
    monkeypatch.setenv("TENSORFORGE_SPIN", "lots")
    with pytest.raises(CompileError, match="TENSORFORGE_SPIN"):
        pool_spin()


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_exported_library_carries_the_pool(tmp_path, rng):
    m = tfg.compile(mlp(batch=256), num_threads=2)
    assert 'call void @"tf_parallel"' in m.llvm_ir()
    files = m.export(str(tmp_path), "mlp256")
    lib = tfg.load(str(tmp_path), num_threads=2)
    for _ in range(10):
        x = rng.standard_normal((256, 784)).astype(np.float32)
        np.testing.assert_array_equal(lib(x), m(x))
    with open(files["library"], "rb") as f:
        assert b"libgomp" not in f.read()
