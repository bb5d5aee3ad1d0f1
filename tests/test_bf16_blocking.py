"""The blocked bf16 AMX kernels (lower/bf16_gemm.py, lower/bf16_conv.py): the int8 micro-kernel statement
``TileGemm`` with ``kind="bf16"`` (``tdpbf16ps``, float32 accumulators kept in tile registers over every K
step and every tap of a convolution), A and B in whole 1 KiB tiles, macro tiles, prefetch; every register
blocking and edge (rows, columns and K not multiples of a tile) against float64 on the bf16-rounded inputs,
fresh random inputs each run; the assembly of the forced AMX path on any host."""

from __future__ import annotations

import numpy as np
import pytest

from tensorforge.codegen.targets import get_target, host
from tensorforge.compiler import Options, build_artifact, compile_graph, to_graph
from tensorforge.ir.dtype import DType
from tensorforge.lower.bf16_gemm import pack_a_tiles, pack_b_tiles, plan_bf16
from tensorforge.lower.kir import Buffer, Const, Load
from tensorforge.lower.kir.bf16 import round_bf16, round_bf16_bits
from tensorforge.lower.kir.tile import TileGemm
from tensorforge.lower.printer import format_stmt as _format_stmt
from test_bf16 import BF16, _check, _conv64, _conv_model, _f32, _gemm_model, can_run

AMX = pytest.mark.skipif(not can_run("amx"), reason="host cannot run AMX-BF16")

BLOCKINGS = [
    {},  # the plan's own choice
    {"MR": 16, "NR": 16},
    {"MR": 16, "NR": 32},
    {"MR": 32, "NR": 32},
    {"MR": 16, "NR": 64},  # 1x4: one A tile, each B tile used at once
    {"MR": 64, "NR": 16},  # 4x1
    {"MR": 32, "NR": 32, "MC": 32, "NC": 64},  # macro tiles smaller than the matrix
    {"MR": 16, "NR": 32, "MC": 48, "NC": 32, "prefetch": 2},
]
SHAPES = [((70, 300), 100), ((64, 256), 48), ((2, 17, 130), 33), ((1, 1030), 70), ((96, 32), 160)]


def _ids(o: dict) -> str:
    return "-".join(f"{k}{v}" for k, v in o.items()) or "plan"


@AMX
@pytest.mark.parametrize("over", BLOCKINGS, ids=_ids)
def test_amx_gemm_blockings(over, rng):
    for a_shape, N in SHAPES:
        a, b = _f32(rng, a_shape), _f32(rng, (a_shape[-1], N))
        opts = Options(lowering={**BF16, "bf16_isa": "amx", "bf16_gemm": dict(over)})
        got = compile_graph(to_graph(_gemm_model(a_shape, b)), host(), opts).run({"x": a})["y"]
        ar, br = round_bf16(a).astype(np.float64), round_bf16(b).astype(np.float64)
        _check(got, ar @ br, np.abs(ar) @ np.abs(br), a @ b, np.abs(a) @ np.abs(b), (over, a_shape, N))


