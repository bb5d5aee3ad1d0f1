"""Shared test helpers: build one-node ONNX models and compare tensorforge with the ONNX reference."""

from __future__ import annotations

from collections.abc import Sequence

import ml_dtypes
import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import tensorforge as tfg

OPSET = 18
NP_TO_ONNX = {
    np.dtype(np.float32): onnx.TensorProto.FLOAT,
    np.dtype(np.float64): onnx.TensorProto.DOUBLE,
    np.dtype(np.float16): onnx.TensorProto.FLOAT16,
    np.dtype(np.int8): onnx.TensorProto.INT8,
    np.dtype(np.int16): onnx.TensorProto.INT16,
    np.dtype(np.int32): onnx.TensorProto.INT32,
    np.dtype(np.int64): onnx.TensorProto.INT64,
    np.dtype(np.uint8): onnx.TensorProto.UINT8,
    np.dtype(np.bool_): onnx.TensorProto.BOOL,
    np.dtype(ml_dtypes.bfloat16): onnx.TensorProto.BFLOAT16,
}


def rand(rng, shape, dtype=np.float32, low=-2.0, high=2.0):
    dtype = np.dtype(dtype)
    if dtype == ml_dtypes.bfloat16:
        return rng.uniform(low, high, size=shape).astype(np.float32).astype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    if dtype.kind in "iu":
        lo = max(int(low), np.iinfo(dtype).min)
        return rng.integers(lo, int(high) + 1, size=shape).astype(dtype)
    return rng.uniform(low, high, size=shape).astype(dtype)


def one_node_model(
    op: str,
    inputs: dict[str, np.ndarray],
    attrs: dict | None = None,
    consts: dict[str, np.ndarray] | None = None,
    n_outputs: int = 1,
    input_order: Sequence[str] | None = None,
    opset: int = OPSET,
) -> onnx.ModelProto:
    """A model with one ``op`` node; ``inputs`` are graph inputs, ``consts`` initializers.
    ``input_order`` names the node's inputs in order ("" for an omitted optional input)."""
    consts = consts or {}
    order = list(input_order) if input_order is not None else [*inputs, *consts]
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, order, outs, name=f"{op.lower()}_node", **(attrs or {}))
    g_inputs = [helper.make_tensor_value_info(n, NP_TO_ONNX[a.dtype], list(a.shape)) for n, a in inputs.items()]
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in consts.items()]
    g_outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outs]
    graph = helper.make_graph([node], f"{op.lower()}_test", g_inputs, g_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model = onnx.shape_inference.infer_shapes(model)
    return model


def reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ReferenceEvaluator(model).run(None, feeds)


def assert_close(got, want, rtol=1e-4, atol=1e-5, what=""):
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != reference {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != reference {want.dtype}"
    if got.dtype.kind in "iub":
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what, equal_nan=True)


def check_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol=1e-4, atol=1e-5, **compile_kw):
    m = tfg.compile(model, **compile_kw)
    got = m.run(feeds)
    want = reference(model, feeds)
    for (name, g), w in zip(got.items(), want):
        assert_close(g, w, rtol, atol, what=f"output {name}")
    return m
