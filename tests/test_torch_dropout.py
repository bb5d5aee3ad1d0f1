"""Dropout in training with a real random mask drawn in compiled code: the Philox4x32-10 op (known answers,
bit-identical compiled code on every x86 vector width), and torch.compile(backend="tensorforge") graphs with
``native_dropout`` compiled (no eager fallback): mask statistics, seeding from PyTorch's generator, the
backward reading the forward's mask, and training curves statistically equivalent to eager PyTorch's."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge.ir.dtype import DType
from tensorforge.ir.graph import Graph, Node, TensorType, Value
from tensorforge.ops import infer_node
from tensorforge.ops.random import _np_mulhilo, bits_to_uniform, philox4x32, philox_bits


def _philox_words(ctr, key):
    c = [np.array([x], np.uint32) for x in ctr]
    k = [np.uint32(x) for x in key]
    with np.errstate(over="ignore"):
        out = philox4x32(c, k, _np_mulhilo, np.bitwise_xor, lambda a, w: np.uint32((int(a) + w) & 0xFFFFFFFF))
    return [int(o[0]) for o in out]


def test_philox_known_answers():
    """Random123's known-answer vectors for Philox4x32-10 (kat_vectors)."""
    assert _philox_words([0] * 4, [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert _philox_words([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    ctr, key = [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0]
    assert _philox_words(ctr, key) == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def _uniform_graph(shape) -> Graph:
    seed = Value("seed", TensorType(DType.I64, ()))
    off = Value("offset", TensorType(DType.I64, ()))
    out = Value("u")
    n = Node("PhiloxUniform", (seed, off), (out,), {"shape": list(shape)}, "rng")
    (out.type,) = infer_node(n)
    return Graph([n], [seed, off], [out], name="rng")


def _run(m, s, o):
    r = m(seed=np.array(s, np.int64), offset=np.array(o, np.int64))
    return np.asarray(r[0] if isinstance(r, list | tuple) else r)


def test_philox_compiled_bits_match_reference(rng):
    """Random shapes (vector tails included), seeds and offsets (negative, beyond 32 bits): the compiled op gives
    the reference's bits."""
    for _ in range(3):
        shape = tuple(int(d) for d in rng.integers(1, 40, size=int(rng.integers(1, 4))))
        m = tfg.compile(_uniform_graph(shape))
        for s, o in [(0, 0), (int(rng.integers(-(2**63), 2**63 - 1)), int(rng.integers(0, 2**40))), (-1, 2**63 - 1)]:
            got = _run(m, s, o)
            ref = bits_to_uniform(philox_bits(s & (2**64 - 1), o, got.size)).reshape(shape)
            assert got.dtype == np.float32 and got.shape == shape
            np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize(("target", "pattern"), [("x86_64", r"vpmuludq\s[^\n]*%ymm"),
                                                   ("x86_64-avx512", r"vpmuludq\s[^\n]*%zmm"),
                                                   ("aarch64", r"umull2?\s+v\d+\.2d")])  # fmt: skip
def test_philox_vectorized_per_target(target, pattern):
    """The 32x32->64 multiplies are vector instructions on AVX2, AVX-512 and NEON."""
    asm = tfg.assembly(_uniform_graph((64, 256)), target=target)
    assert re.search(pattern, asm), asm[:3000]
    if target == "x86_64":
        assert "zmm" not in asm


def test_philox_uniform_statistics():
    """Uniform on [0, 1): the mean and the fraction below 0.1 within 6 sigma; neighbouring elements and two
    offsets uncorrelated."""
    n = 1 << 16
    u = bits_to_uniform(philox_bits(12345, 0, n)).astype(np.float64)
    v = bits_to_uniform(philox_bits(12345, 1, n)).astype(np.float64)
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 6 * math.sqrt(1 / 12 / n)
    assert abs((u < 0.1).mean() - 0.1) < 6 * math.sqrt(0.09 / n)
    for a, b in [(u[:-1], u[1:]), (u, v)]:
        assert abs(np.corrcoef(a, b)[0, 1]) < 6 / math.sqrt(n)


# -------------------------------------------------------------------------------------------------
# torch.compile
# -------------------------------------------------------------------------------------------------
torch = pytest.importorskip("torch")
nn = torch.nn


def _binomial_ok(kept: int, n: int, q: float, sigmas: float = 6.0) -> bool:
    return abs(kept - n * q) <= sigmas * math.sqrt(n * q * (1 - q))


def _compiled_dropout(p):
    torch._dynamo.reset()
    tfg.torch_report(clear=True)
    return torch.compile(nn.Dropout(p).train(), backend="tensorforge")


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_mask_statistics(p):
    f = _compiled_dropout(p)
    x = torch.ones(64, 1024)
    y1, y2 = f(x), f(x)
    for y in (y1, y2):
        keep = y != 0
        assert _binomial_ok(int(keep.sum()), x.numel(), 1 - p)
        np.testing.assert_array_equal(y[keep].numpy(), np.float32(1.0 / (1.0 - p)))  # scaled by 1/(1-p)
        assert _binomial_ok(int(keep[:, 0].sum()), 64, 1 - p) and _binomial_ok(int(keep[0].sum()), 1024, 1 - p)
    # two calls draw independent masks: they agree where both keep or both drop, q^2 + p^2 of the time
    same = int(((y1 != 0) == (y2 != 0)).sum())
    assert _binomial_ok(same, x.numel(), (1 - p) ** 2 + p**2)
    rep = tfg.torch_report()
    assert rep.graphs and all(g.where == "tensorforge" for g in rep.graphs), str(rep)
    assert not rep.eager_ops()


def test_dropout_seeded_from_torch_generator():
    """torch.manual_seed reproduces the masks; different seeds give different masks; the draw advances
    PyTorch's default generator like any random op."""
    f = _compiled_dropout(0.3)
    x = torch.randn(32, 256)
    torch.manual_seed(7)
    a, b = f(x), f(x)
    torch.manual_seed(7)
    a2, b2 = f(x), f(x)
    torch.manual_seed(8)
    c = f(x)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert not torch.equal(a, b) and not torch.equal(a, c)
    agree = int(((a != 0) == (c != 0)).sum())
    assert _binomial_ok(agree, x.numel(), 0.7**2 + 0.3**2)


class _DropMLP(nn.Module):
    def __init__(self, p=0.25, d_in=20, hidden=64, classes=4):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(d_in, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, classes)
        self.drop = nn.Dropout(p)

    def forward(self, x):
        x = self.drop(torch.relu(self.fc1(x)))
        return self.fc3(self.drop(torch.relu(self.fc2(x))))


def test_dropout_gradient_uses_forward_mask():
    """The backward multiplies by the mask the forward drew: the input gradient is zero exactly where the
    output was dropped, and 1/(1-p) times the upstream gradient elsewhere. Two dropout layers in one graph
    draw different masks."""
    p = 0.4
    f = _compiled_dropout(p)
    x = torch.ones(48, 300, requires_grad=True)
    g = torch.randn(48, 300)
    y = f(x)
    y.backward(g)
    keep = (y != 0).detach()
    np.testing.assert_allclose(x.grad.numpy(), (g * keep / (1 - p)).numpy(), rtol=1e-6)
    assert _binomial_ok(int(keep.sum()), x.numel(), 1 - p)
    rep = tfg.torch_report()
    kinds = {g.kind: g.where for g in rep.graphs}
    assert kinds.get("forward") == "tensorforge" and kinds.get("backward") == "tensorforge", str(rep)

    class TwoDrops(nn.Module):
        def forward(self, x):
            return torch.nn.functional.dropout(x, 0.5) * 2, torch.nn.functional.dropout(x, 0.5) * 3

    torch._dynamo.reset()
    a, b = torch.compile(TwoDrops().train(), backend="tensorforge")(torch.ones(64, 64))
    assert not torch.equal(a != 0, b != 0)
    assert _binomial_ok(int(((a != 0) == (b != 0)).sum()), 64 * 64, 0.5)


def _data(n=512, d=20, classes=4, seed=0):
    g = np.random.default_rng(seed)
    centers = g.normal(0, 1.5, (classes, d))
    y = g.integers(0, classes, n)
    x = centers[y] + g.normal(0, 1.0, (n, d))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


@pytest.mark.slow
def test_dropout_training_matches_eager_statistically():
    """An MLP with dropout trained 120 steps with Adam, compiled and eager from the same weights on the same
    batches: different masks, so the loss curves differ step by step, but they fall alike: the means over
    windows agree within a tolerance set by the eager run's own step-to-step spread, and both end far below
    the start."""
    torch.manual_seed(0)
    x, y = _data()
    eager = _DropMLP()
    comp_model = copy.deepcopy(eager)
    torch._dynamo.reset()
    tfg.torch_report(clear=True)
    comp = torch.compile(comp_model, backend="tensorforge")
    curves = {}
    for name, model, fn in [("eager", eager, eager), ("tensorforge", comp_model, comp)]:
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        torch.manual_seed(1)
        losses = []
        for step in range(120):
            idx = torch.from_numpy(np.random.default_rng(step).integers(0, len(x), 64))
            loss = nn.functional.cross_entropy(fn(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        curves[name] = np.array(losses)
    rep = tfg.torch_report()
    assert not rep.eager_ops() and {g.where for g in rep.graphs} == {"tensorforge"}, str(rep)
    e, c = curves["eager"], curves["tensorforge"]
    assert not np.array_equal(e, c)  # the masks are tensorforge's own
    windows = [slice(0, 10), slice(10, 40), slice(40, 80), slice(80, 120)]
    spread = float(np.std(np.diff(e[40:])))  # step-to-step noise of the eager curve
    for w in windows:
        n = w.stop - w.start
        tol = max(4 * spread / math.sqrt(n), 0.05 * float(e[w].mean()))
        assert abs(float(e[w].mean()) - float(c[w].mean())) <= tol, (w, e[w].mean(), c[w].mean(), tol)
    for curve in (e, c):
        assert curve[80:].mean() < 0.5 * curve[:10].mean()
    # a model in eval mode has no dropout: compiled inference is deterministic
    comp_model.eval()
    with torch.no_grad():
        assert torch.equal(comp(x[:16]), comp(x[:16]))
