"""Gradient of every differentiable op, on fresh random inputs, three ways:

* the gradient graph evaluated with the ops' numpy references in float64 vs central finite differences
  (checks the rules themselves, to ~1e-6);
* the gradient graph compiled to native code and run in float32 vs finite differences (relative error
  <= 1e-3, norm-wise);
* where torch is installed, torch.autograd in float64 vs the same numbers.

The output is projected on a random cotangent, so every case is a full vector-Jacobian product.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge.autodiff import VJP_RULES, evaluate_graph, grad, numerical_vjp, relative_error
from tensorforge.autodiff.rules_elementwise import NOT_DIFFERENTIATED
from tensorforge.ir import DType, Graph
from tensorforge.ir.graph import Node, TensorType, Value
from tensorforge.ops.registry import infer_node

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - torch is in the dev extras
    torch = None


@dataclass(frozen=True)
class In:
    """A random graph input: shape and value range (differentiable when float)."""

    shape: tuple
    low: float = -2.0
    high: float = 2.0
    dtype: str = "float32"

    def sample(self, rng):
        if np.dtype(self.dtype).kind in "iu":
            return rng.integers(int(self.low), int(self.high) + 1, size=self.shape).astype(self.dtype)
        if np.dtype(self.dtype) == np.bool_:
            return rng.random(self.shape) > 0.5
        return rng.uniform(self.low, self.high, size=self.shape).astype(self.dtype)


@dataclass
class Case:
    op: str
    inputs: list  # In | np.ndarray (a constant) | None (omitted optional input)
    attrs: dict = field(default_factory=dict)
    torch: object = None  # fn(list of tensors, in input order; constants as tensors) -> tensor
    id: str = ""
    n_outputs: int = 1

    def __str__(self):
        return self.id or self.op


def c(*values, dtype=np.int64):
    return np.array(values, dtype=dtype)


U = lambda *shape, lo=-2.0, hi=2.0: In(tuple(shape), lo, hi)  # noqa: E731
X = U(3, 4)


def tw(fn):
    """A torch function of the first tensor only."""
    return lambda t: fn(t[0])


CASES = [
    # -- elementwise, unary --------------------------------------------------------------------------
    Case("Relu", [X], torch=tw(torch.relu) if torch else None),
    Case("Sigmoid", [X], torch=tw(torch.sigmoid) if torch else None),
    Case("Tanh", [X], torch=tw(torch.tanh) if torch else None),
    Case("Exp", [X], torch=tw(torch.exp) if torch else None),
    Case("Log", [U(3, 4, lo=0.2, hi=3)], torch=tw(torch.log) if torch else None),
    Case("Sqrt", [U(3, 4, lo=0.2, hi=3)], torch=tw(torch.sqrt) if torch else None),
    Case("Neg", [X], torch=tw(torch.neg) if torch else None),
    Case("Abs", [X], torch=tw(torch.abs) if torch else None),
    Case("Reciprocal", [U(3, 4, lo=0.5, hi=2)], torch=tw(torch.reciprocal) if torch else None),
    Case("Floor", [X], torch=tw(torch.floor) if torch else None),
    Case("Ceil", [X], torch=tw(torch.ceil) if torch else None),
    Case("Round", [X], torch=tw(torch.round) if torch else None),
    Case("Sign", [X], torch=tw(torch.sign) if torch else None),
    Case("Erf", [X], torch=tw(torch.erf) if torch else None),
    Case("Sin", [X], torch=tw(torch.sin) if torch else None),
    Case("Cos", [X], torch=tw(torch.cos) if torch else None),
    Case("Tan", [U(3, 4, lo=-1, hi=1)], torch=tw(torch.tan) if torch else None),
    Case("Asin", [U(3, 4, lo=-0.9, hi=0.9)], torch=tw(torch.asin) if torch else None),
    Case("Acos", [U(3, 4, lo=-0.9, hi=0.9)], torch=tw(torch.acos) if torch else None),
    Case("Atan", [X], torch=tw(torch.atan) if torch else None),
    Case("Sinh", [X], torch=tw(torch.sinh) if torch else None),
    Case("Cosh", [X], torch=tw(torch.cosh) if torch else None),
    Case("Asinh", [X], torch=tw(torch.asinh) if torch else None),
    Case("Acosh", [U(3, 4, lo=1.2, hi=3)], torch=tw(torch.acosh) if torch else None),
    Case("Atanh", [U(3, 4, lo=-0.9, hi=0.9)], torch=tw(torch.atanh) if torch else None),
    Case("LeakyRelu", [X], {"alpha": 0.1}, torch=tw(lambda x: F.leaky_relu(x, 0.1)) if torch else None),
    Case("Elu", [X], {"alpha": 0.7}, torch=tw(lambda x: F.elu(x, 0.7)) if torch else None),
    Case("Selu", [X], torch=tw(F.selu) if torch else None),
    Case("Celu", [X], {"alpha": 1.5}, torch=tw(lambda x: F.celu(x, 1.5)) if torch else None),
    Case(
        "HardSigmoid",
        [X],
        {"alpha": 0.3, "beta": 0.4},
        torch=tw(lambda x: torch.clamp(0.3 * x + 0.4, 0, 1)) if torch else None,
    ),
    Case("HardSwish", [U(3, 4, lo=-4, hi=4)], torch=tw(F.hardswish) if torch else None),
    Case("Softplus", [X], torch=tw(F.softplus) if torch else None),
    Case("Softsign", [X], torch=tw(F.softsign) if torch else None),
    Case("Mish", [X], torch=tw(F.mish) if torch else None),
    Case("Gelu", [X], torch=tw(F.gelu) if torch else None),
    Case(
        "Gelu",
        [X],
        {"approximate": "tanh"},
        torch=tw(lambda x: F.gelu(x, approximate="tanh")) if torch else None,
        id="Gelu-tanh",
    ),
    Case("ThresholdedRelu", [X], {"alpha": 0.5}, torch=tw(lambda x: torch.where(x > 0.5, x, 0 * x)) if torch else None),
    Case(
        "Shrink",
        [X],
        {"lambd": 0.6, "bias": 0.2},
        torch=tw(lambda x: torch.where(x > 0.6, x - 0.2, torch.where(x < -0.6, x + 0.2, 0 * x))) if torch else None,
    ),
    Case("Identity", [X], torch=tw(lambda x: x) if torch else None),
    Case("Cast", [X], {"to": 11}, torch=tw(lambda x: x) if torch else None),
    Case("CastLike", [X, np.zeros((), np.float64)], torch=tw(lambda x: x) if torch else None),
    # -- elementwise, binary and variadic, with broadcasting -----------------------------------------
    Case("Add", [U(3, 4), U(4)], torch=(lambda t: t[0] + t[1]) if torch else None),
    Case("Sub", [U(2, 1, 4), U(3, 1)], torch=(lambda t: t[0] - t[1]) if torch else None),
    Case("Mul", [U(3, 4), U(3, 1)], torch=(lambda t: t[0] * t[1]) if torch else None),
    Case("Div", [U(3, 4), U(4, lo=0.5, hi=2)], torch=(lambda t: t[0] / t[1]) if torch else None),
    Case("Pow", [U(3, 4, lo=0.5, hi=2), U(3, 4, lo=-1, hi=2)], torch=(lambda t: t[0] ** t[1]) if torch else None),
    Case("Pow", [U(3, 4), c(3, dtype=np.int64)], torch=(lambda t: t[0] ** 3) if torch else None, id="Pow-int"),
    Case(
        "Mod",
        [U(3, 4, lo=1, hi=5), U(3, 4, lo=0.7, hi=0.9)],
        {"fmod": 1},
        torch=(lambda t: torch.fmod(t[0], t[1])) if torch else None,
    ),
    Case("PRelu", [U(2, 3, 4), U(3, 1)], torch=(lambda t: torch.where(t[0] < 0, t[0] * t[1], t[0])) if torch else None),
    Case(
        "Max",
        [U(3, 4), U(4), U(3, 1)],
        torch=(lambda t: torch.maximum(torch.maximum(t[0], t[1]), t[2])) if torch else None,
    ),  # fmt: skip
    Case("Min", [U(3, 4), U(3, 4)], torch=(lambda t: torch.minimum(t[0], t[1])) if torch else None),
    Case("Sum", [U(3, 4), U(4), U(3, 4)], torch=(lambda t: t[0] + t[1] + t[2]) if torch else None),
    Case("Mean", [U(3, 4), U(3, 4)], torch=(lambda t: (t[0] + t[1]) / 2) if torch else None),
    Case(
        "Clip",
        [X, np.array(-0.5, np.float32), np.array(1.0, np.float32)],
        torch=(lambda t: torch.clamp(t[0], -0.5, 1.0)) if torch else None,
    ),
    Case("Clip", [X, None, U()], torch=(lambda t: torch.minimum(t[0], t[2])) if torch else None, id="Clip-max-input"),
    Case(
        "Where",
        [np.random.default_rng(1).random((3, 4)) > 0.5, U(3, 4), U(4)],
        torch=(lambda t: torch.where(t[0], t[1], t[2])) if torch else None,
    ),
    # -- matrix products ------------------------------------------------------------------------------
    Case("Gemm", [U(5, 4), U(4, 3), U(3)], torch=(lambda t: t[0] @ t[1] + t[2]) if torch else None),
    Case(
        "Gemm",
        [U(4, 5), U(3, 4), U(5, 1)],
        {"transA": 1, "transB": 1, "alpha": 0.7, "beta": 1.3},
        torch=(lambda t: 0.7 * t[0].T @ t[1].T + 1.3 * t[2]) if torch else None,
        id="Gemm-tAtB",
    ),
    Case("Gemm", [U(4, 5), U(4, 3)], {"transA": 1}, torch=(lambda t: t[0].T @ t[1]) if torch else None, id="Gemm-tA"),
    Case(
        "Gemm",
        [U(5, 4), U(3, 4), U(5, 3)],
        {"transB": 1, "beta": 0.5},
        torch=(lambda t: t[0] @ t[1].T + 0.5 * t[2]) if torch else None,
        id="Gemm-tB",
    ),
    Case("MatMul", [U(5, 4), U(4, 3)], torch=(lambda t: t[0] @ t[1]) if torch else None),
    Case("MatMul", [U(2, 5, 4), U(4, 3)], torch=(lambda t: t[0] @ t[1]) if torch else None, id="MatMul-3x2"),
    Case("MatMul", [U(2, 1, 3, 4), U(3, 4, 2)], torch=(lambda t: t[0] @ t[1]) if torch else None, id="MatMul-bcast"),
    Case("MatMul", [U(4), U(2, 4, 3)], torch=(lambda t: t[0] @ t[1]) if torch else None, id="MatMul-1xN"),
    Case("MatMul", [U(2, 3, 4), U(4)], torch=(lambda t: t[0] @ t[1]) if torch else None, id="MatMul-Nx1"),
    Case("Einsum", [U(5, 4), U(4, 3)], {"equation": "ij,jk->ik"},
         torch=(lambda t: torch.einsum("ij,jk->ik", *t)) if torch else None),
    Case("Einsum", [U(2, 1, 3, 4), U(5, 4, 2)], {"equation": "...ij,...jk->...ik"},
         torch=(lambda t: torch.einsum("...ij,...jk->...ik", *t)) if torch else None, id="Einsum-batch-bcast"),
    Case("Einsum", [U(3, 4), U(3, 5)], {"equation": "bi,bj->bij"},
         torch=(lambda t: torch.einsum("bi,bj->bij", *t)) if torch else None, id="Einsum-outer"),
    Case("Einsum", [U(3, 4, 2), U(4)], {"equation": "ijk,j->k"},
         torch=(lambda t: torch.einsum("ijk,j->k", *t)) if torch else None, id="Einsum-sum-only-one-side"),
    Case("Einsum", [U(2, 3, 4)], {"equation": "abc->ca"},
         torch=tw(lambda x: torch.einsum("abc->ca", x)) if torch else None, id="Einsum-unary"),
    # -- convolution ----------------------------------------------------------------------------------
    Case(
        "Conv",
        [U(2, 3, 6, 5), U(4, 3, 3, 3), U(4)],
        {"pads": [1, 1, 1, 1]},
        torch=(lambda t: F.conv2d(t[0], t[1], t[2], padding=1)) if torch else None,
    ),
    Case(
        "Conv",
        [U(2, 4, 7, 6), U(6, 2, 3, 2)],
        {"strides": [2, 1], "pads": [1, 0, 0, 1], "group": 2},
        id="Conv-stride-group-asym",
    ),
    Case(
        "Conv",
        [U(1, 2, 8, 7), U(3, 2, 3, 3), U(3)],
        {"strides": [2, 2], "dilations": [2, 1], "pads": [2, 1, 2, 1]},
        torch=(lambda t: F.conv2d(t[0], t[1], t[2], stride=2, dilation=(2, 1), padding=(2, 1))) if torch else None,
        id="Conv-dilated",
    ),
    Case(
        "Conv",
        [U(2, 3, 9), U(2, 3, 4)],
        {"strides": [3]},
        torch=(lambda t: F.conv1d(t[0], t[1], stride=3)) if torch else None,
        id="Conv-1d",
    ),
    Case("Conv", [U(1, 2, 4, 4, 3), U(2, 2, 2, 2, 2)], {"pads": [1, 0, 1, 0, 1, 0]}, id="Conv-3d"),
    Case(
        "Conv",
        [U(2, 4, 5, 5), U(4, 1, 3, 3)],
        {"group": 4, "pads": [1, 1, 1, 1]},
        torch=(lambda t: F.conv2d(t[0], t[1], padding=1, groups=4)) if torch else None,
        id="Conv-depthwise",
    ),
    # -- pooling --------------------------------------------------------------------------------------
    Case(
        "MaxPool",
        [U(2, 3, 6, 6)],
        {"kernel_shape": [2, 2], "strides": [2, 2]},
        torch=tw(lambda x: F.max_pool2d(x, 2)) if torch else None,
    ),
    Case(
        "MaxPool",
        [U(2, 2, 7, 7)],
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        torch=tw(lambda x: F.max_pool2d(x, 3, 2, 1)) if torch else None,
        id="MaxPool-overlap-pad",
    ),
    Case(
        "MaxPool",
        [U(1, 2, 7, 8)],
        {"kernel_shape": [2, 3], "strides": [2, 2], "ceil_mode": 1},
        torch=tw(lambda x: F.max_pool2d(x, (2, 3), 2, ceil_mode=True)) if torch else None,
        id="MaxPool-ceil",
    ),
    Case(
        "MaxPool",
        [U(1, 2, 9, 9)],
        {"kernel_shape": [2, 2], "dilations": [2, 2]},
        torch=tw(lambda x: F.max_pool2d(x, 2, 1, dilation=2)) if torch else None,
        id="MaxPool-dilated",
    ),
    Case(
        "MaxPool",
        [U(2, 3, 9)],
        {"kernel_shape": [3], "strides": [2]},
        torch=tw(lambda x: F.max_pool1d(x, 3, 2)) if torch else None,
        id="MaxPool-1d",
    ),
    Case(
        "AveragePool",
        [U(2, 3, 6, 6)],
        {"kernel_shape": [2, 2], "strides": [2, 2]},
        torch=tw(lambda x: F.avg_pool2d(x, 2)) if torch else None,
    ),
    Case(
        "AveragePool",
        [U(1, 2, 7, 7)],
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        torch=tw(lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)) if torch else None,
        id="AvgPool-pad",
    ),
    Case(
        "AveragePool",
        [U(1, 2, 7, 7)],
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1},
        torch=tw(lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=True)) if torch else None,
        id="AvgPool-include-pad",
    ),  # fmt: skip
    Case("GlobalAveragePool", [U(2, 3, 4, 5)], torch=tw(lambda x: x.mean((2, 3), keepdim=True)) if torch else None),
    Case("GlobalMaxPool", [U(2, 3, 4, 5)], torch=tw(lambda x: x.amax((2, 3), keepdim=True)) if torch else None),
    # -- reductions -----------------------------------------------------------------------------------
    Case("ReduceSum", [U(3, 4, 5), c(1)], torch=tw(lambda x: x.sum(1, keepdim=True)) if torch else None),
    Case(
        "ReduceSum", [U(3, 4, 5)], {"keepdims": 0}, torch=tw(lambda x: x.sum()) if torch else None, id="ReduceSum-all"
    ),
    Case("ReduceMean", [U(3, 4, 5), c(0, 2)], {"keepdims": 0}, torch=tw(lambda x: x.mean((0, 2))) if torch else None),
    Case("ReduceMax", [U(3, 4, 5), c(-1)], torch=tw(lambda x: x.amax(-1, keepdim=True)) if torch else None),
    Case("ReduceMin", [U(3, 4, 5), c(0)], {"keepdims": 0}, torch=tw(lambda x: x.amin(0)) if torch else None),
    Case("ReduceSumSquare", [U(3, 4), c(1)], torch=tw(lambda x: (x * x).sum(1, keepdim=True)) if torch else None),
    Case("ReduceL1", [U(3, 4), c(1)], torch=tw(lambda x: x.abs().sum(1, keepdim=True)) if torch else None),
    Case("ReduceL2", [U(3, 4), c(0)], torch=tw(lambda x: x.norm(dim=0, keepdim=True)) if torch else None),
    Case("ReduceLogSumExp", [U(3, 4), c(1)], torch=tw(lambda x: x.logsumexp(1, keepdim=True)) if torch else None),
    Case(
        "ReduceLogSum",
        [U(3, 4, lo=0.5, hi=2), c(1)],
        torch=tw(lambda x: x.sum(1, keepdim=True).log()) if torch else None,
    ),
    # -- softmax, normalization -----------------------------------------------------------------------
    Case("Softmax", [U(3, 5)], torch=tw(lambda x: torch.softmax(x, -1)) if torch else None),
    Case(
        "Softmax",
        [U(2, 3, 4)],
        {"axis": 1},
        torch=tw(lambda x: torch.softmax(x, 1)) if torch else None,
        id="Softmax-axis1",
    ),
    Case("LogSoftmax", [U(3, 5)], torch=tw(lambda x: torch.log_softmax(x, -1)) if torch else None),
    Case(
        "LogSoftmax",
        [U(2, 3, 4)],
        {"axis": 0},
        torch=tw(lambda x: torch.log_softmax(x, 0)) if torch else None,
        id="LogSoftmax-axis0",
    ),
    Case(
        "BatchNormalization",
        [U(2, 3, 4, 2), U(3), U(3), U(3), U(3, lo=0.5, hi=2)],
        {"epsilon": 1e-3},
        torch=(
            lambda t: (
                (t[0] - t[3][:, None, None]) / (t[4][:, None, None] + 1e-3).sqrt() * t[1][:, None, None]
                + t[2][:, None, None]
            )
        )
        if torch
        else None,
    ),
    # -- data movement --------------------------------------------------------------------------------
    Case("Reshape", [U(2, 3, 4), c(4, -1)], torch=tw(lambda x: x.reshape(4, -1)) if torch else None),
    Case("Flatten", [U(2, 3, 4)], {"axis": 2}, torch=tw(lambda x: x.reshape(6, 4)) if torch else None),
    Case("Squeeze", [U(2, 1, 4), c(1)], torch=tw(lambda x: x.squeeze(1)) if torch else None),
    Case("Unsqueeze", [U(2, 4), c(0, 3)], torch=tw(lambda x: x[None, :, :, None]) if torch else None),
    Case("Transpose", [U(2, 3, 4)], {"perm": [2, 0, 1]}, torch=tw(lambda x: x.permute(2, 0, 1)) if torch else None),
    Case("Concat", [U(2, 3), U(2, 1), U(2, 4)], {"axis": 1}, torch=(lambda t: torch.cat(t, 1)) if torch else None),
    Case(
        "Slice",
        [U(5, 6), c(1, -1), c(4, 0), c(0, 1), c(2, -2)],
        torch=(lambda t: t[0][1:4:2][:, torch.tensor([5, 3, 1])]) if torch else None,
    ),
    Case("Slice", [U(4, 6), c(1), c(5), c(1)], torch=tw(lambda x: x[:, 1:5]) if torch else None, id="Slice-simple"),
    Case("Expand", [U(3, 1), c(2, 3, 4)], torch=tw(lambda x: x.expand(2, 3, 4)) if torch else None),
    Case("Split", [U(4, 6), c(2, 4)], {"axis": 1}, n_outputs=2,
         torch=tw(lambda x: torch.split(x, [2, 4], 1)[0]) if torch else None),
    Case("Tile", [U(2, 3), c(2, 3)], torch=tw(lambda x: x.repeat(2, 3)) if torch else None),
    Case("Pad", [U(3, 4), c(1, 0, 2, 1)], torch=tw(lambda x: F.pad(x, (0, 1, 1, 2))) if torch else None),
    Case("Pad", [U(3, 4), c(-1, 1, 0, 2), np.array(0.5, np.float32)],
         torch=tw(lambda x: F.pad(x, (1, 2, -1, 0), value=0.5)) if torch else None, id="Pad-crop"),
    Case("Trilu", [U(4, 5), c(1)], torch=tw(lambda x: torch.triu(x, 1)) if torch else None),
    Case("Trilu", [U(2, 4, 5), c(-1)], {"upper": 0}, torch=tw(lambda x: torch.tril(x, -1)) if torch else None,
         id="Trilu-lower"),
    Case("DepthToSpace", [U(1, 8, 2, 3)], {"blocksize": 2},
         torch=tw(lambda x: x.reshape(1, 2, 2, 2, 2, 3).permute(0, 3, 4, 1, 5, 2).reshape(1, 2, 4, 6))
         if torch else None),  # fmt: skip
    Case("DepthToSpace", [U(1, 8, 2, 3)], {"blocksize": 2, "mode": "CRD"},
         torch=tw(lambda x: F.pixel_shuffle(x, 2)) if torch else None, id="DepthToSpace-CRD"),
    Case("SpaceToDepth", [U(1, 2, 4, 6)], {"blocksize": 2},
         torch=tw(lambda x: x.reshape(1, 2, 2, 2, 3, 2).permute(0, 3, 5, 1, 2, 4).reshape(1, 8, 2, 3))
         if torch else None),  # fmt: skip
    Case("ReverseSequence", [U(4, 2, 3), c(3, 2)], {"time_axis": 0, "batch_axis": 1},
         torch=(lambda t: torch.stack([torch.cat([t[0][:n, i].flip(0), t[0][n:, i]]) for i, n in enumerate((3, 2))], 1))
         if torch else None),  # fmt: skip
    # -- normalizations and friends ------------------------------------------------------------------
    Case("LayerNormalization", [U(3, 4, 5), U(5), U(5)], {"epsilon": 1e-3}, n_outputs=3,
         torch=(lambda t: F.layer_norm(t[0], (5,), t[1], t[2], 1e-3)) if torch else None),
    Case("LayerNormalization", [U(2, 3, 4), U(3, 4)], {"axis": 1},
         torch=(lambda t: F.layer_norm(t[0], (3, 4), t[1], None, 1e-5)) if torch else None, id="LayerNorm-axis1"),
    Case("RMSNormalization", [U(3, 6), U(6)], torch=(lambda t: F.rms_norm(t[0], (6,), t[1], 1e-5)) if torch else None),
    Case("InstanceNormalization", [U(2, 3, 4, 5), U(3), U(3)],
         torch=(lambda t: F.instance_norm(t[0], weight=t[1], bias=t[2], eps=1e-5)) if torch else None),
    Case("GroupNormalization", [U(2, 6, 3, 2), U(6), U(6)], {"num_groups": 3},
         torch=(lambda t: F.group_norm(t[0], 3, t[1], t[2], 1e-5)) if torch else None),
    Case("LpNormalization", [U(3, 5)], torch=tw(lambda x: F.normalize(x, 2.0, -1)) if torch else None),
    Case("LpNormalization", [U(3, 5)], {"p": 1, "axis": 0}, torch=tw(lambda x: F.normalize(x, 1.0, 0))
         if torch else None, id="LpNormalization-p1"),  # fmt: skip
    Case("ConvTranspose", [U(2, 3, 4, 5), U(3, 2, 3, 3), U(2)], {"strides": [2, 2], "pads": [1, 0, 1, 0]},
         torch=(lambda t: F.conv_transpose2d(t[0], t[1], t[2], stride=2, padding=(1, 0))) if torch else None),
    Case("ConvTranspose", [U(1, 4, 3, 3), U(4, 1, 2, 2)], {"group": 2, "output_padding": [1, 0], "strides": [2, 2]},
         torch=(lambda t: F.conv_transpose2d(t[0], t[1], stride=2, output_padding=(1, 0), groups=2)) if torch else None,
         id="ConvTranspose-group-outpad"),
    Case("CumSum", [U(3, 4), c(1)], torch=tw(lambda x: torch.cumsum(x, 1)) if torch else None),
    Case("CumSum", [U(3, 4), c(0)], {"exclusive": 1, "reverse": 1},
         torch=tw(lambda x: torch.flip(torch.cumsum(torch.flip(x, (0,)), 0), (0,)) - x) if torch else None,
         id="CumSum-exclusive-reverse"),
    Case("TopK", [U(3, 5), c(2)], n_outputs=2, torch=tw(lambda x: torch.topk(x, 2, -1).values) if torch else None),
    Case("Hardmax", [U(3, 5)]),  # zero gradient (torch has no differentiable hardmax)
    # -- gathers and scatters (repeated indices accumulate) -----------------------------------------
    Case("Gather", [U(5, 3), c(1, 3, 1, 0).reshape(2, 2)], torch=(lambda t: t[0][t[1]]) if torch else None),
    Case("Gather", [U(2, 4, 3), c(0, -1, 2, 0)], {"axis": 1},
         torch=tw(lambda x: x.index_select(1, torch.tensor([0, 3, 2, 0]))) if torch else None, id="Gather-axis1"),
    Case("GatherElements", [U(3, 4), c(0, 3, 1, 1, 2, 0).reshape(3, 2)], {"axis": 1},
         torch=(lambda t: torch.gather(t[0], 1, t[1])) if torch else None),
    Case("GatherND", [U(3, 4, 2), c(0, 1, 2, 3, 0, 1).reshape(3, 2)],
         torch=(lambda t: t[0][t[1][:, 0], t[1][:, 1]]) if torch else None),
    Case("ScatterElements", [U(3, 4), c(0, 2, 1, 3, 3, 0).reshape(3, 2), U(3, 2)], {"axis": 1},
         torch=(lambda t: t[0].scatter(1, t[1], t[2])) if torch else None),
    Case("ScatterElements", [U(3, 4), c(0, 0, 1, 3, 3, 0).reshape(3, 2), U(3, 2)], {"axis": 1, "reduction": "add"},
         torch=(lambda t: t[0].scatter_add(1, t[1], t[2])) if torch else None, id="ScatterElements-add"),
    Case("ScatterND", [U(4, 3), c(1, 3).reshape(2, 1), U(2, 3)],
         torch=(lambda t: t[0].index_put((t[1][:, 0],), t[2])) if torch else None),
    Case("ScatterND", [U(4, 3), c(1, 1).reshape(2, 1), U(2, 3)], {"reduction": "add"},
         torch=(lambda t: t[0].index_put((t[1][:, 0],), t[2], accumulate=True)) if torch else None,
         id="ScatterND-add"),
]


def _build(case: Case, rng) -> tuple[Graph, dict, list[str]]:
    feeds, inputs, node_ins = {}, [], []
    for i, spec in enumerate(case.inputs):
        if spec is None:
            node_ins.append(None)
        elif isinstance(spec, np.ndarray):
            node_ins.append(Value(f"k{i}", const=spec))
        else:
            arr = spec.sample(rng)
            v = Value(f"x{i}", TensorType(DType.from_numpy(arr.dtype), arr.shape))
            feeds[v.name] = arr
            inputs.append(v)
            node_ins.append(v)
    outs = tuple(Value(f"y{i}") for i in range(case.n_outputs))
    node = Node(case.op, tuple(node_ins), outs, dict(case.attrs), "node")
    for v, t in zip(outs, infer_node(node, "case")):
        v.type = t
    wrt = [v.name for v in inputs if v.dtype.is_float]
    return Graph([node], inputs, [outs[0]], name=f"grad_{case.op.lower()}"), feeds, wrt


@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradient(case: Case, rng):
    g, feeds, wrt = _build(case, rng)
    out = g.outputs[0]
    ct = rng.standard_normal(out.shape) if out.type.numel > 1 else np.ones(out.shape)  # a scalar's seed is 1
    gg = grad(g, wrt)
    f64 = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in feeds.items()}
    want = numerical_vjp(g, f64, wrt, ct)
    # 1. the rules, evaluated exactly
    seed = {"d_y0": ct} if out.type.numel > 1 else {}
    ref = evaluate_graph(gg, {**f64, **seed})[1:]
    for name, r, w in zip(wrt, ref, want):
        assert relative_error(r, w) < 1e-5, f"{case}: reference gradient of {name}"
    # 2. the compiled gradient graph in float32
    m = tfg.compile(gg)
    got = m.run({**feeds, **{k: v.astype(out.dtype.np) for k, v in seed.items()}})
    for name, w in zip(wrt, want):
        err = relative_error(got[f"grad_{name}"], w)
        assert err <= 1e-3, f"{case}: compiled gradient of {name}: relative error {err:.2e}"
    # 3. torch.autograd
    if torch is not None and case.torch is not None:
        ts = _torch_inputs(case, f64)
        y = case.torch(ts)
        (y * torch.tensor(ct)).sum().backward()
        tgrads = [t.grad for s, t in zip(case.inputs, ts) if isinstance(s, In) and t.dtype.is_floating_point]
        for name, tg, w in zip(wrt, tgrads, want):
            tg = np.zeros_like(w) if tg is None else tg.numpy()
            assert relative_error(tg, w) < 1e-5, f"{case}: torch gradient of {name} disagrees with finite differences"
            err = relative_error(got[f"grad_{name}"], tg)
            assert err <= 1e-3, f"{case}: compiled gradient of {name} vs torch: relative error {err:.2e}"


def _torch_inputs(case: Case, f64: dict) -> list:
    """The case's inputs as float64 torch tensors (graph inputs require grad), in node order."""
    ts, names = [], iter(f64)
    for spec in case.inputs:
        if spec is None:
            ts.append(None)
        elif isinstance(spec, np.ndarray):
            ts.append(torch.tensor(spec.astype(np.float64) if spec.dtype.kind == "f" else spec))
        else:
            arr = f64[next(names)]
            ts.append(torch.tensor(arr, requires_grad=arr.dtype.kind == "f"))
    return ts


def test_every_rule_has_a_case():
    covered = {case.op for case in CASES}
    missing = sorted(op for op in VJP_RULES if op not in covered and op not in NOT_DIFFERENTIATED
                     and _float_op(op))  # fmt: skip
    assert not missing, f"differentiable ops without a gradient test: {missing}"


def _float_op(op: str) -> bool:
    """Ops whose outputs can be float (comparisons, logical and bitwise ops never carry gradients)."""
    from tensorforge.ops.elementwise import BODIES

    e = BODIES.get(op)
    return e is None or (e.out == "same" and e.types in ("float", "numeric", "any"))
