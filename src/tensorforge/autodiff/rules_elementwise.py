"""One gradient rule for every elementwise op: ``ElementwiseGrad``, derived from the op's body.

The cotangent of input ``i`` is ``ElementwiseGrad(ct, *inputs) {op, wrt=i}`` summed back to the input's
shape when it was broadcast. Inputs whose derivative is identically zero (Floor, Sign, the comparisons'
operands, ...) get no gradient node at all: this is found by running the body once on dual numbers.
"""

from __future__ import annotations

import functools

import numpy as np

from ..ir.graph import Node, Value
from ..ops.dual import Dual, DualHandler
from ..ops.elementwise import BODIES
from ..ops.handler import NUMPY
from ..ops.update import UPDATE_OPS
from .builder import GraphBuilder
from .core import VJP_RULES

# backward and update ops are not differentiated again
NOT_DIFFERENTIATED = {"ElementwiseGrad", *UPDATE_OPS}


@functools.cache
def _zero_derivative(op: str, attrs_key: tuple, dtypes: tuple, wrt: int) -> bool:
    e = BODIES[op]
    attrs = {**e.attrs, **dict(attrs_key)}
    args = [None if dt is None else Dual(np.full((), 0.5, dt.np), np.ones((), dt.np) if i == wrt else None)
            for i, dt in enumerate(dtypes)]  # fmt: skip
    while args and args[-1] is None:
        args.pop()
    with np.errstate(all="ignore"):
        return e.body(DualHandler(NUMPY), attrs, *args).t is None


def _attrs_key(node: Node) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in node.attrs.items()))


def elementwise_vjp(b: GraphBuilder, node: Node, cts: list[Value | None], needs: list[bool]) -> list[Value | None]:
    ct = cts[0]
    dtypes = tuple(None if v is None else v.dtype for v in node.inputs)
    out: list[Value | None] = []
    for i, (x, need) in enumerate(zip(node.inputs, needs)):
        if not need or _zero_derivative(node.op, _attrs_key(node), dtypes, i):
            out.append(None)
            continue
        d = b.op("ElementwiseGrad", [ct, *node.inputs], out=f"d_{x.name}", **{**node.attrs, "op": node.op, "wrt": i})
        out.append(b.sum_to(d, x.shape))
    return out


for _name in BODIES:
    if _name not in NOT_DIFFERENTIATED:
        VJP_RULES[_name] = elementwise_vjp
