"""``Fused``: a group of nodes that the fusion pass decided to run as one kernel.

A fused node's ``body`` attribute lists the member nodes in order. They refer to the outer graph's
values directly: the fused node's inputs are the non-constant values the body reads from outside, its
outputs are the body values used outside. ``kind`` says how the group is lowered (``lower/fusion.py``):

* ``loop``: elementwise and index ops in one loop nest, intermediates never stored;
* ``kernel``: one kernel op (GEMM, conv, pooling, reduction, softmax, concat) with elementwise ops
  fused before it (computed as it reads its input) and after it (applied as it writes its output);
* ``rows``: reductions over the trailing axes with the elementwise ops around them (layer norm,
  softmax, mean/variance), computed row by row while a row stays in cache.
"""

from __future__ import annotations

from ..ir.graph import TensorType
from .registry import InferCtx, OpDef, Pattern, infer_node, register

FUSED = "Fused"
KINDS = ("loop", "kernel", "rows")


def _fused_infer(ctx: InferCtx) -> list[TensorType]:
    node = ctx.node
    body = node.attrs.get("body")
    if not body:
        ctx.fail("a fused node needs a non-empty body")
    if node.attrs.get("kind") not in KINDS:
        ctx.fail(f"kind must be one of {', '.join(KINDS)}, got {node.attrs.get('kind')!r}")
    defined = {v.id for v in node.inputs if v is not None}
    for n in body:
        for v in n.inputs:
            if v is not None and not v.is_const and v.id not in defined:
                ctx.fail(f"body node {n.label} reads %{v.name}, which is neither a fused input nor defined earlier "
                         "in the body")  # fmt: skip
        for v, t in zip(n.outputs, infer_node(n, ctx.model)):
            if v.type != t:
                ctx.fail(f"body value %{v.name} is typed {v.type} but {n.op} gives {t}")
            defined.add(v.id)
    for v in node.outputs:
        if v.id not in defined:
            ctx.fail(f"output %{v.name} is not produced by the body")
    return [v.type for v in node.outputs]


register(OpDef(FUSED, Pattern.OPAQUE, _fused_infer, None, {}, (0, -1),
               doc="nodes run as one kernel (see the body)"))  # fmt: skip
