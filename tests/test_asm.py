"""The machine code: AVX2 FMA on ymm for x86_64, NEON fmla on AArch64, PTX accepted by ptxas."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

import tensorforge as tfg
from tensorforge.examples import mlp, small_cnn


def test_x86_avx2_matmul_uses_ymm_fma():
    asm = tfg.assembly(mlp(), target="x86_64", kernel="fc1")
    assert "fc1 (Gemm)" in asm  # labelled with the graph node
    fmas = re.findall(r"vfmadd\d+ps\s[^\n]*%ymm", asm)
    assert len(fmas) >= 8, asm[:2000]
    assert "vbroadcastss" in asm
    assert "zmm" not in asm


def test_x86_avx512_uses_zmm():
    asm = tfg.assembly(mlp(), target="x86_64-avx512", kernel="fc1")
    assert re.search(r"vfmadd\d+ps\s[^\n]*%zmm", asm)


def test_aarch64_neon_fmla():
    asm = tfg.assembly(mlp(), target="aarch64", kernel="fc1")
    assert re.search(r"fmla\s+v\d+\.4s", asm), asm[:2000]


def test_every_kernel_is_labelled():
    m = tfg.compile(small_cnn())
    asm = m.assembly()
    for k in m.kernels:
        assert f"kernel {k.name}:" in asm
        assert k.labels[0] in asm


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not installed")
@pytest.mark.parametrize("model", [mlp, small_cnn], ids=["mlp", "cnn"])
def test_ptx_assembles(model, tmp_path):
    ptx = tfg.assembly(model(), target="nvptx-sm90")
    assert ".target sm_90" in ptx and ".entry" in ptx
    src = tmp_path / "m.ptx"
    src.write_text(ptx)
    r = subprocess.run(["ptxas", "-arch=sm_90", str(src), "-o", str(tmp_path / "m.cubin")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_kernel_filter_errors():
    with pytest.raises(KeyError, match="no kernel"):
        tfg.assembly(mlp(), kernel="does_not_exist")


def test_identical_layers_share_code(rng):
    """Repeated layers (same shapes, different weights) compile to one function called twice."""
    import numpy as np

    from helpers import reference
    from tensorforge.examples import mlp

    model = mlp(batch=2, sizes=(32, 32, 32, 32), softmax=False)
    m = tfg.compile(model)
    asm = m.assembly()
    assert "same code as" in asm
    x = rng.standard_normal((2, 32)).astype(np.float32)
    np.testing.assert_allclose(m(x), reference(model, {"x": x})[0], rtol=1e-5, atol=1e-6)
