"""Pruning (compress/prune*.py) and the sparse GEMM (lower/sparse_gemm.py).

The sparse kernel is checked against numpy float64 on fresh random inputs (edge sizes, transposes, bias and a
fused activation, batched A, several threads), and shown to be chosen only below its density threshold.
Pruning is checked for what it promises: how many weights are zero and which, 2:4 groups, channel pruning
equal to the original model with the removed channels' consumers zeroed, clean refusals (residual adds,
graph outputs) and clear errors; fine-tuning keeps pruned weights at zero and recovers accuracy.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import tensorforge as tfg
from helpers import one_node_model
from tensorforge.cli import main
from tensorforge.codegen.targets import host
from tensorforge.compiler import Options, compile_graph, to_graph
from tensorforge.compress.prune import PruneError, find_layers, magnitude_masks, prune_model, two_four_mask
from tensorforge.examples import mlp, small_cnn
from tensorforge.lower.sparse_gemm import pack_csc, shuffle_strides
from tensorforge.train.prune_finetune import prune_report


def _sparse(rng, shape, density):
    """Random weights with at most ``density`` of them nonzero."""
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) >= density] = 0
    w.ravel()[np.flatnonzero(w)[int(density * w.size) :]] = 0
    return w


FORCE = {"cost_model": False}  # the sparse kernel wherever the density allows (exactness tests)


def _compile(model, threads=1, sparse=None):
    m = compile_graph(to_graph(model), host(), Options(lowering={} if sparse is None else {"sparse_gemm": sparse}))
    m.num_threads = threads
    return m


def _uses_sparse(m) -> bool:
    return "_Bval" in m.kernel_ir()


def _inits(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}


# -- the sparse kernel ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mkn", [(16, 5, 1), (17, 63, 65), (64, 64, 256), (100, 33, 70), (1000, 7, 17), (33, 300, 9)],
                         ids=lambda s: "x".join(map(str, s)))  # fmt: skip
@pytest.mark.parametrize("threads", [1, 2])
def test_sparse_matmul_exact(mkn, threads, rng):
    m, k, n = mkn
    a, b = rng.standard_normal((m, k)).astype(np.float32), _sparse(rng, (k, n), 0.2)
    model = one_node_model("MatMul", {"a": a}, consts={"b": b})
    cm = _compile(model, threads, FORCE)
    assert _uses_sparse(cm)
    got = cm.run({"a": a})["y0"]
    np.testing.assert_allclose(got, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("trans", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_sparse_gemm_transposes_bias_relu(trans, rng):
    """Gemm with alpha, beta, a bias row and a fused Relu: all applied in the sparse kernel's epilogue."""
    ta, tb = trans
    m, k, n = 37, 50, 45
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = _sparse(rng, (n, k) if tb else (k, n), 0.15)
    c = rng.standard_normal(n).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["a", "b", "c"], ["g"], transA=ta, transB=tb, alpha=0.5, beta=2.0),
             helper.make_node("Relu", ["g"], ["y"])]  # fmt: skip
    g = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(a.shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                          [numpy_helper.from_array(b, "b"), numpy_helper.from_array(c, "c")])  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    cm = _compile(model, 2, FORCE)
    assert _uses_sparse(cm) and len(cm.program.kernels) == 1  # the Relu is fused into the epilogue
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = np.maximum(0.5 * ((a64.T if ta else a64) @ (b64.T if tb else b64)) + 2.0 * c, 0)
    np.testing.assert_allclose(cm.run({"a": a})["y"], want, rtol=1e-5, atol=1e-5)


def test_sparse_batched_matmul(rng):
    a, b = rng.standard_normal((3, 21, 40)).astype(np.float32), _sparse(rng, (40, 24), 0.1)
    cm = _compile(one_node_model("MatMul", {"a": a}, consts={"b": b}), 2, FORCE)
    assert _uses_sparse(cm)
    np.testing.assert_allclose(cm.run({"a": a})["y0"], a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)