CONVS = [  # the taps are segments of one TileGemm: channel counts across 32, pixels across 16/32
    ((1, 64, 9, 9), (48, 64, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 40, 7, 6), (20, 40, 3, 3), {"strides": [2, 2], "pads": [1, 0, 1, 2]}),
    ((1, 96, 5, 5), (70, 96, 1, 1), {}),  # direct: X itself, one segment
    ((1, 64, 12, 12), (40, 32, 3, 3), {"group": 2, "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ((1, 48, 30), (33, 48, 5), {"pads": [2, 2]}),  # 1-D, five taps
]


@AMX
@pytest.mark.parametrize("over", [{}, {"MR": 16, "NR": 64}, {"MR": 64, "NR": 16}, {"MR": 32, "NR": 32, "MC": 32,
                                                                                   "NC": 32}], ids=_ids)  # fmt: skip
def test_amx_conv_blockings(over, rng):
    for xs, ws, attrs in CONVS:
        x, w, bias = _f32(rng, xs), _f32(rng, ws, 0.3), _f32(rng, ws[0])
        opts = Options(lowering={**BF16, "bf16_isa": "amx", "bf16_gemm": dict(over)})
        got = compile_graph(to_graph(_conv_model(xs, w, bias, attrs)), host(), opts).run({"x": x})["y"]
        xr, wr = round_bf16(x), round_bf16(w)
        exact_scale = _conv64(np.abs(xr), np.abs(wr), np.abs(bias), attrs)
        fp32_scale = _conv64(np.abs(x), np.abs(w), np.abs(bias), attrs)
        _check(got, _conv64(xr, wr, bias, attrs), exact_scale, _conv64(x, w, bias, attrs), fp32_scale, (over, xs))


def test_tile_layouts(rng):
    """Whole-tile packings: B tile (panel p, step s, tile j) holds B[32s + 2r + h, NR p + 16 j + c] at [r][c][h];
    A block tile (block mb, step s, tile i) holds A[MR mb + 16 i + r, 32 s + c] at [r][c]."""
    b = _f32(rng, (70, 50))
    bt = pack_b_tiles(b, 32, 96)
    assert bt.shape == (2, 3, 2, 16, 16, 2)
    bits = round_bf16_bits(b)
    for p, s, j, r, c, h in [(0, 0, 0, 0, 0, 0), (1, 2, 0, 2, 1, 1), (0, 1, 1, 15, 15, 1), (1, 0, 0, 3, 5, 0)]:
        k, n = 32 * s + 2 * r + h, 32 * p + 16 * j + c
        assert bt[p, s, j, r, c, h] == (bits[k, n] if k < 70 and n < 50 else 0)
    a = _f32(rng, (2, 40, 33))
    at = pack_a_tiles(a, 64, 64, 32)
    assert at.shape == (2, 2, 2, 2, 16, 32)
    abits = round_bf16_bits(a)
    for g, mb, s, i, r, c in [(0, 0, 0, 0, 0, 0), (1, 1, 0, 0, 7, 32 - 1), (1, 0, 1, 1, 15, 0), (0, 1, 0, 1, 0, 3)]:
        m, k = 32 * mb + 16 * i + r, 32 * s + c
        assert at[g, mb, s, i, r, c] == (abits[g, m, k] if m < 40 and k < 33 else 0)


def format_stmt(s) -> str:
    from tensorforge.lower.printer import _Names, _Texts

    return "\n".join(_format_stmt(s, 0, _Names(), _Texts(_Names())))


def test_tile_gemm_bf16_node():
    a, b, c = Buffer("a", DType.U16, 4096), Buffer("b", DType.U16, 4096), Buffer("c", DType.F32, 1024)
    args = (Load(a, Const(0)), 32, 512, 1024, Load(b, Const(0)), 32, 512, 1024, None, Load(c, Const(0)), 32, 2, 2,
            Const(3))  # fmt: skip
    s = TileGemm(*args, 0, 0, "bf16", ((0, 0), (2048, 64)))
    text = format_stmt(s)
    assert "tile_gemm<2x2, bf16>" in text and "2 segments" in text
    t = s.map_exprs(lambda e: e, lambda buf: buf, lambda st: st)
    assert t.kind == "bf16" and t.segments == s.segments
    plain = TileGemm(*args)
    assert plain.kind == "int8" and plain.segments == () and "bf16" not in format_stmt(plain)


def test_plan_macro_tiles():
    """The B block of a macro tile stays within half of L2, and there are enough macro tiles for the threads."""
    from types import SimpleNamespace

    t = get_target("x86_64-amx")
    ctx = SimpleNamespace(target=t, options={})
    p = plan_bf16(ctx, "amx", 1024, 1024, 1024)
    assert (p.MR, p.NR) == (32, 32)
    assert 2 * 1024 * (p.NC or 1024) <= t.l2 // 2
    blocks = -(-1024 // (p.MC or 1024)) * -(-1024 // (p.NC or 1024))
    assert blocks >= 4 * t.cores
    small = plan_bf16(ctx, "amx", 1, 1000, 2048)
    assert (small.MR, small.NR) == (16, 32)
    assert plan_bf16(SimpleNamespace(target=t, options={"bf16_gemm": {"NC": 40}}), "amx", 64, 64, 64).NC == 64


def test_amx_assembly_keeps_tiles(rng):
    """Forced AMX (any host): per K step only tile loads and ``tdpbf16ps``; each accumulator is stored once per
    block, after the K loop (four stores for a 2x2 block, none inside the loop); a 3x3 convolution's nine
    taps are nine loops in one micro-kernel, still four stores."""
    gemm = _gemm_model((64, 256), _f32(rng, (256, 64)))
    conv = _conv_model((1, 64, 12, 12), _f32(rng, (64, 64, 3, 3)), None, {"pads": [1, 1, 1, 1]})
    for model, loops in ((gemm, 1), (conv, 9)):
        art, _, _ = build_artifact(model, get_target("x86_64-amx"), Options(lowering=BF16), until="llvm")
        asm = art.assembly()
        assert asm.count("tilestored") == 4, asm.count("tilestored")
        assert asm.count("tilezero") == 4
        assert asm.count("tdpbf16ps") >= 4 * loops and "vdpbf16ps" not in asm


def test_plan_refuses_blocks_beyond_tile_registers():
    from types import SimpleNamespace

    for over in ({"MR": 24, "NR": 32}, {"MR": 48, "NR": 32}, {"MR": 16, "NR": 112}):
        ctx = SimpleNamespace(target=get_target("x86_64-amx"), options={"bf16_gemm": over})
        with pytest.raises(ValueError, match="8 tile registers"):
            plan_bf16(ctx, "amx", 100, 100, 64)
