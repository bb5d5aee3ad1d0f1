"""Lowering of MaxPoolWithIndices and MaxUnpool (kernels) and Col2Im (an index expression gathering every
column entry that lands on an output pixel)."""

from __future__ import annotations

import itertools

import numpy as np

from ..ops.nn import pool_window
from ..ops.pooling import col2im_window, unpool_shape
from . import kir as K
from .kir import Assign, Const, Decl, Expr, For, If, LoopKind, Stmt, Var, binop
from .rules import LowerCtx, index_rule, kernel_rule
from .schedule import loop_vars, parallel_axis, pointwise_nest
from .shape_ops import flat_index, unflatten
from .tensor import TExpr


@kernel_rule("MaxPoolWithIndices")
def _maxpool_indices(ctx: LowerCtx, node, ins, outs):
    x = ins[0]
    win = pool_window(None, x.shape, node.attrs)
    n, c = x.shape[:2]
    sp = len(win.kernel)
    so = int(node.attrs.get("storage_order", 0))
    vals, inds = outs[0].view, outs[1].view
    nv, cv = Var("n"), Var("c")
    ov, kv = loop_vars(sp), [Var(f"k{d}") for d in range(sp)]
    best, bi = Var("best", x.dtype), Var("bi")
    pos = [binop("add", binop("sub", binop("mul", ov[d], win.strides[d]), win.pads_begin[d]),
                 binop("mul", kv[d], win.dilations[d])) for d in range(sp)]  # fmt: skip
    inside = None
    for d in range(sp):
        ok = K.binop("and", K.cmp("ge", pos[d], Const(0)), K.cmp("lt", pos[d], Const(win.in_size[d])))
        inside = ok if inside is None else K.binop("and", inside, ok)
    safe = [K.maximum(Const(0), K.minimum(p, Const(s - 1))) for p, s in zip(pos, win.in_size)]
    v = x([nv, cv, *safe])
    order = list(reversed(range(sp))) if so else list(range(sp))
    plane = flat_index([safe[d] for d in order], [win.in_size[d] for d in order])
    flat = binop("add", binop("mul", binop("add", binop("mul", nv, c), cv), int(np.prod(win.in_size))), plane)
    upd: Stmt = If(K.binop("and", inside, K.cmp("gt", v, best)), K.seq(Assign(best, v), Assign(bi, flat)))
    for d in reversed(range(sp)):
        upd = For(kv[d], Const(0), Const(win.kernel[d]), upd)
    lowest = K.const(float("-inf") if x.dtype.is_float else int(np.iinfo(x.dtype.np).min), x.dtype)
    body: Stmt = K.seq(Decl(best, lowest), Decl(bi, Const(0)), upd, vals.store([nv, cv, *ov], best),
                       inds.store([nv, cv, *ov], bi))  # fmt: skip
    loops = [(nv, n), (cv, c), *zip(ov, win.out_size)]
    par = parallel_axis([e for _, e in loops[:2]], int(np.prod(win.kernel)) * int(np.prod(win.out_size)),
                        ctx.parallel_threshold)  # fmt: skip
    for d in reversed(range(len(loops))):
        var, e = loops[d]
        body = For(var, Const(0), Const(e), body, LoopKind.PARALLEL if d == par else LoopKind.SERIAL)
    return body


@kernel_rule("MaxUnpool")
def _max_unpool(ctx: LowerCtx, node, ins, outs):
    x, ind = ins[0], ins[1]
    view = outs[0].view
    inferred = unpool_shape(x.shape, node.attrs)
    total = int(np.prod(inferred))

    def zero(idx):
        return view.store(idx, K.const(0, view.dtype))

    fill = pointwise_nest(view.shape, zero, ctx.lanes(view.dtype), ctx.parallel_threshold)
    if x.numel == 0:
        return fill
    ctx.check_range(ind, "I", "index", [(0, total - 1, f"the unpooled tensor {list(inferred)} has {total} elements")])

    def scatter(idx):  # serial: duplicate indices keep the last value, as the reference does
        flat = K.cast(ind(idx), K.I64)
        return view.store(unflatten(flat, inferred), K.cast(x(idx), view.dtype))

    return K.seq(fill, K.loop_nest(x.shape, scatter, kinds=[LoopKind.SERIAL] * x.rank))


@index_rule("Col2Im")
def _col2im(ctx: LowerCtx, node, ins):
    x = ins[0]
    image, block = ins[1].const, ins[2].const
    win = col2im_window(image, block, node.attrs)
    k = int(np.prod(win.kernel))
    out = node.outputs[0]
    cdt = x.dtype.compute

    def fn(idx):
        n, c, pix = idx[0], idx[1], list(idx[2:])
        total = K.const(0, cdt)
        for ki, koff in enumerate(itertools.product(*(range(s) for s in win.kernel))):
            ok: Expr | None = None
            cols = []
            for d, (p, kk) in enumerate(zip(pix, koff)):
                t = binop("sub", binop("add", p, win.pads_begin[d]), kk * win.dilations[d])
                s = win.strides[d]
                q = binop("floordiv", K.maximum(t, Const(0)), s) if s > 1 else K.maximum(t, Const(0))
                cond = K.binop("and", K.cmp("ge", t, Const(0)), K.cmp("lt", q, Const(win.out_size[d])))
                if s > 1:
                    cond = K.binop("and", cond, K.cmp("eq", binop("mod", K.maximum(t, Const(0)), s), Const(0)))
                ok = cond if ok is None else K.binop("and", ok, cond)
                cols.append(K.minimum(q, Const(win.out_size[d] - 1)))
            v = K.cast(x([n, binop("add", binop("mul", c, k), ki), flat_index(cols, win.out_size)]), cdt)
            total = K.binop("add", total, K.select(ok, v, K.const(0, cdt)))
        return K.cast(total, out.dtype)

    return [TExpr.compute(out.shape, out.dtype, fn)]
