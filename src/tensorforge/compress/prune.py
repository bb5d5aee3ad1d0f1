"""Pruning: magnitude (unstructured), 2:4 and structured channel pruning of an ONNX model's weights.

    pruned = tfg.prune("model.onnx", sparsity=0.8)                       # smallest 80% of |w| set to zero
    pruned = tfg.prune(m, sparsity=0.5, structured="channels")           # a smaller graph: channels removed
    pruned = tfg.prune(m, structured="2:4")                              # 2 of every 4 weights along K kept
    pruned = tfg.prune(m, sparsity=0.8, finetune={"data": "digits", "epochs": 5})

(``tfg.prune`` is ``train/prune_finetune.py:prune``: this module's ``prune_model`` plus the fine-tuning.)

The layers are the Conv, MatMul and Gemm nodes whose weight (Conv's W, MatMul's and Gemm's B) is a float
initializer. Unstructured pruning zeroes the weights of smallest magnitude, over all layers at once
(``scope="global"``, one threshold) or layer by layer (``scope="layer"``); 2:4 keeps the two largest of
every group of four consecutive weights along the reduction axis (K; a Conv's input channels). Both keep
the graph and its shapes: the compiler's sparse GEMM (``lower/sparse_gemm.py``) turns the zeros into
speed. ``structured="channels"`` removes the output channels of smallest L1 norm and rewrites the graph
to the smaller shapes (``prune_channels.py``). ``finetune`` then trains the pruned model for a few epochs
through the compiled training step with the pruned weights held at zero (``train/prune_finetune.py``).

``prune_model`` returns a ``PruneReport`` (the model and what happened to every layer); ``tfg.prune``
returns just the model (also written to ``output`` when given).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import TensorforgeError

PRUNABLE_OPS = ("Conv", "MatMul", "Gemm")
STRUCTURED = ("channels", "2:4")
SCOPES = ("global", "layer")


class PruneError(TensorforgeError):
    """A pruning request that cannot be carried out (bad sparsity, unknown mode, nothing to prune)."""


@dataclass
class Layer:
    """One prunable node: its weight initializer and the axes that matter for pruning."""

    node: str
    op: str
    weight: str
    shape: tuple[int, ...]
    k_axis: int  # the reduction axis (2:4 groups run along it)
    out_axis: int  # the output-channel axis (channel pruning removes slices along it)


@dataclass
class LayerResult:
    layer: Layer
    pruned: bool
    detail: str  # what was done, or why the layer was left alone
    sparsity: float = 0.0  # fraction of zero weights after pruning
    kept: list[int] | None = None  # channel pruning: the output channels kept
    new_shape: tuple[int, ...] | None = None


@dataclass
class PruneReport:
    model: object  # onnx.ModelProto
    mode: str
    sparsity: float
    layers: list[LayerResult]
    params_before: int
    params_after: int
    nonzero_before: int
    nonzero_after: int
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # weight -> kept (bool), unstructured and 2:4
    finetune: dict | None = None

    @property
    def pruned(self) -> list[LayerResult]:
        return [r for r in self.layers if r.pruned]

    def __str__(self) -> str:
        lines = [f"pruning ({self.mode}, sparsity {self.sparsity:g}): {len(self.pruned)} of {len(self.layers)} "
                 f"layer(s) pruned"]  # fmt: skip
        w = max([len(r.layer.node) for r in self.layers] + [4])
        for r in self.layers:
            mark = "pruned " if r.pruned else "skipped"
            lines.append(f"  {r.layer.node:<{w}}  {r.layer.op:<6} {mark}  {r.detail}")
        lines.append(f"parameters: {self.params_before:,} -> {self.params_after:,}; nonzero weights: "
                     f"{self.nonzero_before:,} -> {self.nonzero_after:,}")  # fmt: skip
        if self.finetune:
            f = self.finetune
            line = f"fine-tuned {f['epochs']} epoch(s) on {f['data']}"
            if f.get("accuracy_before") is not None:
                line += (f": held-out accuracy {100 * f['accuracy_before']:.2f}% after pruning, "
                         f"{100 * f['accuracy_after']:.2f}% after fine-tuning")  # fmt: skip
            lines.append(line)
        return "\n".join(lines)


# -- the layers -------------------------------------------------------------------------------------------
def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def find_layers(proto) -> list[Layer]:
    """The prunable nodes in graph order: Conv/MatMul/Gemm whose weight is a float initializer (2-D for
    MatMul and Gemm, 3-D or more for Conv)."""
    from onnx import TensorProto

    floats = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16}
    inits = {t.name: t for t in proto.graph.initializer}
    out = []
    for i, n in enumerate(proto.graph.node):
        if n.op_type not in PRUNABLE_OPS or n.domain not in ("", "ai.onnx") or len(n.input) < 2:
            continue
        t = inits.get(n.input[1])
        if t is None or t.data_type not in floats:
            continue
        shape = tuple(t.dims)
        name = n.name or f"{n.op_type}_{i}"
        if n.op_type == "Conv":
            if len(shape) < 3:
                continue
            out.append(Layer(name, n.op_type, t.name, shape, 1, 0))
        elif len(shape) == 2:
            trans = n.op_type == "Gemm" and _attr(n, "transB", 0)
            out.append(Layer(name, n.op_type, t.name, shape, 1 if trans else 0, 0 if trans else 1))
    return out


def _select(layers: list[Layer], skip_first: bool, skip_last: bool, names: Sequence[str] | None,
            exclude: Sequence[str]) -> tuple[list[Layer], dict[str, str]]:  # fmt: skip
    """The layers to prune and, for the others, why not."""
    why: dict[str, str] = {}
    if names is not None:
        known = {ly.node for ly in layers} | {ly.weight for ly in layers}
        unknown = [n for n in [*names, *exclude] if n not in known]
        if unknown:
            raise PruneError(f"no prunable layer named {unknown}; the layers are {[ly.node for ly in layers]}")
    for i, ly in enumerate(layers):
        if skip_first and i == 0:
            why[ly.node] = "first layer (skip_first)"
        elif skip_last and i == len(layers) - 1:
            why[ly.node] = "last layer (skip_last)"
        elif names is not None and ly.node not in names and ly.weight not in names:
            why[ly.node] = "not among the layers named"
        elif ly.node in exclude or ly.weight in exclude:
            why[ly.node] = "excluded"
    return [ly for ly in layers if ly.node not in why], why


# -- masks ------------------------------------------------------------------------------------------------
def magnitude_masks(weights: Mapping[str, np.ndarray], sparsity: float, scope: str = "global") -> dict[str, np.ndarray]:
    """Per weight a boolean mask of the weights kept: the ``round(sparsity * n)`` of smallest magnitude
    dropped, over all weights together (``global``) or per weight (``layer``); ties broken by position."""
    masks = {}
    if scope == "layer":
        for name, w in weights.items():
            masks[name] = _keep_largest(np.abs(w).ravel(), int(round(sparsity * w.size))).reshape(w.shape)
        return masks
    flat = np.concatenate([np.abs(w).ravel() for w in weights.values()])
    keep = _keep_largest(flat, int(round(sparsity * flat.size)))
    at = 0
    for name, w in weights.items():
        masks[name] = keep[at : at + w.size].reshape(w.shape)
        at += w.size
    return masks


def _keep_largest(scores: np.ndarray, drop: int) -> np.ndarray:
    keep = np.ones(scores.size, bool)
    if drop > 0:
        keep[np.argsort(scores, kind="stable")[:drop]] = False
    return keep


def two_four_mask(w: np.ndarray, k_axis: int) -> np.ndarray:
    """Keep the 2 largest magnitudes of every 4 consecutive weights along ``k_axis`` (its size a multiple
    of 4)."""
    moved = np.moveaxis(np.abs(w), k_axis, -1)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // 4, 4)
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, bool)
    np.put_along_axis(keep, order[..., :2], True, axis=-1)
    return np.moveaxis(keep.reshape(moved.shape), -1, k_axis)


# -- the entry points -------------------------------------------------------------------------------------
def _check_args(sparsity, structured, scope) -> float:
    if structured is not None and structured not in STRUCTURED:
        raise PruneError(f"unknown structured pruning mode {structured!r}; choose 'channels' or '2:4' (or None for "
                         "unstructured magnitude pruning)")  # fmt: skip
    if scope not in SCOPES:
        raise PruneError(f"unknown scope {scope!r}; choose 'global' or 'layer'")
    if structured == "2:4":
        if sparsity is not None and float(sparsity) != 0.5:
            raise PruneError(f"2:4 pruning removes exactly half of the weights: sparsity must be 0.5 or left out, "
                             f"got {sparsity}")  # fmt: skip
        return 0.5
    if sparsity is None:
        raise PruneError("give a sparsity: the fraction of weights (or channels) to remove, between 0 and 1")
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise PruneError(f"sparsity must be a number between 0 and 1 (exclusive), got {sparsity!r}") from None
    if not 0.0 < s < 1.0:
        raise PruneError(f"sparsity must be between 0 and 1 (exclusive), got {sparsity!r}")
    return s


def prune_model(model, sparsity: float | None = None, structured: str | None = None, *, scope: str = "global",
                skip_first: bool = False, skip_last: bool = False, layers: Sequence[str] | None = None,
                exclude: Sequence[str] = (), output: str | os.PathLike | None = None) -> PruneReport:  # fmt: skip
    """Prune ``model`` (path, bytes or ModelProto; see the module docstring) and say what was done.

    ``layers`` / ``exclude`` name nodes or weights to restrict pruning to / to leave alone; ``skip_first``
    and ``skip_last`` leave the first / last prunable layer dense. Fine-tuning needs the training step,
    which sits above this package: ``tfg.prune(..., finetune=...)`` (``train/prune_finetune.py``)."""
    import onnx
    from onnx import numpy_helper

    from ..frontends.onnx import load_model

    s = _check_args(sparsity, structured, scope)
    proto = onnx.ModelProto()
    proto.CopyFrom(load_model(model))
    name = proto.graph.name or "model"
    all_layers = find_layers(proto)
    if not all_layers:
        raise PruneError(f"model '{name}': nothing to prune: no Conv, MatMul or Gemm node has a float initializer "
                         "as its weight")  # fmt: skip
    chosen, why = _select(all_layers, skip_first, skip_last, layers, exclude)
    if not chosen:
        raise PruneError(f"model '{name}': nothing to prune: every prunable layer is left out "
                         f"({'; '.join(f'{k}: {v}' for k, v in why.items())})")  # fmt: skip
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    before = _counts(proto, inits, all_layers)
    results: dict[str, LayerResult] = {ly.node: LayerResult(ly, False, why[ly.node]) for ly in all_layers
                                       if ly.node in why}  # fmt: skip
    masks: dict[str, np.ndarray] = {}
    shared = _shared_weights(proto, chosen)
    if structured == "channels":
        from .prune_channels import prune_channels

        for r in prune_channels(proto, inits, chosen, s, shared):
            results[r.layer.node] = r
    else:
        todo = []
        for ly in chosen:
            if structured == "2:4" and ly.shape[ly.k_axis] % 4:
                results[ly.node] = LayerResult(ly, False, f"K = {ly.shape[ly.k_axis]} is not a multiple of 4 (2:4)")
            else:
                todo.append(ly)
        weights = {ly.weight: inits[ly.weight] for ly in todo}
        if structured == "2:4":
            masks = {ly.weight: two_four_mask(inits[ly.weight], ly.k_axis) for ly in todo}
        elif weights:
            masks = magnitude_masks(weights, s, scope)
        for ly in todo:
            w = inits[ly.weight]
            inits[ly.weight] = np.where(masks[ly.weight], w, np.zeros((), w.dtype)).astype(w.dtype)
            zeros = 1.0 - np.count_nonzero(inits[ly.weight]) / max(w.size, 1)
            detail = f"{ly.weight} {list(ly.shape)}: {100 * zeros:.1f}% zeros"
            results[ly.node] = LayerResult(ly, True, detail, zeros, None, ly.shape)
    _write_inits(proto, inits)
    mode = structured or f"unstructured, {scope}"
    ordered = [results[ly.node] for ly in all_layers]
    if not any(r.pruned for r in ordered):
        raise PruneError(f"model '{name}': nothing could be pruned: "
                         f"{'; '.join(f'{r.layer.node}: {r.detail}' for r in ordered)}")  # fmt: skip
    report = PruneReport(proto, mode, s, ordered, before[0], 0, before[1], 0, masks)
    finish(report, output)
    return report


def finish(report: PruneReport, output: str | os.PathLike | None = None) -> None:
    """Count what is left, check the model, and write it to ``output`` when given."""
    import onnx
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in report.model.graph.initializer}
    report.params_after, report.nonzero_after = _counts(report.model, inits, find_layers(report.model))
    onnx.checker.check_model(report.model)
    if output is not None:
        from ..util.files import atomic_write

        atomic_write(os.fspath(output), report.model.SerializeToString())


# -- helpers ----------------------------------------------------------------------------------------------
def _counts(proto, inits: Mapping[str, np.ndarray], layers: list[Layer]) -> tuple[int, int]:
    """Float parameters of the whole model, and nonzero weights of its prunable layers."""
    params = sum(a.size for a in inits.values() if a.dtype.kind == "f")
    nonzero = sum(int(np.count_nonzero(inits[w])) for w in {ly.weight for ly in layers})
    return params, nonzero


def _shared_weights(proto, layers: list[Layer]) -> set[str]:
    """Weights read by more than one node (channel pruning cannot shrink them for one reader only)."""
    uses: dict[str, int] = {}
    for n in proto.graph.node:
        for x in set(n.input):
            uses[x] = uses.get(x, 0) + 1
    return {ly.weight for ly in layers if uses.get(ly.weight, 0) > 1}


def _write_inits(proto, inits: Mapping[str, np.ndarray]) -> None:
    from onnx import numpy_helper

    for t in proto.graph.initializer:
        a = inits[t.name]
        if tuple(t.dims) != a.shape or not np.array_equal(numpy_helper.to_array(t), a):
            t.CopyFrom(numpy_helper.from_array(a, t.name))


__all__ = ["PRUNABLE_OPS", "Layer", "LayerResult", "PruneError", "PruneReport", "find_layers", "magnitude_masks",
           "finish", "prune_model", "two_four_mask"]  # fmt: skip
