"""Training steps compiled for the GPU schedule family (``tfg.training_step(model, target=...)``): the forward,
loss, backward and optimizer programs as GPU kernels, run on the grid interpreter (an NVPTX target name) and
through the CUDA runtime on a fake driver (``target="cuda"``), against the CPU step."""

from __future__ import annotations

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge.examples import mlp
from tensorforge.runtime import cuda
from tensorforge.train.optim import SGD
from test_gpu_cuda import FakeDriver


def _data(rng, batch=8):
    x = rng.standard_normal((batch, 32)).astype(np.float32)
    return x, rng.integers(0, 4, batch).astype(np.int64)


def _steps(step, batches):
    return [step(x, y) for x, y in batches], step.parameters


def _model():
    return mlp(batch=8, sizes=(32, 16, 4), softmax=False)


@pytest.mark.parametrize(
    "optimizer", [lambda: SGD(lr=0.1), lambda: SGD(lr=0.05, momentum=0.9)], ids=["sgd", "momentum"]
)
def test_sgd_steps_on_the_interpreter_match_cpu(optimizer, rng):
    batches = [_data(rng) for _ in range(3)]
    gpu = tfg.training_step(_model(), optimizer=optimizer(), target="nvptx-sm80")
    cpu = tfg.training_step(_model(), optimizer=optimizer(), tiered=False, num_threads=1)
    (lg, pg), (lc, pc) = _steps(gpu, batches), _steps(cpu, batches)
    np.testing.assert_allclose(lg, lc, rtol=1e-5, atol=1e-6)
    assert lg[2] != lg[0]  # the parameters moved
    for name in pc:
        np.testing.assert_allclose(pg[name], pc[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gpu.predict(batches[0][0]), cpu.predict(batches[0][0]), rtol=1e-5, atol=1e-6)
    from tensorforge.compiler.gpu import GpuBound
    from tensorforge.lower.gpu_kir import is_launch

    progs = [v.prog for v in gpu._variants.values()]
    assert progs and all(isinstance(p, GpuBound) and p.cuda is None for p in progs)  # the grid interpreter
    assert all(is_launch(k.body) for p in progs for k in p.program.kernels)  # every kernel a launch nest


def test_cuda_step_on_a_fake_driver(monkeypatch, rng):
    """target='cuda': the step's PTX loaded and launched through the driver API (a fake one running the kernels on
    the grid interpreter); the parameters the kernels update on the device come back to the host each step."""
    fake = FakeDriver.__new__(FakeDriver)
    FakeDriver.__init__(fake, type("P", (), {"kernels": []})())
    monkeypatch.setattr(cuda, "_DRIVER", fake)
    init = cuda.CudaModel.__init__

    def register(self, art, ordinal=0):
        fake.kernels.update({k.name: k for k in art.program.kernels})
        init(self, art, ordinal)

    monkeypatch.setattr(cuda.CudaModel, "__init__", register)
    batches = [_data(rng) for _ in range(2)]
    gpu = tfg.training_step(_model(), optimizer=SGD(lr=0.1), target="cuda")
    assert gpu.target.cpu == "sm_80"
    cpu = tfg.training_step(_model(), optimizer=SGD(lr=0.1), tiered=False, num_threads=1)
    (lg, pg), (lc, pc) = _steps(gpu, batches), _steps(cpu, batches)
    np.testing.assert_allclose(lg, lc, rtol=1e-5, atol=1e-6)
    for name in pc:
        np.testing.assert_allclose(pg[name], pc[name], rtol=1e-5, atol=1e-6)
    assert fake.launched


def test_cpu_only_targets_still_refused():
    with pytest.raises(tfg.TensorforgeError, match="not the host"):
        tfg.training_step(_model(), target="aarch64")
