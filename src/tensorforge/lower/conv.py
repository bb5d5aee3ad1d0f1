"""Convolution as GEMM: per image, ``Y[g] (Mg x OH*OW) = W[g] (Mg x Cg*KH*KW) @ col[g]``.

The weights are packed at compile time into micro-panels; the im2col matrix is never built: the packing
step of the GEMM reads the input directly (with padding) into B panels. A 1x1, stride-1, unpadded
convolution packs straight from the input rows. The output is written in NCHW order through the GEMM
epilogue (bias and any fused activation applied there).
"""

from __future__ import annotations

import numpy as np

from ..ops.nn import _conv_window
from . import kir as K
from .gemm import GemmSpec, emit_gemm, emit_pack_b, pack_a_const, plan_gemm
from .kir import Const, Expr, For, LoopKind, Var, binop
from .rules import LowerCtx, kernel_rule
from .shape_ops import unflatten
from .tensor import TExpr


@kernel_rule("Conv")
def _conv(ctx: LowerCtx, node, ins: list[TExpr], outs):
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    sink = outs[0]
    win = _conv_window(None, x.shape, w.shape, node.attrs)
    group = int(node.attrs.get("group", 1))
    n_img, c_in = x.shape[:2]
    m_out = w.shape[0]
    sp = len(win.kernel)
    cg, mg = c_in // group, m_out // group
    ksize = int(np.prod(win.kernel))
    Kd = cg * ksize
    out_sp = win.out_size
    N = int(np.prod(out_sp))
    dt = sink.dtype
    cdt = dt.compute
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
    parallel = work >= ctx.parallel_threshold * 8
    img = Var("img")
    pointwise = ksize == 1 and all(s == 1 for s in win.strides) and not any(win.pads_begin) and not any(win.pads_end)

    def src(g: Expr, k: Expr, n: Expr) -> Expr:
        ch = binop("add", binop("mul", g, cg), k) if pointwise else None
        if pointwise:
            return x([img, ch, *unflatten(n, out_sp)]) if x.view is None else _flat_load(x, img, ch, n)
        ck = unflatten(k, (cg, *win.kernel))
        c = binop("add", binop("mul", g, cg), ck[0])
        osp = unflatten(n, out_sp)
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
        v = x([img, c, *pos])
        if valid is not None:
            v = K.select(valid, v, K.const(0, v.dtype))
        return v

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


def _flat_load(x: TExpr, img: Expr, ch: Expr, n: Expr) -> Expr:
    """x[img, ch, spatial...] with the spatial dims flattened (x is a contiguous view)."""
    v = x.view.reshape((x.shape[0], x.shape[1], int(np.prod(x.shape[2:]))))
    if v is None:
        return x([img, ch, *unflatten(n, x.shape[2:])])
    return v.load([img, ch, n])
