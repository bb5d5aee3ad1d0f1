"""torch.compile(backend="tensorforge") by name: registered through the torch_dynamo_backends entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")


def test_backend_by_name_without_importing_tensorforge():
    code = """
import sys, torch
class M(torch.nn.Module):
    def forward(self, x):
        return (torch.tanh(x) * x).sum(), torch.relu(x)
x = torch.randn(3, 5)
s, r = torch.compile(M(), backend="tensorforge")(x)
assert "tensorforge" in sys.modules  # loaded by torch through the entry point
assert s.shape == () and r.shape == (3, 5), (s.shape, r.shape)  # a 0-d output stays 0-d
torch.testing.assert_close(s, (torch.tanh(x) * x).sum(), rtol=1e-5, atol=1e-5)
torch.testing.assert_close(r, torch.relu(x))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
