"""The explorer's int8/bf16 roofline: the peaks measured per instruction family (runtime/peak.py), the family
each kernel runs on (found in its assembly), the kernels placed against the matching peak with the extra roofs
drawn; and the listings made side by side and read back from the cache directory (explore/gather.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorforge as tfg
from tensorforge.codegen.targets import host
from tensorforge.explore.asm import instruction_family
from tensorforge.explore.charts import roofline_svg
from tensorforge.explore.gather import gather
from tensorforge.explore.page import render
from tensorforge.explore.report import build_report
from tensorforge.runtime.peak import FAMILIES, MachinePeak, families_of, measure_family_gops, measure_fma_gflops

GIVEN = {"int8-amx": 4000.0, "int8-vnni512": 800.0, "int8-vnni256": 400.0, "bf16-amx": 2000.0, "bf16-avx512": 150.0}
EXPECTED_INT8 = {"amx": "int8-amx", "vnni512": "int8-vnni512", "vnni256": "int8-vnni256"}  # else fp32 code


def _peak(families=None) -> MachinePeak:
    return MachinePeak(
        "test", 2, 3.0, "given", 512, 100.0, 10.0, 20.0, 64, dict(GIVEN if families is None else families)
    )


def test_instruction_family_of_listings():
    assert instruction_family("k:\n\ttdpbssd\t%tmm6, %tmm4, %tmm0\n\tvfmadd231ps %zmm1, %zmm2, %zmm3") == "int8-amx"
    assert instruction_family("k:\n\ttdpbf16ps\t%tmm6, %tmm4, %tmm0") == "bf16-amx"
    assert instruction_family("k:\n\tvpdpbusd\t%zmm1, %zmm2, %zmm3") == "int8-vnni512"
    assert instruction_family("k:\n\t{vex}\tvpdpbusd\t%ymm1, %ymm2, %ymm3") == "int8-vnni256"
    assert instruction_family("k:\n\tvdpbf16ps\t(%rax), %zmm2, %zmm3") == "bf16-avx512"
    assert instruction_family("k:\n\tvfmadd231ps\t%zmm1, %zmm2, %zmm3\n\t# vpdpbusd in a comment") == "fp32"


def test_family_peaks_are_measured_on_the_host():
    """Each int8/bf16 family the host has is measured (2 ops per multiply-add); a dot-product instruction does
    more multiply-adds per cycle than an fp32 FMA on the same vectors, AMX more than VNNI."""
    t = host()
    fams = families_of(t)
    assert set(fams) <= set(FAMILIES)
    if not fams:
        pytest.skip(f"host {t.cpu} has no int8/bf16 dot-product instructions")
    fp32 = measure_fma_gflops(t)
    rates = {f: measure_family_gops(f, t) for f in fams}
    assert all(r > 0 for r in rates.values()), rates
    if "int8-vnni512" in rates and t.vector_bits >= 512:
        assert rates["int8-vnni512"] > 1.5 * fp32, (rates, fp32)
    if "int8-amx" in rates and "int8-vnni512" in rates:
        assert rates["int8-amx"] > 2 * rates["int8-vnni512"], rates
    if "bf16-amx" in rates:
        assert rates["bf16-amx"] > 2 * fp32, (rates, fp32)


def _cnn(rng) -> onnx.ModelProto:
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n)
             for n, s in [("w1", (32, 16, 3, 3)), ("b1", (32,)), ("w2", (64, 32, 3, 3)), ("b2", (64,))]]  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["y"], name="relu2")]  # fmt: skip
    g = helper.make_graph(nodes, "qcnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 24, 24])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 24, 24])], inits)  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _quantized(tmp_path, rng):
    oq = pytest.importorskip("onnxruntime.quantization")

    class Reader(oq.CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": rng.standard_normal((1, 16, 24, 24)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    src, dst = tmp_path / "f32.onnx", tmp_path / "int8.onnx"
    onnx.save(_cnn(rng), src)
    oq.quantize_static(str(src), str(dst), Reader(), quant_format=oq.QuantFormat.QDQ, per_channel=True,
                       activation_type=oq.QuantType.QUInt8, weight_type=oq.QuantType.QInt8)  # fmt: skip
    return dst


def _profiled_report(m, peak):
    rows, total = m.profile({"x": np.random.default_rng(1).standard_normal((1, 16, 24, 24)).astype(np.float32)}, 3)
    return build_report(m.artifact, rows, total, 1, peak, 3)


def _check_family_roofs(r, family):
    convs = [k for k in r.kernels if k.family == family]
    assert convs, [(k.name, k.family) for k in r.kernels]
    for k in convs:  # % of the family's peak, not the fp32 one
        assert k.family_peak == GIVEN[family]
        assert k.pct_peak == pytest.approx(100 * k.flops / k.seconds / 1e9 / GIVEN[family])
    assert r.families == {family: GIVEN[family]}
    svg = roofline_svg(r)
    assert f'data-family="{family}"' in svg and f"{family} peak" in svg
    page = render(r)
    assert "peak that applies" in page and f"{family}: " in page  # the kernel panel says which peak applies
    return convs


def test_int8_qdq_model_is_placed_against_the_int8_peak(tmp_path):
    """A QDQ CNN quantized by ONNX Runtime: its int8 convolutions run on the host's int8 path and are measured
    against that path's peak (AVX2 and generic paths have no dot-product instruction: fp32 peak)."""
    rng = np.random.default_rng(7)
    m = tfg.compile(str(_quantized(tmp_path, rng)))
    isa = m.target.int8_isa
    r = _profiled_report(m, _peak())
    if isa not in EXPECTED_INT8:
        assert all(k.family == "fp32" for k in r.kernels)
        return
    _check_family_roofs(r, EXPECTED_INT8[isa])
    # a family the measuring machine lacks falls back to the fp32 peak, saying so
    r2 = _profiled_report(m, _peak({}))
    assert all(k.family == "fp32" for k in r2.kernels)
    assert any("not measured" in k.family_note for k in r2.kernels)


