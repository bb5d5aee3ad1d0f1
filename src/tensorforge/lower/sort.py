"""Lowering of TopK, ArgMax/ArgMin, Hardmax and CumSum/CumProd: one scan per line along the axis, lines
spread over threads.

TopK keeps the best k seen so far in the output row itself, sorted: a new element that beats the last
kept one is inserted by shifting worse elements down (insertion sort bounded by k). That is O(n) per row
when few elements enter, O(n*k) at worst — right for the small k of classification heads, beam search and
NMS pre-filtering; a full sort (k = n) of a long row would want a merge sort instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..ir.dtype import DType
from ..ops.sort import scalar_int
from . import kir as K
from .kir import Assign, Const, Decl, Expr, For, If, LoopKind, Stmt, Var, binop
from .rules import LowerCtx, kernel_rule
from .schedule import loop_vars, parallel_axis


def over_lines(ctx: LowerCtx, shape: Sequence[int], axis: int, body: Callable[[Callable[[Expr], list[Expr]]], Stmt],
               work_per_line: int) -> Stmt:  # fmt: skip
    """``for every index of the dims other than axis: body(at)`` where ``at(j)`` is the full index of
    element j of that line. The outermost worthwhile loop is parallel."""
    outer = [d for i, d in enumerate(shape) if i != axis]
    ov = loop_vars(len(outer))

    def at(j: Expr) -> list[Expr]:
        idx = list(ov)
        idx.insert(axis, j)
        return idx

    stmt = body(at)
    par = parallel_axis(outer, work_per_line, ctx.parallel_threshold)
    for d in reversed(range(len(outer))):
        stmt = For(ov[d], Const(0), Const(outer[d]), stmt, LoopKind.PARALLEL if d == par else LoopKind.SERIAL)
    return stmt


def _better(largest: bool, a: Expr, b: Expr, or_equal: bool = False) -> Expr:
    op = ("ge" if or_equal else "gt") if largest else ("le" if or_equal else "lt")
    return K.cmp(op, a, b)


@kernel_rule("TopK")
def _topk(ctx: LowerCtx, node, ins, outs):
    x = ins[0]
    k = scalar_int(ins[1].const)
    axis = int(node.attrs.get("axis", -1)) % x.rank
    largest = bool(node.attrs.get("largest", 1))
    vals, inds = outs[0].view, outs[1].view
    n = x.shape[axis]
    if k == 0:
        return K.Seq(())

    def body(at):
        cnt, j, q = Var("cnt"), Var("j"), Var("q")
        v = Var("v", x.dtype)
        pos, top, moving = Var("pos"), Var("top"), Var("moving", DType.BOOL)
        i = binop("sub", top, q)  # from the insertion point towards the front
        prev = K.cast(vals.load(at(binop("sub", i, 1))), x.dtype)
        shift = If(
            K.binop("and", moving, _better(largest, v, prev)),
            K.seq(
                vals.store(at(i), vals.load(at(binop("sub", i, 1)))),
                inds.store(at(i), inds.load(at(binop("sub", i, 1)))),
                Assign(pos, binop("sub", i, 1)),
            ),  # fmt: skip
            Assign(moving, Const(False, DType.BOOL)),
        )
        last = K.cast(vals.load(at(Const(k - 1))), x.dtype)
        enter = K.binop("or", K.cmp("lt", cnt, Const(k)), _better(largest, v, last))
        insert = K.seq(
            Decl(pos, K.minimum(cnt, Const(k - 1))),
            Decl(top, pos),
            Decl(moving, Const(True, DType.BOOL)),
            For(q, Const(0), top, shift),
            vals.store(at(pos), K.cast(v, vals.dtype)),
            inds.store(at(pos), j),
            Assign(cnt, binop("add", cnt, 1)),
        )
        scan = For(j, Const(0), Const(n), K.seq(Decl(v, x(at(j))), If(enter, insert)))
        return K.seq(Decl(cnt, Const(0)), scan)

    return over_lines(ctx, x.shape, axis, body, n * 4)


def _argbest(x, at, n: int, largest: bool, last: bool) -> tuple[list[Stmt], Var]:
    """Statements that leave in ``bi`` the index of the first (or last) extreme of a line."""
    best, bi, j = Var("best", x.dtype), Var("bi"), Var("j")
    v = x(at(j))
    upd = If(_better(largest, v, best, or_equal=last), K.seq(Assign(best, v), Assign(bi, j)))
    return [Decl(best, x(at(Const(0)))), Decl(bi, Const(0)), For(j, Const(1), Const(n), upd)], bi


@kernel_rule("ArgMax", "ArgMin")
def _argmax(ctx: LowerCtx, node, ins, outs):
    x = ins[0]
    axis = int(node.attrs.get("axis", 0)) % x.rank
    keep = bool(node.attrs.get("keepdims", 1))
    sink = outs[0]
    n = x.shape[axis]

    def body(at):
        stmts, bi = _argbest(x, at, n, node.op == "ArgMax", bool(node.attrs.get("select_last_index", 0)))
        idx = at(Const(0))
        if not keep:
            idx.pop(axis)
        return K.seq(*stmts, sink.store(idx, bi))

    if n == 0:
        return K.Seq(())
    return over_lines(ctx, x.shape, axis, body, n)


@kernel_rule("Hardmax")
def _hardmax(ctx: LowerCtx, node, ins, outs):
    x = ins[0]
    axis = int(node.attrs.get("axis", -1)) % x.rank
    sink = outs[0]
    n = x.shape[axis]

    def body(at):
        stmts, bi = _argbest(x, at, n, True, False)
        j = Var("w")
        one, zero = K.const(1, x.dtype), K.const(0, x.dtype)
        write = For(j, Const(0), Const(n), sink.store(at(j), K.select(K.cmp("eq", j, bi), one, zero)))
        return K.seq(*stmts, write)

    if n == 0 or int(np.prod(x.shape)) == 0:
        return K.Seq(())
    return over_lines(ctx, x.shape, axis, body, 2 * n)


@kernel_rule("CumSum", "CumProd")
def _cumulative(ctx: LowerCtx, node, ins, outs):
    x = ins[0]
    axis = scalar_int(ins[1].const) % x.rank
    sink = outs[0]
    n = x.shape[axis]
    combine = "add" if node.op == "CumSum" else "mul"
    exclusive, reverse = bool(node.attrs.get("exclusive", 0)), bool(node.attrs.get("reverse", 0))
    dt = x.dtype.compute

    def body(at):
        acc, j = Var("acc", dt), Var("j")
        pos = binop("sub", Const(n - 1), j) if reverse else j
        v = K.cast(x(at(pos)), dt)
        step = Assign(acc, K.binop(combine, acc, v))
        store = sink.store(at(pos), acc)
        inner = K.seq(store, step) if exclusive else K.seq(step, store)
        return K.seq(Decl(acc, K.const(0 if combine == "add" else 1, dt)), For(j, Const(0), Const(n), inner))

    if int(np.prod(x.shape)) == 0:
        return K.Seq(())
    return over_lines(ctx, x.shape, axis, body, n)