def test_sparse_kernel_chosen_by_density_and_cost(rng):
    """The digits MLP's layers at batch 256 and 80% sparsity: the hidden layer (64 x 256) gains from the sparse
    kernel, the 10-column output layer would not (transposing A costs more than its few nonzeros save)."""
    a = rng.standard_normal((256, 64)).astype(np.float32)
    sparse = _sparse(rng, (64, 256), 0.2)
    dense = rng.standard_normal((64, 256)).astype(np.float32)
    assert _uses_sparse(_compile(one_node_model("MatMul", {"a": a}, consts={"b": sparse})))
    assert not _uses_sparse(_compile(one_node_model("MatMul", {"a": a}, consts={"b": dense}), sparse=FORCE))
    assert not _uses_sparse(_compile(one_node_model("MatMul", {"a": a}, consts={"b": sparse}), sparse=False))
    h = rng.standard_normal((256, 256)).astype(np.float32)
    assert not _uses_sparse(_compile(one_node_model("MatMul", {"a": h}, consts={"b": _sparse(rng, (256, 10), 0.2)})))
    one_row = a[:1]  # a single row: a panel of 16 rows would be mostly padding
    assert not _uses_sparse(_compile(one_node_model("MatMul", {"a": one_row}, consts={"b": sparse}), sparse=FORCE))


def test_sparse_code_size_does_not_grow_with_nonzeros(rng):
    a = rng.standard_normal((32, 256)).astype(np.float32)
    sizes = []
    for density in (0.02, 0.3):
        cm = _compile(one_node_model("MatMul", {"a": a}, consts={"b": _sparse(rng, (256, 256), density)}), sparse=FORCE)
        sizes.append(len(cm.llvm_ir()))
    assert sizes[0] == sizes[1]


