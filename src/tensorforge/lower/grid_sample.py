"""Lowering of GridSample: ``ops/grid_sample.sample`` run over kernel-IR expressions (an index expression,
fusable like any gather): per output element the grid coordinates are loaded, mapped and padded, and the
taps of every spatial dim combined."""

from __future__ import annotations

from ..ops.grid_sample import sample
from . import kir as K
from .elementwise import KirHandler
from .kir import Const
from .rules import LowerCtx, index_rule
from .tensor import TExpr


class _KirMath(KirHandler):
    """The ``m`` vocabulary of ``ops/grid_sample.sample`` on kernel-IR expressions: the elementwise
    handler's arithmetic and comparisons, plus constants of the compute dtype, rint and clamp."""

    def __init__(self, dtype):
        self.dt = dtype

    def c(self, v):
        return K.const(v, self.dt)

    def rint(self, x):
        return K.unop("round", x)

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
