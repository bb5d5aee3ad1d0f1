"""The artifact between compiling and running: saved and loaded whole, cached by what it was compiled
from, verified before any of its code is loaded, and never trusted when damaged or foreign."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

import tensorforge as tfg
from tensorforge.codegen.targets import get_target
from tensorforge.compiler import api as compiler_api
from tensorforge.compiler import cache as compiler_cache
from tensorforge.examples import mlp, small_cnn
from tensorforge.runtime.artifact import ArtifactError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("TENSORFORGE_CACHE_DIR", str(d))
    return d


def _entries(cache) -> list:
    compiler_cache.wait()  # compile writes its cache entry in the background
    return sorted(cache.glob("*.tfa"))


def test_save_and_load_run_the_same_code(tmp_path, rng):
    m = tfg.compile(small_cnn(batch=2))
    path = str(tmp_path / "cnn.tfa")
    m.save(path)
    n = tfg.load(path)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(n(x), m(x))
    assert n.cache_hit and n.name == m.name
    assert str(n.graph) == str(m.graph) and n.kernel_ir() == m.kernel_ir() and n.llvm_ir() == m.llvm_ir()
    assert [str(k) for k in n.kernels] == [str(k) for k in m.kernels]
    assert n.assembly() == m.assembly()
    assert "kernels (in execution order)" in n.report() and "loaded in" in n.report()
    # the graph comes back with its constants: it compiles again to the same results
    np.testing.assert_array_equal(tfg.compile(n.graph)(x), m(x))


def test_cache_hit_skips_every_stage(cache, monkeypatch, rng):
    model = mlp(batch=2, seed=7)
    a = tfg.compile(model)
    assert not a.cache_hit and len(_entries(cache)) == 1

    def no_build(*args, **kwargs):
        raise AssertionError("a cache hit must not import, optimize, lower or run LLVM")

    monkeypatch.setattr(compiler_api, "Build", no_build)
    b = tfg.compile(model)
    assert b.cache_hit
    x = rng.standard_normal((2, 784)).astype(np.float32)
    np.testing.assert_array_equal(a(x), b(x))
    with pytest.raises(AssertionError):  # another model (other weights) is not a hit
        tfg.compile(mlp(batch=2, seed=8))


def test_cache_key_follows_the_file_contents(cache, tmp_path, rng):
    path = str(tmp_path / "m.onnx")
    x = rng.standard_normal((1, 784)).astype(np.float32)
    onnx.save(mlp(seed=1), path)
    y1 = tfg.compile(path)(x)
    assert tfg.compile(path).cache_hit
    onnx.save(mlp(seed=2), path)  # same path, new weights: never the old code
    m2 = tfg.compile(path)
    assert not m2.cache_hit
    np.testing.assert_array_equal(m2(x), tfg.compile(mlp(seed=2), name="m")(x))
    assert not np.array_equal(m2(x), y1)


@pytest.mark.parametrize("damage", ["truncate", "flip_object", "flip_const", "garbage", "empty"])
def test_damaged_entry_is_replaced_not_run(cache, rng, damage):
    model = mlp(batch=1, seed=3)
    x = rng.standard_normal((1, 784)).astype(np.float32)
    want = tfg.compile(model)(x)
    (entry,) = _entries(cache)
    data = bytearray(entry.read_bytes())
    header_end = data.index(b'"blobs"')
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage in ("flip_object", "flip_const"):
        data[_blob_offset(entry, "object" if damage == "flip_object" else "const/0") + 17] ^= 0x40
    elif damage == "garbage":
        data[header_end:] = os.urandom(len(data) - header_end)
    else:
        data = bytearray()
    entry.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="damaged compile-cache entry"):
        m = tfg.compile(model)
    assert not m.cache_hit
    np.testing.assert_array_equal(m(x), want)
    assert tfg.compile(model).cache_hit  # the entry was written again


def _blob_offset(path, name: str) -> int:
    from tensorforge.runtime.artifact import _Reader

    r = _Reader(str(path))
    return r.start + r.header["blobs"][name][0]


def test_foreign_entry_in_the_slot_is_not_run(cache, rng):
    a, b = mlp(batch=1, seed=4), mlp(batch=1, seed=5)
    tfg.compile(a)
    (ea,) = _entries(cache)
    tfg.compile(b)
    (eb,) = [e for e in _entries(cache) if e != ea]
    eb.write_bytes(ea.read_bytes())  # model a's artifact under model b's key
    x = rng.standard_normal((1, 784)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="another key"):
        m = tfg.compile(b)
    np.testing.assert_array_equal(m(x), tfg.compile(b, name="fresh")(x))


def test_load_refuses_what_it_cannot_run(tmp_path):
    bad = tmp_path / "not.tfa"
    bad.write_bytes(b"\x7fELF" + os.urandom(100))
    with pytest.raises(ArtifactError, match="not a tensorforge artifact"):
        tfg.load(str(bad))
    art, _, _ = compiler_api.build_artifact(mlp(), get_target("aarch64"), tfg.Options(), until="llvm")
    path = str(tmp_path / "arm.tfa")
    art.save(path)
    with pytest.raises(tfg.TensorforgeError, match="no native code"):
        tfg.load(path)


def test_cache_off(monkeypatch, tmp_path):
    monkeypatch.setenv("TENSORFORGE_CACHE", "0")
    monkeypatch.setenv("TENSORFORGE_CACHE_DIR", str(tmp_path))
    m = tfg.compile(mlp(seed=9))
    assert not m.cache_hit and not tfg.compile(mlp(seed=9)).cache_hit
    assert not list(tmp_path.glob("*.tfa"))


def test_cache_keeps_to_its_size_limit(cache, monkeypatch, rng):
    from tensorforge.compiler.cache import size_limit

    monkeypatch.setenv("TENSORFORGE_CACHE_SIZE", "2M")
    assert size_limit() == 2 << 20
    x = rng.standard_normal((1, 784)).astype(np.float32)
    want = tfg.compile(mlp(seed=11))(x)  # an entry of ~1.7 MB (weights, packed and as in the graph)
    first = _entries(cache)
    assert len(first) == 1
    tfg.compile(mlp(seed=12))
    assert len(_entries(cache)) == 1 and _entries(cache) != first  # the least recently used entry went
    m = tfg.compile(mlp(seed=11))
    assert not m.cache_hit
    np.testing.assert_array_equal(m(x), want)


def test_identical_files_keep_their_own_names(cache, tmp_path):
    onnx.save(mlp(seed=13), str(tmp_path / "first.onnx"))
    onnx.save(mlp(seed=13), str(tmp_path / "second.onnx"))
    assert tfg.compile(str(tmp_path / "first.onnx")).name == "first"
    assert tfg.compile(str(tmp_path / "second.onnx")).name == "second"


class _Payload:
    """Unpickling this writes a file: proof that a cache entry executed code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_cache_entries_never_execute_code(cache, tmp_path):
    import pickle

    marker = tmp_path / "executed"
    model = mlp(seed=14)
    tfg.compile(model)
    (entry,) = _entries(cache)
    entry.write_bytes(pickle.dumps(_Payload(str(marker))))  # what an attacker with write access could put
    with pytest.warns(RuntimeWarning, match="damaged compile-cache entry"):
        assert not tfg.compile(model).cache_hit
    assert not marker.exists()


def test_scalars_keep_their_shape_through_the_cache(cache):
    """A 0-d constant output (Size of a static tensor) is 0-d again after a cache hit."""
    from helpers import one_node_model

    model = one_node_model("Size", {"x": np.zeros((3, 4, 5), np.float32)})
    x = np.ones((3, 4, 5), np.float32)
    fresh = tfg.compile(model)(x)
    loaded = tfg.compile(model)
    assert loaded.cache_hit and fresh.shape == () and loaded(x).shape == () and loaded(x) == 60
