"""TensorFlow frontend: Keras 3 models, ``tf.function``s and SavedModel directories -> ONNX (then imported like
any ONNX model).

    proto = to_onnx(keras_model)                 # or a tf.function with an input_signature, or a SavedModel dir

The conversion is tf2onnx's ``convert.from_function`` on a ``tf.function`` that calls the model in inference
mode (``training=False``): ``convert.from_keras`` is broken with Keras 3 (``KeyError: 'keras_tensor_3'``). A
SavedModel directory is loaded with ``tf.saved_model.load`` and its ``serving_default`` signature (or the one
named) is wrapped the same way. Leading ``None`` dims become the symbolic dim ``batch``; inputs and outputs
get the model's names (Keras output names, the signature's argument and output keys) instead of tf2onnx's
``Identity:0``. TensorFlow is an optional dependency: ``pip install 'tensorforge[tensorflow]'``
(tensorflow-cpu and tf2onnx; a large install, imported only when this module is used).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence

import numpy as np

from ..errors import TensorforgeError

OPSET = 18


def import_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    try:
        import tensorflow as tf
        import tf2onnx  # noqa: F401
    except ImportError as e:
        raise TensorforgeError(f"TensorFlow support needs tensorflow-cpu and tf2onnx ({e}): "
                               "pip install 'tensorforge[tensorflow]'") from None  # fmt: skip
    return tf


def is_tensorflow_model(obj) -> bool:
    """A Keras model, a tf.function or a SavedModel directory (without importing TensorFlow for anything else)."""
    if isinstance(obj, str | os.PathLike):
        return os.path.isfile(os.path.join(os.fspath(obj), "saved_model.pb"))
    mod = type(obj).__module__ or ""
    return mod.split(".")[0] in ("keras", "tensorflow", "tf_keras")


def _ident(name: str, fallback: str) -> str:
    name = re.sub(r":\d+$", "", str(name or ""))
    return fallback if not name or name.startswith("keras_tensor") else name


def _signature(tf, model, input_signature):
    """(callable taking positional tensors, [TensorSpec], input names, output names or None)."""
    if isinstance(model, str | os.PathLike):
        return _saved_model(tf, os.fspath(model), None)
    if input_signature is not None:
        specs = list(input_signature)
    elif getattr(model, "input_signature", None) is not None:  # a tf.function with one
        specs = list(model.input_signature)
    elif getattr(model, "inputs", None):  # a built Keras model
        specs = [tf.TensorSpec(t.shape, t.dtype) for t in model.inputs]
    else:
        raise TensorforgeError(
            f"cannot tell the inputs of {type(model).__name__}: build the Keras model (call "
            "it once, or give it keras.Input layers) or pass input_signature=[tf.TensorSpec()]"
        )
    names = [_ident(getattr(s, "name", None), "x" if len(specs) == 1 else f"input{i}") for i, s in enumerate(specs)]
    if getattr(model, "inputs", None) and input_signature is None:
        names = [_ident(getattr(t, "name", None), n) for t, n in zip(model.inputs, names)]
    specs = [tf.TensorSpec(s.shape, s.dtype, name=n) for s, n in zip(specs, names)]
    outs = list(getattr(model, "output_names", None) or []) or None
    keras_like = hasattr(model, "layers") or hasattr(model, "get_weights")
    call = (lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False)) if keras_like else model
    return call, specs, names, outs


def _saved_model(tf, path: str, signature: str | None):
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:
        raise TensorforgeError(f"cannot load the SavedModel {path!r}: {e}") from None
    sigs = getattr(loaded, "signatures", {})
    key = signature or "serving_default"
    if key not in sigs:
        raise TensorforgeError(f"SavedModel {path!r} has no signature {key!r}; it has {sorted(sigs)}")
    fn = sigs[key]
    kw = fn.structured_input_signature[1]
    names = sorted(kw)
    specs = [tf.TensorSpec(kw[n].shape, kw[n].dtype, name=n) for n in names]
    outs = sorted(fn.structured_outputs)

    def call(*xs):
        res = fn(**dict(zip(names, xs)))
        return [res[k] for k in outs]

    call._tensorforge_keep = loaded  # the loaded object must outlive the traced function
    return call, specs, names, outs


def to_onnx(model, input_signature: Sequence | None = None, opset: int = OPSET, signature: str | None = None):
    """``model`` (Keras model, tf.function, or SavedModel directory) as an ``onnx.ModelProto``."""
    tf = import_tensorflow()
    import tf2onnx

    if signature is not None:
        call, specs, names, outs = _saved_model(tf, os.fspath(model), signature)
    else:
        call, specs, names, outs = _signature(tf, model, input_signature)
    fn = tf.function(call, input_signature=specs)
    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=specs, opset=opset)
    except Exception as e:
        raise TensorforgeError(f"tf2onnx could not convert {type(model).__name__}: {type(e).__name__}: {e}") from e
    _tidy(proto, names, outs)
    if isinstance(model, str | os.PathLike):
        proto.graph.name = os.path.basename(os.path.normpath(os.fspath(model)))
    else:
        proto.graph.name = str(getattr(model, "name", None) or type(model).__name__)
    return proto


def _var_names(variables, taken: set[str]) -> list[str]:
    out = []
    for v in variables:
        base = re.sub(r"[^\w.\-]", "_", str(getattr(v, "path", None) or v.name)) or "w"
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        out.append(name)
    return out


@contextlib.contextmanager
def _fused_batch_norms(tf, model):
    """While tracing: Keras BatchNormalization layers on 4-D channels-last inputs call ``fused_batch_norm``
    (inference form), which tf2onnx writes as one ONNX BatchNormalization reading the moving mean and variance
    (graph arguments here): the training step rewrites that node to batch statistics and updates the two as
    running statistics, which ``KerasTrainingStep.write_back`` puts back. Keras computes the same thing as
    separate ops that tf2onnx would fold into constants."""
    import keras

    patched = []
    for layer in getattr(model, "_flatten_layers", lambda: [])():
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        original = layer.call

        def call(inputs, training=None, mask=None, layer=layer, original=original):
            axis = layer.axis[0] if isinstance(layer.axis, list | tuple) else layer.axis
            if len(inputs.shape) != 4 or axis not in (-1, 3) or inputs.dtype != tf.float32:
                return original(inputs, training=training, mask=mask)
            c = inputs.shape[-1]
            gamma = layer.gamma if layer.scale else tf.ones((c,), tf.float32)
            beta = layer.beta if layer.center else tf.zeros((c,), tf.float32)
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(inputs, tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta),
                                                       tf.convert_to_tensor(layer.moving_mean),
                                                       tf.convert_to_tensor(layer.moving_variance),
                                                       epsilon=layer.epsilon, is_training=False)  # fmt: skip
            return y

        layer.call = call
        patched.append(layer)
    try:
        yield [(layer.moving_mean, layer.moving_variance, float(layer.momentum)) for layer in patched]
    finally:
        for layer in patched:
            del layer.call  # the class's method again


def to_onnx_trainable(model, opset: int = OPSET):
    """A Keras 3 model as ONNX for training: ``(proto, [(initializer name, keras variable)])``.

    tf2onnx folds what it sees as constants (a zero bias disappears, batch norm goes into the convolution),
    so the trainable variables are captured as arguments of the traced function instead (Keras 3's
    ``stateless_call``), converted as graph inputs, and then turned into initializers holding their current
    values: named parameters a training step can update and hand back (``set_weights``). The non-trainable
    variables are arguments too: a batch norm's moving mean and variance reach one ONNX BatchNormalization
    (``_fused_batch_norms``) as initializers, which the training step updates as running statistics (the
    pairs returned include them)."""
    tf = import_tensorflow()
    import onnx
    import tf2onnx
    from onnx import helper, numpy_helper

    if not hasattr(model, "stateless_call") or not getattr(model, "inputs", None):
        raise TensorforgeError(f"training a TensorFlow model takes a built Keras 3 model, not {type(model).__name__}")
    call, specs, names, outs = _signature(tf, model, None)
    variables = list(model.trainable_variables)
    fixed = list(model.non_trainable_variables)
    taken = set(names)
    wnames = _var_names(variables, taken)
    fnames = _var_names(fixed, taken)
    n, nw = len(specs), len(variables)
    wspecs = [tf.TensorSpec(v.shape, v.dtype, name=w) for v, w in zip(variables + fixed, wnames + fnames)]

    def stateless(*args):
        xs = list(args[:n])
        out, _ = model.stateless_call(list(args[n : n + nw]), list(args[n + nw :]), xs if n > 1 else xs[0],
                                      training=False)  # fmt: skip
        return out

    with _fused_batch_norms(tf, model) as norms:
        fn = tf.function(stateless, input_signature=specs + wspecs)
        try:
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=specs + wspecs, opset=opset)
        except Exception as e:
            raise TensorforgeError(f"tf2onnx could not convert {type(model).__name__}: {type(e).__name__}: {e}") from e
    _tidy(proto, names, outs)
    g = proto.graph
    present = {i.name for i in g.input}
    missing = [w for w in wnames if w not in present]
    if missing:
        raise TensorforgeError(f"Keras model '{model.name}': variable(s) {missing} do not reach the output")
    pairs = list(zip(wnames, variables)) + [(f, v) for f, v in zip(fnames, fixed) if f in present]
    values = {w: numpy_helper.from_array(np.asarray(v.numpy()), w) for w, v in pairs}
    fixed_name = {id(v): f for f, v in zip(fnames, fixed)}
    momentum = {fixed_name[id(v)]: m for mean, var, m in norms for v in (mean, var) if id(v) in fixed_name}
    for node in g.node:  # Keras's momentum on the batch norms (tf2onnx writes none)
        if node.op_type == "BatchNormalization" and len(node.input) == 5 and node.input[3] in momentum:
            node.attribute.append(helper.make_attribute("momentum", momentum[node.input[3]]))
    kept = [i for i in g.input if i.name not in values]
    del g.input[:]
    g.input.extend(kept)
    g.initializer.extend(values.values())
    g.name = str(getattr(model, "name", None) or type(model).__name__)
    onnx.checker.check_model(proto)
    return proto, pairs


def _tidy(proto, in_names: list[str], out_names: list[str] | None) -> None:
    """Symbolic leading dims named ``batch``; the model's output names (tf2onnx writes ``Identity:0``)."""
    g = proto.graph
    for v in [*g.input, *g.output]:
        dims = v.type.tensor_type.shape.dim
        if len(dims) and dims[0].dim_param:
            dims[0].dim_param = "batch"
    if not out_names or len(out_names) != len(g.output):
        return
    taken = {i.name for i in g.input} | {n for node in g.node for n in node.output}
    rename = {}
    for o, new in zip(g.output, out_names):
        new = re.sub(r"[^\w.\-/]", "_", str(new)) or o.name
        if new != o.name and new not in taken:
            rename[o.name] = new
            taken.add(new)
    for node in g.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    for o in g.output:
        o.name = rename.get(o.name, o.name)


__all__ = ["import_tensorflow", "is_tensorflow_model", "to_onnx", "to_onnx_trainable"]
