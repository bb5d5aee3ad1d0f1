"""Einsum: the equation is parsed once (ellipses expanded to explicit axis labels, implicit output
resolved) into a ``Contraction``: the label of every operand axis, the output labels and the size of
every label. ``lower/einsum.py`` lowers a matmul-shaped contraction to the GEMM and anything else
(traces, diagonals, sums, outer products, three operands) to a reduction loop nest."""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from ..ir.dtype import is_float_dtype
from ..ir.graph import TensorType
from .registry import InferCtx, OpDef, Pattern, register

_SPARE = [c for c in string.ascii_uppercase + string.ascii_lowercase]


@dataclass(frozen=True)
class Contraction:
    inputs: tuple[tuple[str, ...], ...]  # per operand, per axis: its label
    output: tuple[str, ...]
    sizes: dict  # label -> size (after broadcasting)

    @property
    def reduced(self) -> tuple[str, ...]:
        seen = []
        for labels in self.inputs:
            for c in labels:
                if c not in self.output and c not in seen:
                    seen.append(c)
        return tuple(seen)


def parse_einsum(equation: str, shapes) -> Contraction:
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"equation {equation!r} has {len(terms)} operands, the node {len(shapes)}")
    used = set(c for c in eq if c.isalpha())
    spare = [c for c in _SPARE if c not in used]
    ell_rank = max((len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes) if "..." in t), default=0)
    ell = spare[:ell_rank]
    inputs = []
    sizes: dict[str, int] = {}
    for t, s in zip(terms, shapes):
        if "..." in t:
            a, _, b = t.partition("...")
            k = len(s) - len(a) - len(b)
            labels = list(a) + ell[ell_rank - k :] + list(b)
        else:
            labels = list(t)
        if len(labels) != len(s):
            raise ValueError(f"operand {t!r} of {equation!r} has rank {len(s)}, the equation gives {len(labels)}")
        for c, d in zip(labels, s):
            if sizes.get(c, 1) not in (1, d) and d != 1:
                raise ValueError(f"label {c!r} of {equation!r} has sizes {sizes[c]} and {d}")
            sizes[c] = max(sizes.get(c, 1), int(d))
        inputs.append(tuple(labels))
    if arrow:
        out = list(rhs.replace("...", "".join(ell))) if "..." in rhs else list(rhs)
    else:
        counts = {c: sum(t.count(c) for t in inputs) for c in sizes}
        out = ell + sorted(c for c in sizes if counts[c] == 1 and c not in ell)
    for c in out:
        if c not in sizes:
            raise ValueError(f"output label {c!r} of {equation!r} is not in any operand")
    return Contraction(tuple(inputs), tuple(out), sizes)


def _infer(ctx: InferCtx):
    shapes = [ctx.shape(i) for i in range(len(ctx.inputs))]
    dts = {ctx.dtype(i) for i in range(len(ctx.inputs))}
    if len(dts) != 1:
        ctx.fail(f"operands must have one dtype, got {sorted(str(d) for d in dts)}")
    if not all(isinstance(d, int) for s in shapes for d in s):
        ctx.fail(f"Einsum needs static shapes, got {[list(s) for s in shapes]}")
    try:
        c = parse_einsum(ctx.attr("equation"), shapes)
    except ValueError as e:
        ctx.fail(str(e))
    return [TensorType(dts.pop(), tuple(c.sizes[x] for x in c.output))]


def _reference(attrs, *xs):
    c = parse_einsum(attrs["equation"], [x.shape for x in xs])
    spec = ",".join("".join(t) for t in c.inputs) + "->" + "".join(c.output)
    acc = np.float64 if is_float_dtype(xs[0].dtype) else xs[0].dtype
    return (np.einsum(spec, *[x.astype(acc) for x in xs]).astype(xs[0].dtype),)


def _flops(node) -> int:
    try:
        c = parse_einsum(node.attrs["equation"], [v.shape for v in node.inputs])
    except (ValueError, TypeError):
        return 0
    return 2 * int(np.prod([c.sizes[x] for x in c.sizes]))


register(OpDef("Einsum", Pattern.OPAQUE, _infer, _reference, {}, (1, -1), flops=_flops))
