"""Structured channel pruning: remove a layer's output channels (filters) and rewrite the graph to the
smaller shapes.

For each layer (Conv, Gemm, MatMul with an initializer weight), the output channels of smallest L1 norm
are removed from its weight and bias, and the matching slices from everything that reads them, followed
through the ops that treat channels independently:

* activations and other unary elementwise ops, Dropout, and the poolings (channel axis 1) pass the
  channels through unchanged;
* BatchNormalization loses the same entries of its scale, bias, mean and variance;
* Add / Sub / Mul / Div with an initializer lose the same entries of it (when it is per channel);
* Flatten (axis 1) of an NCHW tensor turns each channel into a run of H*W features;
* the consumers — Conv (group 1), Gemm and MatMul reading the tensor as their A input with an initializer
  weight — lose the matching input channels of their weight.

Anything else reading the channels — a residual Add of two computed tensors, Concat, Reshape, Softmax, a
graph output, a depthwise Conv — would change meaning or shape: the layer is left alone, and the report
says which node stopped it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .prune import Layer, LayerResult, _attr

# unary ops that act on each element alone: channels pass through them
CHANNELWISE = {
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish", "Softplus",
    "Softsign", "Gelu", "Mish", "Identity", "Dropout", "Abs", "Neg", "Exp", "Sqrt", "Erf", "Clip", "ThresholdedRelu",
}  # fmt: skip
POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"}
BINARY = {"Add", "Sub", "Mul", "Div"}


@dataclass
class _Edit:
    """Keep ``index`` (channel positions, expanded by ``block``) of initializer ``name`` along ``axis``."""

    name: str
    axis: int
    block: int = 1


class _Stop(Exception):
    pass


def _ranks(proto) -> dict[str, tuple]:
    """Every tensor's shape as shape inference sees it (dims may be None)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    out = {}
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
    for t in g.initializer:
        out[t.name] = tuple(t.dims)
    return out


class _Tracer:
    def __init__(self, proto, inits: Mapping[str, np.ndarray], shapes: dict[str, tuple]):
        self.proto = proto
        self.inits = inits
        self.shapes = shapes
        self.outputs = {o.name for o in proto.graph.output}
        self.readers: dict[str, list] = {}
        for i, n in enumerate(proto.graph.node):
            for j, x in enumerate(n.input):
                if x:
                    self.readers.setdefault(x, []).append((i, n, j))
        self.uses = {name: len(r) for name, r in self.readers.items()}

    def _node_name(self, i, n) -> str:
        return n.name or f"{n.op_type}_{i}"

    def _const(self, name: str, i, n) -> np.ndarray:
        if name not in self.inits:
            raise _Stop(f"node '{self._node_name(i, n)}' ({n.op_type}) combines the channels with the computed "
                        f"tensor '{name}' (a residual connection?)")  # fmt: skip
        if self.uses.get(name, 0) > 1:
            raise _Stop(f"initializer '{name}' of node '{self._node_name(i, n)}' is shared with other nodes")
        return self.inits[name]

    def trace(self, tensor: str, axis: int, block: int, edits: list[_Edit]) -> None:
        """Follow channel axis ``axis`` of ``tensor`` (each channel ``block`` consecutive elements) to the
        consumers, recording the slices to cut; ``_Stop`` where the channels cannot be removed."""
        if tensor in self.outputs:
            raise _Stop(f"its channels reach the graph output '{tensor}'")
        rank = len(self.shapes.get(tensor, ())) or None
        for i, n, j in self.readers.get(tensor, []):
            who = f"node '{self._node_name(i, n)}' ({n.op_type})"
            op = n.op_type
            if op in CHANNELWISE and j == 0:
                if op == "PRelu" and len(n.input) > 1:
                    self._per_channel(n.input[1], i, n, tensor, axis, rank, edits)
                self.trace(n.output[0], axis, block, edits)
            elif op in POOLS and j == 0 and axis == 1 and block == 1:
                self.trace(n.output[0], axis, block, edits)
            elif op == "BatchNormalization" and j == 0 and axis == 1 and block == 1:
                for x in n.input[1:5]:
                    self._const(x, i, n)
                    edits.append(_Edit(x, 0))
                self.trace(n.output[0], axis, block, edits)
            elif op in BINARY:
                other = n.input[1 - j]
                self._per_channel(other, i, n, tensor, axis, rank, edits)
                self.trace(n.output[0], axis, block, edits)
            elif op == "Flatten" and j == 0 and axis == 1 and block == 1 and _attr(n, "axis", 1) == 1:
                shape = self.shapes.get(tensor)
                if not shape or any(d is None for d in shape[2:]):
                    raise _Stop(f"{who}: the spatial size of '{tensor}' is not known")
                self.trace(n.output[0], 1, int(np.prod(shape[2:], dtype=np.int64)), edits)
            elif op == "Conv" and j == 0 and axis == 1 and block == 1:
                if _attr(n, "group", 1) != 1:
                    raise _Stop(f"{who} is a grouped (depthwise) convolution")
                edits.append(_Edit(self._weight(n, i), 1))
            elif op in ("Gemm", "MatMul") and j == 0 and rank is not None and axis == rank - 1:
                if op == "Gemm" and _attr(n, "transA", 0):
                    raise _Stop(f"{who} reads it transposed (transA)")
                w = self._weight(n, i)
                if self.inits[w].ndim != 2:
                    raise _Stop(f"{who}: its weight is not a matrix")
                trans = op == "Gemm" and _attr(n, "transB", 0)
                edits.append(_Edit(w, 1 if trans else 0, block))
            else:
                raise _Stop(f"{who} reads the channels as input {j}, where they cannot be removed")

    def _weight(self, n, i) -> str:
        if len(n.input) < 2 or n.input[1] not in self.inits:
            raise _Stop(f"node '{self._node_name(i, n)}' ({n.op_type}) has a computed weight")
        self._const(n.input[1], i, n)
        return n.input[1]

    def _per_channel(self, other: str, i, n, tensor: str, axis: int, rank: int | None, edits: list[_Edit]) -> None:
        c = self._const(other, i, n)
        if rank is None:
            raise _Stop(f"the rank of '{tensor}' is not known")
        if c.ndim > rank:
            raise _Stop(f"node '{self._node_name(i, n)}' ({n.op_type}) broadcasts '{tensor}' to more dims")
        at = axis - (rank - c.ndim)
        if at >= 0 and c.shape[at] != 1:
            edits.append(_Edit(other, at))


