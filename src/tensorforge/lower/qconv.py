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
from .kir import Const, For, LoopKind, Store, Var, binop
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
    NR, G = plan.NR, plan.G
    Np = -(-N // NR) * NR
    name = node.name
    wmat = w.const.reshape(group, mg, Kd)
    ws = np.stack([G8.store_value(wmat[g], opa, zw_vec[g * mg : (g + 1) * mg, None]) for g in range(group)])
    apack = np.stack([G8.pack_a_rows_const(ws[g], Mp, Kp) for g in range(group)])
    abuf = ctx.const_view(apack, f"{name}_Wpacked").buf
    corr = G8.Corrections()
    if opb.dtype is not I16 and opb.zp != 0:  # -z'x * rowsum(W') per output channel (all groups)
        rows = np.concatenate([np.pad(-int(opb.zp) * ws[g].astype(np.int64).sum(axis=1), (0, Mp - mg))
                               for g in range(group)])  # fmt: skip
        corr.terms.append((G8._vec(ctx, rows, group * Mp, f"{name}_rowcorr"), None))
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
    at = binop("add", binop("add", binop("mul", p, Kp * NR), binop("mul", binop("floordiv", k, G), NR * G)),
               binop("add", binop("mul", nn, G), binop("mod", k, G)))  # fmt: skip
    fill = For(nn, Const(0), Const(NR), Store(bbuf, at, val))
    pack = For(p, Const(0), Const(Np // NR),
               For(c, Const(0), Const(cg), For(i, Const(0), Const(kh), For(j, Const(0), Const(kw), fill))),
               LoopKind.PARALLEL if parallel and Np > NR else LoopKind.SERIAL)  # fmt: skip
    # the K padding of every panel: zeros (their weights are zero too, but the workspace holds garbage)
    kpad = _kpad(bbuf, Np // NR, Kd, Kp, NR, G, opb.dtype) if Kp > Kd else None

    def store(m, nx, v):
        och = binop("add", binop("mul", gi, mg), m)
        rowv = binop("floordiv", nx, OW) if OH > 1 else Const(0)
        colv = binop("mod", nx, OW) if OH > 1 else nx
        return sink.store([img, och, rowv, colv] if rank2 else [img, och, colv], v)

    corr_g = _GroupCorr(corr.terms[0][0], gi, Mp) if corr.terms else corr
    gemm = G8.Int8Gemm(mg, N, Kp, abuf, binop("mul", gi, Mp * Kp), bbuf, Const(0), store, corr_g, order="pm")
    body = K.seq(pack, kpad, G8.emit_int8_gemm(ctx, plan, gemm, parallel))
    ctx.stores_once = True
    return For(img, Const(0), Const(n_img), For(gi, Const(0), Const(group), body))


class _GroupCorr(G8.Corrections):
    """The row correction of group ``g``: ``rows[g * Mp + m]``."""

    def __init__(self, rows, g, Mp):
        super().__init__([])
        self.rows, self.g, self.Mp = rows, g, Mp

    def apply(self, v, m, n):
        return binop("add", v, K.Load(self.rows, binop("add", binop("mul", self.g, self.Mp), m)))


def _kpad(buf, panels: int, Kd: int, Kp: int, NR: int, G: int, dt) -> K.Stmt:
    """Zero the entries of k in [Kd, Kp) of every panel ``[Kp/G][NR][G]``."""
    p, kk, nn = Var("p"), Var("kk"), Var("nn")
    at = binop("add", binop("add", binop("mul", p, Kp * NR), binop("mul", binop("floordiv", kk, G), NR * G)),
               binop("add", binop("mul", nn, G), binop("mod", kk, G)))  # fmt: skip
    return For(
        p,
        Const(0),
        Const(panels),
        For(kk, Const(Kd), Const(Kp), For(nn, Const(0), Const(NR), Store(buf, at, K.const(0, dt)))),
    )


__all__ = ["lower_conv_integer"]
