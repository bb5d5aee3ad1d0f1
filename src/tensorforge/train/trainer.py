"""The training loop shared by ``tensorforge train`` and the demo: epochs of shuffled mini-batches through
a compiled ``TrainingStep``, a progress bar per epoch, held-out evaluation after each."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..ir.dtype import is_float_dtype
from ..util.progress import Progress
from .datasets import batches, shuffled_order
from .step import TrainingStep


@dataclass
class History:
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch
    metrics: list[float] = field(default_factory=list)  # held-out metric per epoch (accuracy or loss)
    steps: int = 0
    step_seconds: float = 0.0  # time in training steps (native calls and their border checks)
    compile_seconds: float = 0.0  # first step of each batch shape (compiles the step)


def evaluate(step: TrainingStep, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy for class-index targets (argmax of the output), else the mean squared error."""
    out = step.predict(x)
    if y.dtype.kind in "iu":
        return float((out.argmax(axis=1) == y).mean())
    return float(np.mean((out - y) ** 2))


def fit(step: TrainingStep, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int,
        x_test: np.ndarray | None = None, y_test: np.ndarray | None = None, seed: int = 0,
        log: Callable[[str], None] = print) -> History:  # fmt: skip
    """Train ``epochs`` passes over (x, y); the last partial batch of each epoch is dropped. Epoch ``e``
    (from 1) visits the rows in ``shuffled_order(len(x), seed, e)``: the order the exported C training
    example draws too (``tensorforge export-train``), so both runs see the same batches."""
    if len(x) < batch_size:
        batch_size = len(x)
    per_epoch = len(x) // batch_size
    h = History()
    metric = "test accuracy" if y.dtype.kind in "iu" else "test mse"
    for epoch in range(1, epochs + 1):
        total = 0.0
        with Progress(per_epoch, f"epoch {epoch:>{len(str(epochs))}}/{epochs}") as bar:
            for xb, yb in batches(x, y, batch_size, order=shuffled_order(len(x), seed, epoch)):
                t0 = time.perf_counter()
                loss = step(xb, yb)
                dt = time.perf_counter() - t0
                if h.steps == 0:
                    h.compile_seconds += dt
                else:
                    h.step_seconds += dt
                h.steps += 1
                total += loss
                if bar.on:
                    bar.update(1, loss=loss)
            h.losses.append(total / per_epoch)
            line = f"loss {h.losses[-1]:.4f}"
            if x_test is not None and len(x_test):
                h.metrics.append(evaluate(step, x_test, y_test))
                line += f", {metric} {_fmt_metric(h.metrics[-1], metric)}"
            bar.postfix = line
            if not bar.on:
                log(f"{bar.desc}: {line}")
    return h


def _fmt_metric(v: float, name: str) -> str:
    return f"{100 * v:.2f}%" if "accuracy" in name else f"{v:.4g}"


# -- what `tensorforge train` and the demo put together -------------------------------------------------
def load_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Arrays 'x' and 'y' of an .npz file (float inputs; class indices or float targets)."""
    from ..errors import TensorforgeError

    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if not {"x", "y"} <= keys:
                raise TensorforgeError(f"{path}: expected arrays 'x' and 'y', found {sorted(keys)}")
            x, y = f["x"], f["y"]
    except (OSError, ValueError) as e:
        raise TensorforgeError(f"cannot read {path!r}: {e}") from None
    if x.ndim == 0 or y.ndim == 0 or len(x) == 0:
        raise TensorforgeError(f"{path}: 'x' and 'y' must hold at least one row, got shapes {list(x.shape)} and "
                               f"{list(y.shape)}")  # fmt: skip
    if len(x) != len(y):
        raise TensorforgeError(f"{path}: 'x' has {len(x)} rows but 'y' has {len(y)}")
    if not is_float_dtype(x.dtype):
        raise TensorforgeError(f"{path}: 'x' must hold floats, it holds {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y)


def builtin_model(name: str, x: np.ndarray, classes: int, seed: int = 0, softmax: bool = True):
    """The built-in models, sized to the data: 'mlp' on (N, features), 'cnn' on (N, C, H, H) images.
    ``softmax=False`` leaves the MLP's output linear (regression)."""
    from ..errors import TensorforgeError
    from ..examples import mlp, small_cnn

    if name == "mlp":
        if x.ndim != 2:
            raise TensorforgeError(f"--model mlp takes rows of features, the data is shaped {list(x.shape)}")
        return mlp(batch="N", sizes=(x.shape[1], 256, classes), seed=seed, softmax=softmax)
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise TensorforgeError(f"--model cnn takes square images (N, C, H, H), the data is shaped {list(x.shape)}")
    return small_cnn(batch="N", channels=x.shape[1], size=x.shape[2], classes=classes, seed=seed)


def make_optimizer(name: str, lr: float | None = None, momentum: float = 0.9, nesterov: bool = False,
                   weight_decay: float | None = None):  # fmt: skip
    from . import optim

    if name == "sgd":
        return optim.SGD(lr=0.05 if lr is None else lr, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay or 0.0)  # fmt: skip
    cls = {"adam": optim.Adam, "adamw": optim.AdamW}[name]
    kw = {} if weight_decay is None else {"weight_decay": weight_decay}
    return cls(lr=1e-3 if lr is None else lr, **kw)