def _cut(a: np.ndarray, axis: int, keep: np.ndarray, block: int) -> np.ndarray:
    idx = (keep[:, None] * block + np.arange(block)[None, :]).ravel() if block > 1 else keep
    return np.take(a, idx, axis=axis)


def prune_channels(proto, inits: dict[str, np.ndarray], layers: list[Layer], sparsity: float,
                   shared: set[str]) -> list[LayerResult]:  # fmt: skip
    """Remove ``round(sparsity * channels)`` output channels of each layer (at least one kept), rewriting
    ``inits`` and the graph (``proto``'s initializers and shapes); the result of each layer."""
    shapes = _ranks(proto)
    tracer = _Tracer(proto, inits, shapes)
    nodes = {(n.name or f"{n.op_type}_{i}"): n for i, n in enumerate(proto.graph.node)}
    results = []
    for ly in layers:
        n = nodes[ly.node]
        channels = inits[ly.weight].shape[ly.out_axis]
        drop = min(int(round(sparsity * channels)), channels - 1)
        try:
            if ly.weight in shared:
                raise _Stop(f"weight '{ly.weight}' is shared with other nodes")
            if ly.op == "Conv" and _attr(n, "group", 1) != 1:
                raise _Stop("a grouped (depthwise) convolution")
            if drop == 0:
                raise _Stop(f"{channels} channel(s): none to remove at sparsity {sparsity:g}")
            edits: list[_Edit] = []
            bias = None
            if ly.op in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2]:
                bias = n.input[2]
                b = tracer._const(bias, 0, n)
                if ly.op == "Gemm" and b.ndim >= 1 and b.shape[-1] == channels:
                    edits.append(_Edit(bias, b.ndim - 1))
                elif ly.op == "Conv":
                    edits.append(_Edit(bias, 0))
                elif b.size != 1:
                    raise _Stop(f"bias '{bias}' is not per output channel")
            out_shape = shapes.get(n.output[0])
            axis = 1 if ly.op == "Conv" else (len(out_shape) - 1 if out_shape else 1)
            tracer.trace(n.output[0], axis, 1, edits)
        except _Stop as e:
            results.append(LayerResult(ly, False, str(e)))
            continue
        w = inits[ly.weight]
        other = tuple(a for a in range(w.ndim) if a != ly.out_axis)
        scores = np.abs(w.astype(np.float64)).sum(axis=other)
        keep = np.sort(np.argsort(scores, kind="stable")[drop:])
        inits[ly.weight] = _cut(w, ly.out_axis, keep, 1)
        for e in edits:
            inits[e.name] = _cut(inits[e.name], e.axis, keep, e.block)
        new = inits[ly.weight].shape
        detail = f"{ly.weight}: {channels} -> {len(keep)} output channels {list(ly.shape)} -> {list(new)}"
        results.append(LayerResult(ly, True, detail, 1.0 - len(keep) / channels, keep.tolist(), tuple(new)))
    # intermediate shapes changed: drop the stale ones (the outputs keep theirs; channels never reach them)
    del proto.graph.value_info[:]
    return results


__all__ = ["prune_channels"]
