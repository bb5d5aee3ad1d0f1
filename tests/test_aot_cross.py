"""AArch64 export verified by running it: the library built with Debian's cross gcc, its example program run
under qemu-user, compared with the x86-64 (host) results, single- and multi-threaded."""

from __future__ import annotations

import platform

import numpy as np
import pytest

import tensorforge as tfg
from aot_helpers import build_example, needs_cross, run_example
from tensorforge.codegen.targets import get_target
from tensorforge.compiler import Options, build_artifact
from tensorforge.examples import bert_encoder, mlp, small_cnn
from tensorforge.runtime.aot import export_library

pytestmark = [needs_cross, pytest.mark.skipif(platform.machine() != "x86_64", reason="cross-checks run on x86-64")]

MODELS = {
    "mlp": (lambda: mlp(batch=2), (2, 784)),
    "cnn": (lambda: small_cnn(batch=2), (2, 3, 16, 16)),
    "transformer": (lambda: bert_encoder(batch=1, seq=16, hidden=64, heads=4, layers=1), (1, 16, 64)),
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_aarch64_export_runs_under_qemu(kind, tmp_path, rng):
    build, shape = MODELS[kind]
    model = build()
    host = tfg.compile(model)
    art, _, _ = build_artifact(model, get_target("aarch64"), Options(), until="llvm")
    files = export_library(art, str(tmp_path), kind)
    asm = (tmp_path / f"{kind}.s").read_text()
    assert "fmla" in asm and "v0." in asm  # NEON code
    assert files["static"].endswith(".a")
    x = rng.standard_normal(shape).astype(np.float32)
    want = host(x)
    build_example(tmp_path)
    for threads in ("1", "3"):
        (got,) = run_example(tmp_path, [x], "-t", threads, qemu=True)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)  # another ISA: FMA contraction may differ
    build_example(tmp_path, "example-static")
    (got,) = run_example(tmp_path, [x], qemu=True, program="example-static")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
