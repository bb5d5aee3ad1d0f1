"""Converters for ops whose ONNX form differs from the IR form or changed across opsets (data movement,
indexing, generation). Registered on import by ``frontends/onnx.py``."""

from __future__ import annotations

import numpy as np

from ..ops.registry import Attr
from .onnx import Importer, converter


@converter("Split")
def _split(imp: Importer, name, n, inputs, attrs):
    # IR Split: sizes as input 1, or `num_outputs` (equal pieces); older opsets give sizes as an attribute
    ins = list(inputs[:2])
    if "split" in attrs:
        ins = [inputs[0], imp.const(np.array(attrs.pop("split"), np.int64), name + "_split")]
    if len(ins) < 2 or ins[1] is None:
        ins = ins[:1]
        attrs.setdefault("num_outputs", len(n.output))
    return imp.emit("Split", ins, attrs, name, list(n.output))


@converter("Pad", until=10)
def _pad_legacy(imp: Importer, name, n, inputs, attrs):
    pads = attrs.pop("pads", None)
    if pads is None:
        pads = attrs.pop("paddings")
    dt = inputs[0].type.dtype.np
    value = imp.const(np.array(attrs.pop("value", 0.0), dt), name + "_value")
    ins = [inputs[0], imp.const(np.array(pads, np.int64), name + "_pads"), value]
    return imp.emit("Pad", ins, attrs, name, list(n.output))


@converter("Scatter")
def _scatter(imp: Importer, name, n, inputs, attrs):
    return imp.emit("ScatterElements", inputs, attrs, name, list(n.output))


@converter("Compress")
def _compress(imp: Importer, name, n, inputs, attrs):
    # a constant condition selects fixed positions: a Gather (static shape, compiled); else data-dependent
    x, cond = inputs
    if cond.is_const:
        idx = imp.const(np.flatnonzero(np.asarray(cond.const, bool)).astype(np.int64), name + "_idx")
        if "axis" not in attrs:
            (x,) = imp.emit("Reshape", [x, imp.const(np.array([-1], np.int64))], {}, name + "_flat")
            return imp.emit("Gather", [x, idx], {"axis": 0}, name, list(n.output))
        return imp.emit("Gather", [x, idx], {"axis": attrs["axis"]}, name, list(n.output))
    return imp.emit("Compress", inputs, attrs, name, list(n.output))


@converter("PRelu", until=6)
def _prelu_legacy(imp: Importer, name, n, inputs, attrs):
    # before opset 7 a 1-D slope of size C applies per channel (dim 1), not numpy-broadcast over the last dim
    x, slope = inputs
    attrs.pop("consumed_inputs", None)
    if slope.type.rank == 1 and x.type.rank > 2 and slope.type.shape[0] == x.type.shape[1] != x.type.shape[-1]:
        shape = imp.const(np.array([slope.type.shape[0]] + [1] * (x.type.rank - 2), np.int64), name + "_shape")
        (slope,) = imp.emit("Reshape", [slope, shape], {}, name + "_slope")
    return imp.emit("PRelu", [x, slope], attrs, name, list(n.output))


@converter("Dropout")
def _dropout(imp: Importer, name, n, inputs, attrs):
    # inference: the identity, with an all-true mask; training mode (a random mask) is not supported
    x = inputs[0]
    training = inputs[2] if len(inputs) > 2 else None
    ratio = inputs[1] if len(inputs) > 1 else None
    if attrs.get("is_test", 1) == 0 and float(attrs.get("ratio", 0.5)) > 0:
        _training_unsupported(imp, name)
    if training is not None and (not training.is_const or bool(np.asarray(training.const))):
        if ratio is None or not ratio.is_const or float(np.asarray(ratio.const)) > 0 or not training.is_const:
            _training_unsupported(imp, name)
    outs = imp.emit("Identity", [x], {}, name, [n.output[0]])
    if len(n.output) > 1 and n.output[1]:
        shape = imp.const(np.array(x.type.shape, np.int64), name + "_shape")
        true = np.ones((1,), np.bool_)
        outs += imp.emit("ConstantOfShape", [shape], {"value": true}, name + "_mask", [n.output[1]])
    return outs


