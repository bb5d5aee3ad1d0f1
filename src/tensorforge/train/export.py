"""A training step exported as a standalone C library (``TrainingStep.export_c``, ``tensorforge export-train``).

Compiles, for one batch size and any CPU target, the two programs the library holds — the training step
(the same graph ``TrainingStep`` runs, the state updated in place) and the forward pass ``predict`` runs —
through the ``llvm`` stage (no host object, so cross targets work); ``runtime/aot_train.py`` writes the
library, its header and the example around it. The step's current state (parameters, optimizer state,
batch-norm statistics), learning rate and step count become the library's initial state.
"""

from __future__ import annotations

import numpy as np

from ..codegen.targets import get_target
from ..compiler import build_artifact
from ..errors import TensorforgeError
from ..runtime.aot_train import StateBuffer, TrainingSpec, export_training
from .step import TrainingStep


def export_training_step(step: TrainingStep, out_dir: str, name: str = "model", batch_size: int = 32,
                         target: str | None = None, cc: str | None = None) -> dict:  # fmt: skip
    """See ``TrainingStep.export_c``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise TensorforgeError(f"model '{step.name}': the exported step's batch size must be an integer >= 1, got "
                               f"{batch_size!r}")  # fmt: skip
    batch = int(batch_size)
    tgt = get_target(target)
    if tgt.is_gpu:
        raise TensorforgeError(f"model '{step.name}': a training step exports for CPU targets only, not {tgt.name}")
    out = step._output_value(step._forward(batch))
    if step.loss == "cross_entropy":  # class indices, as Python's step takes them by default
        if len(out.shape) != 2:
            raise TensorforgeError(f"model '{step.name}': an exported cross-entropy step takes class indices for an "
                                   f"output shaped [batch, classes]; the output is {list(out.shape)}")  # fmt: skip
        ydt, yshape, classes = np.dtype(np.int64), (batch,), int(out.shape[1])
    else:
        ydt, yshape, classes = np.dtype(out.dtype.np), tuple(out.shape), 0
    tg = step._training_graph(batch, ydt, yshape)
    if [s.name for s in tg.slots] != [s.name for s in step.slots]:
        raise TensorforgeError(f"model '{step.name}': the step's state differs between batch sizes")
    train = build_artifact(tg.graph, tgt, step.options, state=tg.state, until="llvm")[0]
    predict = build_artifact(step.predict_graph(batch)[0], tgt, step.options, until="llvm")[0]
    with step._lock:
        state = [StateBuffer(s.name, s.kind, step._arrays[s.name].copy()) for s in step.slots]
        steps = step.steps
    spec = TrainingSpec(
        model=step.name, batch=batch, loss=step.loss, optimizer=str(step.optimizer), data=list(tg.data),
        target=tg.target, lr_input=tg.hyper[0], lr=float(step.optimizer.lr), check_output=tg.check,
        check_labels=list(step._check_labels), state=state, classes=classes,
        trained_output=step.graph.output_names[step._output_index(step.graph)], steps=steps,
    )  # fmt: skip
    return export_training(train, predict, spec, out_dir, name, cc)


__all__ = ["export_training_step"]
