"""Lowering of fused groups (``Fused`` nodes made by ``passes/fuse.py``), one kernel per group.

* ``loop``: every member is an index rule composed into the next (no intermediate is stored); the
  group's outputs are written by one loop nest.
* ``kernel``: members before the kernel op are composed into its input expressions (the op reads them
  as it goes); members after it become the ``Sink`` epilogue, applied to each final value right before
  it is stored (bias, activation, residual add, scaling inside the GEMM/conv tile loop).
* ``rows``: reductions over trailing axes with elementwise ops around them. For each row (a parallel
  loop over the leading axes), every reduction is a vectorized pass over the row into a local
  accumulator, values of reduced shape are computed once into locals, and a last pass writes the
  outputs; the row (a few KB) stays in L1 across the passes, so layer norm or a decomposed softmax
  reads its input from memory once.

What the fusion pass may put in a ``kernel`` group is declared with each kernel rule (the ``epilogue``,
``prologue`` and ``epilogue_reads_tensors`` flags of ``rules.kernel_rule``, read through
``rules.kernel_caps``); ``row_reduce_axes`` says which reductions a ``rows`` group can hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CompileError, TensorforgeError, node_context
from ..ir.graph import Node
from ..ops.reduce import REDUCERS, reduce_axes
from ..ops.registry import InferCtx, get_op
from . import kir as K
from . import rules as R
from .elementwise import KIR
from .kir import Assign, Const, Decl, Expr, For, LoopKind, Stmt, Var
from .schedule import pointwise_nest
from .shape_ops import unflatten
from .tensor import TExpr
from .vectorize import identity

if TYPE_CHECKING:
    from .program import ProgramBuilder

_REDUCE_OPS = frozenset(REDUCERS)


def row_reduce_axes(n: Node) -> tuple[int, ...] | None:
    """The reduced axes of a reduction the ``rows`` kernel handles (keepdims, trailing axes), else None."""
    if n.op not in _REDUCE_OPS or not n.attrs.get("keepdims", 1):
        return None
    x = n.inputs[0]
    if not x.type.is_static or x.type.rank == 0:
        return None
    axes_in = n.input(1)
    if axes_in is not None and not axes_in.is_const:
        return None
    axes_val = axes_in.const if axes_in is not None else n.attrs.get("axes")
    try:
        axes = reduce_axes(InferCtx(n), x.type.rank, axes_val, bool(n.attrs.get("noop_with_empty_axes", 0)))
    except Exception:
        return None
    rank = x.type.rank
    if not axes or tuple(axes) != tuple(range(rank - len(axes), rank)) or len(axes) == rank:
        return None
    return tuple(axes)


def _label(n: Node) -> str:
    return f"{n.name or n.outputs[0].name} ({n.op})"


def _flops(nodes: Sequence[Node]) -> int:
    total = 0
    for n in nodes:
        fn = get_op(n.op).flops
        if fn is not None:
            total += fn(n)
    return total


def lower_fused(b: ProgramBuilder, node: Node) -> None:
    kind = node.attrs["kind"]
    body: Sequence[Node] = node.attrs["body"]
    try:
        if kind == "loop":
            _loop(b, node, body)
        elif kind == "kernel":
            _kernel(b, node, body)
        else:
            _rows(b, node, body)
    except TensorforgeError:
        raise
    except Exception as e:
        raise CompileError(f"{node_context(b.g.name, node.name, 'Fused')}: lowering the fused {kind} group failed: "
                           f"{type(e).__name__}: {e}") from e  # fmt: skip


def _inline(b: ProgramBuilder, n: Node, memo: dict) -> list[TExpr]:
    """A member's outputs as expressions (a view when the op is a view of a stored tensor); computed ones
    through ``memo`` (see ``_shared``)."""
    ctx = R.LowerCtx(b.target, b.g.name, n, b, b.options)
    ins = [None if v is None else b.lookup(v) for v in n.inputs]
    if n.op in R.VIEW_RULES:
        views = R.VIEW_RULES[n.op](ctx, n, ins)
        if views is not None:
            outs = [TExpr.from_view(v) for v in views]
            for v, t in zip(n.outputs, outs):
                b.env[v.id] = t
            return outs
    if n.op not in R.INDEX_RULES:
        raise CompileError(f"{node_context(b.g.name, n.name, n.op)}: op {n.op} cannot be fused into a loop")
    outs = [_shared(t, memo) for t in R.INDEX_RULES[n.op](ctx, n, ins)]
    for v, t in zip(n.outputs, outs):
        b.env[v.id] = t
    return outs


def _shared(t: TExpr, memo: dict) -> TExpr:
    """``t`` building its element at an index once: a member read by two others (SiLU's x, read by Sigmoid
    and by Mul) gives both one expression, not a copy each, so a chain of such members is a DAG of linear
    size instead of a tree that doubles at each member. ``memo`` is per group (cleared where the same index
    may stand for another element, as in an epilogue); an index is known by its expressions' identities
    (and constants by value), kept alive in the entry."""
    if t.view is not None or t.const is not None:
        return t

    def fn(idx: Sequence[Expr]) -> Expr:
        key = (id(t), *(("c", i.value, i.dtype) if isinstance(i, Const) else id(i) for i in idx))
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = (idx, t.fn(idx))
        return hit[1]

    return TExpr.compute(t.shape, t.dtype, fn)


# -- loop groups -----------------------------------------------------------------------------------
def _loop(b: ProgramBuilder, node: Node, body: Sequence[Node]) -> None:
    memo: dict = {}
    for n in body:
        _inline(b, n, memo)
    labels = [_label(n) for n in body]
    outs = list(node.outputs)
    shape = tuple(outs[0].shape)
    texprs = [b.lookup(v) for v in outs]
    views = [b.output_view(v) for v in outs]

    def stores(idx):
        if len(views) == 1:
            return views[0].store(idx, K.cast(texprs[0](idx), views[0].dtype))
        # every value first, then the stores: an output may overwrite an input in place (state updates)
        local = [Var(v.name, view.dtype) for v, view in zip(outs, views)]
        decls = [Decl(x, K.cast(t(idx), x.dtype)) for x, t in zip(local, texprs)]
        return K.seq(*decls, *(view.store(idx, x) for view, x in zip(views, local)))

    stmt = pointwise_nest(shape, stores, b.target.lanes(texprs[0].dtype), b.threshold)
    b.single_store.add(id(b.add_kernel(labels, "fused", stmt, _flops(body), node.name)))
    for v, view in zip(outs, views):
        b.env[v.id] = TExpr.from_view(view)


# -- kernel op with prologue and epilogue ----------------------------------------------------------
def _kernel(b: ProgramBuilder, node: Node, body: Sequence[Node]) -> None:
    anchors = [i for i, n in enumerate(body) if n.op in R.KERNEL_RULES]
    if len(anchors) != 1:
        raise CompileError(f"{node_context(b.g.name, node.name, 'Fused')}: a kernel group needs exactly one kernel "
                           f"op, got {[body[i].op for i in anchors]}")  # fmt: skip
    at = anchors[0]
    anchor = body[at]
    prologue: dict = {}
    for n in body[:at]:  # prologue: composed into the kernel's input expressions
        _inline(b, n, prologue)
    ctx = R.LowerCtx(b.target, b.g.name, anchor, b, b.options)
    ins = [None if v is None else b.lookup(v) for v in anchor.inputs]
    (out,) = node.outputs
    raw = anchor.outputs[0]
    epilogue = None
    calls = [0]
    if at + 1 < len(body):
        current: list[Expr | None] = [None]
        b.env[raw.id] = TExpr.compute(raw.shape, raw.dtype, lambda idx: current[0])
        memo: dict = {}
        for n in body[at + 1 :]:
            _inline(b, n, memo)
        final = b.lookup(out)

        def epilogue(idx: Sequence[Expr], v: Expr) -> Expr:
            calls[0] += 1
            current[0] = K.cast(v, raw.dtype)  # a float16 GEMM accumulates in float32: round like a store
            memo.clear()  # the same index expressions may come with another value
            return final(idx)

    view = b.output_view(out)
    stmt = R.kernel_fn(anchor.op, b.target)(ctx, anchor, ins, [R.Sink(view, raw.dtype, epilogue)])
    if epilogue is not None and calls[0] == 0:
        raise CompileError(f"{node_context(b.g.name, anchor.name, anchor.op)}: the {anchor.op} kernel rule does not "
                           "write through its Sink, so it cannot take a fused epilogue")  # fmt: skip
    k = b.add_kernel([_label(n) for n in body], anchor.op, stmt, _flops(body), node.name)
    if ctx.stores_once:  # the kernel rule guarantees each output element is stored exactly once
        b.single_store.add(id(k))
    b.env[out.id] = TExpr.from_view(view)


# -- row reductions --------------------------------------------------------------------------------
def _row_loop(r: Var, row_len: int, body: Stmt, lanes: int) -> Stmt:
    """One loop over a whole (flattened) row, vectorized: a contiguous row is read with unit stride."""
    vec = row_len >= lanes > 1
    return For(r, Const(0), Const(row_len), body, LoopKind.VECTOR if vec else LoopKind.SERIAL, 1, lanes if vec else 1)


def _rows(b: ProgramBuilder, node: Node, body: Sequence[Node]) -> None:
    reds = [n for n in body if n.op in _REDUCE_OPS]
    axes = row_reduce_axes(reds[0])
    full = tuple(reds[0].inputs[0].shape)
    k = len(axes)
    outer, row_shape = full[:-k], full[-k:]
    reduced = (*outer, *([1] * k))
    n_rows = int(np.prod(outer))
    row_len = int(np.prod(row_shape))
    row = Var("row")
    o_idx = unflatten(row, outer)
    r = Var("r")
    at_row = [*o_idx, *unflatten(r, row_shape)]  # index of the element being visited
    at_red = [*o_idx, *([Const(0)] * k)]  # index of this row's reduced value
    stmts: list[Stmt] = []
    passes = 1
    memo: dict = {}
    for n in body:
        out = n.outputs[0]
        if n.op in _REDUCE_OPS:
            red = REDUCERS[n.op]
            x = b.lookup(n.inputs[0])
            dt = x.dtype
            acc = Var("acc", dt)
            v = x(at_row)
            if red.pre is not None:
                v = red.pre(KIR, v)
            lanes = b.target.lanes(dt)
            stmts += [Decl(acc, identity(red.combine, dt)),
                      _row_loop(r, row_len, Assign(acc, K.binop(red.combine, acc, v)), lanes)]  # fmt: skip
            res = red.post(KIR, acc, row_len) if red.post is not None else acc
            passes += 1
        else:
            (t,) = _inline(b, n, memo)
            if tuple(out.shape) != reduced:
                continue
            res = t(at_red)  # a per-row value: computed once, kept in a local
        local = Var(out.name, out.dtype)
        stmts.append(Decl(local, K.cast(res, out.dtype)))
        b.env[out.id] = TExpr.compute(out.shape, out.dtype, lambda idx, local=local: local)
    per_row, whole = [], []
    for v in node.outputs:
        view = b.output_view(v)
        (per_row if tuple(v.shape) == reduced else whole).append((v, view))
    for v, view in per_row:
        stmts.append(view.store(at_red, b.lookup(v)(at_red)))
    if whole:
        ts = [(view, b.lookup(v)) for v, view in whole]
        store = K.seq(view.store(at_row, K.cast(t(at_row), view.dtype)) for view, t in ts)
        stmts.append(_row_loop(r, row_len, store, b.target.lanes(ts[0][1].dtype)))
    for v, view in per_row + whole:
        b.env[v.id] = TExpr.from_view(view)
    par = n_rows >= 2 and n_rows * row_len * passes >= b.threshold
    stmt = For(row, Const(0), Const(n_rows), K.seq(stmts), LoopKind.PARALLEL if par else LoopKind.SERIAL)
    b.add_kernel([_label(n) for n in body], "rows", stmt, _flops(body), node.name)


__all__ = ["lower_fused", "row_reduce_axes"]
