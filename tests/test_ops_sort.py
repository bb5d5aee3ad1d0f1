"""TopK, ArgMax, ArgMin, Hardmax, CumSum and CumProd against the ONNX reference evaluator, with ties,
odd sizes, every axis and several dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import check_model, one_node_model, rand


@pytest.mark.parametrize("largest", [1, 0])
@pytest.mark.parametrize("axis,k", [(-1, 3), (0, 2), (1, 1), (-1, 13), (1, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_topk(largest, axis, k, dtype, rng):
    x = rand(rng, (4, 5, 13), dtype, low=-5, high=5)  # small integer range: many ties
    if dtype == np.float32:
        x = np.round(x)
    check_model(one_node_model("TopK", {"x": x}, {"axis": axis, "largest": largest},
                               consts={"k": np.array([k], np.int64)}, n_outputs=2), {"x": x})  # fmt: skip


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis,keepdims,last", [(0, 1, 0), (1, 0, 0), (-1, 1, 1), (2, 0, 1)])
def test_argmax(op, axis, keepdims, last, rng):
    x = rand(rng, (3, 7, 17), np.int32, low=-3, high=3)  # ties: first vs last index matters
    attrs = {"axis": axis, "keepdims": keepdims, "select_last_index": last}
    check_model(one_node_model(op, {"x": x}, attrs), {"x": x})


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_hardmax(axis, rng):
    x = np.round(rand(rng, (3, 4, 9), low=-2, high=2))
    check_model(one_node_model("Hardmax", {"x": x}, {"axis": axis}), {"x": x})


@pytest.mark.parametrize("op", ["CumSum", "CumProd"])
@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("axis", [0, -1])
def test_cumulative(op, exclusive, reverse, axis, rng):
    x = rand(rng, (5, 11), low=0.5, high=1.5) if op == "CumProd" else rand(rng, (5, 11), np.int64, low=-9, high=9)
    attrs = {"exclusive": exclusive, "reverse": reverse}
    opset = 26 if op == "CumProd" else 18  # CumProd is new in opset 26
    model = one_node_model(op, {"x": x}, attrs, consts={"a": np.array(axis, np.int64)}, opset=opset)
    check_model(model, {"x": x}, rtol=1e-5)


EINSUMS = [("ij,jk->ik", [(5, 7), (7, 3)]), ("bhqd,bhkd->bhqk", [(2, 3, 5, 8), (2, 3, 6, 8)]),
           ("bij,bjk->bki", [(2, 4, 5), (2, 5, 3)]), ("...ij,...jk->...ik", [(3, 1, 4, 5), (2, 5, 6)]),
           ("ii->i", [(6, 6)]), ("ii", [(5, 5)]), ("ij->", [(4, 9)]), ("i,j->ij", [(4,), (7,)]),
           ("ij,jk,kl->il", [(3, 4), (4, 5), (5, 2)]), ("bij->bji", [(2, 3, 4)])]  # fmt: skip


@pytest.mark.parametrize("eq,shapes", EINSUMS, ids=[e for e, _ in EINSUMS])
def test_einsum(eq, shapes, rng):
    feeds = {f"x{i}": rand(rng, s) for i, s in enumerate(shapes)}
    check_model(one_node_model("Einsum", feeds, {"equation": eq}), feeds, rtol=1e-4, atol=1e-5)
