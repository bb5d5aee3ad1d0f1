"""ConvInteger on the int8 GEMM (``lower/int8_gemm.py``).

Per image and group, ``Y[Mg, pixels] = W[Mg, K] @ col[K, pixels]`` with ``K = Cg*KH*KW``: the weights are the
GEMM's A (stored and packed row-major at compile time), the input patches its B, packed at run time straight
into the VNNI panel layout (implicit im2col: one index computation per element, padding written as the
stored zero point so that it contributes nothing after the correction). Rows of the result are output
channels and columns pixels, so the epilogue stores contiguous runs of NCHW (and reads a fused residual the
same way). The zero point of x becomes the compile-time row correction ``-z'x * rowsum(W')[m]``; a weight
zero point other than 0 (it would need run-time column sums of the patches), depthwise convolutions and 3-D
convolutions take the generic route (``lower/qgemm.py``).
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from ..ops.nn import _conv_window
from . import int8_gemm as G8
from . import kir as K
from .conv import ConvGeom, conv_geom, emit_build_p
from .kir import Const, For, LoopKind, Store, Var, binop
from .kir.nodes import Cmp, Ramp
from .kir.tile import Interleave
from .rules import LowerCtx
from .tensor import TExpr


def _zp_const(zp: TExpr | None) -> np.ndarray | None:
    """A zero point's values (int64), 0 when absent; None when only known at run time."""
    if zp is None:
        return np.zeros((), np.int64)
    return None if zp.const is None else np.asarray(zp.const).astype(np.int64)


def int8_isa(ctx: LowerCtx) -> str:
    """The int8 path: the lowering option ``int8_isa`` (tests force one), else the target's."""
    return str(ctx.options.get("int8_isa") or ctx.target.int8_isa)


I16 = DType.I16


