"""Converters for the ai.onnx.ml domain ops that are plain tensor arithmetic."""

from __future__ import annotations

import numpy as np

from .onnx import Importer, converter

ML = "ai.onnx.ml"


@converter("Binarizer", domain=ML)
def _binarizer(imp: Importer, name, n, inputs, attrs):
    x = inputs[0]
    t = imp.const(np.array(attrs.get("threshold", 0.0), x.type.dtype.np), name + "_threshold")
    (gt,) = imp.emit("Greater", [x, t], {}, name + "_gt")
    return imp.emit("Cast", [gt], {"to": x.type.dtype.onnx}, name, list(n.output))


@converter("ArrayFeatureExtractor", domain=ML)
def _array_feature_extractor(imp: Importer, name, n, inputs, attrs):
    # X[..., indices] with the indices flattened; a 1-D X gives one row
    x, idx = inputs
    (flat,) = imp.emit("Reshape", [idx, imp.const(np.array([-1], np.int64))], {}, name + "_idx")
    (y,) = imp.emit("Gather", [x, flat], {"axis": -1 % max(x.type.rank, 1)}, name + "_gather")
    if x.type.rank == 1:
        return imp.emit("Unsqueeze", [y, imp.const(np.array([0], np.int64))], {}, name, list(n.output))
    return imp.emit("Identity", [y], {}, name, list(n.output))
