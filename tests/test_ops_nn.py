"""Normalization, ConvTranspose, LpPool, LRN and Dropout against the ONNX reference evaluator on random
inputs with odd sizes (float32, float16 and float64 where the op allows)."""

from __future__ import annotations

import numpy as np
import pytest

import tensorforge as tfg
from helpers import assert_close, check_model, one_node_model, rand, reference


@pytest.mark.parametrize("shape,axis", [((3, 17), -1), ((2, 5, 33), -1), ((2, 3, 4, 5), 2), ((4, 6), 0), ((1, 768), 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm(shape, axis, dtype, rng):
    """Y in the input's dtype; Mean and InvStdDev in stash_type's (float32), as the ONNX schema and ONNX
    Runtime type them (the reference evaluator returns them in the input's dtype: compared as float32)."""
    x = rand(rng, shape, dtype)
    inner = shape[axis:]
    consts = {"s": rand(rng, inner, dtype), "b": rand(rng, inner, dtype)}
    model = one_node_model("LayerNormalization", {"x": x}, {"axis": axis, "epsilon": 1e-3}, consts=consts,
                           n_outputs=3)  # fmt: skip
    got = list(tfg.compile(model).run({"x": x}).values())
    want = reference(model, {"x": x})
    assert_close(got[0], want[0], 1e-4, 1e-5, "Y")
    for g, w, what in zip(got[1:], want[1:], ("Mean", "InvStdDev")):
        assert_close(g, w.astype(np.float32), 1e-4, 1e-5, what)


def test_layer_norm_float16_and_runtime_scale(rng):
    x = rand(rng, (3, 40), np.float16)
    s, b = rand(rng, (40,), np.float16), rand(rng, (40,), np.float16)
    check_model(one_node_model("LayerNormalization", {"x": x, "s": s, "b": b}), {"x": x, "s": s, "b": b},
                rtol=5e-3, atol=5e-3)  # fmt: skip
    y = rand(rng, (2, 7, 9))
    check_model(one_node_model("LayerNormalization", {"y": y}, consts={"s": rand(rng, (9,))}), {"y": y}, rtol=1e-4,
                atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (1, 4, 33), (3, 2, 2, 3, 2)])
def test_instance_norm(shape, rng):
    x = rand(rng, shape)
    c = shape[1]
    consts = {"s": rand(rng, (c,)), "b": rand(rng, (c,))}
    check_model(one_node_model("InstanceNormalization", {"x": x}, {"epsilon": 1e-4}, consts=consts), {"x": x},
                rtol=1e-4, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_group_norm(groups, rng):
    x = rand(rng, (2, 6, 5, 3))
    consts = {"s": rand(rng, (6,)), "b": rand(rng, (6,))}
    check_model(one_node_model("GroupNormalization", {"x": x}, {"num_groups": groups}, consts=consts, opset=21),
                {"x": x}, rtol=1e-4, atol=1e-5)  # fmt: skip
    # opset 18: scale and bias per group
    consts = {"s": rand(rng, (groups,)), "b": rand(rng, (groups,))}
    check_model(one_node_model("GroupNormalization", {"x": x}, {"num_groups": groups}, consts=consts, opset=18),
                {"x": x}, rtol=1e-4, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("axis", [-1, 0])
def test_rms_norm(axis, rng):
    x = rand(rng, (4, 19))
    s = rand(rng, x.shape[axis:])
    check_model(one_node_model("RMSNormalization", {"x": x}, {"axis": axis}, consts={"s": s}, opset=23), {"x": x},
                rtol=1e-4, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_lp_normalization(p, axis, rng):
    """Compared with numpy: the reference evaluator takes x**p without |x| (wrong for p = 1)."""
    import tensorforge as tfg

    x = rand(rng, (3, 5, 7))
    x[0, 0, :] = 0  # a zero line normalizes to zeros
    m = tfg.compile(one_node_model("LpNormalization", {"x": x}, {"axis": axis, "p": p}))
    norm = np.linalg.norm(x.astype(np.float64), ord=p, axis=axis, keepdims=True)
    want = np.where(norm == 0, 0, x / np.where(norm == 0, 1, norm))
    np.testing.assert_allclose(m(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_lrn(size, rng):
    """Compared with numpy: the reference evaluator loops over the batch dim instead of the channels."""
    import tensorforge as tfg

    x = rand(rng, (2, 7, 5, 4))
    alpha, beta, bias = 2e-3, 0.8, 1.5
    m = tfg.compile(one_node_model("LRN", {"x": x}, {"size": size, "alpha": alpha, "beta": beta, "bias": bias}))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = np.stack([(x[:, max(0, c - lo) : c + hi + 1].astype(np.float64) ** 2).sum(1) for c in range(7)], 1)
    np.testing.assert_allclose(m(x), x / (bias + alpha / size * sq) ** beta, rtol=1e-5, atol=1e-6)


CONV_T = [
    dict(x=(1, 2, 4, 5), w=(2, 3, 3, 3), attrs={}),
    dict(x=(2, 3, 5, 4), w=(3, 2, 3, 2), attrs={"strides": [2, 3], "pads": [1, 0, 1, 1]}),
    dict(x=(1, 2, 3, 3), w=(2, 2, 3, 3), attrs={"strides": [2, 2], "output_padding": [1, 1]}),
    dict(x=(1, 1, 3, 3), w=(1, 2, 3, 3), attrs={"strides": [3, 2], "output_shape": [10, 8]}),
    dict(x=(1, 1, 3, 3), w=(1, 2, 3, 3), attrs={"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    dict(x=(2, 3, 9), w=(3, 2, 4), attrs={"strides": [2], "pads": [1, 2]}),
    dict(x=(1, 2, 3, 2, 3), w=(2, 2, 2, 3, 2), attrs={"strides": [1, 2, 2]}),
]


@pytest.mark.parametrize("case", CONV_T, ids=lambda c: f"x{c['x']}w{c['w']}{c['attrs']}")
def test_conv_transpose(case, rng):
    x, w = rand(rng, case["x"]), rand(rng, case["w"])
    b = rand(rng, (case["w"][1] * case["attrs"].get("group", 1),))
    check_model(one_node_model("ConvTranspose", {"x": x}, case["attrs"], consts={"w": w, "b": b}), {"x": x},
                rtol=1e-4, atol=1e-4)  # fmt: skip
    check_model(one_node_model("ConvTranspose", {"x": x, "w": w}, case["attrs"]), {"x": x, "w": w}, rtol=1e-4,
                atol=1e-4)  # fmt: skip


def _conv_transpose_numpy(x, w, group, strides, dilations, pads):
    """Scatter form: y[n, g*M + m, o*s - p + k*d] += x[n, g*C + c, o] * w[g*C + c, m, k] (2-D)."""
    n, cin, h, wd = x.shape
    cg, mg = cin // group, w.shape[1]
    kh, kw = w.shape[2:]
    full = [(h - 1) * strides[0] + (kh - 1) * dilations[0] + 1, (wd - 1) * strides[1] + (kw - 1) * dilations[1] + 1]
    y = np.zeros((n, mg * group, *full))
    for g in range(group):
        for c in range(cg):
            for i in range(h):
                for j in range(wd):
                    for a in range(kh):
                        for b in range(kw):
                            r, q = i * strides[0] + a * dilations[0], j * strides[1] + b * dilations[1]
                            y[:, g * mg : (g + 1) * mg, r, q] += x[:, g * cg + c, i, j, None] * w[g * cg + c, :, a, b]
    return y[:, :, pads[0] : full[0] - pads[2], pads[1] : full[1] - pads[3]]


def test_conv_transpose_grouped(rng):
    """Groups with a channel multiplier, compared with numpy (the reference evaluator slices the weights of
    each group along the wrong axis)."""
    import tensorforge as tfg

    x, w = rand(rng, (2, 4, 3, 4)), rand(rng, (4, 3, 2, 3))
    attrs = {"group": 2, "dilations": [2, 1], "strides": [1, 2], "pads": [1, 0, 0, 1]}
    m = tfg.compile(one_node_model("ConvTranspose", {"x": x}, attrs, consts={"w": w}))
    want = _conv_transpose_numpy(x, w, 2, [1, 2], [2, 1], [1, 0, 0, 1])
    np.testing.assert_allclose(m(x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_lp_pool(p, rng):
    x = rand(rng, (1, 3, 7, 6))
    attrs = {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1], "p": p}
    check_model(one_node_model("LpPool", {"x": x}, attrs), {"x": x}, rtol=1e-4, atol=1e-5)


def test_dropout_inference(rng):
    x = rand(rng, (3, 11))
    check_model(one_node_model("Dropout", {"x": x}, n_outputs=2), {"x": x})
    check_model(one_node_model("Dropout", {"x": x}, {"ratio": 0.3}, opset=7), {"x": x})
