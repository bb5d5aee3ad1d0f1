"""Scalar-op handlers: the vocabulary elementwise op bodies are written in.

An elementwise op is defined once, as a function ``body(h, attrs, *xs)`` over a handler ``h``. Run with
``NumpyHandler`` it is the op's reference semantics (and constant folding); run with the kernel-IR
handler in ``lower/elementwise.py`` it is the op's lowering; the autodiff rules reuse it to build
gradient bodies. (PyTorch Inductor's ``ops`` handlers work the same way.)
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType


class NumpyHandler:
    """Evaluate op bodies on numpy arrays, keeping ONNX dtype semantics."""

    @staticmethod
    def dtype(x) -> DType:
        return DType.from_numpy(np.asarray(x).dtype)

    def const(self, value, like):
        return np.asarray(value, dtype=np.asarray(like).dtype)

    def const_of(self, value, dtype: DType):
        return np.asarray(value, dtype=dtype.np)

    def cast(self, x, dtype: DType):
        x = np.asarray(x)
        if dtype.is_int and x.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                return np.trunc(x).astype(dtype.np)
        return x.astype(dtype.np)

    def bitcast(self, x, dtype: DType):
        return np.ascontiguousarray(x).view(dtype.np).reshape(np.shape(x))

    def add(self, a, b):
        return _keep(np.add(a, b), a)

    def sub(self, a, b):
        return _keep(np.subtract(a, b), a)

    def mul(self, a, b):
        return _keep(np.multiply(a, b), a)

    def div(self, a, b):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind in "iu":
            with np.errstate(divide="ignore", invalid="ignore"):
                q = np.floor_divide(a, b)
                r = np.remainder(a, b)
                adj = (r != 0) & ((a < 0) ^ (b < 0))
                return (q + adj.astype(q.dtype)).astype(a.dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            return _keep(np.divide(a, b), a)

    def fmod(self, a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return _keep(np.fmod(a, b), a)

    def mod(self, a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return _keep(np.mod(a, b), a)

    def pow(self, a, b):
        with np.errstate(all="ignore"):
            return _keep(np.power(a, b), a)

    def min(self, a, b):
        return _keep(np.minimum(a, b), a)

    def max(self, a, b):
        return _keep(np.maximum(a, b), a)

    def neg(self, x):
        return np.negative(x)

    def abs(self, x):
        return np.abs(x)

    def exp(self, x):
        with np.errstate(over="ignore"):
            return np.exp(x)

    def log(self, x):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(x)

    def sqrt(self, x):
        with np.errstate(invalid="ignore"):
            return np.sqrt(x)

    def tanh(self, x):
        return np.tanh(x)

    def sigmoid(self, x):
        x = np.asarray(x)
        with np.errstate(over="ignore"):
            return _keep(1.0 / (1.0 + np.exp(-x)), x)

    def erf(self, x):
        import math

        x = np.asarray(x)
        return np.vectorize(math.erf, otypes=[x.dtype])(x) if x.size else x.copy()

    def floor(self, x):
        return np.floor(x)

    def ceil(self, x):
        return np.ceil(x)

    def round(self, x):
        return np.round(x)

    def trunc(self, x):
        return np.trunc(x)

    def sign(self, x):
        return np.sign(x)

    def recip(self, x):
        x = np.asarray(x)
        with np.errstate(divide="ignore"):
            return _keep(1.0 / x, x)

    def sin(self, x):
        return np.sin(x)

    def cos(self, x):
        return np.cos(x)

    def unary(self, name: str, x):
        fn = {"tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan, "sinh": np.sinh,
              "cosh": np.cosh, "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh,
              "log1p": np.log1p, "expm1": np.expm1}[name]  # fmt: skip
        with np.errstate(all="ignore"):
            return fn(x)

    def isnan(self, x):
        return np.isnan(x)

    def isinf(self, x):
        return np.isinf(x)

    def isposinf(self, x):
        return np.isposinf(x)

    def isneginf(self, x):
        return np.isneginf(x)

    def lt(self, a, b):
        return np.less(a, b)

    def le(self, a, b):
        return np.less_equal(a, b)

    def gt(self, a, b):
        return np.greater(a, b)

    def ge(self, a, b):
        return np.greater_equal(a, b)

    def eq(self, a, b):
        return np.equal(a, b)

    def ne(self, a, b):
        return np.not_equal(a, b)

    def logical_and(self, a, b):
        return np.logical_and(a, b)

    def logical_or(self, a, b):
        return np.logical_or(a, b)

    def logical_xor(self, a, b):
        return np.logical_xor(a, b)

    def logical_not(self, a):
        return np.logical_not(a)

    def bit_and(self, a, b):
        return np.bitwise_and(a, b)

    def bit_or(self, a, b):
        return np.bitwise_or(a, b)

    def bit_xor(self, a, b):
        return np.bitwise_xor(a, b)

    def bit_not(self, a):
        return np.invert(a)

    def shl(self, a, b):
        return np.left_shift(a, b)

    def shr(self, a, b):
        return np.right_shift(a, b)

    def select(self, c, a, b):
        return _keep(np.where(c, a, b), a)

    def fma(self, a, b, c):
        return self.add(self.mul(a, b), c)


def _keep(r, like):
    """numpy may promote (e.g. int8 * int8 scalar); ONNX keeps the input dtype."""
    like = np.asarray(like)
    r = np.asarray(r)
    return r.astype(like.dtype, copy=False) if r.dtype != like.dtype else r


NUMPY = NumpyHandler()
