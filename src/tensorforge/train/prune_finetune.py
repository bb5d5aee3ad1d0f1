"""Fine-tuning a pruned model to recover accuracy, through the compiled training step; and ``tfg.prune``,
pruning (``compress/prune.py``) followed by that fine-tuning. It lives in train/ because training sits above
compress/ (the compiler, which train/ uses, imports compress/).

    pruned = tfg.prune("model.onnx", sparsity=0.8, finetune={"data": "digits", "epochs": 5})

The pruned weights must stay zero. Each masked weight ``W`` is read through ``Mul(W, W__prune_mask)`` in a
copy of the model that only the training step sees (the mask a frozen initializer): the forward pass uses
exactly the pruned weights, and the gradient reaching a pruned entry is zero, so no optimizer moves it
(SGD with momentum, Adam: zero gradient and zero state give a zero update). The trained values are copied
back into the pruned model, multiplied by the mask once more, so the result is exactly as sparse as before.
Channel-pruned models need no mask: the removed channels are gone from the graph.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import numpy as np

from ..compress.prune import PruneError, PruneReport, finish, prune_model

OPTIONS = {"data", "epochs", "batch_size", "optimizer", "lr", "test_data", "seed", "loss"}
MASK_SUFFIX = "__prune_mask"


def _arrays(data, what: str):
    """(x, y) from an ``(x, y)`` pair or an .npz file."""
    from .trainer import load_npz

    if isinstance(data, str):
        return load_npz(data)
    try:
        x, y = data
    except (TypeError, ValueError):
        raise PruneError(f"finetune {what} must be a dataset name, an .npz path or an (x, y) pair") from None
    x, y = np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise PruneError(f"finetune {what}: x has {len(x)} rows and y {len(y)}; they must match and not be empty")
    return x, y


def load_finetune_data(data, test_data=None, seed: int = 0):
    """Training and held-out arrays and a description: a built-in dataset name (its own split), an .npz
    path or an ``(x, y)`` pair (held out: ``test_data``, or none)."""
    from . import datasets

    if isinstance(data, str) and data in datasets.DATASETS:
        ds = datasets.load(data, seed=seed)
        return ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.name
    x, y = _arrays(data, "data")
    xt, yt = _arrays(test_data, "test_data") if test_data is not None else (None, None)
    return x, y, xt, yt, data if isinstance(data, str) else f"{len(x)} rows"


def masked_model(proto, masks: Mapping[str, np.ndarray]):
    """A copy of ``proto`` reading every masked weight ``W`` as ``W * mask``; returns it and the mask names."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    dtypes = {t.name: numpy_helper.to_array(t).dtype for t in m.graph.initializer}
    renamed = {w: f"{w}__pruned" for w in masks}
    for n in m.graph.node:
        for i, x in enumerate(n.input):
            if x in renamed:
                n.input[i] = renamed[x]
    muls = [helper.make_node("Mul", [w, w + MASK_SUFFIX], [renamed[w]], name=f"{w}_prune_mask") for w in masks]
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend([*muls, *nodes])
    m.graph.initializer.extend(numpy_helper.from_array(k.astype(dtypes[w]), w + MASK_SUFFIX) for w, k in masks.items())
    return m, [w + MASK_SUFFIX for w in masks]


def finetune_pruned(report: PruneReport, options: Mapping, log: Callable[[str], None] | None = None) -> dict:
    """Train ``report.model`` in place (its initializers replaced) for a few epochs; what happened, as a dict."""
    from onnx import numpy_helper

    from .step import training_step
    from .trainer import evaluate, fit, make_optimizer

    if not isinstance(options, Mapping) or "data" not in options:
        raise PruneError("finetune must be a dict with at least 'data' (a dataset name, an .npz path or (x, y))")
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise PruneError(f"unknown finetune option(s) {unknown}; the options are {sorted(OPTIONS)}")
    epochs = int(options.get("epochs", 3))
    batch = int(options.get("batch_size", 32))
    if epochs < 1 or batch < 1:
        raise PruneError(f"finetune epochs and batch_size must be >= 1, got {epochs} and {batch}")
    seed = int(options.get("seed", 0))
    x, y, xt, yt, what = load_finetune_data(options["data"], options.get("test_data"), seed)
    train, frozen = masked_model(report.model, report.masks)
    opt = make_optimizer(options.get("optimizer", "sgd"), options.get("lr"))
    step = training_step(train, loss=options.get("loss", "cross_entropy"), optimizer=opt, frozen=frozen,
                         name=report.model.graph.name or "pruned")  # fmt: skip
    classes = y.dtype.kind in "iu"
    before = evaluate(step, xt, yt) if xt is not None and classes else None
    h = fit(step, x, y, epochs, batch, xt, yt, seed, log=log or (lambda s: None))
    trained = {t.name: numpy_helper.to_array(t) for t in step.export_onnx().graph.initializer}
    for t in report.model.graph.initializer:
        if t.name not in trained:
            continue
        a = trained[t.name]
        if t.name in report.masks:
            a = np.where(report.masks[t.name], a, np.zeros((), a.dtype)).astype(a.dtype)
        t.CopyFrom(numpy_helper.from_array(a, t.name))
    after = h.metrics[-1] if h.metrics and classes else None
    return {"data": what, "epochs": epochs, "losses": h.losses, "accuracy_before": before, "accuracy_after": after}


def prune_report(model, sparsity: float | None = None, structured: str | None = None, *,
                 finetune: Mapping | None = None, output: str | os.PathLike | None = None,
                 log: Callable[[str], None] | None = None, **options) -> PruneReport:  # fmt: skip
    """``compress.prune.prune_model`` (same options), then fine-tuning when ``finetune`` is given: a dict with
    ``data`` (a built-in dataset name such as ``"digits"``, an ``.npz`` path with arrays x and y, or an
    ``(x, y)`` pair) and optionally ``epochs`` (3), ``batch_size`` (32), ``optimizer`` ("sgd"), ``lr``,
    ``loss`` ("cross_entropy"), ``test_data`` (``(x, y)``; the dataset's held-out split by default), ``seed``
    (0). ``log`` gets one line per epoch."""
    if finetune is not None and (not isinstance(finetune, Mapping) or "data" not in finetune):
        raise PruneError("finetune must be a dict with at least 'data' (a dataset name, an .npz path or (x, y))")
    if finetune is not None and set(finetune) - OPTIONS:
        raise PruneError(f"unknown finetune option(s) {sorted(set(finetune) - OPTIONS)}; the options are "
                         f"{sorted(OPTIONS)}")  # fmt: skip
    report = prune_model(model, sparsity, structured, **options)
    if finetune is not None:
        report.finetune = finetune_pruned(report, finetune, log)
        finish(report)
    if output is not None:
        finish(report, output)
    return report


def prune(model, sparsity: float | None = None, structured: str | None = None, **options):
    """Prune ``model`` (path, bytes or ModelProto) and return the pruned ``onnx.ModelProto``: magnitude
    (``structured=None``), ``"channels"`` or ``"2:4"``; ``finetune=dict(data=..., epochs=...)`` trains it
    afterwards with the pruned weights held at zero; ``output`` writes it. See ``compress/prune.py`` and
    ``prune_report`` for every option."""
    return prune_report(model, sparsity, structured, **options).model


__all__ = ["finetune_pruned", "load_finetune_data", "masked_model", "prune", "prune_report"]