def _training_unsupported(imp: Importer, name: str):
    from ..errors import UnsupportedError, node_context

    raise UnsupportedError(f"{node_context(imp.name, name, 'Dropout')}: training mode (a random mask) is not "
                           "supported; export the model for inference")  # fmt: skip


@converter("GroupNormalization", until=20)
def _group_norm_18(imp: Importer, name, n, inputs, attrs):
    # opset 18 scales and shifts per group; opset 21 (the IR form) per channel: repeat each group's value
    x, scale, bias = inputs
    g = int(attrs["num_groups"])
    c = x.type.shape[1]
    per = []
    for i, v in enumerate((scale, bias)):
        if v.is_const:
            per.append(imp.const(np.repeat(np.asarray(v.const), c // g), f"{name}_p{i}"))
            continue
        (r,) = imp.emit("Reshape", [v, imp.const(np.array([g, 1], np.int64))], {}, f"{name}_p{i}r")
        (e,) = imp.emit("Expand", [r, imp.const(np.array([g, c // g], np.int64))], {}, f"{name}_p{i}e")
        per += imp.emit("Reshape", [e, imp.const(np.array([c], np.int64))], {}, f"{name}_p{i}")
    return imp.emit("GroupNormalization", [x, *per], attrs, name, list(n.output))


@converter("LpPool", attrs={"p": Attr(2, min=1)})
def _lp_pool(imp: Importer, name, n, inputs, attrs):
    # sum of |x|^p over each window is a depthwise convolution with a kernel of ones (pads add zeros)
    x = inputs[0]
    p = int(attrs.pop("p", 2))
    c = x.type.shape[1]
    kernel = list(attrs.pop("kernel_shape"))
    attrs.pop("ceil_mode", None)
    w = imp.const(np.ones((c, 1, *kernel), x.type.dtype.np), name + "_ones")
    if p == 2:
        (t,) = imp.emit("Mul", [x, x], {}, name + "_sq")
    else:
        (a,) = imp.emit("Abs", [x], {}, name + "_abs")
        (t,) = imp.emit("Pow", [a, imp.const(np.array(p, x.type.dtype.np))], {}, name + "_pow")
    (s,) = imp.emit("Conv", [t, w], {**attrs, "group": c}, name + "_sum")
    if p == 2:
        return imp.emit("Sqrt", [s], {}, name, list(n.output))
    return imp.emit("Pow", [s, imp.const(np.array(1.0 / p, x.type.dtype.np))], {}, name, list(n.output))


def _as_resize(imp: Importer, name, n, x, scales, mode: str):
    """Upsample / opset-10 Resize: asymmetric coordinates, nearest rounds down (np.repeat for integer
    scales), linear interpolates."""
    attrs = {"mode": "linear" if mode in ("linear", "bilinear") else "nearest",
             "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}  # fmt: skip
    return imp.emit("Resize", [x, None, scales], attrs, name, list(n.output))


@converter("Upsample")
def _upsample(imp: Importer, name, n, inputs, attrs):
    scales = inputs[1] if len(inputs) > 1 and inputs[1] is not None else None
    if scales is None:
        scales = imp.const(np.array(attrs["scales"], np.float32), name + "_scales")
    return _as_resize(imp, name, n, inputs[0], scales, attrs.get("mode", "nearest"))


@converter("Resize", until=10)
def _resize_10(imp: Importer, name, n, inputs, attrs):
    return _as_resize(imp, name, n, inputs[0], inputs[1], attrs.get("mode", "nearest"))


@converter("Erfc")
def _erfc(imp: Importer, name, n, inputs, attrs):
    """erfc(x) = 1 - erf(x): not an ONNX op, but tf2onnx writes it (TensorFlow's exact GELU) in the default
    domain, and ONNX Runtime runs it."""
    x = inputs[0]
    (erf,) = imp.emit("Erf", [x], {}, name + "_erf")
    one = imp.const(np.array(1, x.type.dtype.np), name + "_one")
    return imp.emit("Sub", [one, erf], {}, name, list(n.output))