def test_pack_csc_roundtrip(rng):
    b = _sparse(rng, (13, 21), 0.3)
    MT, U, NB = 32, 3, 8
    ptr, off, val = pack_csc(b, MT, U, NB)
    back = np.zeros_like(b)
    for n in range(21):
        for e in range(ptr[n] * U, ptr[n + 1] * U):
            back[off[e] // MT, n] += val[e]
    np.testing.assert_array_equal(back, b)
    assert (np.diff(ptr)[21:] == 0).all()  # padding columns are empty


@pytest.mark.parametrize("W", [2, 4, 8, 16, 32])
def test_tile_transpose_by_shuffles(W):
    """The W x W tile transpose as perfect shuffles by the strides of shuffle_strides, read as code generation
    does (output vector v is the stride-s run from s*W*v mod (n-1))."""
    n = W * W
    tile = np.arange(n)
    for s in shuffle_strides(W):
        tile = np.concatenate([tile[(s * W * v) % (n - 1) + s * np.arange(W)] for v in range(W)])
    np.testing.assert_array_equal(tile, np.arange(n).reshape(W, W).T.ravel())


@pytest.mark.parametrize("target", ["x86_64", "aarch64"])
def test_sparse_kernel_other_targets_compile(target, rng):
    """8-wide (AVX2) and 4-wide (NEON) vectors: the sparse path is generated and assembles."""
    a, b = rng.standard_normal((40, 30)).astype(np.float32), _sparse(rng, (30, 20), 0.1)
    asm = tfg.assembly(one_node_model("MatMul", {"a": a}, consts={"b": b}), target=target)
    assert ("fmla" if target == "aarch64" else "vfmadd") in asm


# -- unstructured and 2:4 ---------------------------------------------------------------------------------
def test_magnitude_global_and_per_layer(rng):
    model = mlp(batch="N", sizes=(64, 48, 10))
    r = prune_model(model, 0.8)
    w = _inits(r.model)
    orig = _inits(model)
    total = sum(w[k].size for k in ("W1", "W2"))
    zeros = sum(int((w[k] == 0).sum()) for k in ("W1", "W2"))
    assert zeros == round(0.8 * total)
    # global: every dropped magnitude is at most every kept one
    kept = np.concatenate([np.abs(orig[k][w[k] != 0]) for k in ("W1", "W2")])
    dropped = np.concatenate([np.abs(orig[k][w[k] == 0]) for k in ("W1", "W2")])
    assert dropped.max() <= kept.min()
    np.testing.assert_array_equal(w["W1"][w["W1"] != 0], orig["W1"][w["W1"] != 0])  # kept weights unchanged
    np.testing.assert_array_equal(w["b1"], orig["b1"])
    per = _inits(prune_model(model, 0.5, scope="layer").model)
    for k in ("W1", "W2"):
        assert (per[k] == 0).sum() == round(0.5 * per[k].size)


def test_skip_first_last_and_exclude():
    model = mlp(batch="N", sizes=(20, 16, 12, 4))
    r = prune_model(model, 0.5, skip_first=True, skip_last=True)
    assert [x.pruned for x in r.layers] == [False, True, False]
    assert "first layer" in r.layers[0].detail and "last layer" in r.layers[2].detail
    w = _inits(r.model)
    assert (w["W1"] != 0).all() and (w["W3"] != 0).all() and (w["W2"] == 0).sum() == round(0.5 * w["W2"].size)
    r = prune_model(model, 0.5, exclude=["fc2"])
    assert [x.pruned for x in r.layers] == [True, False, True]


def test_two_four(rng):
    w = rng.standard_normal((8, 12)).astype(np.float32)
    keep = two_four_mask(w, 0)
    groups = keep.reshape(2, 4, 12)
    assert (groups.sum(axis=1) == 2).all()
    absg = np.abs(w).reshape(2, 4, 12)
    assert (np.where(groups, absg, np.inf).min(axis=1) >= np.where(groups, -np.inf, absg).max(axis=1)).all()
    r = prune_model(small_cnn(batch=1, channels=4, size=8), structured="2:4")
    conv = _inits(r.model)["conv_w"]
    assert ((conv.reshape(8, 1, 4, 9) != 0).sum(axis=2) <= 2).all()  # along the input channels
    odd = prune_model(mlp(batch=1, sizes=(6, 8, 4)), structured="2:4")  # K = 6: not a multiple of 4
    assert [x.pruned for x in odd.layers] == [False, True] and "multiple of 4" in odd.layers[0].detail


# -- channels ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_channel_pruning_equals_masked_consumers(which, rng):
    if which == "mlp":
        model = mlp(batch=5, sizes=(12, 32, 24, 6))
        x = rng.standard_normal((5, 12)).astype(np.float32)
        consumer = {"W1": ("W2", 0, 1), "W2": ("W3", 0, 1)}
    else:
        model = small_cnn(batch=2, channels=3, size=8)
        x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
        consumer = {"conv_w": ("fc_w", 1, 16)}  # Flatten: each channel is 4x4 features
    r = prune_model(model, 0.5, structured="channels")
    assert r.params_after < r.params_before and r.pruned
    masked = onnx.ModelProto()
    masked.CopyFrom(model)
    w = _inits(model)
    for res in r.pruned:
        gone = np.setdiff1d(np.arange(res.layer.shape[res.layer.out_axis]), res.kept)
        name, axis, block = consumer[res.layer.weight]
        idx = (gone[:, None] * block + np.arange(block)).ravel()
        sl = [slice(None)] * w[name].ndim
        sl[axis] = idx
        w[name][tuple(sl)] = 0
    for t in masked.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(w[t.name], t.name))
    want = ReferenceEvaluator(masked).run(None, {"x": x})[0]
    got = tfg.compile(r.model).run({"x": x})
    np.testing.assert_allclose(list(got.values())[0], want, rtol=1e-4, atol=1e-5)


def test_channel_pruning_refuses_residual_and_output():
    b = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
         helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
         helper.make_node("Add", ["c2", "r1"], ["s"], name="residual"),
         helper.make_node("Conv", ["s", "w3"], ["y"], name="conv3")]  # fmt: skip
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in [("w1", (8, 3, 3, 3)), ("w2", (8, 8, 3, 3)), ("w3", (4, 8, 1, 1))]]  # fmt: skip
    g = helper.make_graph(b, "res", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], inits)  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(PruneError, match="nothing could be pruned") as e:
        prune_model(model, 0.5, structured="channels")
    assert "residual" in str(e.value) and "graph output 'y'" in str(e.value)


