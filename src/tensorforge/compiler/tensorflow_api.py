"""``tfg.from_tensorflow``: a Keras 3 model, a ``tf.function`` or a SavedModel directory, compiled.

    m = tfg.from_tensorflow(keras_model)                  # a CompiledModel taking numpy arrays (NHWC as in Keras)
    m = tfg.from_tensorflow("saved_model_dir/")           # its serving_default signature

The model is converted to ONNX by ``frontends/tensorflow.py`` and compiled like any ONNX model.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..frontends.tensorflow import to_onnx
from .api import compile


def from_tensorflow(model, input_signature: Sequence | None = None, *, signature: str | None = None, **compile_kw):
    """Compile a TensorFlow/Keras model for this machine; the result takes and returns numpy arrays. A leading
    ``None`` dim (the batch) stays symbolic: the model compiles once per batch size on first use."""
    proto = to_onnx(model, input_signature, signature=signature)
    return compile(proto, name=compile_kw.pop("name", proto.graph.name), **compile_kw)


__all__ = ["from_tensorflow"]
