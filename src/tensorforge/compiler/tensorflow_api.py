"""``tfg.from_tensorflow``: a Keras 3 model, a ``tf.function`` or a SavedModel directory, compiled.

    m = tfg.from_tensorflow(keras_model)                  # a CompiledModel taking numpy arrays (NHWC as in Keras)
    m = tfg.from_tensorflow("saved_model_dir/")           # its serving_default signature

The model is converted to ONNX by ``frontends/tensorflow.py`` and compiled like any ONNX model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..frontends.tensorflow import is_tensorflow_model, to_onnx, to_onnx_trainable
from ..train.step import STEP_KINDS, TrainingStep
from .api import compile


def from_tensorflow(model, input_signature: Sequence | None = None, *, signature: str | None = None, **compile_kw):
    """Compile a TensorFlow/Keras model for this machine; the result takes and returns numpy arrays. A leading
    ``None`` dim (the batch) stays symbolic: the model compiles once per batch size on first use."""
    proto = to_onnx(model, input_signature, signature=signature)
    return compile(proto, name=compile_kw.pop("name", proto.graph.name), **compile_kw)


class KerasTrainingStep(TrainingStep):
    """A Keras 3 model's training step, compiled (``tfg.training_step(keras_model, ...)``): the model's
    trainable variables are the step's parameters, named by their Keras paths (``sequential/dense/kernel``
    -> ``sequential_dense_kernel``); a batch norm's moving mean and variance are its running statistics, updated
    in training with the layer's momentum. ``write_back()`` puts the trained values into the Keras model with
    ``set_weights``; ``fit`` below does so after training."""

    def __init__(self, keras_model, loss: str = "cross_entropy", optimizer=None, **options):
        proto, self.variables = to_onnx_trainable(keras_model)
        trainable = {id(v) for v in keras_model.trainable_variables}
        options.setdefault("params", [n for n, v in self.variables if id(v) in trainable])
        super().__init__(proto, loss, optimizer, **options)
        self.keras_model = keras_model

    def write_back(self) -> None:
        """The trained parameters and the batch norms' moving statistics into the Keras model
        (``model.set_weights``, in its weight order)."""
        state = self.state_dict()
        by_var = {id(v): state[self.source_names.get(n, n)] for n, v in self.variables
                  if self.source_names.get(n, n) in state}  # fmt: skip
        weights = [by_var.get(id(v), None) for v in self.keras_model.weights]
        current = self.keras_model.get_weights()
        self.keras_model.set_weights([np.asarray(w, c.dtype).reshape(c.shape) if w is not None else c
                                      for w, c in zip(weights, current)])  # fmt: skip

    def fit(self, x, y, epochs: int, batch_size: int, **kw):
        """``train.trainer.fit`` on this step, then ``write_back``."""
        from ..train.trainer import fit

        h = fit(self, x, y, epochs, batch_size, **kw)
        self.write_back()
        return h


STEP_KINDS.append((lambda m: is_tensorflow_model(m) and hasattr(m, "stateless_call"), KerasTrainingStep))

__all__ = ["KerasTrainingStep", "from_tensorflow"]
