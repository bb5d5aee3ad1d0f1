"""precision="bf16" (lower/bf16_gemm.py, lower/bf16_conv.py): GEMMs and convolutions with bfloat16 operands and
float32 accumulation. Every path the host can run (forced through the lowering option ``bf16_isa``) against a
float64 numpy / onnx.reference result computed on the bf16-rounded inputs (tight tolerance) and against float32
(bf16 tolerance), on fresh random inputs with edges (sizes that are not multiples of the tiles, odd K and channel
counts, batches, strides, pads, dilations, groups); paths the host cannot run compiled for a named target and
their assembly checked; whole models within bf16 tolerance of float32; the refusal on targets without bf16."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnx.reference
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorforge as tfg
from tensorforge.cli import main
from tensorforge.codegen import amx, targets
from tensorforge.codegen.targets import get_target, host
from tensorforge.compiler import Options, build_artifact, compile_graph, to_graph
from tensorforge.errors import UnsupportedError
from tensorforge.examples import bert_encoder, mlp, small_cnn
from tensorforge.lower.bf16_gemm import target_bf16_isa
from tensorforge.lower.kir.bf16 import BfDot, BfTileDot, ToBF16, round_bf16, round_bf16_bits

ISAS = ["amx", "avx512bf16"]
_NEEDS = {"amx": ("amx-bf16", "amx-tile", "avx512bf16"), "avx512bf16": ("avx512bf16", "avx512bw")}


def can_run(isa: str) -> bool:
    t = host()
    return t.arch == "x86_64" and t.vector_bits >= 512 and all(t.has_feature(f) for f in _NEEDS[isa])


RUNNABLE = [pytest.param(i, marks=pytest.mark.skipif(not can_run(i), reason=f"host cannot run {i}")) for i in ISAS]
HOST_BF16 = pytest.mark.skipif(target_bf16_isa(host()) is None, reason="host has neither AMX-BF16 nor AVX512-BF16")
BF16 = {"precision": "bf16"}


def _f32(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _check(got, want64, exact_scale, fp32, fp32_scale, what):
    """Tight against float64 on the bf16-rounded inputs (float32 accumulation of exact products), bf16 tolerance
    against float32 (each operand rounded by at most 2^-9 relative)."""
    assert got.shape == want64.shape, what
    assert np.all(np.abs(got - want64) <= 2e-6 * exact_scale + 1e-6), (what, np.abs(got - want64).max())
    assert np.all(np.abs(got - fp32) <= 2**-7 * fp32_scale + 1e-5), (what, np.abs(got - fp32).max())


# -- the reference semantics of the nodes ------------------------------------------------------------------
def test_rounding_is_nearest_even(rng):
    x = np.concatenate([_f32(rng, 1000, 100.0), np.float32([0.0, -0.0, 1.0, np.inf, -np.inf, 3.4e38, 1e-40])])
    ties = (np.arange(64, dtype=np.uint32) << 16 | 0x8000).view(np.float32)  # exactly half way
    x = np.concatenate([x, ties, -ties])
    want = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    assert np.array_equal(round_bf16_bits(x), want)
    nan = round_bf16_bits(np.float32([np.nan]))
    assert np.isnan(round_bf16(np.float32([np.nan])))[0] and nan[0] & 0x7FC0 == 0x7FC0
    assert np.array_equal(ToBF16.numpy(x[:4], x[4:8]), np.stack([want[:4], want[4:8]], -1).reshape(-1))


def test_dot_semantics(rng):
    a, b = _f32(rng, 32), _f32(rng, 32)
    ab, bb = round_bf16_bits(a), round_bf16_bits(b)
    want = (round_bf16(a).astype(np.float64) * round_bf16(b)).reshape(16, 2).sum(1)
    assert np.allclose(BfDot.numpy(np.zeros(16, np.float32), ab, bb), want, rtol=1e-6, atol=1e-6)
    one = BfDot.numpy(np.ones(16, np.float32), ab[:2], bb)  # a one-pair operand is every lane's
    assert np.allclose(one, 1 + (round_bf16(a[:2]).astype(np.float64) * round_bf16(b).reshape(16, 2)).sum(1), rtol=1e-6)
    at, bt = _f32(rng, (16, 32)), _f32(rng, (32, 16))
    packed = round_bf16_bits(bt).reshape(16, 2, 16).transpose(0, 2, 1)  # [k/2][n][2]
    got = BfTileDot.numpy(np.zeros((16, 16), np.float32), round_bf16_bits(at), packed)
    assert np.allclose(got, round_bf16(at).astype(np.float64) @ round_bf16(bt), rtol=1e-5, atol=1e-5)


# -- GEMM --------------------------------------------------------------------------------------------------
def _gemm_model(a_shape, b, op="MatMul", attrs=None, c=None):
    inits = [numpy_helper.from_array(b, "b")] + ([numpy_helper.from_array(c, "c")] if c is not None else [])
    node = helper.make_node(op, ["x", "b"] + (["c"] if c is not None else []), ["y"], **(attrs or {}))
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(a_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


MATMULS = [  # (A shape, N)
    ((37, 70), 45),
    ((64, 128), 64),
    ((33, 130), 50),
    ((2, 5, 64), 16),
    ((1, 3), 1),
    ((1, 257), 100),
    ((70, 200), 33),
    ((3, 1, 96), 17),
    ((48, 64), 48),  # AMX: whole 16-row tiles past the end of a 32-row block
]


@pytest.mark.parametrize("isa", RUNNABLE)
def test_matmul_bf16(isa, rng):
    for a_shape, N in MATMULS:
        a, b = _f32(rng, a_shape), _f32(rng, (a_shape[-1], N))
        m = compile_graph(to_graph(_gemm_model(a_shape, b)), host(), Options(lowering={**BF16, "bf16_isa": isa}))
        got = m.run({"x": a})["y"]
        ar, br = round_bf16(a).astype(np.float64), round_bf16(b).astype(np.float64)
        _check(got, ar @ br, np.abs(ar) @ np.abs(br), a @ b, np.abs(a) @ np.abs(b), (isa, a_shape, N))


@pytest.mark.parametrize("isa", RUNNABLE)
def test_gemm_bf16_alpha_beta_bias_transposed(isa, rng):
    for M, Kd, N, attrs in [(20, 48, 30, {"transB": 1, "alpha": 0.5, "beta": 2.0}), (40, 17, 70, {}),
                            (1, 512, 10, {"transB": 1})]:  # fmt: skip
        a, c = _f32(rng, (M, Kd)), _f32(rng, (N,))
        b = _f32(rng, (N, Kd) if attrs.get("transB") else (Kd, N))
        m = compile_graph(to_graph(_gemm_model((M, Kd), b, "Gemm", attrs, c)), host(),
                          Options(lowering={**BF16, "bf16_isa": isa}))  # fmt: skip
        bm = b.T if attrs.get("transB") else b
        al, be = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
        ar, br = round_bf16(a).astype(np.float64), round_bf16(bm).astype(np.float64)
        scale = al * (np.abs(ar) @ np.abs(br)) + be * np.abs(c)
        _check(m.run({"x": a})["y"], al * (ar @ br) + be * c, scale, al * (a @ bm) + be * c, scale, (isa, M, Kd, N))


# -- convolution -------------------------------------------------------------------------------------------
def _conv_model(x_shape, w, bias, attrs, dtype=TensorProto.FLOAT):
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(bias, "b")] if bias is not None else [])
    node = helper.make_node("Conv", ["x", "w"] + (["b"] if bias is not None else []), ["y"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", dtype, list(x_shape))],
                          [helper.make_tensor_value_info("y", dtype, None)], inits)  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def _conv64(x, w, bias, attrs):
    model = _conv_model(x.shape, w.astype(np.float64), None if bias is None else bias.astype(np.float64), attrs,
                        TensorProto.DOUBLE)  # fmt: skip
    return onnx.reference.ReferenceEvaluator(model).run(None, {"x": x.astype(np.float64)})[0]


CONVS = [  # (x shape, w shape, attrs)
    ((1, 3, 6, 5), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 8, 9, 7), (6, 4, 3, 2), {"pads": [1, 0, 2, 1], "strides": [2, 1], "group": 2}),
    ((1, 16, 5, 5), (20, 16, 1, 1), {}),
    ((1, 5, 11), (3, 5, 3), {"dilations": [2], "pads": [2, 1]}),
    ((1, 24, 10, 10), (40, 24, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 33, 14, 14), (70, 33, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 3, 23, 23), (16, 3, 7, 7), {"pads": [3, 3, 3, 3], "strides": [2, 2]}),
    ((1, 64, 7, 7), (48, 64, 1, 1), {"strides": [2, 2]}),
]


@pytest.mark.parametrize("isa", RUNNABLE)
def test_conv_bf16(isa, rng):
    for xs, ws, attrs in CONVS:
        x, w, bias = _f32(rng, xs), _f32(rng, ws, 0.3), _f32(rng, ws[0])
        m = compile_graph(
            to_graph(_conv_model(xs, w, bias, attrs)), host(), Options(lowering={**BF16, "bf16_isa": isa})
        )
        got = m.run({"x": x})["y"]
        xr, wr = round_bf16(x), round_bf16(w)
        exact_scale = _conv64(np.abs(xr), np.abs(wr), np.abs(bias), attrs)
        fp32_scale = _conv64(np.abs(x), np.abs(w), np.abs(bias), attrs)
        _check(got, _conv64(xr, wr, bias, attrs), exact_scale, _conv64(x, w, bias, attrs), fp32_scale, (isa, xs, ws))


@HOST_BF16
def test_depthwise_and_few_channels_stay_float32(rng):
    x, w = _f32(rng, (1, 8, 9, 9)), _f32(rng, (8, 1, 3, 3))
    m = tfg.compile(_conv_model(x.shape, w, None, {"group": 8, "pads": [1, 1, 1, 1]}), precision="bf16")
    assert np.allclose(m.run({"x": x})["y"], _conv64(x, w, None, {"group": 8, "pads": [1, 1, 1, 1]}), atol=1e-5)
    assert "in bf16 none; in float32 Conv x1" in m.report()
    if target_bf16_isa(host()) == "amx":  # an RGB stem on AMX would be mostly zero padding
        x, w = _f32(rng, (1, 3, 20, 20)), _f32(rng, (16, 3, 7, 7))
        m = tfg.compile(_conv_model(x.shape, w, None, {"pads": [3, 3, 3, 3], "strides": [2, 2]}), precision="bf16")
        assert "in bf16 none; in float32 Conv x1" in m.report()


# -- the paths in the assembly -----------------------------------------------------------------------------
@pytest.mark.parametrize("target,instr,absent", [("x86_64-amx", "tdpbf16ps", "vdpbf16ps"),
                                                 ("x86_64-avx512bf16", "vdpbf16ps", "tdpbf16ps")])  # fmt: skip
def test_paths_by_target_assembly(target, instr, absent, rng):
    assert target_bf16_isa(get_target(target)) == ("amx" if "amx" in target else "avx512bf16")
    gemm = _gemm_model((64, 256), _f32(rng, (256, 64)))
    conv = _conv_model((1, 32, 12, 12), _f32(rng, (32, 32, 3, 3)), None, {"pads": [1, 1, 1, 1]})
    for model in (gemm, conv):
        art, _, _ = build_artifact(model, get_target(target), Options(lowering=BF16), until="llvm")
        asm = art.assembly()
        assert instr in asm and absent not in asm, target
        assert "vcvtne2ps2bf16" in asm  # the activations converted at run time
        if "amx" in target:
            assert "ldtilecfg" in asm and "tileloadd" in asm
    art, _, _ = build_artifact(gemm, get_target(target), Options(), until="llvm")
    assert instr not in art.assembly()  # float32 by default


@pytest.mark.parametrize("target", ["x86_64", "x86_64-avx512", "x86_64-avx512vnni", "aarch64"])
def test_refused_without_bf16_instructions(target):
    with pytest.raises(UnsupportedError, match="needs AVX512-BF16 or AMX-BF16"):
        build_artifact(mlp(), get_target(target), Options(lowering=BF16), until="llvm")
    with pytest.raises(UnsupportedError, match="precision must be one of fp32, bf16"):
        tfg.compile(mlp(), precision="fp16")


def test_cli_precision(tmp_path, capsys):
    path = tmp_path / "mlp.onnx"
    path.write_bytes(mlp().SerializeToString())
    assert main(["compile", str(path), "--target", "x86_64-amx", "--precision", "bf16", "-o", str(tmp_path / "o")]) == 0
    assert "tdpbf16ps" in (tmp_path / "o" / "model.s").read_text()
    assert "precision bf16 (AMX tdpbf16ps, float32 accumulation): in bf16 Gemm x2" in (tmp_path / "o" / "report.txt"
                                                                                      ).read_text()  # fmt: skip
    capsys.readouterr()
    assert main(["compile", str(path), "--target", "x86_64", "--precision", "bf16", "-o", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs AVX512-BF16 or AMX-BF16" in err[0]


def test_amx_refused_takes_avx512bf16(monkeypatch):
    if not host().has_feature("avx512bf16"):
        pytest.skip("host has no AVX512-BF16")
    monkeypatch.setenv("TENSORFORGE_NO_AMX", "1")
    amx.reset_for_tests()
    targets.host.cache_clear()
    try:
        assert target_bf16_isa(host()) == "avx512bf16"
    finally:
        monkeypatch.delenv("TENSORFORGE_NO_AMX")
        amx.reset_for_tests()
        targets.host.cache_clear()


# -- whole models ------------------------------------------------------------------------------------------
def _compare(model: onnx.ModelProto, feeds: dict, tol: float) -> str:
    m32, m16 = tfg.compile(model), tfg.compile(model, precision="bf16")
    assert m32.program.consts is not m16.program.consts
    a, b = m32.run(feeds), m16.run(feeds)
    for k in a:
        scale = np.abs(a[k]).max()
        err = np.abs(a[k] - b[k]).max()
        assert 0 < err <= tol * scale, (k, err, scale)  # bf16 really ran (not bit-identical), within tolerance
    return m16.report()


@HOST_BF16
def test_models_within_bf16_tolerance(rng):
    rep = _compare(small_cnn(batch=2, channels=32), {"x": _f32(rng, (2, 32, 16, 16))}, 2e-2)
    assert "in bf16 Conv x1, Gemm x1; everything else float32" in rep
    rep = _compare(mlp(batch=4), {"x": _f32(rng, (4, 784))}, 2e-2)
    assert "in bf16 Gemm x2" in rep
    bert = bert_encoder(batch=1, seq=16, hidden=64, heads=4, layers=1)
    name = bert.graph.input[0].name
    rep = _compare(bert, {name: _f32(rng, (1, 16, 64))}, 3e-2)
    assert "in bf16 MatMul x" in rep and "in float32 MatMul x" in rep  # attention's products of activations
