"""bf16 convolution for ``precision="bf16"``: the implicit GEMM of ``lower/conv.py`` on the bf16 GEMM's
micro-kernels (``lower/bf16_gemm.py``).

Per image and group ``Y[Mg, pixels] = W[Mg, K] @ patches[K, pixels]``, the weights as A and the input as B,
read in place: the input is first copied into the padded, phase-split planes of ``lower/conv.py``
(``emit_build_p``; a 1x1 stride-1 convolution uses X itself), in which the element of every tap is at a
constant offset from the output pixel's (pixels numbered over rows of width ``Wq``), and then converted to
bf16 with pairs of channels interleaved:

    Pi[cp][q][2] = bf16(P[2cp][q]), bf16(P[2cp + 1][q])       (``vcvtne2ps2bf16`` + one ``vpermw`` per 32)

With K ordered (tap, channel), the k-pair (tap t, channels 2cp, 2cp+1) of pixel n is the pair
``Pi[cp][tap_offset(t) + n]``: 16 consecutive pixels are 32 contiguous bf16, a ``vdpbf16ps`` B operand, and 16
consecutive channel pairs are the 16 rows of an AMX B tile, ``plane`` pairs apart. So there is no im2col
buffer: each tap is a segment of the GEMM's K (channels padded to a multiple of 2, or of 32 on AMX, with
zero planes and zero weights), and the weights are rounded to bf16 and packed at compile time as rows
``[Mg][taps x Cp]``. The epilogue writes each output channel's pixels row by row (``conv._store_rows``),
with the bias and any fused epilogue (activation, residual add) through the output ``Sink``.

Depthwise convolutions (a K of a few taps), AMX on at most 16 input channels per group (more than half of each
32-channel tile row would be zero padding: ResNet-50's RGB stem ran 17 ms in bf16 against 1.5 ms in float32),
windows of more than ``conv.MAX_UNROLLED_TAPS`` taps, 3-D convolutions and run-time weights stay float32.
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from ..ops.nn import _conv_window
from . import kir as K
from .bf16_gemm import (
    BfGemm,
    Segment,
    ceil_to,
    edge,
    emit_bf16_gemm,
    is_parallel,
    pack_a_rows,
    pack_a_tiles,
    plan_bf16,
    use_bf16,
)
from .conv import CONV_VARIANTS, MAX_UNROLLED_TAPS, ConvGeom, _store_rows, conv_geom, emit_build_p
from .kir import Buffer, Const, For, Load, LoopKind, Stmt, Store, Var, binop
from .kir.bf16 import ToBF16
from .rules import LowerCtx, Sink
from .tensor import TExpr

F32, U16 = DType.F32, DType.U16


def lower_conv_bf16(ctx: LowerCtx, node, x: TExpr, w: TExpr, bias: TExpr | None, sink: Sink) -> Stmt | None:
    isa = use_bf16(ctx)
    if isa is None or w.const is None or x.dtype is not F32 or sink.dtype is not F32:
        return None
    win = _conv_window(None, x.shape, w.shape, node.attrs)
    g = conv_geom(x.shape, w.shape, win, int(node.attrs.get("group", 1)))
    if g is None or (g.cg == 1 and g.mg == 1) or g.taps > MAX_UNROLLED_TAPS:
        return None
    name = node.name
    taps = g.tap_offsets
    Cp = ceil_to(g.cg, 32 if isa == "amx" else 2)
    if 2 * g.cg <= Cp and not ctx.options.get("bf16_isa"):  # AMX on few channels (an RGB stem): mostly padding,
        return None  # float32 is faster (a forced path, as in the tests, still takes it)
    Kt = g.taps * Cp  # K as (tap, channel), channels padded
    plan = plan_bf16(ctx, isa, g.mg, g.nq, g.cg * g.taps)
    Mp = ceil_to(g.mg, plan.MR)
    # weights: [group][Mp][taps][Cp] bf16, k = t * Cp + c (on AMX in whole A tiles: [group][Mp/MR][Kt/32][..])
    wt = np.zeros((g.group, g.mg, g.taps, Cp), np.float32)
    wt[..., : g.cg] = np.asarray(w.const, np.float32).reshape(g.group, g.mg, g.cg, g.taps).transpose(0, 1, 3, 2)
    amx = isa == "amx"
    wt = wt.reshape(g.group, g.mg, Kt)
    wpacked = pack_a_tiles(wt, Mp, Kt, plan.MR) if amx else pack_a_rows(wt, Mp, Kt)
    wbuf = ctx.const_view(wpacked, f"{name}_Wbf16").buf
    # the input planes: every tile reads up to its last column past the furthest tap
    Np = ceil_to(g.nq, plan.NR)
    plane_p = ceil_to(max(g.plane, max(taps) + Np), 16)
    pairs = Cp // 2
    Pi = ctx.workspace(U16, pairs * plane_p * 2, f"{name}_Pbf16")
    parallel = is_parallel(ctx, 2 * g.mg * g.nq * g.cg * g.taps)
    img, gi = Var("img"), Var("g")
    direct = g.direct and x.view is not None and x.view.is_contiguous
    if direct:
        src = x.view.buf
        src_base = binop("add", Const(x.view.offset), binop("mul", binop("add", binop("mul", img, g.group), gi),
                                                            g.cg * g.plane))  # fmt: skip
        build: Stmt | None = None
    else:
        src = ctx.workspace(F32, g.cg * g.plane, f"{name}_P")
        src_base = Const(0)
        build = emit_build_p(ctx, g, x, img, src, Var("ch"), binop("mul", gi, g.cg), g.cg, 0, parallel)
    convert = _emit_interleave(g, src, src_base, Pi, pairs, plane_p, parallel)

    def epilogue(tile: Buffer, base: int, m0, n0, R: int, C: int) -> Stmt:
        cc = Var("cc")
        valid, skip = edge(g.mg, m0, R, plan.MR)  # columns past the image are never stored (_store_rows)

        def value(c, n):
            return Load(tile, binop("add", Const(base), binop("add", binop("mul", c, C), binop("sub", n, n0))))

        body = For(cc, Const(0), valid, _store_rows(ctx, g, sink, bias, img, gi, m0, cc, n0, C, value))
        return K.If(K.cmp("lt", m0, Const(g.mg)), body) if skip else body

    segs = [Segment(t * Cp, 2 * off, pairs) for t, off in enumerate(taps)]
    gemm = BfGemm(g.mg, g.nq, wbuf, binop("mul", gi, Mp * Kt), Kt, Pi, lambda p: binop("mul", p, 2 * plan.NR),
                  2 * plane_p, segs, epilogue, a_tiles=amx)  # fmt: skip
    ctx.stores_once = True
    body = K.seq(build, convert, emit_bf16_gemm(ctx, plan, gemm, parallel))
    return For(img, Const(0), Const(g.n), For(gi, Const(0), Const(g.group), body))


def _emit_interleave(g: ConvGeom, src: Buffer, base, Pi: Buffer, pairs: int, plane_p: int, parallel: bool) -> Stmt:
    """``Pi[cp][q] = (bf16 src[2cp][q], bf16 src[2cp+1][q])`` for q < plane, zero beyond it (up to ``plane_p``)
    and for the padding channels (>= cg): 16 pixels of two channels per step."""
    cp, q = Var("cp"), Var("q")
    full = g.plane // 16
    zero16 = Const(0.0, F32, 16)

    def step(masked: bool, real: int) -> Stmt:
        q0 = binop("mul", q, 16)
        mask = K.cmp("lt", K.Ramp(q0, 1, 16), Const(g.plane, K.I64, 16)) if masked else None
        at = binop("add", base, binop("add", binop("mul", cp, 2 * g.plane), q0))
        a = Load(src, at, 16, mask) if real >= 1 else zero16
        b = Load(src, binop("add", at, g.plane), 16, mask) if real >= 2 else zero16
        dst = binop("mul", binop("add", binop("mul", cp, plane_p), q0), 2)
        return Store(Pi, dst, ToBF16(a, b) if real else Const(0, U16, 32))

    def channel_pairs(lo: int, hi: int, real: int) -> Stmt | None:
        if hi <= lo:
            return None
        qs = K.seq(For(q, Const(0), Const(full), step(False, real)) if full and real else None,
                   For(q, Const(full if real else 0), Const(plane_p // 16), step(bool(real), real)))  # fmt: skip
        kind = LoopKind.PARALLEL if parallel and hi - lo > 1 else LoopKind.SERIAL
        return For(cp, Const(lo), Const(hi), qs, kind)

    both = g.cg // 2
    return K.seq(channel_pairs(0, both, 2), channel_pairs(both, both + g.cg % 2, 1),
                 channel_pairs(both + g.cg % 2, pairs, 0))  # fmt: skip


def _conv_variant(ctx: LowerCtx, node, ins: list[TExpr], sink: Sink) -> Stmt | None:
    return lower_conv_bf16(ctx, node, ins[0], ins[1], ins[2] if len(ins) > 2 else None, sink)


CONV_VARIANTS.append(_conv_variant)

__all__ = ["lower_conv_bf16"]
