"""Scalar-op handlers: the vocabulary elementwise op bodies are written in.

An elementwise op is defined once, as a function ``body(h, attrs, *xs)`` over a handler ``h``. Run with
``NumpyHandler`` it is the op's reference semantics (and constant folding); run with the kernel-IR
handler in ``lower/elementwise.py`` it is the op's lowering; the autodiff rules reuse it to build
gradient bodies (``ops/dual.py``). (PyTorch Inductor's ``ops`` handlers work the same way.)

Every handler is a ``ScalarHandler``: the protocol lists the vocabulary, most of which comes from the
scalar-op table (``ir/scalar_ops.py``).
"""

from __future__ import annotations

import abc

import numpy as np

from ..ir.dtype import DType, is_float_dtype
from ..ir.scalar_ops import VOCABULARY, Kind, ScalarOp, keep_dtype, scalar_op


def _vocabulary_method(name: str, op: ScalarOp):
    def method(self, *xs):
        return self.table_op(name, op, *xs)

    method.__name__ = name
    method.__doc__ = f"The scalar op {op.name!r} ({op.kind.value})."
    return method


class ScalarHandler(abc.ABC):
    """The op-body vocabulary:

    * every name of ``VOCABULARY`` (from the scalar-op table, e.g. ``add``, ``lt``, ``exp``, ``bit_and``): a
      subclass gets a method calling ``table_op(name, op, *xs)`` for each name it does not define itself;
    * ``unary(name, x)``: any unary op of the table by name (``tan``, ``asin``, ...);
    * the abstract methods below: dtypes, constants, conversions, ``select`` and ``fma``.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, op in VOCABULARY.items():
            if not hasattr(cls, name):
                setattr(cls, name, _vocabulary_method(name, op))

    @abc.abstractmethod
    def table_op(self, name: str, op: ScalarOp, *xs):
        """``op`` of the scalar-op table applied to ``xs``, asked for by its vocabulary name ``name``."""

    def unary(self, name: str, x):
        return self.table_op(name, scalar_op(name, Kind.UNARY), x)

    @staticmethod
    @abc.abstractmethod
    def dtype(x) -> DType:
        """The dtype of a value."""

    @abc.abstractmethod
    def const(self, value, like):
        """``value`` as a constant of ``like``'s dtype."""

    @abc.abstractmethod
    def const_of(self, value, dtype: DType):
        """``value`` as a constant of ``dtype``."""

    @abc.abstractmethod
    def cast(self, x, dtype: DType):
        """``x`` converted to ``dtype`` (float to integer truncates toward zero)."""

    @abc.abstractmethod
    def bitcast(self, x, dtype: DType):
        """The bits of ``x`` read as ``dtype`` (of the same width)."""

    @abc.abstractmethod
    def select(self, c, a, b):
        """``a`` where ``c`` holds, else ``b``."""

    @abc.abstractmethod
    def fma(self, a, b, c):
        """``a * b + c``."""


class NumpyHandler(ScalarHandler):
    """Evaluate op bodies on numpy arrays, keeping ONNX dtype semantics (the table's numpy semantics)."""

    def table_op(self, name: str, op: ScalarOp, *xs):
        return op.numpy(*xs)

    @staticmethod
    def dtype(x) -> DType:
        return DType.from_numpy(np.asarray(x).dtype)

    def const(self, value, like):
        return np.asarray(value, dtype=np.asarray(like).dtype)

    def const_of(self, value, dtype: DType):
        return np.asarray(value, dtype=dtype.np)

    def cast(self, x, dtype: DType):
        x = np.asarray(x)
        if dtype.is_int and is_float_dtype(x.dtype):
            with np.errstate(invalid="ignore"):
                return np.trunc(x).astype(dtype.np)
        return x.astype(dtype.np)

    def bitcast(self, x, dtype: DType):
        return np.ascontiguousarray(x).view(dtype.np).reshape(np.shape(x))

    # the table's and/or/xor/not on bool, with numpy's truth-value semantics on other inputs
    def logical_and(self, a, b):
        return np.logical_and(a, b)

    def logical_or(self, a, b):
        return np.logical_or(a, b)

    def logical_xor(self, a, b):
        return np.logical_xor(a, b)

    def logical_not(self, a):
        return np.logical_not(a)

    def select(self, c, a, b):
        return keep_dtype(np.where(c, a, b), a)

    def fma(self, a, b, c):
        return self.add(self.mul(a, b), c)


NUMPY = NumpyHandler()
