"""Loss functions as graph code: ``LOSSES[name](b, output, target, producer, **options) -> scalar``.

Cross-entropy reads the model's output as logits, or as probabilities when the model ends in a Softmax
(or ``from_logits=False``). A Softmax output is not logged as is: the loss takes ``LogSoftmax`` of the
Softmax's input instead — the same value, without the overflow of ``log(exp(x))`` — so a model that
outputs probabilities trains as stably as one that outputs logits. Targets are class indices (any integer
dtype, one per row) or per-class probabilities / one-hot rows shaped like the output.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import TensorforgeError
from ..ir.dtype import is_float_dtype
from ..ir.graph import Node, Value
from .builder import GraphBuilder

LossFn = Callable[..., Value]
LOSSES: dict[str, LossFn] = {}
TINY = 1e-30  # probabilities are clamped here before the log (a zero probability gives a finite loss)


def loss(name: str):
    def deco(fn: LossFn) -> LossFn:
        LOSSES[name] = fn
        return fn

    return deco


def check_target(loss_name: str, out: Value, target_dtype: np.dtype, target_shape: tuple) -> None:
    """Raise if a target of this dtype/shape does not fit ``loss_name`` for output ``out``."""
    shape = tuple(out.shape)
    if loss_name == "cross_entropy":
        if len(shape) != 2:
            raise TensorforgeError(f"cross_entropy needs an output of shape [batch, classes], the model's "
                                   f"'{out.name}' is {list(shape)}")  # fmt: skip
        if np.dtype(target_dtype).kind in "iu":
            if tuple(target_shape) != shape[:1]:
                raise TensorforgeError(f"class-index targets must have shape [{shape[0]}] (one per row of the "
                                       f"output {list(shape)}), got {list(target_shape)}")  # fmt: skip
            return
    if not is_float_dtype(target_dtype) or tuple(target_shape) != shape:
        kinds = "integer class indices of shape [batch] or " if loss_name == "cross_entropy" else ""
        raise TensorforgeError(f"{loss_name} targets must be {kinds}floats shaped like the output {list(shape)}, "
                               f"got {np.dtype(target_dtype)}{list(target_shape)}")  # fmt: skip


def log_probabilities(b: GraphBuilder, out: Value, producer: Node | None, from_logits: bool | None) -> Value:
    """log p over the class axis (1) of ``out``."""
    axis_ok = producer is not None and int(producer.attr("axis", -1)) % 2 == 1
    if producer is not None and producer.op == "LogSoftmax" and axis_ok and not from_logits:
        return out
    if producer is not None and producer.op == "Softmax" and axis_ok and from_logits is not True:
        return b.op("LogSoftmax", [producer.inputs[0]], axis=1)
    if from_logits is False:
        return b.op("Log", [b.op("Max", [out, b.scalar(TINY, out)])])
    return b.op("LogSoftmax", [out], axis=1)


@loss("cross_entropy")
def cross_entropy(b: GraphBuilder, out: Value, target: Value, producer: Node | None,
                  from_logits: bool | None = None) -> Value:  # fmt: skip
    """mean over rows of -sum_c target[c] * log p[c] (class indices become one-hot rows)."""
    n, c = out.shape
    logp = log_probabilities(b, out, producer, from_logits)
    if target.dtype.is_float:
        onehot = target
    else:
        classes = b.const(np.arange(c, dtype=target.dtype.np).reshape(1, c), "classes")
        hit = b.op("Equal", [b.op("Unsqueeze", [target, b.ints([1], "axes")]), classes])
        onehot = b.op("Cast", [hit], to=out.dtype.onnx)
    total = b.op("ReduceSum", [b.mul(onehot, logp)], keepdims=0)
    return b.scale(total, -1.0 / n)


@loss("mse")
def mse(b: GraphBuilder, out: Value, target: Value, producer: Node | None) -> Value:
    """mean of (output - target)^2 over all elements."""
    d = b.sub(out, target)
    return b.op("ReduceMean", [b.mul(d, d)], keepdims=0)
