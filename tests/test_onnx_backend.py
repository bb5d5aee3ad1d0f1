"""ONNX's own conformance tests (onnx.backend.test) against tensorforge.backend, filtered to the core op
set. Tests that are excluded are listed with the reason."""

from __future__ import annotations

import re

import onnx.backend.test

import tensorforge.backend as backend

CORE_OPS = [
    "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Neg",
    "Softmax", "LogSoftmax", "Reshape", "Flatten", "Transpose", "Concat", "Identity", "Constant", "Conv",
    "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization", "Clip", "ReduceMean", "ReduceSum",
    "ReduceMax",
]  # fmt: skip

# test name pattern -> why it is not run
EXCLUDED = {
    r"test_identity_sequence": "sequence types are not supported (tensors only)",
    r"test_identity_opt": "optional types are not supported (tensors only)",
    r"test_constant_pad": "a Pad test (matched by the 'constant' prefix); Pad is not in the core op set",
    r"test_constantofshape": "a ConstantOfShape test (matched by the 'constant' prefix); not in the core op set",
    r"test_maxpool_with_argmax": "MaxPool's Indices output is not supported",
    r"test_reduce_max_empty_set_bool": "empty bool reductions are not supported",
}


def _snake(op: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()


bt = onnx.backend.test.BackendTest(backend, __name__)
bt.include("|".join(rf"test_{_snake(op)}(_|$)" for op in CORE_OPS))
for pattern in EXCLUDED:
    bt.exclude(pattern)
globals().update(bt.enable_report().test_cases)