def test_bf16_build_is_placed_against_the_bf16_peak():
    t = host()
    if not (t.has_feature("amx-bf16") or t.has_feature("avx512bf16")):
        pytest.skip("host has neither AMX-BF16 nor AVX512-BF16")
    rng = np.random.default_rng(3)
    m = tfg.compile(_cnn(rng), precision="bf16")
    family = "bf16-amx" if t.has_feature("amx-bf16") and t.has_feature("amx-tile") else "bf16-avx512"
    _check_family_roofs(_profiled_report(m, _peak()), family)


def test_listings_are_cached_and_match_one_process(tmp_path, monkeypatch):
    """The listings made side by side equal those made in this process, and a second report reads them back."""
    monkeypatch.setenv("TENSORFORGE_CACHE_DIR", str(tmp_path / "cache"))
    model = _cnn(np.random.default_rng(5))
    m = tfg.compile(model)
    opts = tfg.compiler.pipeline.Options()
    monkeypatch.setenv("TENSORFORGE_COMPILE_JOBS", "2")
    a = gather(m.artifact, model, opts)
    assert not a.cached and a.pass_graphs and len(a.pass_graphs) == len(m.artifact.metadata["passes"]) + 1
    monkeypatch.setenv("TENSORFORGE_COMPILE_JOBS", "1")
    monkeypatch.setenv("TENSORFORGE_CACHE", "0")
    b = gather(m.artifact, model, opts)
    assert (a.assembly, a.kernel_ir, a.pass_graphs) == (b.assembly, b.kernel_ir, b.pass_graphs)
    monkeypatch.delenv("TENSORFORGE_CACHE")
    c = gather(m.artifact, model, opts)
    assert c.cached and (c.assembly, c.kernel_ir, c.pass_graphs) == (a.assembly, a.kernel_ir, a.pass_graphs)
    for k, text in zip(m.kernels, a.kernel_ir):
        assert text == ("" if k.name in m.artifact.aliases else str(k))


def test_compare_fp32_with_int8_matches_kernels_by_node_names(tmp_path, capsys):
    """``--compare-model``: the float CNN and its QDQ int8 version side by side; each float convolution's
    kernel is matched with the int8 kernel of the same node name."""
    from tensorforge.cli import main
    from tensorforge.explore.compare import match_kernels

    rng = np.random.default_rng(11)
    q = _quantized(tmp_path, rng)
    f32 = tmp_path / "f32.onnx"
    a, b = (_profiled_report(tfg.compile(str(p)), _peak()) for p in (f32, q))
    groups = match_kernels(a, b)
    for conv in ("conv1", "conv2"):
        g = next(g for g in groups if any(lab.startswith(f"{conv} (") for k in g.a for lab in k.labels))
        assert g.b and any(lab.startswith(f"{conv} (") for k in g.b for lab in k.labels), (conv, g)
    out = tmp_path / "cmp.html"
    assert main(["explore", str(f32), "--compare-model", str(q), "-o", str(out), "--repeat", "2"]) == 0
    html = out.read_text()
    assert "int8" in html and "f32" in html and "(compared)" in html
    assert main(["explore", str(f32), "--compare-model", str(q), "--compare", "-O0", "-O2", "-o", str(out)]) == 1
    assert "do not go together" in capsys.readouterr().err


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_probe_assembles_for_a_target_that_has_it(family):
    """Each probe's inline assembly assembles for the AMX target (whatever the host) into its instruction."""
    from tensorforge.codegen.emit import assembly_of
    from tensorforge.codegen.targets import get_target
    from tensorforge.runtime.peak import _family_ir

    t = get_target("x86_64-amx")
    assert family in families_of(t)
    asm = assembly_of(_family_ir(family), t)
    assert instruction_family(asm) == family, asm[:400]
