"""Whole models trained for a few steps by tensorforge and by PyTorch, from identical initial weights and
batches, end with the same parameters (1e-4 relative): the seed MLP and small CNNs with batch norm in
training mode, max/average pooling and strided convolutions."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorforge as tfg
from tensorforge.examples import mlp, small_cnn

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _weights(model):
    return {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}


def _train_both(model, forward, stats, optimizer, torch_opt, batches, **kw):
    step = tfg.training_step(model, optimizer=optimizer, **kw)
    w = _weights(model)
    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w.items() if k not in stats}
    buffers = {k: torch.tensor(w[k], dtype=torch.float64) for k in stats}
    opt = torch_opt(list(tp.values()))
    for x, y in batches:
        loss = step(x, y)
        tl = F.cross_entropy(forward(tp, buffers, torch.tensor(x, dtype=torch.float64)), torch.tensor(y))
        opt.zero_grad()
        tl.backward()
        opt.step()
        assert abs(loss - tl.item()) <= 1e-5 * max(1.0, abs(tl.item()))
    state = step.state_dict()
    for k, t in [*tp.items(), *buffers.items()]:
        want = t.detach().numpy()
        err = np.abs(state[k] - want).max() / np.abs(want).max()
        assert err < 1e-4, f"{k}: relative error {err:.2e}"
    return step


def test_seed_mlp_matches_torch(rng):
    model = mlp(batch="N")

    def forward(p, _, x):
        return torch.relu(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]

    batches = [(rng.random((32, 784), dtype=np.float32), rng.integers(0, 10, 32)) for _ in range(4)]
    _train_both(model, forward, (), tfg.optim.SGD(lr=0.1, momentum=0.9), lambda p: torch.optim.SGD(p, 0.1, 0.9),
                batches)  # fmt: skip


def test_small_cnn_with_batchnorm_matches_torch(rng):
    model = small_cnn(batch="N", channels=3, size=8, classes=5)

    def forward(p, s, x):
        c = F.conv2d(x, p["conv_w"], p["conv_b"], padding=1)
        bn = F.batch_norm(c, s["bn_mean"], s["bn_var"], p["bn_scale"], p["bn_shift"], True, 0.1, 1e-5)
        return F.max_pool2d(F.relu(bn), 2).flatten(1) @ p["fc_w"].T + p["fc_b"]

    batches = [(rng.standard_normal((6, 3, 8, 8)).astype(np.float32), rng.integers(0, 5, 6)) for _ in range(4)]
    # SGD, not Adam: conv_b's true gradient is exactly 0 (batch norm removes the mean), and Adam's
    # normalization would turn float32 rounding noise there into full-size steps
    _train_both(model, forward, ("bn_mean", "bn_var"), tfg.optim.SGD(lr=0.05, momentum=0.9, weight_decay=1e-3),
                lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3), batches)  # fmt: skip


def _two_conv_cnn(rng):
    """conv(stride 2) -> relu -> conv(pad 1, 2 groups) -> relu -> avgpool -> global avg pool -> gemm."""
    w = {"c1_w": rng.standard_normal((4, 2, 3, 3)) * 0.4, "c1_b": rng.standard_normal(4) * 0.1,
         "c2_w": rng.standard_normal((6, 2, 3, 3)) * 0.4, "c2_b": rng.standard_normal(6) * 0.1,
         "fc_w": rng.standard_normal((6, 3)) * 0.5, "fc_b": rng.standard_normal(3) * 0.1}  # fmt: skip
    w = {k: v.astype(np.float32) for k, v in w.items()}
    nodes = [
        helper.make_node("Conv", ["x", "c1_w", "c1_b"], ["c1"], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2_w", "c2_b"], ["c2"], pads=[1, 1, 1, 1], group=2),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("AveragePool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[1, 1]),
        helper.make_node("GlobalAveragePool", ["p"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "cnn2", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 9, 9])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_two_conv_cnn_matches_torch(rng):
    model = _two_conv_cnn(rng)

    def forward(p, _, x):
        r1 = F.relu(F.conv2d(x, p["c1_w"], p["c1_b"], stride=2))
        r2 = F.relu(F.conv2d(r1, p["c2_w"], p["c2_b"], padding=1, groups=2))
        g = F.avg_pool2d(r2, 2, 1).mean((2, 3))
        return g @ p["fc_w"] + p["fc_b"]

    batches = [(rng.standard_normal((5, 2, 9, 9)).astype(np.float32), rng.integers(0, 3, 5)) for _ in range(4)]
    step = _train_both(model, forward, (), tfg.optim.AdamW(lr=1e-2, weight_decay=0.05),
                       lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05), batches)  # fmt: skip
    assert any(n.op == "ConvGradInput" for n in step.training_graph(5).nodes)


def test_transformer_block_gradients_and_training(rng):
    """A BERT-style encoder layer (attention, decomposed layer norm, erf GELU, reshapes and transposes):
    every parameter's gradient vs float64 finite differences, compiled in float32; then it trains."""
    from tensorforge.autodiff import evaluate_graph, numerical_vjp, promote
    from tensorforge.compiler import to_graph
    from tensorforge.examples import bert_encoder

    model = bert_encoder(batch=2, seq=3, hidden=8, heads=2, layers=1, ffn=12)
    g0 = to_graph(model)
    params = [v.name for v in g0.constants() if v.dtype.is_float and v.const.ndim >= 1]
    gg = tfg.grad(model, wrt=params)
    feeds = {"x": rng.standard_normal((2, 3, 8))}
    feeds.update({v.name: v.const.astype(np.float64) for v in g0.constants() if v.name in params})
    ct = rng.standard_normal((2, 3, 8))
    pg, _ = promote(g0, params)
    want = numerical_vjp(pg, feeds, params, ct)
    ref = evaluate_graph(gg, {**feeds, f"d_{gg.output_names[0]}": ct})[1:]
    native = tfg.compile(gg).run({k: v.astype(np.float32) for k, v in {**feeds, f"d_{gg.output_names[0]}": ct}.items()})
    scale = max(float(np.linalg.norm(w)) for w in want)  # some gradients are exactly 0 (the key bias: softmax
    for name, r, w in zip(params, ref, want):  # is shift-invariant): compare those against the overall scale
        assert np.linalg.norm(r - w) <= 1e-5 * np.linalg.norm(w) + 1e-8 * scale, name
        assert np.linalg.norm(native[f"grad_{name}"] - w) <= 1e-3 * np.linalg.norm(w) + 1e-6 * scale, name
    step = tfg.training_step(model, loss="mse", optimizer=tfg.optim.Adam(lr=1e-2))
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    target = np.tanh(x[:, ::-1]).astype(np.float32)
    losses = [step(x, target) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]


