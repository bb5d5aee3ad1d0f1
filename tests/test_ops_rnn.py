"""RNN, GRU and LSTM (unrolled at import) against the ONNX reference evaluator: both directions, biases,
initial states, peepholes, linear_before_reset, batch-first layout, clip and custom activations."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import check_model, one_node_model, rand

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _weights(rng, op, dirs, hidden, inp, bias=True):
    g = GATES[op]
    w = {"W": rand(rng, (dirs, g * hidden, inp), low=-0.6, high=0.6),
         "R": rand(rng, (dirs, g * hidden, hidden), low=-0.6, high=0.6)}  # fmt: skip
    if bias:
        w["B"] = rand(rng, (dirs, 2 * g * hidden), low=-0.3, high=0.3)
    return w


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_recurrent(op, direction, rng):
    dirs = 2 if direction == "bidirectional" else 1
    t, b, i, h = 5, 3, 4, 6
    x = rand(rng, (t, b, i))
    consts = _weights(rng, op, dirs, h, i)
    feeds = {"x": x, "h0": rand(rng, (dirs, b, h))}
    order = ["x", "W", "R", "B", "", "h0"]
    if op == "LSTM":
        feeds["c0"] = rand(rng, (dirs, b, h))
        consts["P"] = rand(rng, (dirs, 3 * h), low=-0.2, high=0.2)
        order += ["c0", "P"]
    attrs = {"hidden_size": h, "direction": direction}
    n_out = 3 if op == "LSTM" else 2
    model = one_node_model(op, feeds, attrs, consts=consts, input_order=order, n_outputs=n_out)
    check_model(model, feeds, rtol=1e-4, atol=1e-5)


def test_gru_linear_before_reset_and_layout(rng):
    t, b, i, h = 4, 2, 3, 5
    x = rand(rng, (b, t, i))
    consts = _weights(rng, "GRU", 1, h, i)
    attrs = {"hidden_size": h, "linear_before_reset": 1, "layout": 1}
    check_model(one_node_model("GRU", {"x": x}, attrs, consts=consts, n_outputs=2), {"x": x}, rtol=1e-4, atol=1e-5)


def test_lstm_clip_and_activations(rng):
    """Compared with numpy: the reference evaluator ignores `clip` and `activations`."""
    import tensorforge as tfg

    t, b, i, h = 3, 2, 3, 4
    x = rand(rng, (t, b, i), low=-3, high=3)
    w = _weights(rng, "LSTM", 1, h, i)
    attrs = {"hidden_size": h, "clip": 0.8, "activations": ["HardSigmoid", "Tanh", "Tanh"],
             "activation_alpha": [0.3], "activation_beta": [0.4]}  # fmt: skip
    m = tfg.compile(one_node_model("LSTM", {"x": x}, attrs, consts=w, n_outputs=3))
    y, yh, yc = m(x)

    def hsig(v):
        return np.clip(0.3 * v + 0.4, 0, 1)

    hs, cs = np.zeros((b, h)), np.zeros((b, h))
    for s in range(t):
        g = np.clip(x[s] @ w["W"][0].T + hs @ w["R"][0].T + w["B"][0, : 4 * h] + w["B"][0, 4 * h :], -0.8, 0.8)
        gi, go, gf, gc = (g[:, k * h : (k + 1) * h] for k in range(4))
        cs = hsig(gf) * cs + hsig(gi) * np.tanh(gc)
        hs = hsig(go) * np.tanh(cs)
        np.testing.assert_allclose(y[s, 0], hs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(yc[0], cs, rtol=1e-5, atol=1e-6)


def test_rnn_sequence_lens(rng):
    """Shorter sequences stop updating the state; outputs past their end are zero (compared with numpy: a
    plain tanh RNN written out step by step)."""
    import tensorforge as tfg

    t, b, i, h = 5, 3, 2, 4
    x = rand(rng, (t, b, i))
    w, r, bias = rand(rng, (1, h, i)), rand(rng, (1, h, h)), rand(rng, (1, 2 * h))
    lens = np.array([5, 2, 0], np.int32)
    consts = {"W": w, "R": r, "B": bias}
    m = tfg.compile(one_node_model("RNN", {"x": x, "lens": lens}, {"hidden_size": h}, consts=consts,
                                   input_order=["x", "W", "R", "B", "lens"], n_outputs=2))  # fmt: skip
    y, yh = m(x, lens)
    state = np.zeros((b, h))
    want = np.zeros((t, 1, b, h))
    for s in range(t):
        new = np.tanh(x[s] @ w[0].T + state @ r[0].T + bias[0, :h] + bias[0, h:])
        live = (s < lens)[:, None]
        state = np.where(live, new, state)
        want[s, 0] = np.where(live, new, 0)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(yh[0], state, rtol=1e-5, atol=1e-6)
