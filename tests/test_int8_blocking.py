"""The blocked int8 kernels (lower/int8_gemm.py, lower/qconv.py): the AMX micro-kernel statement ``TileGemm``
under every blocking (register tiles 1x1 ... 4x1, K blocks with int32 partial sums, macro tiles, A packed into
tiles, prefetch), and the convolution's B panels interleaved from the padded input (direct 1x1 reads with a
masked last panel, padding with the zero point, strides, dilations, groups, 1-D), each exact against the
integer numpy reference on fresh random inputs; the IR nodes' semantics and text."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorforge as tfg
from tensorforge.codegen.targets import host
from tensorforge.compiler import Options, compile_graph, to_graph
from tensorforge.lower.kir import Buffer, Const, Load
from tensorforge.lower.kir.tile import Interleave, TileGemm
from tensorforge.lower.printer import format_stmt
from tensorforge.ops.quant import _conv_integer_ref, _matmul_integer_ref
from test_int8_kernels import RUNNABLE, _ints, _model, can_run, matmul_case

AMX = pytest.mark.skipif(not can_run("amx"), reason="host cannot run AMX")

BLOCKINGS = [
    {"MR": 16, "NR": 32},
    {"MR": 32, "NR": 32},
    {"MR": 16, "NR": 64},
    {"MR": 64, "NR": 16},
    {"MR": 16, "NR": 48},
    {"MR": 32, "NR": 32, "KC": 128},  # three K blocks: first / middle / last with partial sums
    {"MR": 16, "NR": 32, "KC": 192, "MC": 32, "NC": 64},
    {"MR": 32, "NR": 16, "a_pack": True, "prefetch": 2},
    {"MR": 16, "NR": 32, "a_pack": True, "KC": 64},
]


@AMX
@pytest.mark.parametrize("over", BLOCKINGS, ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
def test_amx_blockings_exact(over, rng):
    for a_shape, N, adt, bdt, za, zb in [((70, 300), 100, np.uint8, np.int8, 5, None),
                                         ((64, 256), 48, np.int8, np.int8, None, None),
                                         ((2, 17, 130), 33, np.uint8, np.uint8, 200, 3)]:  # fmt: skip
        model, a, want = matmul_case(rng, a_shape, N, adt, bdt, za, zb)
        m = compile_graph(to_graph(model), host(), Options(lowering={"int8_isa": "amx", "int8_gemm": dict(over)}))
        assert np.array_equal(m.run({"x": a})["y"], want), (over, a_shape, N)


CONVS = [  # (x shape, w shape, attrs, x zero point): shapes where the pixel count is not a multiple of a panel
    ((1, 64, 7, 7), (48, 64, 1, 1), {}, 3),  # direct: reads X itself, last panel masked
    ((2, 32, 9, 9), (40, 32, 3, 3), {"pads": [1, 1, 1, 1]}, 17),  # padded with the zero point, rows of Wq
    ((1, 16, 15, 13), (24, 16, 3, 3), {"strides": [2, 2], "pads": [1, 0, 1, 2]}, 128),  # phases
    ((1, 8, 12, 12), (16, 8, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}, 0),
    ((1, 32, 6, 6), (32, 8, 1, 1), {"group": 4, "strides": [2, 2]}, 9),  # groups, 1x1 stride 2 (copied)
    ((1, 12, 40), (20, 12, 5), {"pads": [2, 2]}, 250),  # 1-D
    ((1, 3, 20, 20), (16, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}, 100),  # stem-like, K padded
]


@pytest.mark.parametrize("isa", RUNNABLE)
@pytest.mark.parametrize("pack", ["interleave", "scalar"])
def test_conv_packing_exact(isa, pack, rng):
    for xs, ws, attrs, zx in CONVS:
        for xdt in (np.uint8, np.int8):
            x, w = _ints(rng, xs, xdt), _ints(rng, ws, np.int8)
            z = np.asarray(zx if xdt is np.uint8 else zx - 128, xdt)
            consts, ins = {"w": w, "zx": z}, ["x", "w", "zx", ""]
            want = _conv_integer_ref(attrs, x, w, z, None)[0]
            opts = {"int8_isa": isa, "int8_conv_pack": pack}
            m = compile_graph(to_graph(_model("ConvInteger", x, consts, ins, attrs)), host(), Options(lowering=opts))
            assert np.array_equal(m.run({"x": x})["y"], want), (isa, pack, xs, ws, attrs, xdt)


def test_conv_of_a_computed_input_exact(rng):
    """The convolution's input produced by another kernel (an Add): read through its buffer, or copied into P
    when it is fused (not a plain view)."""
    x = _ints(rng, (1, 32, 10, 10), np.uint8)
    w = _ints(rng, (24, 32, 1, 1), np.int8)
    one = np.ones((1, 32, 1, 1), np.uint8)
    nodes = [helper.make_node("Add", ["x", "one"], ["x1"]), helper.make_node("ConvInteger", ["x1", "w"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(one, "one")])  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    want = _conv_integer_ref({}, (x + one).astype(np.uint8), w, None, None)[0]
    assert np.array_equal(compile_graph(to_graph(model), host(), Options()).run({"x": x})["y"], want)


def test_interleave_semantics():
    from tensorforge.ir.dtype import DType

    parts = [np.arange(16) + 100 * j for j in range(4)]
    out = Interleave.numpy(*parts)
    assert out.shape == (64,) and all(out[4 * i + j] == parts[j][i] for i in range(16) for j in range(4))
    node = Interleave(tuple(Load(Buffer("p", DType.U8, 64), Const(16 * j), 16) for j in range(4)))
    assert node.dtype is DType.U8 and node.lanes == 64
    with pytest.raises(ValueError):
        Interleave((Load(Buffer("p", DType.U8, 64), Const(0), 16), Load(Buffer("q", DType.I8, 64), Const(0), 16)))


def test_tile_gemm_text():
    from tensorforge.ir.dtype import DType
    from tensorforge.lower.printer import _Names, _Texts

    a, b, c = Buffer("A", DType.U8, 4096), Buffer("B", DType.I8, 4096), Buffer("C", DType.I32, 1024)
    s = TileGemm(Load(a, Const(0)), 64, 1024, 64, Load(b, Const(0)), 64, 1024, 128, None, Load(c, Const(0)), 32, 1,
                 2, Const(4))  # fmt: skip
    text = "\n".join(format_stmt(s, 0, _Names(), _Texts(_Names())))
    assert "tile_gemm<1x2>" in text and "4 steps" in text


def test_matmul_ref_unchanged(rng):
    """The reference used above is the op's own: a spot check against plain integer numpy."""
    a, b = _ints(rng, (5, 7), np.uint8), _ints(rng, (7, 3), np.int8)
    want = (a.astype(np.int64) - 2) @ b.astype(np.int64)
    assert np.array_equal(_matmul_integer_ref({}, a, b, np.array(2, np.uint8), None)[0], want)


