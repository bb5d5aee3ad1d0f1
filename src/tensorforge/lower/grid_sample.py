"""Lowering of GridSample: ``ops/grid_sample.sample`` run over kernel-IR expressions (an index expression,
fusable like any gather): per output element the grid coordinates are loaded, mapped and padded, and the
taps of every spatial dim combined."""

from __future__ import annotations

from ..ops.grid_sample import sample
from . import kir as K
from .kir import Const
from .rules import LowerCtx, index_rule
from .tensor import TExpr


class _KirMath:
    def __init__(self, dtype):
        self.dt = dtype

    def c(self, v):
        return K.const(v, self.dt)

    def add(self, a, b):
        return K.binop("add", a, b)

    def sub(self, a, b):
        return K.binop("sub", a, b)

    def mul(self, a, b):
        return K.binop("mul", a, b)

    def div(self, a, b):
        return K.binop("div", a, b)

    def lt(self, a, b):
        return K.cmp("lt", a, b)

    def gt(self, a, b):
        return K.cmp("gt", a, b)

    def le(self, a, b):
        return K.cmp("le", a, b)

    def ge(self, a, b):
        return K.cmp("ge", a, b)

    def eq(self, a, b):
        return K.cmp("eq", a, b)

    def select(self, c, a, b):
        return K.select(c, a, b)

    def floor(self, x):
        return K.unop("floor", x)

    def trunc(self, x):
        return K.unop("trunc", x)

    def rint(self, x):
        return K.unop("round", x)

    def logical_and(self, a, b):
        return K.binop("and", a, b)

    def logical_or(self, a, b):
        return K.binop("or", a, b)

    def clamp(self, x, lo, hi):
        return K.binop("max", K.binop("min", x, self.c(hi)), self.c(lo))


@index_rule("GridSample")
def _grid_sample(ctx: LowerCtx, node, ins):
    x, grid = ins
    out = node.outputs[0]
    sizes = x.shape[2:]
    sp = len(sizes)
    cdt = x.dtype.compute
    m = _KirMath(cdt)

    def fn(idx):
        n, c, opos = idx[0], idx[1], list(idx[2:])

        def coord(d):  # the grid's last axis lists (x, y, z, ...): the reverse of the spatial dims
            return K.cast(grid([n, *opos, Const(sp - 1 - d)]), cdt)

        def load(pos):
            return K.cast(x([n, c, *(K.cast(p, K.I64) for p in pos)]), cdt)

        return K.cast(sample(m, load, coord, sizes, node.attrs), out.dtype)

    return [TExpr.compute(out.shape, out.dtype, fn)]
