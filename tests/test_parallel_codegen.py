"""Code generation in parts (``codegen/parallel.py``): a program cut into LLVM modules built and compiled side
by side in forked processes computes what the one-module build computes, links into one module for listings
and libraries, and the cut never depends on how many processes build it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge.codegen import emit
from tensorforge.codegen.parallel import fork_map, partition
from tensorforge.codegen.targets import host
from tensorforge.compiler import Options
from tensorforge.compiler.pipeline import Build
from tensorforge.errors import CompileError
from tensorforge.examples import small_cnn


@pytest.fixture
def small_parts(monkeypatch):
    """Cut even a small model into several parts."""
    monkeypatch.setattr(emit, "PART_COST", 20)
    monkeypatch.setenv("TENSORFORGE_CACHE", "0")


def _build(model, until="object"):
    return Build(model, host(), Options()).run(until)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_parts_compute_what_one_module_computes(small_parts, monkeypatch, jobs, rng):
    monkeypatch.setenv("TENSORFORGE_COMPILE_JOBS", jobs)
    model = small_cnn(batch=2)
    b = _build(model)
    assert len(b.llvm_parts) > 2 and b.object.startswith(b"TFOBJS")
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    got = tfg.CompiledModel(b.artifact())(x)
    monkeypatch.setattr(emit, "PART_COST", 10**9)
    one = _build(model)
    assert len(one.llvm_parts) == 1
    np.testing.assert_array_equal(got, tfg.CompiledModel(one.artifact())(x))


def test_the_cut_does_not_depend_on_the_jobs(small_parts, monkeypatch):
    model = small_cnn(batch=1)
    monkeypatch.setenv("TENSORFORGE_COMPILE_JOBS", "1")
    serial = _build(model, "llvm").llvm_parts
    monkeypatch.setenv("TENSORFORGE_COMPILE_JOBS", "3")
    assert _build(model, "llvm").llvm_parts == serial


def test_parts_link_into_one_module_and_survive_save(small_parts, tmp_path, rng):
    art = _build(small_cnn(batch=1)).artifact()
    text = art.llvm_ir  # linked on first use
    assert "define i32 @tf_run(" in text and text.count("define hidden void @") >= len(art.llvm_parts) - 1
    assert "tf_run:" in art.assembly()
    path = str(tmp_path / "m.tfa")
    art.save(path)
    loaded = tfg.load(path)
    assert loaded.artifact.llvm_parts == art.llvm_parts
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), tfg.CompiledModel(art)(x))


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_library_from_parts_exports_no_kernel_symbols(small_parts, tmp_path, rng):
    import ctypes

    m = tfg.CompiledModel(_build(small_cnn(batch=1)).artifact())
    files = m.export(str(tmp_path), "net")
    lib = ctypes.CDLL(files["library"])
    assert lib.net_run
    with pytest.raises(AttributeError):
        lib.tf_run  # noqa: B018  (the program's entry is internal to the library)
    kernel = m.artifact.program.kernels[0].name
    with pytest.raises(AttributeError):  # hidden: not part of the library's interface
        getattr(lib, kernel)


def test_packed_objects_round_trip_and_refuse_truncation():
    objs = [b"\x7fELF one", b"", b"\x7fELF three"]
    blob = emit.pack_objects(objs)
    assert emit.unpack_objects(blob) == objs
    assert emit.unpack_objects(b"\x7fELF plain") == [b"\x7fELF plain"]
    with pytest.raises(CompileError, match="truncated"):
        emit.unpack_objects(blob[:-1])


def test_a_failing_worker_is_a_compile_error(monkeypatch):
    import threading

    monkeypatch.setenv("TENSORFORGE_COMPILE_JOBS", "2")

    def job(i):
        if i == 1:
            raise ValueError("broken part")
        return i

    with pytest.raises(CompileError, match="worker process: ValueError: broken part"):
        fork_map(job, 3, threading.Lock())
    assert fork_map(lambda i: i * i, 4, threading.Lock()) == [0, 1, 4, 9]


def test_partition_balances_and_is_deterministic():
    costs = [50, 10, 10, 10, 10, 10, 40, 5]
    groups = partition(costs, 3)
    assert sorted(i for g in groups for i in g) == list(range(len(costs)))
    loads = sorted(sum(costs[i] for i in g) for g in groups)
    assert loads[-1] - loads[0] <= 10
    assert partition(costs, 3) == groups
