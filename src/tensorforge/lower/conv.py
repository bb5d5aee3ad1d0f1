"""Convolution as an implicit GEMM over a phase-split, padded copy of the input.

Per image and group, ``Y (Mg x pixels) = W (Mg x Cg*KH*KW) @ col (Cg*KH*KW x pixels)``; ``col`` is never
built. The input is first copied once into ``P[c][phase][Hq][Wq]``, zero-padded and split into the
``stride x stride`` phases the kernel taps use, so that for every tap ``(kh, kw)`` the input element of
output pixel ``(oh, ow)`` sits at

    P[c * plane + tap(kh, kw) + oh * Wq + ow]        tap(kh, kw) = phase * Hq * Wq + qh * Wq + qw

Output pixels are numbered over rows of width ``Wq`` (``Wq - OW`` padding columns per row are computed
and dropped), which makes that offset linear in the pixel number for every stride, padding and dilation:
the micro-kernel's pixel operand is a plain vector load (or broadcast) at a constant offset per tap, with
no per-element index arithmetic, bounds checks or gathers. A 1x1 stride-1 unpadded convolution reads
the input itself (``P`` is X). The copy costs one pass over the input, against ``Mg*KH*KW`` FMAs per
input element for the product.

Two micro-kernel orientations, chosen per layer by the GEMM cost model:

* pixels in vectors: ``MR`` output channels (weights pre-packed as ``[Mg/MR][K][MR]``, broadcast) by
  ``NR`` pixels (vector loads from ``P``) — large feature maps;
* channels in vectors: ``MR`` pixels (broadcast from ``P``) by ``NR`` output channels (weights packed as
  B panels ``[Mg/NR][K][NR]``) — small feature maps with many channels (7x7, 14x14), where pixel tiles
  would be mostly padding.

Depthwise convolution (one input channel per group) is a direct kernel: per channel the taps' weights
sit in registers and each output vector is ``KH*KW`` FMAs over shifted loads of ``P``.

The epilogue writes each tile row by row (pixels of one output row are contiguous in NCHW), adding the
bias and applying any fused elementwise epilogue through the output ``Sink``. Convolutions with three
spatial dims use the generic implicit-im2col GEMM at the end of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..ops.nn import Window, _conv_window
from . import kir as K
from .gemm import (
    PARALLEL_FLOPS_PER_ELEMENT,
    GemmSpec,
    choose_tile,
    emit_gemm,
    emit_pack,
    emit_pack_b,
    pack_a_const,
    pack_b_const,
    plan_gemm,
    tile_cycles,
)
from .kir import Assign, Broadcast, Buffer, Const, Decl, Expr, Fma, For, Load, LoopKind, Stmt, Store, Var, binop
from .rules import LowerCtx, Sink, kernel_rule
from .shape_ops import unflatten
from .tensor import TExpr

# lower_conv2d unrolls the kernel window in its micro-kernel (a constant offset per tap), so its code grows
# with the window. A large window that does not overlap itself (a ViT's 16x16/16 patch embedding: 256 taps)
# goes to the implicit-im2col GEMM (_conv_generic: one packing pass that is a permutation of the input, then
# the ordinary GEMM; code independent of the window). Measured on Sapphire Rapids, one thread: 3x224x224 ->
# 768 at 16x16/16 2.63 -> 1.70 ms and 22 s -> 0.2 s to compile; 64 -> 64 at 8x8/8 0.39 -> 0.35 ms. Overlapping
# windows stay unrolled: the packing there copies each input element taps/stride^2 times with an index
# computation per element (AlexNet's 11x11/4 stem 0.86 ms unrolled vs 3.1 ms packed).
MAX_UNROLLED_TAPS = 49


def _patches(g: ConvGeom) -> bool:
    """A window of more than MAX_UNROLLED_TAPS taps that tiles the input without overlap."""
    return g.taps > MAX_UNROLLED_TAPS and g.sh >= (g.kh - 1) * g.dh + 1 and g.sw >= (g.kw - 1) * g.dw + 1


# a per-channel plane of P up to this size is built on the stack of the thread that uses it (depthwise)
STACK_PLANE_BYTES = 256 * 1024


@dataclass(frozen=True)
class ConvGeom:
    """A 1-D or 2-D convolution seen as 2-D (1-D has H = KH = 1), and the layout of ``P``."""

    n: int
    c: int
    h: int
    w: int
    m: int
    group: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pl: int
    oh: int
    ow: int
    rank: int  # spatial dims of the op (1 or 2)

    @property
    def cg(self) -> int:
        return self.c // self.group

    @property
    def mg(self) -> int:
        return self.m // self.group

    @property
    def taps(self) -> int:
        return self.kh * self.kw

    def _split(self, i: int, d: int, s: int) -> tuple[int, int]:
        """(phase, offset in phase rows) of kernel tap ``i`` with dilation ``d`` and stride ``s``."""
        return (i * d) % s, (i * d) // s

    @property
    def direct(self) -> bool:
        """P is X itself: a 1x1, stride-1, unpadded convolution."""
        return self.taps == 1 and self.sh == self.sw == 1 and self.pt == self.pl == 0 and self.oh == self.h \
            and self.ow == self.w  # fmt: skip

    @property
    def phases(self) -> list[tuple[int, int]]:
        used = {(self._split(i, self.dh, self.sh)[0], self._split(j, self.dw, self.sw)[0])
                for i in range(self.kh) for j in range(self.kw)}  # fmt: skip
        return sorted(used)

    @property
    def hq(self) -> int:
        return self.h if self.direct else self.oh + max(self._split(i, self.dh, self.sh)[1] for i in range(self.kh))

    @property
    def wq(self) -> int:
        return self.w if self.direct else self.ow + max(self._split(j, self.dw, self.sw)[1] for j in range(self.kw))

    @property
    def plane(self) -> int:
        return len(self.phases) * self.hq * self.wq

    @property
    def nq(self) -> int:
        """Pixels computed per image: OH rows of Wq."""
        return self.oh * self.wq

    def tap(self, i: int, j: int) -> int:
        (rh, qh), (rw, qw) = self._split(i, self.dh, self.sh), self._split(j, self.dw, self.sw)
        return self.phases.index((rh, rw)) * self.hq * self.wq + qh * self.wq + qw

    @property
    def tap_offsets(self) -> list[int]:
        return [self.tap(i, j) for i in range(self.kh) for j in range(self.kw)]


def conv_geom(x_shape, w_shape, win: Window, group: int) -> ConvGeom | None:
    sp = len(win.kernel)
    n, c = x_shape[:2]
    m = w_shape[0]
    if sp == 1:
        return ConvGeom(n, c, 1, x_shape[2], m, group, 1, win.kernel[0], 1, win.strides[0], 1, win.dilations[0], 0,
                        win.pads_begin[0], 1, win.out_size[0], 1)  # fmt: skip
    if sp == 2:
        return ConvGeom(n, c, x_shape[2], x_shape[3], m, group, *win.kernel, *win.strides, *win.dilations,
                        *win.pads_begin, *win.out_size, 2)  # fmt: skip
    return None


def _idx(g: ConvGeom, img: Expr, ch: Expr, r: Expr, col: Expr) -> list[Expr]:
    """An NCHW (or NCW) index."""
    return [img, ch, col] if g.rank == 1 else [img, ch, r, col]


# -- the padded, phase-split input ---------------------------------------------------------------------
def _range(lo_num: int, size: int, step: int, n: int) -> tuple[int, int]:
    """[a, b) of i in [0, n) with 0 <= i*step - lo_num < size."""
    a = max(0, -(-lo_num // step))
    b = min(n, (size - 1 + lo_num) // step + 1) if size - 1 + lo_num >= 0 else 0
    return a, max(a, b)


def emit_build_p(ctx: LowerCtx, g: ConvGeom, x: TExpr, img: Expr, P: Buffer, ch: Var, ch_base: Expr,
                 chans: int | None = None, slack: int = 0, parallel: bool = False, pad: Expr | None = None
                 ) -> Stmt:  # fmt: skip
    """``P[(ch - ch_base)*plane + ...] = X[img, ch, ...]`` zero-padded and phase-split, for ``chans``
    channels starting at ``ch_base`` (all when None), then ``slack`` zeros. Each row is at most three
    loops with compile-time bounds (zeros, copy, zeros): no per-element bounds checks. ``pad``: the
    padding value when not zero (an int8 convolution pads with the input's zero point)."""
    W = ctx.lanes(P.dtype)
    hq, wq = g.hq, g.wq
    zero = K.const(0, P.dtype) if pad is None else pad

    def vloop(v: Var, lo: int, hi: int, body: Stmt) -> Stmt | None:
        if hi <= lo:
            return None
        vec = hi - lo >= W > 1 or ctx.target.masked_ops
        return For(v, Const(lo), Const(hi), body, LoopKind.VECTOR if vec else LoopKind.SERIAL, 1, W if vec else 1)

    parts: list[Stmt] = []
    cl = binop("sub", ch, ch_base)
    for ph, (rh, rw) in enumerate(g.phases):
        i, j = Var("i"), Var("j")
        base = binop("add", binop("mul", cl, g.plane), ph * hq * wq)
        ilo, ihi = _range(g.pt - rh, g.h, g.sh, hq)
        jlo, jhi = _range(g.pl - rw, g.w, g.sw, wq)
        row_at = binop("add", base, binop("mul", i, wq))
        ih = binop("add", binop("mul", i, g.sh), rh - g.pt)
        iw = binop("add", binop("mul", j, g.sw), rw - g.pl)
        src = x(_idx(g, img, ch, ih, iw))
        copy = Store(P, binop("add", row_at, j), K.cast(src, P.dtype))
        zrow = Store(P, binop("add", row_at, j), zero)
        data_row = K.seq(vloop(j, 0, jlo, zrow), vloop(j, jlo, jhi, copy), vloop(j, jhi, wq, zrow))
        zero_rows = vloop(j, 0, wq, zrow)
        parts.append(K.seq(
            For(i, Const(0), Const(ilo), zero_rows) if ilo > 0 and zero_rows else None,
            For(i, Const(ilo), Const(ihi), data_row) if ihi > ilo else None,
            For(i, Const(ihi), Const(hq), zero_rows) if hq > ihi and zero_rows else None,
        ))  # fmt: skip
    n = chans if chans is not None else g.c
    kind = LoopKind.PARALLEL if parallel and n > 1 else LoopKind.SERIAL
    stmt: Stmt = For(ch, ch_base, binop("add", ch_base, n), K.seq(parts), kind)
    if slack:
        s = Var("s")
        stmt = K.seq(stmt, vloop(s, 0, slack, Store(P, binop("add", s, n * g.plane), zero)))
    return stmt


# -- implicit GEMM -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvPlan:
    MR: int
    nv: int
    W: int
    pix_vec: bool  # pixels in vectors (else output channels in vectors)

    @property
    def NR(self) -> int:
        return self.nv * self.W

    @property
    def pix_tile(self) -> int:
        return self.NR if self.pix_vec else self.MR

    @property
    def ch_tile(self) -> int:
        return self.MR if self.pix_vec else self.NR


def conv_signature(g: ConvGeom, dt) -> str:
    """What a tuned conv plan is looked up by (``compiler/tuning.py``): the layer's whole geometry."""
    return (f"conv/{dt.short}/x{g.n}x{g.c}x{g.h}x{g.w}/w{g.m}x{g.cg}x{g.kh}x{g.kw}/s{g.sh}x{g.sw}/d{g.dh}x{g.dw}"
            f"/p{g.pt}x{g.pl}/o{g.oh}x{g.ow}/g{g.group}")  # fmt: skip


def _record_conv(ctx: LowerCtx, sig: str, g: ConvGeom, dt, direct: bool) -> None:
    """Tell the tuner about this layer (only when it asks: ``ctx.options["conv_signatures"]``)."""
    seen = ctx.options.get("conv_signatures")
    if seen is None or g.rank != 2:
        return
    pb = max(0, (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1 - g.h - g.pt)
    pr = max(0, (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1 - g.w - g.pl)
    seen[sig] = {"dtype": dt.short, "x": [g.n, g.c, g.h, g.w], "w": [g.m, g.cg, g.kh, g.kw], "strides": [g.sh, g.sw],
                 "dilations": [g.dh, g.dw], "pads": [g.pt, g.pl, pb, pr], "group": g.group, "direct": direct,
                 "oh": g.oh, "ow": g.ow, "nq": g.nq, "mg": g.mg, "K": g.cg * g.taps}  # fmt: skip


def plan_conv(ctx: LowerCtx, g: ConvGeom, direct: bool) -> ConvPlan:
    """The micro-tile and orientation from the GEMM cost model; ``ctx.options["conv"]`` (exploration) or the
    plan the tuner found for this layer's signature (``ctx.options["conv_tuned"]``) may force them."""
    t = ctx.target
    dt = ctx.node.outputs[0].dtype.compute
    W = t.lanes(dt)
    sig = conv_signature(g, dt)
    _record_conv(ctx, sig, g, dt, direct)
    Kd = g.cg * g.taps
    # a direct P (X itself) is read only inside the image: the last pixel tile masks its loads, or (without
    # cheap masks) tiles must divide the image
    max_nv = 8 if not direct or t.masked_ops else max((nv for nv in range(1, 9) if g.nq % (nv * W) == 0), default=0)
    cands = []
    if max_nv >= 1:
        mr, nv = choose_tile(t, dt, g.mg, g.nq, Kd, max_nv)
        cands.append((tile_cycles(t, dt, g.mg, g.nq, Kd, mr, nv), ConvPlan(mr, nv, W, True)))
    # channels in vectors: pixel tiles of MR | OW never straddle an output row, so no padding column is
    # computed; the epilogue stores one element per cycle (strided into NCHW)
    npix = g.oh * g.ow
    mr, nv = choose_tile(t, dt, npix, g.mg, Kd, mr_choices=[d for d in range(1, 17) if g.ow % d == 0])
    tiles = -(-npix // mr) * -(-g.mg // (nv * W))
    cands.append((tile_cycles(t, dt, npix, g.mg, Kd, mr, nv) + tiles * mr * nv * W, ConvPlan(mr, nv, W, False)))
    over = {**((ctx.options.get("conv_tuned") or {}).get(sig) or {}), **(ctx.options.get("conv") or {})}
    if "pix_vec" in over:
        cands = [c for c in cands if c[1].pix_vec == over["pix_vec"]] or cands
    plan = min(cands, key=lambda c: c[0])[1]
    if "MR" in over or "nv" in over:  # exploration (benchmarks); MR must divide OW for channels-in-vectors
        plan = ConvPlan(over.get("MR", plan.MR), over.get("nv", plan.nv), W, plan.pix_vec)
    return plan


def _chan_loop(cg: int, taps: int, body: Callable[[Expr], list[Stmt]]) -> Stmt:
    """for c in [0, cg): body(c) — the taps are unrolled inside body; 1x1 kernels unroll c by 4."""
    U = 4 if taps == 1 and cg >= 8 else 1
    c0 = Var("c0")
    stmts: list[Stmt] = []
    if U > 1:
        inner: list[Stmt] = []
        for u in range(U):
            inner += body(binop("add", binop("mul", c0, U), u))
        stmts.append(For(c0, Const(0), Const(cg // U), K.seq(inner)))
    if U == 1 or cg % U:
        c = Var("c")
        stmts.append(For(c, Const(cg // U * U if U > 1 else 0), Const(cg), K.seq(body(c))))
    return K.seq(stmts)


def lower_conv2d(ctx: LowerCtx, g: ConvGeom, x: TExpr, w: TExpr, bias: TExpr | None, sink: Sink) -> Stmt:
    dt = sink.dtype.compute
    name = ctx.node.name
    direct = g.direct and x.view is not None and x.view.is_contiguous
    plan = plan_conv(ctx, g, direct)
    MR, NR, W, nv = plan.MR, plan.NR, plan.W, plan.nv
    Kd = g.cg * g.taps
    taps = g.tap_offsets
    pt_size, ct_size = plan.pix_tile, plan.ch_tile
    # pixel tiles: runs of NR computed pixels (over rows of Wq), or MR real pixels within one output row
    pt_n = -(-g.nq // pt_size) if plan.pix_vec else g.oh * (g.ow // pt_size)
    ct_n = -(-g.mg // ct_size)
    work = 2 * g.n * g.m * g.oh * g.ow * Kd
    parallel = work >= ctx.parallel_threshold * PARALLEL_FLOPS_PER_ELEMENT
    img = Var("img")
    stmts: list[Stmt] = []

    # weights: packed so that the channel operand is contiguous per k (k = c * taps + t)
    def w_at(gi: Expr, k: Expr, m: Expr) -> Expr:
        ck = unflatten(k, (g.cg, g.kh, g.kw))
        oc = binop("add", binop("mul", gi, g.mg), m)
        return w([oc, ck[0], ck[2]] if g.rank == 1 else [oc, *ck])

    if w.const is not None:
        wmat = w.const.reshape(g.group, g.mg, Kd).astype(dt.np)
        if plan.pix_vec:
            wp = ctx.const_view(pack_a_const(wmat, MR), f"{name}_Wpacked").buf
        else:
            wp = ctx.const_view(pack_b_const(np.ascontiguousarray(np.swapaxes(wmat, 1, 2)), NR), f"{name}_Wpacked").buf
    else:
        wp = ctx.workspace(dt, g.group * ct_n * Kd * ct_size, f"{name}_Wpack")
        stmts.append(emit_pack(ctx, w_at, g.group, g.mg, Kd, ct_size, wp, parallel, "k"))

    # the pixel operand
    if direct:
        P = x.view.buf
        p_img = binop("add", Const(x.view.offset), binop("mul", img, g.c * g.plane))
        per_img: list[Stmt] = []
    else:
        reach = max(taps) + (pt_n * pt_size if plan.pix_vec else g.nq)  # furthest read past a channel plane
        slack = max(0, (g.c - 1) * g.plane + reach - g.c * g.plane)
        P = ctx.workspace(dt, g.c * g.plane + slack, f"{name}_P")
        p_img = Const(0)
        per_img = [emit_build_p(ctx, g, x, img, P, Var("ch"), Const(0), None, slack, parallel)]

    tv = Var("tile")
    gi, pt, ct = Var("g"), Var("pt"), Var("ct")
    per_g = pt_n * ct_n
    body: list[Stmt] = [
        Decl(gi, binop("floordiv", tv, per_g) if g.group > 1 else Const(0)),
    ]
    rem = binop("mod", tv, per_g) if g.group > 1 else tv
    # the inner tile loop streams the whole of the other operand once per outer tile: iterate inside over
    # the operand with less total traffic (pixel tiles inside when the weights are the bigger one)
    w_bytes, p_bytes = g.mg * Kd, g.cg * g.plane
    outer, inner, n_inner = (ct, pt, pt_n) if ct_n * p_bytes < pt_n * w_bytes else (pt, ct, ct_n)
    body += [Decl(outer, binop("floordiv", rem, n_inner) if n_inner > 1 else rem),
             Decl(inner, binop("mod", rem, n_inner) if n_inner > 1 else Const(0))]  # fmt: skip
    n0 = Var("n0")
    if plan.pix_vec:
        body.append(Decl(n0, binop("mul", pt, pt_size)))
    else:
        per_row = g.ow // pt_size
        row, blk = binop("floordiv", pt, per_row), binop("mod", pt, per_row)
        body.append(Decl(n0, binop("add", binop("mul", row, g.wq), binop("mul", blk, pt_size))))
    c0 = binop("mul", ct, ct_size)
    acc = [[Var(f"acc{i}_{j}", dt, W) for j in range(nv)] for i in range(MR)]
    body += [Decl(acc[i][j], Const(0.0, dt, W)) for i in range(MR) for j in range(nv)]
    p_base = binop("add", binop("add", p_img, binop("mul", binop("mul", gi, g.cg), g.plane)), n0)
    w_base = binop("mul", binop("add", binop("mul", gi, ct_n), ct), Kd * ct_size)

    # the last pixel tile of a direct P would read past the image: its pixel loads are masked (each output
    # element is computed and stored once, as in-place memory planning assumes)
    edge = direct and plan.pix_vec and g.nq % NR != 0
    masks = [K.cmp("lt", K.Ramp(binop("add", n0, j * W), 1, W), Const(g.nq, K.I64, W)) for j in range(nv)]

    def kstep(c: Expr, masked: bool = False) -> list[Stmt]:
        out: list[Stmt] = []
        pc = binop("add", p_base, binop("mul", c, g.plane))
        for t, off in enumerate(taps):
            k = binop("add", binop("mul", c, g.taps), t)
            if plan.pix_vec:
                bv = [Load(P, binop("add", pc, off + j * W), W, masks[j] if masked else None) for j in range(nv)]
                av = [Load(wp, binop("add", w_base, binop("add", binop("mul", k, MR), i))) for i in range(MR)]
            else:
                bv = [Load(wp, binop("add", w_base, binop("add", binop("mul", k, NR), j * W)), W) for j in range(nv)]
                av = [Load(P, binop("add", pc, off + i)) for i in range(MR)]
            for i in range(MR):
                ab = Broadcast(av[i], W)
                for j in range(nv):
                    out.append(Assign(acc[i][j], Fma(ab, bv[j], acc[i][j])))
        return out

    loop = _chan_loop(g.cg, g.taps, kstep)
    if edge:
        masked_loop = _chan_loop(g.cg, g.taps, lambda c: kstep(c, True))
        loop = K.If(K.cmp("le", binop("add", n0, NR), Const(g.nq)), loop, masked_loop)
    body.append(loop)
    tile = Buffer("ctile", dt, MR * NR)
    body += [Store(tile, Const(i * NR + j * W), acc[i][j]) for i in range(MR) for j in range(nv)]
    chv = Var("cc")
    ch_valid = K.minimum(Const(ct_size), binop("sub", Const(g.mg), c0)) if g.mg % ct_size else Const(ct_size)
    if plan.pix_vec:

        def tile_value(cc: Expr, n: Expr) -> Expr:
            return Load(tile, binop("add", binop("mul", cc, NR), binop("sub", n, n0)))

        body.append(For(chv, Const(0), ch_valid, _store_rows(ctx, g, sink, bias, img, gi, c0, chv, n0, pt_size,
                                                            tile_value)))  # fmt: skip
    else:
        body.append(_store_pixels(ctx, g, sink, bias, img, gi, c0, ch_valid, n0, MR, NR, tile))
    kind = LoopKind.PARALLEL if parallel and g.group * per_g > 1 else LoopKind.SERIAL
    per_img.append(For(tv, Const(0), Const(g.group * per_g), K.seq(body), kind))
    stmts.append(For(img, Const(0), Const(g.n), K.seq(per_img)))
    return K.seq(stmts)


def _store_rows(ctx: LowerCtx, g: ConvGeom, sink: Sink, bias: TExpr | None, img: Expr, gi: Expr, c0: Expr, cc: Var,
                n0: Expr, npix: int, value: Callable[[Expr, Expr], Expr]) -> Stmt:  # fmt: skip
    """Write output channel ``c0 + cc`` of the pixels ``[n0, n0 + npix)``: one vector loop per output
    row they touch (contiguous in NCHW), dropping the padding columns."""
    W = ctx.lanes(sink.dtype.compute)
    dt = sink.dtype.compute
    r, n = Var("r"), Var("n")
    ch = binop("add", binop("add", binop("mul", gi, g.mg), c0), cc)
    r_lo = binop("floordiv", n0, g.wq) if g.oh > 1 else Const(0)
    end = binop("add", n0, npix)
    r_hi = K.minimum(Const(g.oh), binop("floordiv", binop("add", end, g.wq - 1), g.wq)) if g.oh > 1 else Const(1)
    row0 = binop("mul", r, g.wq)
    lo = K.maximum(n0, row0)
    hi = K.minimum(end, binop("add", row0, g.ow))
    v = value(cc, n)
    if bias is not None:
        bv = bias([ch])
        v = binop("add", v, bv if bv.dtype == dt else K.cast(bv, dt))
    st = sink.store(_idx(g, img, ch, r, binop("sub", n, row0)), v)
    inner = For(n, lo, hi, st, LoopKind.VECTOR if W > 1 else LoopKind.SERIAL, 1, W)
    return For(r, r_lo, r_hi, inner)


def _store_pixels(ctx: LowerCtx, g: ConvGeom, sink: Sink, bias: TExpr | None, img: Expr, gi: Expr, c0: Expr,
                  ch_valid: Expr, n0: Expr, npix: int, NR: int, tile: Buffer) -> Stmt:  # fmt: skip
    """Write a channels-in-vectors tile (``npix`` pixels of one output row x ``NR`` channels): per channel,
    one vector loop over the pixels, so that the stores into NCHW (and any residual the epilogue reads)
    are contiguous; the tile is read transposed from the stack (L1)."""
    W = ctx.lanes(sink.dtype.compute)
    dt = sink.dtype.compute
    i, cc, r, col = Var("pi"), Var("cc"), Var("pr"), Var("pc")
    ch = binop("add", binop("add", binop("mul", gi, g.mg), c0), cc)
    v: Expr = Load(tile, binop("add", binop("mul", i, NR), cc))
    if bias is not None:
        bv = bias([ch])
        v = binop("add", v, bv if bv.dtype == dt else K.cast(bv, dt))
    st = sink.store(_idx(g, img, ch, r, binop("add", col, i)), v)
    vec = W > 1 and (npix >= W or ctx.target.masked_ops)
    pix = For(cc, Const(0), ch_valid, For(i, Const(0), Const(npix), st, LoopKind.VECTOR if vec else LoopKind.SERIAL,
                                          1, W if vec else 1))  # fmt: skip
    row = binop("floordiv", n0, g.wq) if g.oh > 1 else Const(0)
    return K.seq(Decl(r, row), Decl(col, binop("sub", n0, binop("mul", r, g.wq))), pix)


# -- depthwise -----------------------------------------------------------------------------------------
def lower_depthwise(ctx: LowerCtx, g: ConvGeom, x: TExpr, w: TExpr, bias: TExpr | None, sink: Sink) -> Stmt:
    """One input channel per output channel. Per channel: build its P plane (on the thread's stack when
    small), then per output row one vector loop over the row's pixels whose body sums the KH*KW taps
    (shifted contiguous loads of P times weights held in registers) and stores through the sink; the
    row's last partial vector is a masked iteration, so nothing is computed for padding columns."""
    dt = sink.dtype.compute
    W = ctx.lanes(dt)
    taps = g.tap_offsets
    size = g.plane + W  # a vector read at the end of a row may run W - 1 past the plane
    on_stack = size * dt.itemsize <= STACK_PLANE_BYTES
    work = 2 * g.n * g.m * g.oh * g.ow * g.taps
    parallel = work >= ctx.parallel_threshold * PARALLEL_FLOPS_PER_ELEMENT // 4  # memory-bound: lower
    img, ch = Var("img"), Var("ch")
    if on_stack:
        P = Buffer("plane", dt, size)
        p_base: Expr = Const(0)
        build: Stmt | None = emit_build_p(ctx, g, x, img, P, Var("cb"), ch, 1, size - g.plane)
    else:
        P = ctx.workspace(dt, g.c * g.plane + W, f"{ctx.node.name}_P")
        p_base = binop("mul", ch, g.plane)
        build = None
    wv = [Var(f"w{t}", dt) for t in range(g.taps)]
    body: list[Stmt] = [build] if build is not None else []
    for t in range(g.taps):
        kh, kw = divmod(t, g.kw)
        wt = w([ch, Const(0), Const(kw)] if g.rank == 1 else [ch, Const(0), Const(kh), Const(kw)])
        body.append(Decl(wv[t], wt if wt.dtype == dt else K.cast(wt, dt)))
    r, ow = Var("r"), Var("ow")
    at = binop("add", binop("add", p_base, binop("mul", r, g.wq)), ow)
    terms = [binop("mul", wv[t], Load(P, binop("add", at, off))) for t, off in enumerate(taps)]
    while len(terms) > 1:  # a tree, not a chain: independent FMAs overlap in the pipes
        terms = [binop("add", terms[i], terms[i + 1]) if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]  # fmt: skip
    v = terms[0]
    if bias is not None:
        bv = bias([ch])
        v = binop("add", v, bv if bv.dtype == dt else K.cast(bv, dt))
    st = sink.store(_idx(g, img, ch, r, ow), v)
    row = For(ow, Const(0), Const(g.ow), st, LoopKind.VECTOR if W > 1 else LoopKind.SERIAL, 1, W)
    body.append(For(r, Const(0), Const(g.oh), row))
    kind = LoopKind.PARALLEL if parallel and g.c > 1 else LoopKind.SERIAL
    per_img: list[Stmt] = []
    if not on_stack:
        per_img.append(emit_build_p(ctx, g, x, img, P, Var("cb"), Const(0), None, W, parallel))
    per_img.append(For(ch, Const(0), Const(g.c), K.seq(body), kind))
    return For(img, Const(0), Const(g.n), K.seq(per_img))


# -- the rule ------------------------------------------------------------------------------------------
# The tile is stored channel by channel, each a contiguous run of pixels in NCHW (_store_rows/_store_pixels),
# so the epilogue reads a residual in the same streaming order; fused, the residual add costs no extra pass
# over memory (ResNet-50 / MobileNet-v2 at batch 1: 1-3% faster than a separate add loop, 71 -> 56 kernels).
# Other kernels (lower/bf16_conv.py: precision="bf16"), tried in order before the float32 ones with the rule's
# arguments (ctx, node, inputs, sink): each returns its statement, or None where it does not apply.
CONV_VARIANTS: list[Callable[..., Stmt | None]] = []


@kernel_rule("Conv", epilogue=True, epilogue_reads_tensors=True)
def _conv(ctx: LowerCtx, node, ins: list[TExpr], outs):
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    sink = outs[0]
    win = _conv_window(None, x.shape, w.shape, node.attrs)
    group = int(node.attrs.get("group", 1))
    g = conv_geom(x.shape, w.shape, win, group)
    ctx.stores_once = True  # every path below writes each output element once (tiles never overlap)
    for variant in CONV_VARIANTS:
        stmt = variant(ctx, node, ins, sink)
        if stmt is not None:
            return stmt
    if g is not None and not ctx.target.is_gpu:
        if g.cg == 1 and g.mg == 1:
            return lower_depthwise(ctx, g, x, w, bias, sink)
        if not _patches(g):
            return lower_conv2d(ctx, g, x, w, bias, sink)
    return _conv_generic(ctx, node, x, w, bias, sink, win, group)


def patch_element(x: TExpr, win: Window, img: Expr, g: Expr, cg: int, k: Expr, n: Expr) -> Expr:
    """Implicit im2col: element ``(k, n)`` of image ``img``'s patch matrix in group ``g`` (``k`` over the group's
    ``cg`` channels x the window, ``n`` over output positions), zero where the window reaches the padding."""
    sp = len(win.kernel)
    ck = unflatten(k, (cg, *win.kernel))
    osp = unflatten(n, tuple(win.out_size))
    pos = []
    valid: Expr | None = None
    for d in range(sp):
        p = binop("add", binop("sub", binop("mul", osp[d], win.strides[d]), win.pads_begin[d]),
                  binop("mul", ck[1 + d], win.dilations[d]))  # fmt: skip
        if win.pads_begin[d] or win.pads_end[d]:
            ok = K.binop("and", K.cmp("ge", p, Const(0)), K.cmp("lt", p, Const(win.in_size[d])))
            valid = ok if valid is None else K.binop("and", valid, ok)
            p = K.maximum(Const(0), K.minimum(p, Const(win.in_size[d] - 1)))
        pos.append(p)
    v = x([img, binop("add", binop("mul", g, cg), ck[0]), *pos])
    return v if valid is None else K.select(valid, v, K.const(0, v.dtype))


def _conv_generic(ctx: LowerCtx, node, x: TExpr, w: TExpr, bias: TExpr | None, sink: Sink, win: Window,
                  group: int) -> Stmt:  # fmt: skip
    """Any number of spatial dims (and GPU targets): per image a GEMM whose B packing reads the input
    directly, with padding (implicit im2col, one index computation per element)."""
    n_img, c_in = x.shape[:2]
    m_out = w.shape[0]
    cg, mg = c_in // group, m_out // group
    ksize = int(np.prod(win.kernel))
    Kd = cg * ksize
    out_sp = win.out_size
    N = int(np.prod(out_sp))
    cdt = sink.dtype.compute
    plan = plan_gemm(ctx, cdt, mg, N, Kd)
    a_packed = None
    a_stride = 0
    a_elem = None
    if w.const is not None:
        wmat = w.const.reshape(group, mg, Kd).astype(cdt.np)
        a_packed = ctx.const_view(pack_a_const(wmat, plan.MR), f"{node.name}_Wpacked").buf
        a_stride = -(-mg // plan.MR) * Kd * plan.MR
    else:  # weights computed at run time: read them in place
        w2 = w.view.reshape((m_out, Kd)) if w.view is not None else None

        def a_elem(g: Expr, m: Expr, k: Expr) -> Expr:
            row = binop("add", binop("mul", g, mg), m)
            if w2 is not None:
                return w2.load([row, k])
            return w([row, *unflatten(k, (cg, *win.kernel))])

    np_n = -(-N // plan.NR)
    bp = ctx.workspace(cdt, group * np_n * Kd * plan.NR, f"{node.name}_col")
    work = 2 * group * mg * N * Kd
    parallel = work >= ctx.parallel_threshold * PARALLEL_FLOPS_PER_ELEMENT
    img = Var("img")

    def src(g: Expr, k: Expr, n: Expr) -> Expr:
        return patch_element(x, win, img, g, cg, k, n)

    out3 = sink.view.reshape((n_img, m_out, N))

    def store(g: Expr, m: Expr, n: Expr, v: Expr):
        ch = binop("add", binop("mul", g, mg), m)
        if bias is not None:
            bv = bias([ch])
            v = binop("add", v, bv if bv.dtype == cdt else K.cast(bv, cdt))
        full = [img, ch, *unflatten(n, out_sp)]
        return out3.store([img, ch, n], sink.value(full, v))

    spec = GemmSpec(mg, N, Kd, group, cdt, a_elem, a_packed, a_stride if group > 1 else 0, bp, np_n * Kd * plan.NR,
                    store)  # fmt: skip
    body = K.seq(emit_pack_b(ctx, src, group, Kd, N, plan.NR, bp, parallel), emit_gemm(ctx, plan, spec, parallel))
    return For(img, Const(0), Const(n_img), body, LoopKind.SERIAL)
