"""Gather, GatherElements, GatherND, ScatterElements, ScatterND and OneHot against the ONNX reference
evaluator: random data, negative indices, constant and runtime indices, several dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import check_model, one_node_model, rand


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("ind_shape", [(), (4,), (2, 3)])
@pytest.mark.parametrize("const", [True, False])
def test_gather(axis, ind_shape, const, rng):
    x = rand(rng, (5, 6, 7))
    dim = x.shape[axis]
    ind = rng.integers(-dim, dim, size=ind_shape).astype(np.int64)
    if const:
        check_model(one_node_model("Gather", {"x": x}, {"axis": axis}, consts={"i": ind}), {"x": x})
    else:
        check_model(one_node_model("Gather", {"x": x, "i": ind}, {"axis": axis}), {"x": x, "i": ind})


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.bool_, np.uint8])
def test_gather_dtypes(dtype, rng):
    x = rand(rng, (9, 17), dtype, low=0, high=100)
    ind = rng.integers(0, 9, size=(3, 2)).astype(np.int32)
    check_model(one_node_model("Gather", {"x": x, "i": ind}), {"x": x, "i": ind})


def test_gather_embedding(rng):
    """An embedding lookup: token ids into a table of rows (a gather along axis 0 feeding a matmul)."""
    table = rand(rng, (50, 33))
    ids = rng.integers(0, 50, size=(2, 9)).astype(np.int64)
    check_model(one_node_model("Gather", {"ids": ids}, consts={"t": table}, input_order=["t", "ids"]), {"ids": ids})


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_gather_elements(axis, rng):
    x = rand(rng, (4, 5, 6))
    shape = list(x.shape)
    shape[axis] = 3
    ind = rng.integers(-x.shape[axis], x.shape[axis], size=shape).astype(np.int64)
    check_model(one_node_model("GatherElements", {"x": x, "i": ind}, {"axis": axis}), {"x": x, "i": ind})


@pytest.mark.parametrize("case", [((5, 6, 7), (4, 2), 0), ((5, 6), (3, 2), 0), ((2, 6, 7), (2, 3, 1), 1),
                                  ((2, 3, 4, 5), (2, 3, 2), 2), ((4, 5), (1,), 0)])  # fmt: skip
def test_gather_nd(case, rng):
    xs, is_, b = case
    x = rand(rng, xs)
    m = is_[-1]
    ind = np.stack([rng.integers(-xs[b + k], xs[b + k], size=is_[:-1]) for k in range(m)], -1).astype(np.int64)
    check_model(one_node_model("GatherND", {"x": x, "i": ind}, {"batch_dims": b}), {"x": x, "i": ind})


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("axis", [0, 1])
def test_scatter_elements(reduction, axis, rng):
    x = rand(rng, (5, 6))
    ushape = (3, 4)
    ind = rng.integers(-x.shape[axis], x.shape[axis], size=ushape).astype(np.int64)
    if reduction == "none":  # duplicate targets are undefined without a reduction: make them distinct
        ind = np.stack([rng.permutation(x.shape[axis])[: ushape[axis]] for _ in range(ushape[1 - axis])], 1 - axis)
        ind = ind.astype(np.int64)
    u = rand(rng, ushape)
    attrs = {"axis": axis, "reduction": reduction}
    check_model(one_node_model("ScatterElements", {"x": x, "i": ind, "u": u}, attrs), {"x": x, "i": ind, "u": u})


@pytest.mark.parametrize("reduction", ["none", "add", "max"])
@pytest.mark.parametrize("case", [((6, 5, 4), (3, 1)), ((6, 5, 4), (2, 2)), ((6, 5), (2, 2, 2)), ((7,), (4, 1))])
def test_scatter_nd(reduction, case, rng):
    xs, is_ = case
    x = rand(rng, xs, np.int32, low=-20, high=20)
    m = is_[-1]
    n = int(np.prod(is_[:-1]))
    # distinct targets (duplicates are undefined without a reduction)
    flat = rng.choice(int(np.prod(xs[:m])), size=n, replace=False)
    ind = np.stack(np.unravel_index(flat, xs[:m]), -1).reshape(is_).astype(np.int64)
    u = rand(rng, (*is_[:-1], *xs[m:]), np.int32, low=-20, high=20)
    feeds = {"x": x, "i": ind, "u": u}
    check_model(one_node_model("ScatterND", feeds, {"reduction": reduction}), feeds)


def test_scatter_legacy(rng):
    """Opset-9 Scatter is ScatterElements (the reference evaluator has no Scatter: compare with numpy)."""
    import tensorforge as tfg

    x = rand(rng, (3, 4))
    ind = np.array([[1, 0, 2, 3]], np.int64)
    u = rand(rng, (1, 4))
    m = tfg.compile(one_node_model("Scatter", {"x": x, "i": ind, "u": u}, {"axis": 1}, opset=10))
    want = x.copy()
    want[0, ind[0]] = u[0]
    np.testing.assert_array_equal(m(x, ind, u), want)


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("ind_dtype", [np.int64, np.int32, np.float32])
def test_onehot(axis, ind_dtype, rng):
    ind = rng.integers(-4, 7, size=(3, 5)).astype(ind_dtype)
    consts = {"d": np.array(6, np.int64), "v": np.array([-1.5, 2.0], np.float32)}
    check_model(one_node_model("OneHot", {"i": ind}, {"axis": axis}, consts=consts), {"i": ind})