def _hot_block(asm: str, instr: str) -> str:
    """The basic block (between labels) of the listing with the most ``instr``: a micro-kernel's K loop."""
    blocks = [b for b in asm.split("\n.LBB") if instr in b]
    return max(blocks, key=lambda b: b.count(instr))


@pytest.mark.parametrize("unroll", [1, 2, 3])
def test_avx2_unrolls_exact(unroll, rng):
    """The AVX2 int16 register tile at each K unroll, with a remainder loop (K/2 not a multiple of it)."""
    if not can_run("avx2"):
        pytest.skip("host cannot run avx2")
    for a_shape, N, adt, bdt, za, zb in [((37, 130), 45, np.uint8, np.int8, 7, None),
                                         ((16, 250), 24, np.int8, np.uint8, -3, 200)]:  # fmt: skip
        model, a, want = matmul_case(rng, a_shape, N, adt, bdt, za, zb)
        opts = {"int8_isa": "avx2", "int8_gemm": {"unroll": unroll}}
        m = compile_graph(to_graph(model), host(), Options(lowering=opts))
        assert np.array_equal(m.run({"x": a})["y"], want), (unroll, a_shape, N)


def test_avx2_tile_keeps_its_accumulators_in_registers(rng):
    """The AVX2 tile plans a product register per step (``vpmaddwd`` + ``vpaddd``): its K loop never spills
    (a 6x2 tile unrolled by 4 did: 12 accumulators through the stack every step)."""
    model, _, _ = matmul_case(rng, (256, 512), 256, np.uint8, np.int8, 3, None)
    hot = _hot_block(tfg.assembly(model, target="x86_64"), "vpmaddwd")
    assert hot.count("vpmaddwd") >= 8 and "rsp" not in hot, hot


def test_amx_prefetches_by_default(rng):
    """The AMX micro-kernel prefetches its next tiles (steady under cache pressure) unless told not to."""
    model, _, _ = matmul_case(rng, (64, 512), 64, np.uint8, np.int8, 3, None)
    hot = _hot_block(tfg.assembly(model, target="x86_64-amx"), "tdpbusd")
    assert "prefetcht0" in hot, hot
