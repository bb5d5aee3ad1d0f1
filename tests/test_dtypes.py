"""Every element type the issue lists — float32, float64, float16 and bfloat16 (computed in float32),
int8/16/32/64, uint8, bool — through a representative op of each family, against the ONNX reference
evaluator on random data (odd sizes, broadcasting)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from helpers import check_model, one_node_model, rand
from tensorforge.ir.dtype import is_float_dtype

FLOATS = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16]
INTS = [np.int8, np.int16, np.int32, np.int64, np.uint8]
TOL = {np.dtype(np.float16): (3e-3, 1e-3), np.dtype(ml_dtypes.bfloat16): (2e-2, 1e-2)}


def _check(model, feeds, dtype):
    rtol, atol = TOL.get(np.dtype(dtype), (1e-5, 1e-6))
    check_model(model, feeds, rtol=rtol, atol=atol)


def _x(rng, shape, dtype, lo=-4, hi=4):
    return rand(rng, shape, dtype, low=0 if np.dtype(dtype).kind == "u" else lo, high=hi)


@pytest.mark.parametrize("dtype", FLOATS + INTS)
@pytest.mark.parametrize("op", ["Add", "Mul", "Max", "Where", "Less", "Concat"])
def test_binary_families(op, dtype, rng):
    a, b = _x(rng, (3, 1, 7), dtype), _x(rng, (5, 7), dtype)
    if op == "Where":
        feeds = {"c": rng.random((5, 7)) > 0.5, "a": a, "b": b}
    elif op == "Concat":
        feeds = {"a": a, "b": _x(rng, (3, 2, 7), dtype)}
    else:
        feeds = {"a": a, "b": b}
    _check(one_node_model(op, feeds, {"axis": 1} if op == "Concat" else {}), feeds, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", ["Sigmoid", "Exp", "Softmax", "ReduceMean", "Gelu"])
def test_float_families(op, dtype, rng):
    x = _x(rng, (3, 19), dtype, -3, 3)
    _check(one_node_model(op, {"x": x}, opset=20), {"x": x}, dtype)


@pytest.mark.parametrize("dtype", FLOATS + INTS)
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "Transpose", "Gather", "Slice", "TopK", "CumSum"])
def test_data_movement_and_reductions(op, dtype, rng):
    x = _x(rng, (4, 9), dtype, -3, 3)
    consts = {"ReduceSum": {"ax": np.array([1], np.int64)}, "ReduceMax": {"ax": np.array([0], np.int64)},
              "Gather": {"i": np.array([3, -1, 0], np.int64)},
              "Slice": {"s": np.array([1, -2], np.int64), "e": np.array([4, 1], np.int64),
                        "a": np.array([0, 1], np.int64), "t": np.array([1, -2], np.int64)},
              "TopK": {"k": np.array([3], np.int64)}, "CumSum": {"a": np.array(1, np.int64)}}.get(op, {})  # fmt: skip
    _check(one_node_model(op, {"x": x}, consts=consts, n_outputs=2 if op == "TopK" else 1), {"x": x}, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, ml_dtypes.bfloat16, np.int32, np.int64])
def test_matmul(dtype, rng):
    a, b = _x(rng, (2, 5, 13), dtype, -2, 2), _x(rng, (13, 7), dtype, -2, 2)
    _check(one_node_model("MatMul", {"a": a, "b": b}), {"a": a, "b": b}, dtype)


@pytest.mark.parametrize("src", FLOATS + INTS + [np.bool_])
@pytest.mark.parametrize("dst", ["FLOAT", "DOUBLE", "FLOAT16", "BFLOAT16", "INT8", "INT32", "INT64", "UINT8", "BOOL"])
def test_cast_matrix(src, dst, rng):
    from onnx import TensorProto

    x = _x(rng, (3, 11), src, -100, 100)
    if is_float_dtype(src) and dst in ("UINT8", "INT8"):  # bfloat16 too (numpy's kind 'V')
        x = np.abs(x) if dst == "UINT8" else x / 2  # in range: out-of-range float -> int casts are undefined
    _check(one_node_model("Cast", {"x": x}, {"to": getattr(TensorProto, dst)}), {"x": x}, src)


@pytest.mark.parametrize("op", ["And", "Or", "Xor", "Not", "Equal"])
def test_bool(op, rng):
    a, b = rng.random((4, 9)) > 0.5, rng.random((9,)) > 0.5
    feeds = {"a": a} if op == "Not" else {"a": a, "b": b}
    check_model(one_node_model(op, feeds), feeds)


def test_is_float_dtype_knows_ml_dtypes_floats():
    for dt in [np.float16, np.float32, np.float64, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2]:
        assert is_float_dtype(dt), dt
    for dt in [np.int8, np.uint8, np.int64, np.bool_, np.complex64, ml_dtypes.int4, np.dtype("V4"), object]:
        assert not is_float_dtype(dt), dt


def test_reference_semantics_treat_bfloat16_as_float():
    """The ops' numpy semantics (the interpreter, constant folding) and the parameter count treat bfloat16
    as a float: numpy reports it with kind 'V', and ``kind == "f"`` tests took it for an integer (TopK
    keys truncated to integers, ``iinfo(bfloat16)`` for MaxPool's padding and empty ReduceMax, OneHot
    indices not truncated, bfloat16 weights not counted)."""
    from tensorforge.ir.interp import run_graph
    from tensorforge.ir.parser import parse_graph

    bf16 = ml_dtypes.bfloat16
    inputs = "%x: bf16[1,4], %p: bf16[1,1,2,2], %e: bf16[2,0], %h: bf16[2]"
    outputs = "%v: bf16[1,2], %i: i64[1,2], %m: bf16[1,1,3,3], %m2: bf16[1,1,3,3], %mi: i64[1,1,3,3], %r: bf16[2], " \
              "%o: bf16[2,3], %s: bf16[1,4]"  # fmt: skip
    g = parse_graph(f"graph g({inputs}) -> ({outputs}) " + """{
      %v: bf16[1,2], %i: i64[1,2] = TopK(%x, %k=const i64[1] [2]) {axis=-1, largest=1, sorted=1}
      %m: bf16[1,1,3,3] = MaxPool(%p) {kernel_shape=[2,2], pads=[1,1,1,1]}
      %m2: bf16[1,1,3,3], %mi: i64[1,1,3,3] = MaxPoolWithIndices(%p) {kernel_shape=[2,2], pads=[1,1,1,1]}
      %r: bf16[2] = ReduceMax(%e, %ax=const i64[1] [1]) {keepdims=0}
      %o: bf16[2,3] = OneHot(%h, %d=const i64[] [3], %ov=const bf16[2] [0.0, 1.0]) {axis=-1}
      %s: bf16[1,4] = Add(%x, %w=const bf16[4] [1.0, 2.0, 3.0, 4.0])
    }""")  # fmt: skip
    x = np.array([[0.25, 0.75, -0.5, 0.5]], bf16)
    p = np.array([[[[-3.0, -2.5], [-1.5, -4.0]]]], bf16)
    h = np.array([1.5, -1.0], bf16)  # indices: truncated, negative ones count from the end
    v, i, m, m2, mi, r, o, _ = run_graph(g, {"x": x, "p": p, "e": np.zeros((2, 0), bf16), "h": h})
    assert v.tolist() == [[0.75, 0.5]] and i.tolist() == [[1, 3]]
    assert m.astype(np.float32).tolist() == [[[[-3.0, -2.5, -2.5], [-1.5, -1.5, -2.5], [-1.5, -1.5, -4.0]]]]
    assert np.array_equal(m2, m)
    assert mi.tolist() == [[[[0, 1, 1], [2, 2, 1], [2, 2, 3]]]]
    assert r.dtype == bf16 and np.isneginf(r.astype(np.float32)).all()
    assert o.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert g.parameter_count() == 2 + 4  # the float constants: OneHot's values and Add's weights
