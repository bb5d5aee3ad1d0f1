"""Lowering of LayerNormalization, RMSNormalization, InstanceNormalization, GroupNormalization,
LpNormalization (kernels) and LRN (an index expression).

The first four see the input as ``L`` lines of ``M`` elements that share a mean and a variance. Each
line (a parallel loop over lines) takes three vectorized passes — sum, sum of squared deviations, write
— over data that stays in L1 between them; the write pass applies scale and bias with the channel
loop outside the vector loop, so per-channel parameters are scalars there.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..ops.norm import lrn_window
from . import kir as K
from .kir import Assign, Const, Decl, Expr, For, LoopKind, Stmt, Var, binop
from .rules import LowerCtx, index_rule, kernel_rule
from .schedule import parallel_axis
from .shape_ops import reshape_texpr
from .sort import over_lines
from .tensor import TExpr, broadcast


def _vec_loop(ctx: LowerCtx, var: Var, n: int, body: Stmt, dtype) -> For:
    lanes = ctx.lanes(dtype)
    vec = n >= lanes > 1
    return For(var, Const(0), Const(n), body, LoopKind.VECTOR if vec else LoopKind.SERIAL, 1, lanes if vec else 1)


def line_stats(ctx: LowerCtx, x2: TExpr, line: Expr, m: int, eps: float, center: bool) -> tuple[list[Stmt], Var, Var]:
    """Statements computing ``mean`` (0 when not centering) and ``inv`` = 1/sqrt(var + eps) of a line."""
    cdt = x2.dtype.compute
    j = Var("j")
    xs = K.cast(x2([line, j]), cdt)
    s, mean, q, inv = Var("s", cdt), Var("mean", cdt), Var("q", cdt), Var("inv", cdt)
    stmts: list[Stmt] = []
    if center:
        stmts += [Decl(s, K.const(0, cdt)), _vec_loop(ctx, j, m, Assign(s, K.binop("add", s, xs)), cdt),
                  Decl(mean, K.binop("div", s, K.const(m, cdt)))]  # fmt: skip
        d = K.binop("sub", xs, mean)
    else:
        stmts.append(Decl(mean, K.const(0, cdt)))
        d = xs
    stmts += [
        Decl(q, K.const(0, cdt)),
        _vec_loop(ctx, j, m, Assign(q, K.binop("add", q, K.binop("mul", d, d))), cdt),
        Decl(inv, K.unop("rsqrt", K.binop("add", K.binop("div", q, K.const(m, cdt)), K.const(eps, cdt)))),
    ]
    return stmts, mean, inv


def over_line_index(ctx: LowerCtx, n_lines: int, m: int, body: Callable[[Var], Stmt]) -> Stmt:
    line = Var("line")
    par = parallel_axis([n_lines], 3 * m, ctx.parallel_threshold)
    return For(line, Const(0), Const(n_lines), body(line), LoopKind.PARALLEL if par == 0 else LoopKind.SERIAL)


def _as_lines(x: TExpr, n_lines: int, m: int) -> TExpr:
    return reshape_texpr(x, (n_lines, m))


# -- LayerNormalization / RMSNormalization ---------------------------------------------------------
@kernel_rule("LayerNormalization", "RMSNormalization")
def _layer_norm(ctx: LowerCtx, node, ins, outs):
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 and ins[2] is not None and node.op == "LayerNormalization" else None
    axis = int(node.attrs.get("axis", -1)) % x.rank
    inner = x.shape[axis:]
    n_lines, m = int(np.prod(x.shape[:axis])), int(np.prod(inner))
    eps = float(node.attrs.get("epsilon", 1e-5))
    x2 = _as_lines(x, n_lines, m)
    sc = reshape_texpr(broadcast(scale, inner), (m,))
    bi = reshape_texpr(broadcast(bias, inner), (m,)) if bias is not None else None
    y2 = outs[0].view.reshape((n_lines, m))
    stats = [s.view.reshape((n_lines,)) for s in outs[1:]]
    cdt = x.dtype.compute
    if m == 0 or n_lines == 0:
        return K.Seq(())

    def body(line):
        stmts, mean, inv = line_stats(ctx, x2, line, m, eps, node.op == "LayerNormalization")
        j = Var("j")
        y = K.binop("mul", K.binop("mul", K.binop("sub", K.cast(x2([line, j]), cdt), mean), inv),
                    K.cast(sc([j]), cdt))  # fmt: skip
        if bi is not None:
            y = K.binop("add", y, K.cast(bi([j]), cdt))
        stmts.append(_vec_loop(ctx, j, m, y2.store([line, j], K.cast(y, y2.dtype)), cdt))
        for view, val in zip(stats, (mean, inv)):
            stmts.append(view.store([line], K.cast(val, view.dtype)))
        return K.seq(stmts)

    return over_line_index(ctx, n_lines, m, body)


# -- InstanceNormalization / GroupNormalization ----------------------------------------------------
@kernel_rule("InstanceNormalization", "GroupNormalization")
def _group_norm(ctx: LowerCtx, node, ins, outs):
    x, scale, bias = ins
    n, c = x.shape[:2]
    groups = c if node.op == "InstanceNormalization" else int(node.attrs["num_groups"])
    cg = c // groups
    spatial = int(np.prod(x.shape[2:]))
    n_lines, m = n * groups, cg * spatial
    eps = float(node.attrs.get("epsilon", 1e-5))
    x2 = _as_lines(x, n_lines, m)
    y2 = outs[0].view.reshape((n_lines, m))
    cdt = x.dtype.compute
    if m == 0 or n_lines == 0:
        return K.Seq(())

    def body(line):
        stmts, mean, inv = line_stats(ctx, x2, line, m, eps, True)
        cc, sp = Var("cc"), Var("sp")
        ch = binop("add", binop("mul", binop("mod", line, groups), cg), cc) if groups > 1 else cc
        a, b = Var("a", cdt), Var("b", cdt)
        j = binop("add", binop("mul", cc, spatial), sp)
        y = K.Fma(K.binop("sub", K.cast(x2([line, j]), cdt), mean), a, b)
        write = K.seq(Decl(a, K.binop("mul", inv, K.cast(scale([ch]), cdt))), Decl(b, K.cast(bias([ch]), cdt)),
                      _vec_loop(ctx, sp, spatial, y2.store([line, j], K.cast(y, y2.dtype)), cdt))  # fmt: skip
        stmts.append(For(cc, Const(0), Const(cg), write))
        return K.seq(stmts)

    return over_line_index(ctx, n_lines, m, body)


# -- LpNormalization -------------------------------------------------------------------------------
@kernel_rule("LpNormalization")
def _lp_norm(ctx: LowerCtx, node, ins, outs):
    x = ins[0]
    axis = int(node.attrs.get("axis", -1)) % x.rank
    p = int(node.attrs.get("p", 2))
    view = outs[0].view
    cdt = x.dtype.compute
    n = x.shape[axis]
    if int(np.prod(x.shape)) == 0:
        return K.Seq(())

    def body(at):
        j, s = Var("j"), Var("s", cdt)
        v = K.cast(x(at(j)), cdt)
        term = K.unop("abs", v) if p == 1 else K.binop("mul", v, v)
        norm = s if p == 1 else K.unop("sqrt", s)
        zero = K.const(0, cdt)
        y = K.select(K.cmp("eq", norm, zero), zero, K.binop("div", v, norm))
        return K.seq(Decl(s, zero), For(j, Const(0), Const(n), Assign(s, K.binop("add", s, term))),
                     For(j, Const(0), Const(n), view.store(at(j), K.cast(y, view.dtype))))  # fmt: skip

    return over_lines(ctx, x.shape, axis, body, 2 * n)


# -- LRN -------------------------------------------------------------------------------------------
@index_rule("LRN")
def _lrn(ctx: LowerCtx, node, ins):
    x = ins[0]
    size = int(node.attrs["size"])
    alpha, beta, bias = (float(node.attrs.get(k, d)) for k, d in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    c = x.shape[1]
    before, after = (min(w, c - 1) for w in lrn_window(size))  # taps c or more channels away read nothing
    cdt = x.dtype.compute

    def fn(idx):
        sq = K.const(0, cdt)
        for k in range(-before, after + 1):
            ch = binop("add", idx[1], k)
            v = K.cast(x([idx[0], K.maximum(Const(0), K.minimum(ch, Const(c - 1))), *idx[2:]]), cdt)
            ok = K.binop("and", K.cmp("ge", ch, Const(0)), K.cmp("lt", ch, Const(c)))
            sq = K.binop("add", sq, K.select(ok, K.binop("mul", v, v), K.const(0, cdt)))
        d = K.binop("add", K.const(bias, cdt), K.binop("mul", K.const(alpha / size, cdt), sq))
        scale = K.unop("exp", K.binop("mul", K.const(-beta, cdt), K.unop("log", d)))  # d ** -beta
        return K.cast(K.binop("mul", K.cast(x(idx), cdt), scale), x.dtype)

    return [TExpr.compute(x.shape, x.dtype, fn)]
