"""Gradient rules of the data-movement ops: each moves the cotangent back the way the data came."""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError, node_context
from ..ir.graph import Node
from ..ops.movement import pad_amounts
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


@vjp("Split")
def split_vjp(b: GraphBuilder, node: Node, cts, needs):
    axis = int(node.attr("axis", 0)) % len(node.inputs[0].shape)
    parts = [ct if ct is not None else b.zeros(o.shape, o) for o, ct in zip(node.outputs, cts)]
    return [parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=axis)]


@vjp("Tile")
def tile_vjp(b: GraphBuilder, node: Node, cts, needs):
    """out[i] = x[i % d] per dim: view ct as (r0, d0, r1, d1, ...) and sum the repeat axes."""
    x = node.inputs[0]
    reps = [int(r) for r in np.asarray(node.inputs[1].const).reshape(-1)]
    split = b.reshape(cts[0], tuple(v for r, d in zip(reps, x.shape) for v in (r, d)))
    summed = b.reduce_sum(split, [2 * i for i, r in enumerate(reps) if r != 1])
    return [b.reshape(summed, x.shape)]


@vjp("Pad")
def pad_vjp(b: GraphBuilder, node: Node, cts, needs):
    """Constant padding: the cotangent of the kept region (cropping dims pad it back with zeros)."""
    x = node.inputs[0]
    mode = node.attr("mode", "constant")
    if mode != "constant" or (len(needs) > 2 and needs[2]):
        what = f"mode={mode!r}" if mode != "constant" else "a constant_value that depends on a parameter"
        raise UnsupportedError(f"{node_context(b.model, node.name, node.op)}: no gradient for {what}")
    axes = node.input(3).const if node.input(3) is not None else None
    amounts = pad_amounts(None, len(x.shape), node.inputs[1].const, axes)
    kept = [d - max(-p0, 0) - max(-p1, 0) for d, (p0, p1) in zip(x.shape, amounts)]
    starts = [max(p0, 0) for p0, _ in amounts]
    ct = b.op("Slice", [cts[0], b.ints(starts, "starts"), b.ints([s + k for s, k in zip(starts, kept)], "ends")])
    if tuple(kept) == tuple(x.shape):
        return [ct]
    return [b.op("SliceGrad", [ct], shape=tuple(x.shape), starts=tuple(max(-p0, 0) for p0, _ in amounts),
                 steps=(1,) * len(kept), counts=tuple(kept))]  # fmt: skip


@vjp("Trilu", "ReverseSequence")
def self_adjoint_vjp(b: GraphBuilder, node: Node, cts, needs):
    """Masking a triangle and reversing sequences are their own adjoints."""
    return [b.op(node.op, [cts[0], *node.inputs[1:]], **node.attrs)]


@vjp("DepthToSpace", "SpaceToDepth")
def depth_space_vjp(b: GraphBuilder, node: Node, cts, needs):
    """The two are each other's inverse permutation (for the same blocksize and mode)."""
    other = "SpaceToDepth" if node.op == "DepthToSpace" else "DepthToSpace"
    return [b.op(other, [cts[0]], blocksize=int(node.attr("blocksize")), mode=node.attr("mode", "DCR"))]
