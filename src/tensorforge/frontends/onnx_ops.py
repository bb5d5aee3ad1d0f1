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
