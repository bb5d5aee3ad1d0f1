"""``tfg.grad`` as a graph transformation: its output is verified IR that prints, compiles and runs; bad
requests fail with errors that name the model, node and op."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorforge as tfg
from tensorforge.autodiff import evaluate_graph, numerical_vjp, relative_error
from tensorforge.compiler import to_graph
from tensorforge.examples import mlp
from tensorforge.ir.verify import verify


def _model(nodes, inits, x_shape=(3, 4), out="y"):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_mlp_gradient_graph_is_printable_verified_ir(rng):
    g = tfg.grad(mlp(batch=4, sizes=(6, 5, 3)), wrt=["W1", "b1", "W2", "b2"])
    verify(g)
    text = str(g)
    assert "graph mlp_grad(%x: f32[4,6], %W1: f32[6,5], %b1: f32[5], %W2: f32[5,3], %b2: f32[3], %d_probs" in text
    assert "ElementwiseGrad(" in text and "{op='Relu', wrt=0}" in text
    assert "Gemm(%x, %d_fc1) {transA=1}" in text  # dW1 = xᵀ @ dfc1
    assert g.output_names == ["probs", "grad_W1", "grad_b1", "grad_W2", "grad_b2"]
    # the first layer's input gradient is never built: x is not differentiated
    assert not any(n.op == "Gemm" and n.attrs.get("transB") == 1 and n.name == "fc1" for n in g.nodes)


def test_gradient_of_value_used_twice_accumulates(rng):
    w = rng.standard_normal((4,)).astype(np.float32)
    m = _model([helper.make_node("Mul", ["x", "w"], ["a"]), helper.make_node("Mul", ["a", "a"], ["b"]),
                helper.make_node("ReduceSum", ["b"], ["y"], keepdims=0)], {"w": w})  # fmt: skip
    g = tfg.grad(m, wrt=["x", "w"])
    x = rng.standard_normal((3, 4)).astype(np.float32)
    got = tfg.compile(g).run({"x": x, "w": w})
    np.testing.assert_allclose(got["grad_x"], 2 * x * w * w, rtol=1e-5)
    np.testing.assert_allclose(got["grad_w"], (2 * x * x * w).sum(0), rtol=1e-5)
    assert got["y"].shape == ()


def test_keep_outputs_false_and_named_output(rng):
    m = mlp(batch=2, sizes=(4, 3, 2), softmax=False)
    g = tfg.grad(m, wrt=["W2"], of="fc2", keep_outputs=False)
    assert g.output_names == ["grad_W2"]
    assert [v.name for v in g.inputs] == ["x", "W2", "d_fc2"]


def test_symbolic_batch_needs_input_shapes(rng):
    m = mlp(batch="N", sizes=(4, 3, 2))
    with pytest.raises(tfg.ShapeError, match=r"gradients need static shapes.*input_shapes"):
        tfg.grad(m, wrt=["W1"])
    g = tfg.grad(m, wrt=["W1"], input_shapes={"x": (5, 4)})
    assert g.inputs[0].shape == (5, 4)


def test_parameter_that_does_not_reach_the_output_gets_zeros():
    m = mlp(batch=2, sizes=(4, 3, 2), softmax=False)
    g0 = to_graph(m)
    g0.outputs = [v for v in g0.values() if v.name == "relu1"]
    g0.output_names = ["relu1"]
    g = tfg.grad(g0, wrt=["W1", "W2"], keep_outputs=False)
    out = tfg.compile(g).run({"x": np.ones((2, 4), np.float32), "W1": np.ones((4, 3), np.float32),
                              "W2": np.ones((3, 2), np.float32), "d_relu1": np.ones((2, 3), np.float32)})  # fmt: skip
    assert np.all(out["grad_W2"] == 0) and out["grad_W2"].shape == (3, 2)
    assert np.all(out["grad_W1"] == 2)


def test_errors_name_the_problem(rng):
    m = mlp(batch=2, sizes=(4, 3, 2))
    with pytest.raises(tfg.TensorforgeError, match=r"no input or parameter named 'W9'.*parameters: \['W1'"):
        tfg.grad(m, wrt=["W9"])
    with pytest.raises(tfg.TensorforgeError, match="has no output 'nope'"):
        tfg.grad(m, wrt=["W1"], of="nope")
    prod = _model([helper.make_node("ReduceProd", ["x"], ["y"], keepdims=0, name="the_prod")], {})
    with pytest.raises(tfg.UnsupportedError, match=r"node 'the_prod' \(ReduceProd\): op ReduceProd is not "
                                                   r"differentiable.*between 'x' and 'y'"):  # fmt: skip
        tfg.grad(prod, wrt=["x"])
    shape = _model([helper.make_node("Reshape", ["x", "s"], ["y"])], {"s": np.array([4, 3], np.int64)})
    with pytest.raises(tfg.TensorforgeError, match="'s' has dtype i64; only float values have gradients"):
        tfg.grad(shape, wrt=["s"])


def test_non_differentiable_op_off_the_path_is_fine(rng):
    # ReduceProd feeds an output that is not differentiated
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("ReduceProd", ["x"], ["p"], keepdims=0)]
    m = _model(nodes, {})
    m.graph.output.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, None))
    g = tfg.grad(m, wrt=["x"], of="y")
    x = rng.standard_normal((3, 4)).astype(np.float32)
    ct = rng.standard_normal((3, 4)).astype(np.float32)
    got = tfg.compile(g).run({"x": x, "d_y": ct})
    np.testing.assert_allclose(got["grad_x"], ct * (x > 0))


def test_second_layer_chain_against_finite_differences(rng):
    """A deeper chain (conv -> relu -> pool -> flatten -> gemm -> logsoftmax) in float64 reference."""
    from tensorforge.examples import small_cnn

    m = small_cnn(batch=2, channels=2, size=6)
    g0 = to_graph(m)
    params = ["conv_w", "conv_b", "fc_w", "fc_b", "bn_scale", "bn_shift"]
    g = tfg.grad(g0, wrt=params)
    feeds = {"x": rng.standard_normal((2, 2, 6, 6))}
    for v in g0.constants():
        if v.name in params:
            feeds[v.name] = v.const.astype(np.float64)
    out = g.outputs[0]
    ct = rng.standard_normal(out.shape)
    from tensorforge.autodiff import promote

    pg, _ = promote(g0, params)
    want = numerical_vjp(pg, feeds, params, ct)
    got = evaluate_graph(g, {**feeds, f"d_{g.output_names[0]}": ct})[1:]
    for name, a, b in zip(params, got, want):
        assert relative_error(a, b) < 1e-6, name
    f32 = {k: v.astype(np.float32) for k, v in {**feeds, f"d_{g.output_names[0]}": ct}.items()}
    native = tfg.compile(g).run(f32)
    for name, b in zip(params, want):
        assert relative_error(native[f"grad_{name}"], b) < 1e-3, name


def test_multi_output_op_with_cotangents_on_every_output(rng):
    """Split's outputs both reach the loss; an embedding Gather with a repeated index accumulates."""
    emb = rng.standard_normal((5, 6)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"]),
             helper.make_node("Split", ["e", "sizes"], ["a", "b"], axis=2),
             helper.make_node("Mul", ["a", "b"], ["y"])]  # fmt: skip
    g = helper.make_graph(nodes, "m", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(emb, "emb"), numpy_helper.from_array(np.array([[1, 3, 1]]), "ids"),
                           numpy_helper.from_array(np.array([3, 3]), "sizes")])  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    gg = tfg.grad(m, wrt=["emb"])
    ct = rng.standard_normal((1, 3, 3)).astype(np.float32)
    got = tfg.compile(gg).run({"emb": emb, "d_y": ct})["grad_emb"]
    want = np.zeros_like(emb)
    for j, i in enumerate([1, 3, 1]):
        want[i, :3] += ct[0, j] * emb[i, 3:]
        want[i, 3:] += ct[0, j] * emb[i, :3]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
