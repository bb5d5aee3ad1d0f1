"""The int8 kernels on random geometries: one model per ISA path holds many MatMulInteger / ConvInteger nodes of
random sizes (so one compile covers them all), each output exact against the integer reference. Fixed tables of
shapes miss the combinations a blocked kernel gets wrong (a 16-wide AMX sub-tile past the edge of a 32-wide block
was stored out of bounds for N = 144); a new seed each run (the ``rng`` fixture prints it) finds new ones."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tensorforge.codegen.targets import host
from tensorforge.compiler import Options, compile_graph, to_graph
from tensorforge.ops.quant import _conv_integer_ref, _matmul_integer_ref
from test_int8_kernels import RUNNABLE, _ints


def _zp(rng, dt, shape=()):
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max + 1, shape).astype(dt)


def _random_model(rng, n_mm: int, n_conv: int):
    """A model with ``n_mm`` MatMulInteger and ``n_conv`` ConvInteger nodes of random geometry, every operand
    an input or a constant; returns (model, feeds, expected outputs)."""
    inputs, outputs, nodes, inits, feeds, want = [], [], [], [], {}, {}

    def inp(name, arr):
        inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape))
        feeds[name] = arr

    for i in range(n_mm):
        m, k, n = int(rng.integers(1, 80)), int(rng.integers(1, 300)), int(rng.integers(1, 100))
        adt, bdt = (np.uint8, np.int8)[rng.integers(2)], (np.int8, np.uint8)[int(rng.random() < 0.2)]
        batch = [int(rng.integers(1, 4))] if rng.random() < 0.3 else []
        a, b = _ints(rng, (*batch, m, k), adt), _ints(rng, (k, n), bdt)
        za = _zp(rng, adt) if rng.random() < 0.6 else None
        zb = _zp(rng, bdt, (n,)) if rng.random() < 0.3 else None
        inp(f"a{i}", a)
        ins = [f"a{i}", f"b{i}", "", ""]
        inits.append(numpy_helper.from_array(b, f"b{i}"))
        if za is not None:
            inits.append(numpy_helper.from_array(za, f"za{i}"))
            ins[2] = f"za{i}"
        if zb is not None:
            inits.append(numpy_helper.from_array(zb, f"zb{i}"))
            ins[3] = f"zb{i}"
        nodes.append(helper.make_node("MatMulInteger", ins, [f"y{i}"]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.INT32, None))
        want[f"y{i}"] = _matmul_integer_ref({}, a, b, za, zb)[0]
    for i in range(n_conv):
        group = int(rng.choice([1, 1, 2]))
        cin, cout = group * int(rng.integers(1, 9)), group * int(rng.integers(1, 12))
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        h, w = int(rng.integers(kh, 16)), int(rng.integers(kw, 16))
        attrs = {"strides": [int(rng.integers(1, 3)), int(rng.integers(1, 3))], "group": group,
                 "pads": [int(rng.integers(0, kh)), int(rng.integers(0, kw)), int(rng.integers(0, kh)),
                          int(rng.integers(0, kw))]}  # fmt: skip
        xdt = (np.uint8, np.int8)[rng.integers(2)]
        x = _ints(rng, (int(rng.integers(1, 3)), cin, h, w), xdt)
        wt = _ints(rng, (cout, cin // group, kh, kw), np.int8)
        zx = _zp(rng, xdt) if rng.random() < 0.7 else None
        inp(f"x{i}", x)
        inits.append(numpy_helper.from_array(wt, f"w{i}"))
        ins = [f"x{i}", f"w{i}"]
        if zx is not None:
            inits.append(numpy_helper.from_array(zx, f"zx{i}"))
            ins.append(f"zx{i}")
        nodes.append(helper.make_node("ConvInteger", ins, [f"c{i}"], **attrs))
        outputs.append(helper.make_tensor_value_info(f"c{i}", TensorProto.INT32, None))
        want[f"c{i}"] = _conv_integer_ref(attrs, x, wt, zx)[0]
    g = helper.make_graph(nodes, "random_int8", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]), feeds, want


@pytest.mark.parametrize("isa", RUNNABLE)
def test_random_geometries_exact(isa, rng):
    model, feeds, want = _random_model(rng, 8, 6)
    m = compile_graph(to_graph(model), host(), Options(lowering={"int8_isa": isa}))
    got = m.run(feeds)
    for name, w in want.items():
        assert got[name].dtype == np.int32 and np.array_equal(got[name], w), (isa, name, w.shape)


@pytest.mark.parametrize("isa", RUNNABLE)
def test_run_time_zero_point_of_a_exact(isa, rng):
    """DynamicQuantizeLinear's zero point is a run-time scalar: MatMulInteger corrects for it in the epilogue
    (or, on AVX2, subtracts it while widening) instead of leaving the int8 kernels."""
    m, k, n = int(rng.integers(1, 70)), int(rng.integers(1, 200)), int(rng.integers(1, 90))
    for adt, bdt in [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8)]:
        a, b = _ints(rng, (2, m, k), adt), _ints(rng, (k, n), bdt)
        za = _zp(rng, adt)
        zb = _zp(rng, bdt) if bdt == np.uint8 else None
        inits = [numpy_helper.from_array(b, "b")] + ([numpy_helper.from_array(zb, "zb")] if zb is not None else [])
        node = helper.make_node("MatMulInteger", ["a", "b", "za", "zb" if zb is not None else ""], ["y"])
        dt = helper.np_dtype_to_tensor_dtype(np.dtype(adt))
        g = helper.make_graph([node], "dyn", [helper.make_tensor_value_info("a", dt, a.shape),
                                              helper.make_tensor_value_info("za", dt, [])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, None)], inits)  # fmt: skip
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
        m_ = compile_graph(to_graph(model), host(), Options(lowering={"int8_isa": isa}))
        if isa != "generic":  # the int8 kernel's instructions, not the generic int32 GEMM
            assert re.search(r"tile_gemm<|dot[24]\(", m_.kernel_ir()), isa
        got = m_.run({"a": a, "za": za})["y"]
        assert np.array_equal(got, _matmul_integer_ref({}, a, b, za, zb)[0]), (isa, adt, bdt, m, k, n)
