"""PyTorch modules through the ONNX exporter, and the torch.compile backend, against eager PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import tensorforge as tfg

torch = pytest.importorskip("torch")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return torch.log_softmax(self.fc(torch.flatten(x, 1)), dim=1)


def test_from_torch_matches_eager(rng):
    torch.manual_seed(0)
    net = Net().eval()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    m = tfg.from_torch(net, (torch.from_numpy(x),))
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(m(x), want, rtol=1e-4, atol=1e-5)


def test_from_torch_dynamic_batch(rng):
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4)).eval()
    m = tfg.from_torch(net, (torch.zeros(1, 16),), dynamic_batch=True)
    for b in (1, 5):
        x = rng.standard_normal((b, 16)).astype(np.float32)
        with torch.no_grad():
            np.testing.assert_allclose(m(x), net(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_torch_compile_backend(rng):
    torch._dynamo.reset()
    net = torch.nn.Sequential(torch.nn.Linear(12, 24), torch.nn.ReLU(), torch.nn.Linear(24, 3)).eval()
    fast = torch.compile(net, backend=tfg.torch_backend)
    x = torch.from_numpy(rng.standard_normal((4, 12)).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(fast(x).numpy(), net(x).numpy(), rtol=1e-4, atol=1e-5)
