"""torch.compile(backend="tensorforge") beyond plain training: per-subgraph eager fallback and
tfg.torch_report(), parameters frozen as constants for inference behind a guard, zero-copy borders."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import tensorforge as tfg

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class WithErfinv(nn.Module):
    """erfinv has no converter: it (and its backward's erfinv) must run eagerly, the rest compiled."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.erfinv(torch.tanh(self.fc1(x)) * 0.5) + F.relu(self.fc1(x)))


def test_unsupported_op_runs_eagerly_for_that_subgraph_only():
    torch.manual_seed(0)
    tfg.torch_report(clear=True)
    model = WithErfinv()
    ref = copy.deepcopy(model)
    fast = torch.compile(model, backend="tensorforge")
    o1, o2 = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)
    for _ in range(3):
        x, y = torch.randn(5, 8), torch.randint(0, 3, (5,))
        for m, o in ((fast, o1), (ref, o2)):
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    rep = tfg.torch_report()
    top = [r for r in rep.graphs if not r.parent]
    assert {r.kind for r in top} == {"forward", "backward"}
    for r in top:  # split: erfinv eager, the parts around it compiled
        assert r.where == "split" and "aten.erfinv.default" in r.eager_ops and "erfinv" in r.why, str(rep)
        parts = [p for p in rep.graphs if p.parent == r.name]
        assert parts and all(p.where == "tensorforge" and p.calls == 3 for p in parts), str(rep)
    assert "aten.erfinv.default" in str(rep) and "eager" in str(rep)


def test_inference_freezes_parameters_and_notices_updates():
    torch.manual_seed(0)
    tfg.torch_report(clear=True)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 6 * 6, 5)).eval()  # fmt: skip
    fast = torch.compile(net, backend="tensorforge")
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)
        (rec,) = [r for r in tfg.torch_report().graphs if r.kind == "inference"]
        # conv weight, bias; bn weight, bias, running mean, var, num_batches_tracked; linear weight, bias
        assert rec.where == "tensorforge" and rec.frozen >= 8 and rec.compiles == 1
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)
        assert rec.compiles == 1  # unchanged weights: the frozen build is reused
        net[0].weight.mul_(2.0)  # an in-place update (as an optimizer's): the guard sees the new version
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)
        assert rec.compiles == 2
        net[4].weight = nn.Parameter(torch.randn(5, 8 * 6 * 6))  # a new tensor
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)
        net[4].bias.add_(1.0)
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)
        assert rec.frozen == 0 and "not frozen" in rec.why  # changed too often: parameters are inputs now
        net[4].bias.add_(1.0)
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)


def test_border_shares_memory():
    from tensorforge.compiler.torch_aot import _as_numpy, _from_numpy

    t = torch.randn(4, 5, requires_grad=True)
    a = _as_numpy(t, torch)
    assert np.shares_memory(a, t.detach().numpy())  # a contiguous tensor goes in without a copy
    out = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert _from_numpy(out, torch).data_ptr() == out.ctypes.data  # results come back without one
    nc = torch.randn(5, 4).t()  # not contiguous: one copy, and the right values
    np.testing.assert_array_equal(_as_numpy(nc, torch), nc.numpy())
    scalar = _from_numpy(np.array(2.5, np.float32), torch)
    assert scalar.shape == () and float(scalar) == 2.5


def test_training_dropout_uses_torchs_generator():
    """Dropout in training is compiled (a Philox mask drawn in the compiled forward, its seed drawn from PyTorch's
    generator per call: tests/test_torch_dropout.py): torch.manual_seed reproduces the loss and the gradients,
    and nothing runs eagerly."""
    torch.manual_seed(0)
    tfg.torch_report(clear=True)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))
    fast = torch.compile(model, backend="tensorforge")
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    losses, grads = [], []
    for _ in range(2):
        torch.manual_seed(5)
        model.zero_grad()
        loss = F.cross_entropy(fast(x), y)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append([p.grad.clone() for p in model.parameters()])
    assert losses[0] == losses[1]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    (fw,) = [r for r in tfg.torch_report().graphs if r.kind == "forward"]
    assert fw.where == "tensorforge" and not fw.eager_ops


@pytest.mark.parametrize(("norm_first", "activation"), [(False, "relu"), (True, "gelu")])
def test_transformer_encoder_fast_path_compiles(norm_first, activation):
    """In eval mode without gradients nn.TransformerEncoderLayer takes its fused fast path, which torch.compile
    captures as one aten._transformer_encoder_layer_fwd: converted (post- and pre-norm, ReLU and GELU), nothing
    eager; with a key padding mask that op runs eagerly (a split) and the output still matches."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, batch_first=True, norm_first=norm_first,
                                       activation=activation)  # fmt: skip
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    torch._dynamo.reset()
    tfg.torch_report(clear=True)
    fast = torch.compile(model, backend="tensorforge")
    x = torch.randn(3, 10, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)
    rep = tfg.torch_report()
    assert [g.where for g in rep.graphs] == ["tensorforge"] and not rep.eager_ops(), str(rep)
    pad = torch.zeros(3, 10, dtype=torch.bool)
    pad[0, 7:] = True
    with torch.no_grad():
        got, want = fast(x, src_key_padding_mask=pad), model(x, src_key_padding_mask=pad)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
