"""Lowering of Det: per matrix (matrices spread over threads), Gaussian elimination with partial pivoting
on a float64 copy in scratch memory; the determinant is the product of the pivots, negated per row swap."""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from . import kir as K
from .kir import Assign, Const, Decl, For, If, LoopKind, Stmt, Var, binop
from .rules import LowerCtx, kernel_rule
from .schedule import parallel_axis
from .tensor import View


@kernel_rule("Det")
def _det(ctx: LowerCtx, node, ins, outs):
    x = ins[0]
    m = x.shape[-1]
    batch_shape = x.shape[:-2]
    nb = int(np.prod(batch_shape)) if batch_shape else 1
    out = outs[0].view.reshape((nb,))
    if nb == 0:
        return K.Seq(())
    dt = DType.F64
    work = View.of(ctx.workspace(dt, nb * m * m, f"{node.name}_lu"), (nb, m, m))
    xs = x.view.reshape((nb, m, m)) if x.view is not None else None
    b, i, j, k, p = Var("b"), Var("i"), Var("j"), Var("k"), Var("p")
    det, best, piv, f, t = Var("det", dt), Var("best", dt), Var("piv", dt), Var("f", dt), Var("t", dt)

    def a(r, c):
        return work.load([b, r, c])

    def src(r, c):
        if xs is not None:
            return K.cast(xs.load([b, r, c]), dt)
        from .shape_ops import unflatten

        return K.cast(x([*unflatten(b, batch_shape), r, c]), dt) if batch_shape else K.cast(x([r, c]), dt)

    copy = For(i, Const(0), Const(m), For(j, Const(0), Const(m), work.store([b, i, j], src(i, j))))
    find = K.seq(Decl(p, k), Decl(best, K.unop("abs", a(k, k))),
                 For(i, binop("add", k, 1), Const(m),
                     If(K.cmp("gt", K.unop("abs", a(i, k)), best), K.seq(Assign(best, K.unop("abs", a(i, k))),
                                                                          Assign(p, i)))))  # fmt: skip
    swap = If(K.cmp("ne", p, k), K.seq(
        For(j, Const(0), Const(m), K.seq(Decl(t, a(k, j)), work.store([b, k, j], a(p, j)), work.store([b, p, j], t))),
        Assign(det, K.unop("neg", det))))  # fmt: skip
    elim = For(i, binop("add", k, 1), Const(m), K.seq(
        Decl(f, K.binop("div", a(i, k), piv)),
        For(j, binop("add", k, 1), Const(m),
            work.store([b, i, j], K.binop("sub", a(i, j), K.binop("mul", f, a(k, j)))))))  # fmt: skip
    step: Stmt = K.seq(find, swap, Decl(piv, a(k, k)), Assign(det, K.binop("mul", det, piv)),
                       If(K.cmp("ne", piv, K.const(0, dt)), elim))  # fmt: skip
    body = K.seq(copy, Decl(det, K.const(1, dt)), For(k, Const(0), Const(m), step),
                 out.store([b], K.cast(det, out.dtype)))  # fmt: skip
    par = parallel_axis([nb], m * m * m, ctx.parallel_threshold)
    return For(b, Const(0), Const(nb), body, LoopKind.PARALLEL if par == 0 else LoopKind.SERIAL)
