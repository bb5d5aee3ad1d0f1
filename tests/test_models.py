"""Whole models against the ONNX reference: the built-in MLP and a small CNN."""

from __future__ import annotations

import numpy as np
import pytest

import tensorforge as tfg
from helpers import assert_close, reference
from tensorforge.examples import mlp, small_cnn


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_mlp_matches_reference(batch, rng):
    model = mlp(batch=batch, seed=int(rng.integers(1000)))
    m = tfg.compile(model)
    x = rng.standard_normal((batch, 784)).astype(np.float32)
    assert_close(m(x), reference(model, {"x": x})[0], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("batch", [1, 4])
def test_small_cnn_matches_reference(batch, rng):
    model = small_cnn(batch=batch, seed=int(rng.integers(1000)))
    m = tfg.compile(model)
    x = rng.standard_normal((batch, 3, 16, 16)).astype(np.float32)
    want = reference(model, {"x": x})[0]
    got = m(x)
    rel = np.max(np.abs(got - want) / (np.abs(want) + 1e-3))
    assert rel < 1e-4, rel


def test_mlp_dynamic_batch(rng):
    """A symbolic batch dim compiles once per batch size, on first use."""
    model = mlp(batch="N")
    m = tfg.compile(model)
    assert isinstance(m, tfg.DynamicModel)
    for b in (2, 5, 2):
        x = rng.standard_normal((b, 784)).astype(np.float32)
        assert_close(m(x), reference(model, {"x": x})[0], rtol=1e-4, atol=1e-7)
    assert len(m.compiled_shapes) == 2


def test_threads_give_same_result(rng):
    model = mlp(batch=64)
    m = tfg.compile(model)
    x = rng.standard_normal((64, 784)).astype(np.float32)
    m.num_threads = 1
    a = m(x)
    m.num_threads = 2
    b = m(x)
    np.testing.assert_array_equal(a, b)


def test_repeated_calls_are_independent(rng):
    m = tfg.compile(mlp(batch=2))
    x1 = rng.standard_normal((2, 784)).astype(np.float32)
    x2 = rng.standard_normal((2, 784)).astype(np.float32)
    y1 = m(x1)
    m(x2)
    np.testing.assert_array_equal(m(x1), y1)
    assert not np.shares_memory(m(x1), m(x1))


def test_keyword_and_dict_inputs(rng):
    m = tfg.compile(mlp(batch=1))
    x = rng.standard_normal((1, 784)).astype(np.float32)
    np.testing.assert_array_equal(m(x=x), m(x))
    assert set(m.run({"x": x})) == {"probs"}


def test_compile_cache_hit(tmp_path, monkeypatch, rng):
    monkeypatch.setenv("TENSORFORGE_CACHE_DIR", str(tmp_path))
    model = mlp(batch=1, seed=123)
    a = tfg.compile(model)
    b = tfg.compile(model)
    assert not a.cache_hit and b.cache_hit
    x = rng.standard_normal((1, 784)).astype(np.float32)
    np.testing.assert_array_equal(a(x), b(x))


def test_report_and_kernel_ir():
    m = tfg.compile(mlp(batch=1))
    rep = m.report()
    assert "kernels: 3" in rep and "arena" in rep and "fc1 (Gemm); relu1 (Relu)" in rep  # relu fused into fc1
    assert "kernel k0_Gemm_fc1" in m.kernel_ir()


def test_resnet_like_cnn_matches_reference(rng):
    from tensorforge.examples import resnet50

    model = resnet50(size=32, width=8, blocks=(1, 1, 1, 1), classes=10, seed=3)
    m = tfg.compile(model)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    want = reference(model, {"x": x})[0]
    np.testing.assert_allclose(m(x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_bert_like_encoder_matches_reference(rng):
    from tensorforge.examples import bert_encoder

    model = bert_encoder(seq=16, hidden=64, heads=4, layers=2, seed=5)
    m = tfg.compile(model)
    x = rng.standard_normal((1, 16, 64)).astype(np.float32)
    np.testing.assert_allclose(m(x), reference(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_slow_call_path_matches_fast(rng):
    """The pointer-table call path (used when numpy's object layout is not the expected one) agrees."""
    m = tfg.compile(mlp(batch=3))
    x = rng.standard_normal((3, 784)).astype(np.float32)
    fast = m(x)
    assert m._code.fast is not None
    m._code.fast = None
    np.testing.assert_array_equal(m(x), fast)
    xs = rng.standard_normal((784, 3)).astype(np.float32).T  # non-contiguous input is copied at the border
    np.testing.assert_array_equal(m(xs), m(np.ascontiguousarray(xs)))
