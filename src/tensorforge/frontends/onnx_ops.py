"""Converters for ops whose ONNX form differs from the IR form or changed across opsets (data movement,
indexing, generation). Registered on import by ``frontends/onnx.py``."""

from __future__ import annotations

import numpy as np

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
