"""Lowering of data-movement ops: views when the input is materialized, index expressions otherwise."""

from __future__ import annotations

from collections.abc import Sequence

from ..ops.registry import InferCtx
from ..ops.shape import slice_params, transpose_perm
from . import kir as K
from .kir import Const, Expr, binop
from .rules import LowerCtx, Sink, index_rule, kernel_rule, view_rule
from .schedule import pointwise_nest
from .tensor import TExpr, View, contiguous_strides


def flat_index(idx: Sequence[Expr], shape: Sequence[int]) -> Expr:
    e: Expr = Const(0)
    for i, st, d in zip(idx, contiguous_strides(shape), shape):
        if d != 1:
            e = binop("add", e, binop("mul", i, st))
    return e


def unflatten(flat: Expr, shape: Sequence[int]) -> list[Expr]:
    out = []
    for st, d in zip(contiguous_strides(shape), shape):
        if d == 1:
            out.append(Const(0))
        else:
            q = binop("floordiv", flat, st) if st != 1 else flat
            out.append(binop("mod", q, d) if st * d != _numel(shape) else q)
    return out


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def reshape_groups(src: Sequence[int], dst: Sequence[int]) -> list[tuple[tuple[int, int], tuple[int, int]]] | None:
    """Split a reshape into runs of consecutive dims with equal products, ``((s0, s1), (d0, d1))``: each
    run of source dims is split or merged into its run of output dims independently (None: a zero dim)."""
    if 0 in src or 0 in dst:
        return None
    groups = []
    i = j = 0
    while i < len(src) or j < len(dst):
        si, dj, ps, pd = i, j, 1, 1
        if i < len(src):
            ps, i = src[i], i + 1
        if j < len(dst):
            pd, j = dst[j], j + 1
        while ps != pd:
            if ps < pd and i < len(src):
                ps, i = ps * src[i], i + 1
            elif pd < ps and j < len(dst):
                pd, j = pd * dst[j], j + 1
            else:
                return None
        groups.append(((si, i), (dj, j)))
    return groups


def reshape_texpr(t: TExpr, shape: Sequence[int]) -> TExpr:
    """``t`` seen with another shape: a view where the view allows it, else an expression whose source
    indices are computed per group of dims (``reshape_groups``), so that dims the reshape leaves alone
    (e.g. H and W in a channel shuffle) keep plain, vectorizable indices instead of div/mod of a flat
    index over the whole tensor."""
    shape = tuple(shape)
    if t.view is not None:
        v = t.view.reshape(shape)
        if v is not None:
            return TExpr.from_view(v)
    src = tuple(t.shape)
    groups = reshape_groups(src, shape)
    if groups is None:
        return TExpr.compute(shape, t.dtype, lambda idx: t.fn(unflatten(flat_index(idx, shape), src)))

    def fn(idx):
        out: list[Expr] = []
        for (s0, s1), (d0, d1) in groups:
            out.extend(unflatten(flat_index(idx[d0:d1], shape[d0:d1]), src[s0:s1]))
        return t.fn(out)

    return TExpr.compute(shape, t.dtype, fn)


# -- reshape family: same data, new shape ----------------------------------------------------------
@view_rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape_view(ctx: LowerCtx, node, ins):
    x = ins[0]
    if x.view is None:
        return None
    v = x.view.reshape(node.outputs[0].shape)
    return None if v is None else [v]


@index_rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape_index(ctx: LowerCtx, node, ins):
    return [reshape_texpr(ins[0], node.outputs[0].shape)]


@view_rule("Identity")
def _identity_view(ctx, node, ins):
    return [ins[0].view] if ins[0].view is not None else None


@index_rule("Identity")
def _identity_index(ctx, node, ins):
    return [ins[0]]


# -- transpose --------------------------------------------------------------------------------------
def _perm(node, rank):
    return transpose_perm(InferCtx(node), rank)


@view_rule("Transpose")
def _transpose_view(ctx: LowerCtx, node, ins):
    x = ins[0]
    if x.view is None:
        return None
    return [x.view.transpose(_perm(node, x.rank))]


@index_rule("Transpose")
def _transpose_index(ctx: LowerCtx, node, ins):
    x = ins[0]
    perm = _perm(node, x.rank)
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    out = node.outputs[0]
    return [TExpr.compute(out.shape, x.dtype, lambda idx: x.fn([idx[inv[d]] for d in range(len(perm))]))]


# -- slice / expand ---------------------------------------------------------------------------------
@view_rule("Slice")
def _slice_view(ctx: LowerCtx, node, ins):
    x = ins[0]
    if x.view is None:
        return None
    return [x.view.slice(slice_params(InferCtx(node), x.shape))]


@index_rule("Slice")
def _slice_index(ctx: LowerCtx, node, ins):
    x = ins[0]
    params = slice_params(InferCtx(node), x.shape)
    out = node.outputs[0]

    def fn(idx):
        return x.fn([binop("add", p[0], binop("mul", i, p[2])) if (p[0], p[2]) != (0, 1) else i
                     for i, p in zip(idx, params)])  # fmt: skip

    return [TExpr.compute(out.shape, x.dtype, fn)]


@view_rule("Expand")
def _expand_view(ctx: LowerCtx, node, ins):
    x = ins[0]
    if x.view is None:
        return None
    return [x.view.broadcast_to(node.outputs[0].shape)]


@index_rule("Expand")
def _expand_index(ctx: LowerCtx, node, ins):
    from .tensor import broadcast

    return [broadcast(ins[0], node.outputs[0].shape)]


# -- concat: one copy loop per input into its slice of the output ---------------------------------
@kernel_rule("Concat", epilogue=True, prologue=True, epilogue_reads_tensors=True)
def _concat(ctx: LowerCtx, node, ins: list[TExpr], outs: list[Sink]):
    sink = outs[0]
    rank = len(sink.shape)
    axis = int(node.attrs["axis"]) % rank
    stmts = []
    off = 0
    for t in ins:
        if t.shape[axis] == 0:
            continue

        def body(idx, t=t, off=off):
            oidx = list(idx)
            oidx[axis] = binop("add", idx[axis], off)
            return sink.store(oidx, t(idx))

        stmts.append(pointwise_nest(t.shape, body, ctx.lanes(t.dtype), ctx.parallel_threshold))
        off += t.shape[axis]
    return K.seq(stmts)


__all__ = ["View", "flat_index", "reshape_texpr", "unflatten"]
