"""The int8 kernels (lower/int8_gemm.py, lower/qconv.py): every ISA path the host can run, forced through the
lowering option ``int8_isa``, exact against the integer numpy reference on fresh random inputs (edges: sizes
that are not multiples of the tiles, K not a multiple of 4, batches, zero points per tensor / row / column /
channel, uint8 and int8 on both sides, strides, pads, dilations, groups); paths the host cannot run are
compiled for a named target and their assembly checked for the instruction; the AMX permission's refusal."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.reference
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorforge as tfg
from tensorforge.codegen import amx, targets
from tensorforge.codegen.targets import get_target, host
from tensorforge.compiler import Options, compile_graph, to_graph
from tensorforge.lower.kir import Dot, TileDot
from tensorforge.ops.quant import _conv_integer_ref, _matmul_integer_ref

ISAS = ["amx", "vnni512", "vnni256", "avx2", "generic"]
_NEEDS = {"amx": ("amx-int8", "amx-tile", "avx512bw"), "vnni512": ("avx512vnni", "avx512bw"), "avx2": ("avx2",),
          "generic": ()}  # fmt: skip


def can_run(isa: str) -> bool:
    t = host()
    if isa == "vnni256":
        return t.has_feature("avxvnni") or (t.has_feature("avx512vnni") and t.has_feature("avx512vl"))
    return t.arch == "x86_64" and all(t.has_feature(f) for f in _NEEDS[isa]) if isa != "generic" else True


RUNNABLE = [pytest.param(i, marks=pytest.mark.skipif(not can_run(i), reason=f"host cannot run {i}")) for i in ISAS]


def _ints(rng, shape, dt):
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max + 1, shape).astype(dt)


def _onnx_dtype(dt) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dt))


def _model(op, x, consts: dict, ins: list[str], attrs=None) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(v, k) for k, v in consts.items()]
    node = helper.make_node(op, ins, ["y"], **(attrs or {}))
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", _onnx_dtype(x.dtype), list(x.shape))],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, None)], inits)  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def matmul_case(rng, a_shape, N, adt, bdt, za, zb):
    a = _ints(rng, a_shape, adt)
    b = _ints(rng, (a_shape[-1], N), bdt)
    consts, ins = {"b": b}, ["x", "b", "", ""]
    if za is not None:
        consts["za"], ins[2] = np.asarray(za, adt), "za"
    if zb is not None:
        consts["zb"], ins[3] = np.asarray(zb, bdt), "zb"
    want = _matmul_integer_ref({}, a, b, consts.get("za"), consts.get("zb"))[0]
    return _model("MatMulInteger", a, consts, ins), a, want


MATMULS = [  # (A shape, N, A dtype, B dtype, a zero point, b zero point)
    ((37, 70), 45, np.uint8, np.int8, 7, None),
    ((64, 128), 64, np.uint8, np.int8, None, None),
    ((33, 130), 50, np.int8, np.int8, 3, np.arange(50) % 5 - 2),
    ((20, 9), 17, np.uint8, np.uint8, np.arange(20) % 7, 4),
    ((2, 5, 64), 16, np.int8, np.uint8, None, np.arange(16) % 3),
    ((1, 3), 1, np.uint8, np.int8, 255, -128),
    ((70, 200), 33, np.uint8, np.int8, 128, None),
]


@pytest.mark.parametrize("isa", RUNNABLE)
def test_matmul_integer_exact(isa, rng):
    for case in MATMULS:
        model, a, want = matmul_case(rng, *case)
        m = compile_graph(to_graph(model), host(), Options(lowering={"int8_isa": isa}))
        got = m.run({"x": a})["y"]
        assert got.dtype == np.int32 and np.array_equal(got, want), (isa, case)


CONVS = [  # (x shape, w shape, attrs, x dtype, w dtype, x zero point, w zero point)
    ((1, 3, 6, 5), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}, np.uint8, np.int8, 100, None),
    ((2, 8, 9, 7), (6, 4, 3, 2), {"pads": [1, 0, 2, 1], "strides": [2, 1], "group": 2}, np.int8, np.int8, -3, None),
    ((1, 16, 5, 5), (20, 16, 1, 1), {}, np.uint8, np.uint8, 7, None),
    ((1, 5, 11), (3, 5, 3), {"dilations": [2], "pads": [2, 1]}, np.uint8, np.int8, 9, None),
    ((1, 4, 6, 6), (4, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}, np.uint8, np.int8, 5, None),
    ((1, 4, 6, 6), (4, 4, 3, 3), {"pads": [1, 1, 1, 1]}, np.uint8, np.uint8, 5, np.arange(4) % 3),
    ((1, 24, 10, 10), (40, 24, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}, np.uint8, np.int8, 0, None),
]


@pytest.mark.parametrize("isa", RUNNABLE)
def test_conv_integer_exact(isa, rng):
    for xs, ws, attrs, xdt, wdt, zx, zw in CONVS:
        x, w = _ints(rng, xs, xdt), _ints(rng, ws, wdt)
        consts, ins = {"w": w}, ["x", "w", "", ""]
        if zx is not None:
            consts["zx"], ins[2] = np.asarray(zx, xdt), "zx"
        if zw is not None:
            consts["zw"], ins[3] = np.asarray(zw, wdt), "zw"
        want = _conv_integer_ref(attrs, x, w, consts.get("zx"), consts.get("zw"))[0]
        m = compile_graph(to_graph(_model("ConvInteger", x, consts, ins, attrs)), host(),
                          Options(lowering={"int8_isa": isa}))  # fmt: skip
        assert np.array_equal(m.run({"x": x})["y"], want), (isa, xs, ws, attrs)


@pytest.mark.parametrize("target,isa,instr", [("x86_64-amx", "amx", "tdpbusd"),
                                              ("x86_64-avx512vnni", "vnni512", "vpdpbusd"),
                                              ("x86_64-avxvnni", "vnni256", "vpdpbusd"),
                                              ("x86_64", "avx2", "vpmaddwd"),
                                              ("aarch64", "generic", None)])  # fmt: skip
def test_paths_by_target_assembly(target, isa, instr, rng):
    assert get_target(target).int8_isa == isa
    model, _, _ = matmul_case(rng, (64, 256), 64, np.uint8, np.int8, 3, None)
    asm = tfg.assembly(model, target=target)
    if instr is not None:
        assert instr in asm, f"{target}: no {instr} in the listing"
    if isa == "amx":
        assert "ldtilecfg" in asm and "tileloadd" in asm
    if isa == "vnni256":
        assert "zmm" not in asm.split("vpdpbusd", 1)[1][:200]
    signed, _, _ = matmul_case(rng, (32, 128), 32, np.int8, np.int8, None, None)
    if isa == "amx":  # the instruction follows the operands' signedness
        assert "tdpbssd" in tfg.assembly(signed, target=target)


def test_qlinear_matmul_fuses_into_the_int8_kernel(rng):
    a = _ints(rng, (40, 96), np.uint8)
    consts = {"b": _ints(rng, (96, 24), np.int8), "as": np.array(0.02, np.float32), "az": np.array(7, np.uint8),
              "bs": rng.uniform(0.01, 0.05, 24).astype(np.float32), "bz": np.zeros(24, np.int8),
              "ys": np.array(0.9, np.float32), "yz": np.array(100, np.uint8)}  # fmt: skip
    node = helper.make_node("QLinearMatMul", ["x", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [40, 96])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
                          [numpy_helper.from_array(v, k) for k, v in consts.items()])  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m = tfg.compile(model)
    assert len(m.program.kernels) == 1  # the rescale and requantization run in the GEMM's epilogue
    want = onnx.reference.ReferenceEvaluator(model).run(None, {"x": a})[0]
    got = m.run({"x": a})["y"]
    assert np.abs(got.astype(np.int64) - want).max() <= 1  # float32 vs float64 rescale: one step at most


def test_dot_semantics():
    acc = np.arange(4, dtype=np.int32)
    a = np.arange(16, dtype=np.uint8) * 15
    b = (np.arange(16) - 8).astype(np.int8)
    want = acc + (a.astype(np.int64) * b).reshape(4, 4).sum(axis=1)
    assert np.array_equal(Dot.numpy(acc, a, b), want)
    assert np.array_equal(Dot.numpy(acc, a[:4], b), acc + (a[:4].astype(np.int64) * b.reshape(4, 4)).sum(axis=1))
    t = TileDot.numpy(np.zeros((16, 16), np.int32), np.ones((16, 64), np.uint8), np.ones((16, 16, 4), np.int8))
    assert (t == 64).all()


def test_amx_refused_falls_back(monkeypatch):
    monkeypatch.setenv("TENSORFORGE_NO_AMX", "1")
    amx.reset_for_tests()
    targets.host.cache_clear()
    try:
        t = host()
        assert not t.has_feature("amx-int8") and t.int8_isa != "amx"
        assert not amx.request_amx()
    finally:
        monkeypatch.delenv("TENSORFORGE_NO_AMX")
        amx.reset_for_tests()
        targets.host.cache_clear()
    assert host() is not None
