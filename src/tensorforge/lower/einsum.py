"""Lowering of Einsum.

Two operands whose labels split into batch (both operands and the output), rows (first operand and
output), columns (second operand and output) and contracted (both operands only) are a batched GEMM:
the operands are read through index expressions as [batch, rows, K] and [batch, K, columns] and the
output is written through a (possibly transposed) view, so ``lower_matmul``'s packed micro-kernel does
the work. Every other contraction — traces, diagonals, plain sums, outer products, three operands — is
a reduction nest: for each output element, the sum over the reduced labels of the operands' product.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..ops.einsum import Contraction, parse_einsum
from . import kir as K
from .kir import Const, Expr
from .reduce import reduce_nest
from .rules import LowerCtx, Sink, kernel_rule
from .shape_ops import unflatten
from .tensor import TExpr


def _operand_index(labels: Sequence[str], shape: Sequence[int], at: dict) -> list[Expr]:
    """Index of an operand element given label -> index expression (broadcast dims read index 0)."""
    return [Const(0) if d == 1 else at[c] for c, d in zip(labels, shape)]


def _matmul_split(c: Contraction):
    if len(c.inputs) != 2:
        return None
    a, b = c.inputs
    if len(set(a)) != len(a) or len(set(b)) != len(b):
        return None  # a diagonal
    batch = [x for x in c.output if x in a and x in b]
    rows = [x for x in c.output if x in a and x not in b]
    cols = [x for x in c.output if x in b and x not in a]
    red = [x for x in a if x in b and x not in c.output]
    if not red or any(x not in c.output and x not in red for x in (*a, *b)):
        return None
    return batch, rows, cols, red


def _group(c: Contraction, labels) -> tuple[int, ...]:
    return tuple(c.sizes[x] for x in labels)


def _lower_as_gemm(ctx: LowerCtx, c: Contraction, ins: list[TExpr], sink: Sink, split) -> K.Stmt | None:
    from .gemm import lower_matmul

    batch, rows, cols, red = split
    bs, ms, ns, ks = (_group(c, g) for g in split)
    B, M, N, Kd = (int(np.prod(s)) if s else 1 for s in (bs, ms, ns, ks))

    def operand(t: TExpr, labels, first, second) -> TExpr:
        fs, ss = _group(c, first), _group(c, second)

        def fn(idx):
            at = dict(zip(batch, unflatten(idx[0], bs)))
            at.update(zip(first, unflatten(idx[1], fs)))
            at.update(zip(second, unflatten(idx[2], ss)))
            return t(_operand_index(labels, t.shape, at))

        return TExpr.compute((B, int(np.prod(fs)) if fs else 1, int(np.prod(ss)) if ss else 1), t.dtype, fn)

    a = operand(ins[0], c.inputs[0], rows, red)
    b = operand(ins[1], c.inputs[1], red, cols)
    # the output viewed as [batch..., rows..., cols...], then flattened to [B, M, N]
    order = [*batch, *rows, *cols]
    perm = [c.output.index(x) for x in order]
    out = sink.view.transpose(perm) if c.output else sink.view
    flat = out.reshape((B, M, N))
    if flat is None:  # the output is a transpose of [batch, rows, cols]: take the reduction path
        return None
    return lower_matmul(ctx, a, b, Sink(flat, sink.dtype))


def _lower_as_reduction(ctx: LowerCtx, c: Contraction, ins: list[TExpr], sink: Sink) -> K.Stmt:
    red = c.reduced
    out_shape = [c.sizes[x] for x in c.output]
    red_shape = [c.sizes[x] for x in red]
    cdt = sink.dtype.compute

    def value(o, r):
        at = dict(zip(c.output, o))
        at.update(zip(red, r))
        v = None
        for t, labels in zip(ins, c.inputs):
            x = K.cast(t(_operand_index(labels, t.shape, at)), cdt)
            v = x if v is None else K.binop("mul", v, x)
        return v

    def finish(o, acc):
        return sink.view.store(list(o), K.cast(acc, sink.view.dtype))

    return reduce_nest(ctx, out_shape, red_shape, value, "add", cdt, finish, "out" if c.output else "red")


@kernel_rule("Einsum")
def _einsum(ctx: LowerCtx, node, ins, outs):
    c = parse_einsum(node.attrs["equation"], [t.shape for t in ins])
    sink = outs[0]
    if int(np.prod(sink.shape)) == 0:
        return K.Seq(())
    split = _matmul_split(c)
    if split is not None and sink.dtype.is_float:
        stmt = _lower_as_gemm(ctx, c, ins, sink, split)
        if stmt is not None:
            return stmt
    return _lower_as_reduction(ctx, c, ins, sink)

