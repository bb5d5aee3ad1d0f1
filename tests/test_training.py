"""``tfg.training_step``: one native call per batch that matches PyTorch step for step, checks its inputs at
the border, leaves the state untouched when a step fails, saves/restores its state and exports ONNX."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import tensorforge as tfg
from tensorforge.examples import mlp

torch = pytest.importorskip("torch")
F = torch.nn.functional

SIZES = (12, 16, 4)


def _weights(model):
    return {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}


def _torch_mlp(w, softmax_out=False):
    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w.items()}

    def forward(x):
        h = torch.relu(torch.tensor(x, dtype=torch.float64) @ tp["W1"] + tp["b1"])
        return h @ tp["W2"] + tp["b2"]

    return tp, forward


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _batches(rng, n, batch=8, sizes=SIZES):
    return [(rng.standard_normal((batch, sizes[0])).astype(np.float32), rng.integers(0, sizes[-1], batch))
            for _ in range(n)]  # fmt: skip


OPTIMIZERS = [
    ("sgd", lambda: tfg.optim.SGD(lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    ("momentum-wd", lambda: tfg.optim.SGD(lr=0.05, momentum=0.9, weight_decay=1e-2),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2)),
    ("nesterov", lambda: tfg.optim.SGD(lr=0.05, momentum=0.8, nesterov=True),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
    ("adam", lambda: tfg.optim.Adam(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2),
     lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2)),
    ("adamw", lambda: tfg.optim.AdamW(lr=1e-2), lambda p: torch.optim.AdamW(p, lr=1e-2)),
]  # fmt: skip


@pytest.mark.parametrize("name,ours,theirs", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_optimizers_match_torch(name, ours, theirs, rng):
    model = mlp(batch="N", sizes=SIZES, softmax=False)
    step = tfg.training_step(model, optimizer=ours())
    tp, forward = _torch_mlp(_weights(model))
    opt = theirs(list(tp.values()))
    for x, y in _batches(rng, 6):
        loss = step(x, y)
        tl = F.cross_entropy(forward(x), torch.tensor(y))
        opt.zero_grad()
        tl.backward()
        opt.step()
        assert abs(loss - tl.item()) <= 1e-5 * max(1.0, abs(tl.item()))
    for k, v in step.parameters.items():
        assert _rel(v, tp[k].detach().numpy()) < 1e-4, k
    assert step.steps == 6


def test_learning_rate_is_read_every_step(rng):
    model = mlp(batch="N", sizes=SIZES, softmax=False)
    step = tfg.training_step(model, optimizer=tfg.optim.SGD(lr=0.1, momentum=0.5))
    tp, forward = _torch_mlp(_weights(model))
    opt = torch.optim.SGD(list(tp.values()), lr=0.1, momentum=0.5)
    for i, (x, y) in enumerate(_batches(rng, 4)):
        lr = 0.1 / (1 + i)
        step.optimizer.lr = lr
        for group in opt.param_groups:
            group["lr"] = lr
        step(x, y)
        opt.zero_grad()
        F.cross_entropy(forward(x), torch.tensor(y)).backward()
        opt.step()
    for k, v in step.parameters.items():
        assert _rel(v, tp[k].detach().numpy()) < 1e-4, k


@pytest.mark.parametrize("kind", ["probabilities", "one-hot", "int32", "logits-flag"])
def test_cross_entropy_forms(kind, rng):
    """From a Softmax output (via LogSoftmax of its input), one-hot targets, int32 indices, from_logits."""
    softmax = kind != "logits-flag"
    model = mlp(batch="N", sizes=SIZES, softmax=softmax)
    from_logits = True if kind == "logits-flag" else None
    step = tfg.training_step(model, optimizer=tfg.optim.SGD(lr=0.2), from_logits=from_logits)
    tp, forward = _torch_mlp(_weights(model))
    opt = torch.optim.SGD(list(tp.values()), lr=0.2)
    for x, y in _batches(rng, 3):
        target = {"one-hot": np.eye(SIZES[-1], dtype=np.float32)[y], "int32": y.astype(np.int32)}.get(kind, y)
        loss = step(x, target)
        tl = F.cross_entropy(forward(x), torch.tensor(y))
        opt.zero_grad()
        tl.backward()
        opt.step()
        assert abs(loss - tl.item()) < 1e-5
    for k, v in step.parameters.items():
        assert _rel(v, tp[k].detach().numpy()) < 1e-4, k


def test_cross_entropy_of_probabilities_not_from_softmax(rng):
    """Probabilities from something else than a Softmax are logged directly (clamped away from 0)."""
    model = mlp(batch="N", sizes=SIZES, softmax=True)
    step = tfg.training_step(model, from_logits=False)
    g = step.training_graph(4)
    assert any(n.op == "LogSoftmax" for n in g.nodes)  # still recognized as a Softmax output
    model.graph.node[-1].op_type = "Sigmoid"
    del model.graph.node[-1].attribute[:]
    step = tfg.training_step(model, from_logits=False)
    assert not any(n.op == "LogSoftmax" for n in step.training_graph(4).nodes)
    x, y = _batches(rng, 1)[0]
    tp, forward = _torch_mlp(_weights(model))
    p = torch.sigmoid(forward(x))
    want = F.nll_loss(torch.log(p), torch.tensor(y)).item()
    assert abs(step(x, y) - want) < 1e-5


def test_mse(rng):
    model = mlp(batch="N", sizes=SIZES, softmax=False)
    step = tfg.training_step(model, loss="mse", optimizer=tfg.optim.Adam(lr=1e-2))
    tp, forward = _torch_mlp(_weights(model))
    opt = torch.optim.Adam(list(tp.values()), lr=1e-2)
    for x, _ in _batches(rng, 4):
        t = rng.standard_normal((8, SIZES[-1])).astype(np.float32)
        loss = step(x, t)
        tl = F.mse_loss(forward(x), torch.tensor(t, dtype=torch.float64))
        opt.zero_grad()
        tl.backward()
        opt.step()
        assert abs(loss - tl.item()) < 1e-5 * max(1, tl.item())
    for k, v in step.parameters.items():
        assert _rel(v, tp[k].detach().numpy()) < 1e-4, k


def test_batch_sizes_share_parameters(rng):
    model = mlp(batch="N", sizes=SIZES, softmax=False)
    step = tfg.training_step(model, optimizer=tfg.optim.SGD(lr=0.1, momentum=0.9))
    tp, forward = _torch_mlp(_weights(model))
    opt = torch.optim.SGD(list(tp.values()), lr=0.1, momentum=0.9)
    for batch in (8, 5, 8, 3):
        x, y = _batches(rng, 1, batch)[0]
        step(x, y)
        opt.zero_grad()
        F.cross_entropy(forward(x), torch.tensor(y)).backward()
        opt.step()
    assert len(step._variants) == 3
    for k, v in step.parameters.items():
        assert _rel(v, tp[k].detach().numpy()) < 1e-4, k


def _snapshot(step):
    return {k: v for k, v in step.state_dict().items()}


def _unchanged(step, before):
    after = step.state_dict()
    return all(np.array_equal(before[k], after[k]) for k in before)


def test_bad_inputs_raise_and_change_nothing(rng):
    model = mlp(batch="N", sizes=SIZES, softmax=False)
    step = tfg.training_step(model, optimizer=tfg.optim.Adam(lr=1e-2))
    x, y = _batches(rng, 1)[0]
    step(x, y)
    before = _snapshot(step)
    bad_y = y.copy()
    bad_y[3] = 4
    with pytest.raises(tfg.TrainingError, match=r"class index 4 at position 3 is out of range.*4 classes \(0..3\)"):
        step(x, bad_y)
    with pytest.raises(tfg.TrainingError, match="class index -1 at position 0"):
        step(x, np.full(8, -1))
    with pytest.raises(tfg.InputError, match=r"input 'x' has shape \[8, 11\], expected \['batch', 12\]"):
        step(x[:, :11], y)
    with pytest.raises(tfg.InputError, match="dtype float64, expected float32"):
        step(x.astype(np.float64), y)
    with pytest.raises(tfg.InputError, match=r"class-index targets must have shape \[8\]"):
        step(x, y[:5])
    with pytest.raises(tfg.InputError, match=r"targets must be .* shaped like the output \[8, 4\]"):
        step(x, np.zeros((8, 3), np.float32))
    assert _unchanged(step, before) and step.steps == 1
    # a non-finite loss: detected in native code, nothing is written, the step raises
    xi = x.copy()
    xi[2, 5] = np.inf
    with pytest.raises(tfg.TrainingError, match=r"the loss is nan at step 2; the parameters and optimizer state were "
                                                r"left unchanged"):  # fmt: skip
        step(xi, y)
    assert _unchanged(step, before) and step.steps == 1
    step(x, y)  # and training goes on
    assert not _unchanged(step, before)


@pytest.mark.parametrize("name,ours", [(o[0], o[1]) for o in OPTIMIZERS], ids=[o[0] for o in OPTIMIZERS])
def test_an_update_that_overflows_changes_nothing(name, ours, rng):
    """A huge learning rate overflows the parameters while the loss is finite: the step's ok covers the new
    values too, so it raises, names what went non-finite and writes nothing; a sane rate then trains on."""
    step = tfg.training_step(mlp(batch="N", sizes=SIZES, softmax=False), optimizer=ours())
    x, y = _batches(rng, 1)[0]
    step(100 * x, y)
    before = step.state_dict()
    step.optimizer.lr = 3e38
    with pytest.raises(tfg.TrainingError, match=r"model 'mlp': step 2 would make parameter 'W1'.* non-finite \(the "
                       r"loss, [-0-9.e+]+, is finite\); the parameters and optimizer state were left unchanged \(lower "
                       r"the learning rate, 3e\+38\)"):  # fmt: skip
        step(100 * x, y)
    assert _unchanged(step, before) and step.steps == 1
    assert all(np.isfinite(a).all() for a in step.state_dict().values())
    step.optimizer.lr = 1e-3
    step(x, y)
    assert not _unchanged(step, before) and step.steps == 2


def test_the_update_check_costs_one_fused_pass_per_parameter():
    """The tentative update is computed inside the reduction that checks it (one kernel per parameter, nothing
    of it stored), and the real update still writes in place."""
    step = tfg.training_step(mlp(batch=8, sizes=SIZES), optimizer=tfg.optim.SGD(lr=0.1, momentum=0.9))
    step(np.zeros((8, SIZES[0]), np.float32), np.zeros(8, np.int64))
    kernels = next(iter(step._variants.values())).prog.program.kernels
    checks = [k for k in kernels if any(lab.startswith("update check (MomentumUpdate)") for lab in k.labels)]
    assert len(checks) == 4 and all(any(lab.endswith("(ReduceSum)") for lab in k.labels) for k in checks)
    assert not [k for k in kernels if any(lab.startswith("state ") for lab in k.labels)]


def test_fixed_batch_models_say_so(rng):
    step = tfg.training_step(mlp(batch=8, sizes=SIZES, softmax=False))
    x, y = _batches(rng, 1, 4)[0]
    with pytest.raises(tfg.InputError, match="fixed batch of 8, got a batch of 4"):
        step(x, y)


def test_configuration_errors():
    model = mlp(batch="N", sizes=SIZES)
    with pytest.raises(tfg.TensorforgeError, match="unknown loss 'hinge'; losses: cross_entropy, mse"):
        tfg.training_step(model, loss="hinge")
    with pytest.raises(tfg.TensorforgeError, match=r"no float initializer\(s\) \['W7'\]; its float initializers are"):
        tfg.training_step(model, params=["W7"])
    with pytest.raises(tfg.TensorforgeError, match="momentum must be >= 0"):
        tfg.optim.SGD(momentum=-1)
    with pytest.raises(tfg.TensorforgeError, match="nesterov needs a momentum"):
        tfg.optim.SGD(nesterov=True)
    step = tfg.training_step(model, frozen=["W1", "b1"])
    assert step.params == ["W2", "b2"]


def test_frozen_parameters_do_not_move(rng):
    model = mlp(batch="N", sizes=SIZES, softmax=False)
    step = tfg.training_step(model, frozen=["W1"], optimizer=tfg.optim.SGD(lr=0.5))
    w1 = _weights(model)["W1"]
    for x, y in _batches(rng, 2):
        step(x, y)
    assert "W1" not in step.parameters
    exported = {t.name: numpy_helper.to_array(t) for t in step.export_onnx().graph.initializer}
    assert np.array_equal(exported["W1"], w1) and not np.array_equal(exported["W2"], _weights(model)["W2"])


def test_save_and_restore(tmp_path, rng):
    model = mlp(batch="N", sizes=SIZES, softmax=False)
    batches = _batches(rng, 7)
    # untiered: the comparison below is bit for bit, and unoptimized code may round differently
    step = tfg.training_step(model, optimizer=tfg.optim.Adam(lr=1e-2), tiered=False)
    for x, y in batches[:3]:
        step(x, y)
    step.save(tmp_path / "state.npz")
    for x, y in batches[3:]:
        step(x, y)
    want = step.state_dict()
    other = tfg.training_step(model, optimizer=tfg.optim.Adam(lr=1e-2), tiered=False)
    other.load(tmp_path / "state.npz")
    assert other.steps == 3
    for x, y in batches[3:]:
        other(x, y)
    got = other.state_dict()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert set(want) >= {"W1", "W1.m", "W1.v", "adam_step", "__steps__"}
    with pytest.raises(tfg.TensorforgeError, match=r"missing \['W1.momentum'"):
        tfg.training_step(model, optimizer=tfg.optim.SGD(momentum=0.9)).load(tmp_path / "state.npz")


def test_export_runs_in_onnxruntime_and_tensorforge(tmp_path, rng):
    ort = pytest.importorskip("onnxruntime")
    model = mlp(batch="N", sizes=SIZES)
    step = tfg.training_step(model, optimizer=tfg.optim.SGD(lr=0.3, momentum=0.9))
    for x, y in _batches(rng, 5):
        step(x, y)
    path = tmp_path / "trained.onnx"
    m = step.export_onnx(path)
    onnx.checker.check_model(m)
    x = rng.standard_normal((5, SIZES[0])).astype(np.float32)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ours = tfg.compile(str(path))(x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(step.predict(x), theirs, rtol=1e-5, atol=1e-6)
    assert not np.allclose(tfg.compile(model)(x), theirs)  # it did train


def test_export_of_a_graph_model(rng):
    """A model given as a tensorforge Graph is written out by the graph exporter."""
    ort = pytest.importorskip("onnxruntime")
    from tensorforge.compiler import to_graph

    model = mlp(batch="N", sizes=SIZES, softmax=False)
    step = tfg.training_step(to_graph(model), optimizer=tfg.optim.SGD(lr=0.3))
    assert step.params == ["W1", "b1", "W2", "b2"]
    tp, forward = _torch_mlp(_weights(model))
    opt = torch.optim.SGD(list(tp.values()), lr=0.3)
    for x, y in _batches(rng, 2):
        step(x, y)
        opt.zero_grad()
        F.cross_entropy(forward(x), torch.tensor(y)).backward()
        opt.step()
    for k, v in step.parameters.items():
        assert _rel(v, tp[k].detach().numpy()) < 1e-4, k
    m = step.export_onnx()
    onnx.checker.check_model(m)
    x = rng.standard_normal((3, SIZES[0])).astype(np.float32)
    theirs = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(step.predict(x), theirs, rtol=1e-5, atol=1e-6)


def test_whole_step_is_one_graph_with_in_place_updates():
    step = tfg.training_step(mlp(batch="N", sizes=SIZES), optimizer=tfg.optim.SGD(lr=0.1, momentum=0.9))
    g = step.training_graph(8)
    assert [v.name for v in g.inputs][:3] == ["x", "target", "lr"]
    assert g.output_names[:3] == ["loss", "W1_new", "b1_new"]
    text = str(g)
    assert "LogSoftmax(%fc2) {axis=1}" in text  # the Softmax output is trained through its logits
    assert "MomentumUpdate(%W1, %W1.momentum_new" in text
    x = np.zeros((8, SIZES[0]), np.float32)
    step(x, np.zeros(8, np.int64))
    kernels = next(iter(step._variants.values())).prog.program.kernels
    assert not [k for k in kernels if any(lab.startswith("state ") for lab in k.labels)]  # no copies: in place


def test_tiered_compilation_switches_to_the_optimized_build(rng, monkeypatch):
    monkeypatch.setenv("TENSORFORGE_CACHE", "0")  # a compile-cache hit would skip the first tier
    model = mlp(batch="N", sizes=SIZES, softmax=False)
    step = tfg.training_step(model, optimizer=tfg.optim.SGD(lr=0.1))
    twin = tfg.training_step(model, optimizer=tfg.optim.SGD(lr=0.1), tiered=False)
    batches = _batches(rng, 4)
    for x, y in batches[:2]:
        step(x, y)
        twin(x, y)
    prog = next(iter(step._variants.values())).prog
    step.wait_compiled()
    assert prog.optimized and len(prog._retired) == 1
    for x, y in batches[2:]:
        assert abs(step(x, y) - twin(x, y)) < 1e-5
    for k, v in step.parameters.items():
        np.testing.assert_allclose(v, twin.parameters[k], rtol=1e-5, atol=1e-6)


def _odd_model(rng):
    """x @ W + Unsqueeze(b): a 4-element bias through an all-constant node (the importer would fold it),
    odd ONNX names, and a second head that the loss does not use."""
    from onnx import TensorProto, helper

    shapes = {"fc.weight": (5, 4), "onnx::b/0": (4,), "head2": (5, 3)}
    w = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    nodes = [helper.make_node("MatMul", ["x", "fc.weight"], ["h"]),
             helper.make_node("Unsqueeze", ["onnx::b/0", "ax"], ["bu"]),
             helper.make_node("Add", ["h", "bu"], ["logits"]),
             helper.make_node("MatMul", ["x", "head2"], ["other"])]  # fmt: skip
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()] + [numpy_helper.from_array(np.array([0]), "ax")]
    g = helper.make_graph(nodes, "odd", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4]),
                           helper.make_tensor_value_info("other", TensorProto.FLOAT, ["N", 3])], inits)  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), w


def test_small_parameters_are_not_folded_away_and_names_round_trip(rng):
    model, w = _odd_model(rng)
    step = tfg.training_step(model, optimizer=tfg.optim.SGD(lr=0.5))
    assert step.params == ["fc.weight", "onnx::b/0"]  # head2 does not reach the loss: left as it is
    tw = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w.items()}
    opt = torch.optim.SGD([tw["fc.weight"], tw["onnx::b/0"]], lr=0.5)
    for x, y in _batches(rng, 3, sizes=(5, 0, 4)):
        step(x, y)
        z = torch.tensor(x, dtype=torch.float64) @ tw["fc.weight"] + tw["onnx::b/0"]
        opt.zero_grad()
        F.cross_entropy(z, torch.tensor(y)).backward()
        opt.step()
    out = {t.name: numpy_helper.to_array(t) for t in step.export_onnx().graph.initializer}
    for k in ("fc.weight", "onnx::b/0"):
        assert _rel(out[k], tw[k].detach().numpy()) < 1e-4, k
    assert np.array_equal(out["head2"], w["head2"])
    with pytest.raises(tfg.TensorforgeError, match=r"parameter\(s\) \['head2'\] do not affect the output 'logits'"):
        tfg.training_step(model, params=["fc.weight", "head2"])


def test_profile_lists_every_kernel(rng):
    step = tfg.training_step(mlp(batch="N", sizes=SIZES), optimizer=tfg.optim.SGD(lr=0.1, momentum=0.9))
    x, y = _batches(rng, 1)[0]
    step(x, y)
    table = step.profile(x, y, repeat=3)
    assert "GFLOP/s" in table and "fc1 (Gemm)" in table and "MomentumUpdate" in table
    assert step.steps == 1 + 5


def test_dropout_trains_as_identity_with_a_warning():
    model = mlp(batch="N", sizes=SIZES, softmax=False)
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    drop = onnx.helper.make_node("Dropout", [relu.output[0]], ["dropped"], name="drop")
    for n in model.graph.node:
        if n.op_type == "Gemm" and relu.output[0] in n.input:
            n.input[0] = "dropped"
    model.graph.node.insert(list(model.graph.node).index(relu) + 1, drop)
    with pytest.warns(UserWarning, match=r"Dropout node\(s\) \['drop'\] train as the identity"):
        tfg.training_step(model)


def test_training_graph_text_round_trips():
    """The training program's graph prints as text the parser reads back (a cached artifact is parsed from it):
    every value name holds only the characters of the graph text (the update check once named values
    'update check_concat')."""
    from tensorforge.ir.parser import parse_graph

    step = tfg.training_step(mlp(batch=8, sizes=(32, 16, 4), softmax=False), tiered=False)
    rng = np.random.default_rng(0)
    prog, _, _ = step.profile_rows(rng.standard_normal((8, 32)).astype(np.float32), rng.integers(0, 4, 8), 2)
    text = prog.artifact.graph_text
    assert str(parse_graph(text)).splitlines()[0] == text.splitlines()[0]