def lower_conv_integer(ctx: LowerCtx, node, ins: list[TExpr], sink) -> K.Stmt | None:
    x, w = ins[0], ins[1]
    isa = int8_isa(ctx)
    zx, zw = _zp_const(ins[2] if len(ins) > 2 else None), _zp_const(ins[3] if len(ins) > 3 else None)
    if isa == "generic" or w.const is None or zx is None or zw is None or x.rank not in (3, 4):
        return None
    if np.any(zw) and isa != "avx2":
        return None
    win = _conv_window(None, x.shape, w.shape, node.attrs)
    group = int(node.attrs.get("group", 1))
    n_img, c_in = x.shape[:2]
    m_out = w.shape[0]
    cg, mg = c_in // group, m_out // group
    if cg == 1 and mg == 1 and group > 1:
        return None  # depthwise: a K of a few taps wastes the dot-product instructions
    rank2 = x.rank == 4
    kh, kw = win.kernel if rank2 else (1, win.kernel[0])
    sh, sw = win.strides if rank2 else (1, win.strides[0])
    dh, dw = win.dilations if rank2 else (1, win.dilations[0])
    pt, pl = win.pads_begin if rank2 else (0, win.pads_begin[0])
    H, Wd = (x.shape[2], x.shape[3]) if rank2 else (1, x.shape[2])
    OH, OW = win.out_size if rank2 else (1, win.out_size[0])
    Kd, N = cg * kh * kw, OH * OW
    zx = zx.reshape(-1)[0] if zx.size else np.int64(0)
    zw_vec = np.broadcast_to(zw.reshape(-1), (m_out,)) if zw.size > 1 else np.full(m_out, int(zw.reshape(-1)[0]))
    opa, opb = G8.operands(isa, w.dtype, x.dtype, np.zeros(()), np.asarray(zx), "a")
    plan = G8.plan_int8(ctx, isa, mg, N, Kd)
    Kp, Mp = -(-Kd // plan.KS) * plan.KS, -(-mg // plan.MR) * plan.MR
    NR = plan.NR
    Np = -(-N // NR) * NR
    name = node.name
    wmat = w.const.reshape(group, mg, Kd)
    ws = np.stack([G8.store_value(wmat[g], opa, zw_vec[g * mg : (g + 1) * mg, None]) for g in range(group)])
    a_tiles = isa == "amx"
    apack = np.stack([G8.pack_a_tiles_const(ws[g], Mp, Kp, plan.MR) if a_tiles else G8.pack_a_rows_const(ws[g], Mp, Kp)
                      for g in range(group)])  # fmt: skip
    abuf = ctx.const_view(apack, f"{name}_Wpacked").buf
    corr = G8.Corrections()
    if opb.dtype is not I16 and opb.zp != 0:  # -z'x * rowsum(W') per output channel (all groups)
        rows = np.concatenate([np.pad(-int(opb.zp) * ws[g].astype(np.int64).sum(axis=1), (0, Mp - mg))
                               for g in range(group)])  # fmt: skip
        corr.terms.append((G8._vec(ctx, rows, group * Mp, f"{name}_rowcorr"), None))
    geom = conv_geom(x.shape, w.shape, win, group)
    if opb.dtype is not I16 and geom is not None and NR % 16 == 0 and ctx.options.get("int8_conv_pack") != "scalar":
        return _lower_fast(ctx, node, x, geom, plan, opb, abuf, corr, a_tiles, Kd, Kp, Mp, sink)
    bbuf = ctx.workspace(opb.dtype, Np * Kp, f"{name}_col")
    work = 2 * mg * N * Kd
    parallel = G8.is_parallel(ctx, work)
    img, gi = Var("img"), Var("g")
    pad_value = K.const(0 if opb.dtype is I16 else int(opb.zp), opb.dtype)
    zx_e = K.const(int(zx), I16) if opb.dtype is I16 and zx else None

    # B panels: dst[p][k // G][nn][k % G] = stored x of pixel p*NR + nn, tap k = (c, i, j)
    p, c, i, j, nn = Var("p"), Var("c"), Var("i"), Var("j"), Var("nn")
    k = binop("add", binop("mul", binop("add", binop("mul", c, kh), i), kw), j)
    n = binop("add", binop("mul", p, NR), nn)
    oh, ow = (binop("floordiv", n, OW), binop("mod", n, OW)) if OH > 1 else (Const(0), n)
    ih = binop("add", binop("mul", oh, sh), binop("sub", binop("mul", i, dh), pt))
    iw = binop("add", binop("mul", ow, sw), binop("sub", binop("mul", j, dw), pl))
    ok = K.cmp("lt", n, Const(N))
    reach_h, reach_w = (OH - 1) * sh + (kh - 1) * dh, (OW - 1) * sw + (kw - 1) * dw
    for pos, size, padded in ((ih, H, pt > 0 or reach_h - pt >= H), (iw, Wd, pl > 0 or reach_w - pl >= Wd)):
        if padded:
            ok = K.binop("and", ok, K.binop("and", K.cmp("ge", pos, Const(0)), K.cmp("lt", pos, Const(size))))
    ihc = K.maximum(Const(0), K.minimum(ih, Const(H - 1)))
    iwc = K.maximum(Const(0), K.minimum(iw, Const(Wd - 1)))
    ch = binop("add", binop("mul", gi, cg), c)
    xv = x([img, ch, ihc, iwc] if rank2 else [img, ch, iwc])
    val = K.select(ok, G8.store_expr(xv, opb, zx_e), pad_value)
    at = G8.b_index(plan, Kp, p, k, nn)
    fill = For(nn, Const(0), Const(NR), Store(bbuf, at, val))
    pack = For(p, Const(0), Const(Np // NR),
               For(c, Const(0), Const(cg), For(i, Const(0), Const(kh), For(j, Const(0), Const(kw), fill))),
               LoopKind.PARALLEL if parallel and Np > NR else LoopKind.SERIAL)  # fmt: skip
    # the K padding of every panel: zeros (their weights are zero too, but the workspace holds garbage)
    kpad = _kpad(bbuf, plan, Np // NR, Kd, Kp, opb.dtype) if Kp > Kd else None

    def store(m, nx, v):
        och = binop("add", binop("mul", gi, mg), m)
        rowv = binop("floordiv", nx, OW) if OH > 1 else Const(0)
        colv = binop("mod", nx, OW) if OH > 1 else nx
        return sink.store([img, och, rowv, colv] if rank2 else [img, och, colv], v)

    corr_g = _GroupCorr(corr.terms[0][0], gi, Mp) if corr.terms else corr
    gemm = G8.Int8Gemm(mg, N, Kp, abuf, binop("mul", gi, Mp * Kp), bbuf, Const(0), store, corr_g, order="pm",
                       a_tiles=a_tiles)  # fmt: skip
    body = K.seq(pack, kpad, G8.emit_int8_gemm(ctx, plan, gemm, parallel))
    ctx.stores_once = True
    return For(img, Const(0), Const(n_img), For(gi, Const(0), Const(group), body))


def _lower_fast(ctx: LowerCtx, node, x: TExpr, g: ConvGeom, plan, opb, abuf, corr, a_tiles: bool, Kd: int, Kp: int,
                Mp: int, sink) -> K.Stmt:  # fmt: skip
    """The GEMM's B read from ``P``, the padded phase-split input of the float convolution (``lower/conv.py``):
    pixels numbered over rows of ``Wq`` make every tap's row of B a contiguous run of ``P``, so each group of 4
    k of 16 columns is four 16-byte loads interleaved into one 64-byte store (no per-element index). A 1x1
    stride-1 unpadded convolution of a contiguous tensor reads X itself. The extra columns of each row are
    computed and dropped by the epilogue."""
    name = node.name
    NR = plan.NR
    Nq = g.oh * g.wq
    Np = -(-Nq // NR) * NR
    taps = g.taps
    plane = g.plane
    offs = g.tap_offsets
    koff = np.zeros(Kp, np.int64)  # row of B -> its offset in P (K padding: row 0; its weights are zero)
    kk = np.arange(Kd)
    koff[:Kd] = (kk // taps) * plane + np.asarray(offs, np.int64)[kk % taps]
    kbuf = ctx.const_view(koff, f"{name}_koff").buf
    img, gi = Var("img"), Var("g")
    v = x.view
    direct = g.direct and v is not None and v.is_contiguous and x.dtype is opb.dtype and opb.shift == 0
    work = 2 * g.mg * Nq * Kd
    parallel = G8.is_parallel(ctx, work)
    stmts_img: list[K.Stmt] = []
    if direct:
        pbuf, pbase = v.buf, binop("add", Const(v.offset), binop("mul", img, g.c * plane))
    else:
        psize = max(g.c * plane, int(koff.max()) + (g.group - 1) * g.cg * plane + Np)
        pbuf, pbase = ctx.workspace(opb.dtype, psize, f"{name}_P"), Const(0)
        ch = Var("ch")
        zx_stored = K.const(int(opb.zp), opb.dtype)
        xs = TExpr(x.shape, opb.dtype, lambda idx: G8.store_expr(x(idx), opb), None, None)
        stmts_img.append(emit_build_p(ctx, g, xs, img, pbuf, ch, Const(0), slack=psize - g.c * plane,
                                      parallel=parallel, pad=zx_stored))  # fmt: skip
    bbuf = ctx.workspace(opb.dtype, Np * Kp, f"{name}_col")
    # B panels: for panel p, k-group kg, 16-column block jt: interleave 4 rows of 16 bytes
    p, kg = Var("p"), Var("kg")
    gbase = binop("add", pbase, binop("mul", gi, g.cg * plane))
    col0 = binop("mul", p, NR)
    rows = [binop("add", gbase, binop("add", K.Load(kbuf, binop("add", binop("mul", kg, 4), q)), col0))
            for q in range(4)]  # fmt: skip

    def body(masked: bool) -> K.Stmt:
        out = []
        for jt in range(NR // 16):
            mask = None
            if masked:  # the last panel of a direct read: lanes past the image's pixels stay unread
                mask = Cmp("lt", Ramp(binop("add", col0, jt * 16), 1, 16), K.Broadcast(Const(Nq), 16))
            parts = tuple(K.Load(pbuf, binop("add", r, jt * 16), 16, mask) for r in rows)
            out.append(Store(bbuf, G8.b_index(plan, Kp, p, binop("mul", kg, 4), Const(jt * 16)), Interleave(parts)))
        return For(kg, Const(0), Const(Kp // 4), K.seq(out))

    full = Np // NR if not direct or Np == Nq else Np // NR - 1
    kind = LoopKind.PARALLEL if parallel and full > 1 else LoopKind.SERIAL
    pack = K.seq(For(p, Const(0), Const(full), body(False), kind),
                 K.seq(K.Decl(p, Const(full)), body(True)) if full < Np // NR else None)  # fmt: skip

    def store_rc(m, r, col, val):
        och = binop("add", binop("mul", gi, g.mg), m)
        return sink.store([img, och, r, col] if g.rank == 2 else [img, och, col], val)

    def store(m, nx, val):
        return store_rc(m, binop("floordiv", nx, g.wq), binop("mod", nx, g.wq), val)

    corr_g = _GroupCorr(corr.terms[0][0], gi, Mp) if corr.terms else corr
    gemm = G8.Int8Gemm(g.mg, Nq, Kp, abuf, binop("mul", gi, Mp * Kp), bbuf, Const(0), store, corr_g, order="pm",
                       a_tiles=a_tiles, row_w=g.wq, row_valid=g.ow, store_rc=store_rc)  # fmt: skip
    per_group = K.seq(pack, G8.emit_int8_gemm(ctx, plan, gemm, parallel))
    ctx.stores_once = True
    return For(img, Const(0), Const(g.n), K.seq(*stmts_img, For(gi, Const(0), Const(g.group), per_group)))


class _GroupCorr(G8.Corrections):
    """The row correction of group ``g``: ``rows[g * Mp + m]``."""

    def __init__(self, rows, g, Mp):
        super().__init__([])
        self.rows, self.g, self.Mp = rows, g, Mp

    def apply(self, v, m, n):
        return binop("add", v, K.Load(self.rows, binop("add", binop("mul", self.g, self.Mp), m)))


def _kpad(buf, plan, panels: int, Kd: int, Kp: int, dt) -> K.Stmt:
    """Zero the entries of k in [Kd, Kp) of every panel (the workspace holds garbage; their weights are zero
    too, but garbage times zero is not zero for the corrections' sake of exactness: keep it clean)."""
    p, kk, nn = Var("p"), Var("kk"), Var("nn")
    at = G8.b_index(plan, Kp, p, kk, nn)
    inner = For(kk, Const(Kd), Const(Kp), For(nn, Const(0), Const(plan.NR), Store(buf, at, K.const(0, dt))))
    return For(p, Const(0), Const(panels), inner)


__all__ = ["lower_conv_integer"]