# -- errors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sparsity", [0, 1, 1.5, -0.1, "abc", None])
def test_bad_sparsity(sparsity):
    with pytest.raises(PruneError, match="sparsity"):
        prune_model(mlp(batch=1, sizes=(8, 8, 4)), sparsity)


def test_bad_mode_and_nothing_to_prune():
    with pytest.raises(PruneError, match="unknown structured"):
        prune_model(mlp(batch=1, sizes=(8, 8, 4)), 0.5, structured="3:4")
    with pytest.raises(PruneError, match="exactly half"):
        prune_model(mlp(batch=1, sizes=(8, 8, 4)), 0.8, structured="2:4")
    relu = one_node_model("Relu", {"x": np.zeros((2, 3), np.float32)})
    with pytest.raises(PruneError, match="nothing to prune"):
        prune_model(relu, 0.5)
    with pytest.raises(PruneError, match="every prunable layer is left out"):
        prune_model(mlp(batch=1, sizes=(8, 8)), 0.5, skip_first=True)
    with pytest.raises(PruneError, match="finetune option"):
        prune_report(mlp(batch=1, sizes=(8, 8, 4)), 0.5, finetune={"data": "digits", "epoch": 1})


def test_magnitude_masks_count(rng):
    ws = {"a": rng.standard_normal((7, 5)), "b": rng.standard_normal(11)}
    m = magnitude_masks(ws, 0.3)
    assert sum(int((~k).sum()) for k in m.values()) == round(0.3 * 46)


def test_find_layers_axes():
    layers = {ly.node: ly for ly in find_layers(small_cnn(batch=1))}
    assert (layers["conv"].k_axis, layers["conv"].out_axis) == (1, 0)
    assert (layers["fc"].k_axis, layers["fc"].out_axis) == (1, 0)  # transB=1: [N, K]


# -- fine-tuning and the command line ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_mlp():
    from tensorforge.train import datasets, trainer

    ds = datasets.load("digits")
    step = tfg.training_step(trainer.builtin_model("mlp", ds.x_train, 10), optimizer=trainer.make_optimizer("sgd"))
    h = trainer.fit(step, ds.x_train, ds.y_train, 20, 32, ds.x_test, ds.y_test, log=lambda s: None)
    return step.export_onnx(), h.metrics[-1], ds


def test_finetune_recovers_accuracy_and_keeps_zeros(digits_mlp):
    dense, dense_acc, ds = digits_mlp
    r = prune_report(dense, 0.8, finetune={"data": "digits", "epochs": 5})
    f = r.finetune
    assert f["accuracy_after"] >= dense_acc - 0.02, (dense_acc, f)
    w = _inits(r.model)
    for name, keep in r.masks.items():
        assert (w[name][~keep] == 0).all()
    assert r.nonzero_after <= round(0.2 * sum(w[k].size for k in ("W1", "W2")))
    # the pruned model, compiled: the sparse kernel at batch 64, and the accuracy the report claims
    m = tfg.compile(r.model, input_shapes={"x": [len(ds.x_test), 64]})
    assert _uses_sparse(m)
    acc = float((m.run({"x": ds.x_test})["probs"].argmax(1) == ds.y_test).mean())
    assert abs(acc - f["accuracy_after"]) < 1e-9


def test_cli_prune(tmp_path, capsys):
    src, out = tmp_path / "m.onnx", tmp_path / "p.onnx"
    onnx.save(mlp(batch="N", sizes=(64, 32, 10)), src)
    assert main(["prune", str(src), "--sparsity", "0.5", "--structured", "channels", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fc1" in text and "32 -> 16 output channels" in text and "pruned model written" in text
    assert _inits(onnx.load(out))["W1"].shape == (64, 16)
    for argv, msg in [(["--sparsity", "2"], "between 0 and 1"), (["--structured", "3:4"], "invalid choice"),
                      ([], "give a sparsity"), (["--sparsity", "x"], "must be a number")]:  # fmt: skip
        assert main(["prune", str(src), *argv, "-o", str(out)]) == 1
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1
    assert main(["prune", str(tmp_path / "missing.onnx"), "--sparsity", "0.5", "-o", str(out)]) == 1
    assert "no such file" in capsys.readouterr().err
