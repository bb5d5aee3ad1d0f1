"""Gradient rules of the data-movement ops: each moves the cotangent back the way the data came."""

from __future__ import annotations

from ..ir.graph import Node
from ..ops.registry import InferCtx
from ..ops.shape import slice_params, transpose_perm
from .builder import GraphBuilder
from .core import vjp


@vjp("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape_vjp(b: GraphBuilder, node: Node, cts, needs):
    return [b.reshape(cts[0], node.inputs[0].shape)]


@vjp("Identity")
def identity_vjp(b: GraphBuilder, node: Node, cts, needs):
    return [cts[0]]


@vjp("Transpose")
def transpose_vjp(b: GraphBuilder, node: Node, cts, needs):
    perm = transpose_perm(InferCtx(node, b.model), len(node.inputs[0].shape))
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return [b.transpose(cts[0], inv)]


@vjp("Expand")
def expand_vjp(b: GraphBuilder, node: Node, cts, needs):
    return [b.sum_to(cts[0], node.inputs[0].shape)]


@vjp("Concat")
def concat_vjp(b: GraphBuilder, node: Node, cts, needs):
    ct = cts[0]
    axis = int(node.attr("axis")) % len(ct.shape)
    out, off = [], 0
    for x, need in zip(node.inputs, needs):
        n = x.shape[axis]
        out.append(b.op("Slice", [ct, b.ints([off], "starts"), b.ints([off + n], "ends"), b.ints([axis], "axes")])
                   if need else None)  # fmt: skip
        off += n
    return out


@vjp("Slice")
def slice_vjp(b: GraphBuilder, node: Node, cts, needs):
    x = node.inputs[0]
    params = slice_params(InferCtx(node, b.model), x.shape)
    return [b.op("SliceGrad", [cts[0]], shape=tuple(x.shape), starts=tuple(p[0] for p in params),
                 steps=tuple(p[2] for p in params), counts=tuple(p[3] for p in params))]  # fmt: skip
