"""Every PTX kernel of the built-in models assembles with ptxas for sm_80 and sm_90, and every kernel is a launch
nest with a parallel schedule (no kernel left on one thread)."""

from __future__ import annotations

import re

import pytest

from tensorforge.codegen import ptx
from tensorforge.codegen.targets import get_target
from tensorforge.compiler.gpu import nvptx_target
from tensorforge.compiler.pipeline import Build, Options
from tensorforge.examples import bert_encoder, mlp, resnet50, small_cnn
from tensorforge.lower.gpu_kir import launch_dims

needs_ptxas = pytest.mark.skipif(ptx.find_ptxas() is None, reason="ptxas not installed (CUDA toolkit)")

MODELS = {
    "mlp": lambda: mlp(8),
    "cnn": lambda: small_cnn(2),
    "bert-small": lambda: bert_encoder(1, 32, 64, 4, 2),
    "resnet-small": lambda: resnet50(1, 32, 10, 8, (1, 1, 1, 1)),
}


def _build(model, arch: str):
    return Build(model, get_target("nvptx-" + arch.replace("_", "")), Options()).run("llvm")


def _check(b, arch: str) -> None:
    art = b.artifact()
    text = art.assembly()
    assert f".target {arch}" in text
    entries = re.findall(r"\.entry\s+(\w+)", text)
    assert sorted(entries) == sorted(k.name for k in b.program.kernels)
    for k in b.program.kernels:
        assert launch_dims(k.body) is not None, k.name
        assert art.metadata["gpu_launch"][k.name] == list(launch_dims(k.body))
    assert not [n for n in b.notes if "one thread" in n], b.notes
    ptx.ptxas_check(text, arch)


@needs_ptxas
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("name", list(MODELS))
def test_models_assemble(name, arch):
    _check(_build(MODELS[name](), arch), arch)


@needs_ptxas
@pytest.mark.slow
@pytest.mark.parametrize("name,model", [("resnet50", lambda: resnet50(1)), ("bert", lambda: bert_encoder(1, 128))])
def test_full_models_assemble(name, model):
    b = _build(model(), "sm_80")
    _check(b, "sm_80")
    b90 = Build(b.source, get_target("nvptx-sm90"), Options()).run("llvm")
    _check(b90, "sm_90")


def test_ptxas_rejects_bad_ptx():
    if ptx.find_ptxas() is None:
        pytest.skip("ptxas not installed")
    with pytest.raises(Exception, match="ptxas -arch=sm_80 rejected"):
        ptx.ptxas_check(".version 7.0\n.target sm_80\n.address_size 64\nthis is not ptx\n", "sm_80")


@pytest.mark.parametrize("arch,feat", [("sm_80", "+ptx70"), ("sm_86", "+ptx71"), ("sm_90", "+ptx80"),
                                       ("sm_89", "+ptx78"), ("sm_120", "+ptx87")])  # fmt: skip
def test_cuda_targets_from_compute_capability(arch, feat):
    t = nvptx_target(arch)
    assert t.cpu == arch and t.features == feat and t.is_gpu and t.schedules == "gpu"


@needs_ptxas
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_tf32_tensor_core_kernels_assemble(arch):
    target = get_target("nvptx-" + arch.replace("_", ""))
    b = Build(small_cnn(2), target, Options(lowering={"precision": "tf32"})).run("llvm")
    _check(b, arch)
    text = b.artifact().assembly()
    assert "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32" in text and "cvt.rna.tf32.f32" in text
