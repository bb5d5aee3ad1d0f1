"""torch.compile(backend="tensorforge") training through AOTAutograd: forward and backward graphs compiled
by tensorforge, trained side by side with eager PyTorch from the same initial weights on the same batches;
the parameters (and batch-norm statistics) must stay within 1e-4 relative of eager's."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import tensorforge as tfg

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class SmallResNet(nn.Module):
    """Conv, batch norm (training statistics and running-stat updates), max pooling, a residual block,
    adaptive average pooling and a linear head."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.c1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)  # a bias before batch norm has no gradient
        self.bn1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.stem(x))), 2)
        x = F.relu(x + self.bn1(self.c1(x)))
        x = F.relu(self.c2(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TinyTransformer(nn.Module):
    def __init__(self, classes=5, layers=2):
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.enc(x).mean(1))

    def drop_key_bias_noise(self):
        """The key bias has no gradient in exact arithmetic (softmax ignores a constant per query): only
        rounding noise, which Adam scales up to steps of the learning rate's size, differently in any two
        implementations. Both runs drop it."""
        for layer in self.enc.layers:
            mask = torch.ones(48, dtype=torch.float32)
            mask[16:32] = 0
            layer.self_attn.in_proj_bias.register_hook(lambda g, mask=mask: g * mask)


def _optimizer(kind, params):
    if kind == "sgd":
        return torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return torch.optim.Adam(params, lr=1e-3)


def train_side_by_side(model, make_batch, opt_kind, steps=50, compile_whole_step=False):
    """Train ``model`` compiled and an eager copy on the same batches; the largest relative difference of
    any parameter or buffer (max |a - b| / max |b| per tensor) and both loss curves."""
    torch.manual_seed(0)
    ref = copy.deepcopy(model)
    for m in (model, ref):
        if hasattr(m, "drop_key_bias_noise"):
            m.drop_key_bias_noise()
    fast = torch.compile(model, backend="tensorforge")
    o_fast, o_ref = _optimizer(opt_kind, model.parameters()), _optimizer(opt_kind, ref.parameters())

    def loss_of(m, x, y):
        return F.cross_entropy(m(x), y)

    step_fast = torch.compile(loss_of, backend="tensorforge") if compile_whole_step else loss_of
    losses = ([], [])
    for i in range(steps):
        x, y = make_batch(i)
        for k, (m, opt, fn) in enumerate(((fast, o_fast, step_fast), (ref, o_ref, loss_of))):
            opt.zero_grad()
            loss = fn(m, x, y)
            loss.backward()
            opt.step()
            losses[k].append(float(loss.detach()))
    worst = 0.0
    for (name, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        a, b = a.double(), b.double()
        rel = float((a - b).abs().max()) / max(float(b.abs().max()), 1e-6)
        if rel > 1e-4:
            print(f"{name}: {rel:.3g}")
        worst = max(worst, rel)
    return worst, losses


def _images(i):
    g = torch.Generator().manual_seed(100 + i)
    return torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)


def _sequences(i):
    g = torch.Generator().manual_seed(200 + i)
    return torch.randn(4, 6, 16, generator=g), torch.randint(0, 5, (4,), generator=g)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_cnn_trains_like_eager(opt):
    torch.manual_seed(0)
    worst, (lf, le) = train_side_by_side(SmallResNet(), _images, opt)
    assert worst < 1e-4, worst
    np.testing.assert_allclose(lf, le, rtol=1e-4, atol=1e-5)
    rep = tfg.torch_report()
    assert any(r.kind == "backward" and r.where == "tensorforge" for r in rep.graphs), str(rep)


@pytest.mark.slow
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_transformer_trains_like_eager(opt):
    torch.manual_seed(0)
    worst, (lf, le) = train_side_by_side(TinyTransformer(), _sequences, opt)
    assert worst < 1e-4, worst
    np.testing.assert_allclose(lf, le, rtol=1e-4, atol=1e-5)


def test_transformer_few_steps_varying_batch():
    """The fast subset's transformer: a few SGD steps on batches of changing size (torch recompiles with a
    symbolic batch; each size seen is compiled once)."""
    torch.manual_seed(0)

    def batch(i):
        g = torch.Generator().manual_seed(300 + i)
        b = (3, 5)[i % 2]
        return torch.randn(b, 6, 16, generator=g), torch.randint(0, 5, (b,), generator=g)

    worst, (lf, le) = train_side_by_side(TinyTransformer(layers=1), batch, "sgd", steps=4)
    assert worst < 1e-4, worst
    np.testing.assert_allclose(lf, le, rtol=1e-4, atol=1e-5)


class PartlyTrained(nn.Module):
    """A frozen layer, a parameter the loss never reaches (its gradient stays None) and an integer buffer."""

    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(6, 12)
        self.frozen.requires_grad_(False)
        self.fc = nn.Linear(12, 4)
        self.unused = nn.Parameter(torch.ones(3))
        self.register_buffer("offset", torch.tensor(2))

    def forward(self, x):
        return self.fc(torch.tanh(self.frozen(x))) + self.offset


def test_whole_step_compiled_none_grads_and_0d_loss():
    torch.manual_seed(0)
    model = PartlyTrained()

    def batch(i):
        g = torch.Generator().manual_seed(400 + i)
        b = (4, 7, 9)[i % 3]
        return torch.randn(b, 6, generator=g), torch.randint(0, 4, (b,), generator=g)

    worst, (lf, le) = train_side_by_side(model, batch, "adam", steps=6, compile_whole_step=True)
    assert worst < 1e-4, worst
    np.testing.assert_allclose(lf, le, rtol=1e-5, atol=1e-6)
    assert model.unused.grad is None and model.frozen.weight.grad is None
    fast = torch.compile(lambda x: F.cross_entropy(model(x), torch.zeros(3, dtype=torch.long)), backend="tensorforge")
    loss = fast(torch.randn(3, 6))
    assert loss.shape == () and loss.requires_grad  # the loss stays 0-d