def _bag_of_embeddings(rng, two_inputs: bool = False):
    """ids [N, T] -> Gather(embedding) -> mean over T (+ a dense feature input) -> Gemm -> logits."""
    w = {"emb": rng.standard_normal((20, 6)) * 0.5, "fc_w": rng.standard_normal((6, 4)) * 0.5,
         "fc_b": rng.standard_normal(4) * 0.1}  # fmt: skip
    w = {k: v.astype(np.float32) for k, v in w.items()}
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"]),
             helper.make_node("ReduceMean", ["e", "axes"], ["m"], keepdims=0)]  # fmt: skip
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 5])]
    feat = "m"
    if two_inputs:
        nodes.append(helper.make_node("Add", ["m", "dense"], ["md"]))
        inputs.append(helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["N", 6]))
        feat = "md"
    nodes.append(helper.make_node("Gemm", [feat, "fc_w", "fc_b"], ["logits"]))
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()] + [numpy_helper.from_array(np.array([1]), "axes")]
    graph = helper.make_graph(nodes, "bag", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                                                    ["N", 4])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), w


@pytest.mark.parametrize("two_inputs", [False, True])
def test_embedding_model_with_integer_inputs_matches_torch(rng, two_inputs):
    model, w = _bag_of_embeddings(rng, two_inputs)
    step = tfg.training_step(model, optimizer=tfg.optim.SGD(lr=0.5, momentum=0.9))
    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w.items()}
    opt = torch.optim.SGD(list(tp.values()), lr=0.5, momentum=0.9)
    for i in range(4):
        ids = rng.integers(0, 20, (8, 5))  # repeated ids within and across rows accumulate
        dense = rng.standard_normal((8, 6)).astype(np.float32)
        y = rng.integers(0, 4, 8)
        x = {"ids": ids, "dense": dense} if two_inputs else ids
        if two_inputs and i % 2:
            x = (ids, dense)  # positional form
        loss = step(x, y)
        m = tp["emb"][torch.tensor(ids)].mean(1) + (torch.tensor(dense, dtype=torch.float64) if two_inputs else 0)
        tl = F.cross_entropy(m @ tp["fc_w"] + tp["fc_b"], torch.tensor(y))
        opt.zero_grad()
        tl.backward()
        opt.step()
        assert abs(loss - tl.item()) < 1e-5
    for k, v in step.parameters.items():
        assert np.abs(v - tp[k].detach().numpy()).max() / np.abs(tp[k].detach().numpy()).max() < 1e-4, k
    with pytest.raises(tfg.InputError, match="input 'ids' has dtype float32, expected int64"):
        step(np.zeros((8, 5), np.float32) if not two_inputs else {"ids": np.zeros((8, 5), np.float32),
                                                                      "dense": dense}, y)  # fmt: skip
