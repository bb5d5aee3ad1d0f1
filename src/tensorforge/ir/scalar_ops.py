"""The scalar ops: one table for every place that needs to know them.

Kernel-IR expressions ``Bin`` / ``Cmp`` / ``Un`` (``lower/kir``) name an op of this table, and the op-body
handlers (``ops/handler.py``) offer its ops as methods. For each op the table holds

* ``kind``: binary, comparison or unary (its arity);
* ``symbol``: the printer's infix symbol (``(a + b)``), or None for the function form (``max(a, b)``);
* the result dtype rule (``result_dtype``): predicates (comparisons, isnan, ...) give bool, the others the
  dtype of their first operand;
* ``numpy``: the op on numpy arrays, keeping the operand dtype as ONNX does (the reference semantics:
  ``NumpyHandler`` is made of these);
* ``identity``: for the ops the vectorizer reduces horizontally (``HReduce``), the identity of the reduction
  for a dtype;
* ``handler``: the names of the op-body vocabulary that are exactly this op (``and`` is ``logical_and`` on
  bool and ``bit_and`` on integers); ops without one are kernel-IR only (``floordiv``, ``rsqrt``) or reached
  through the handlers' ``unary(name, x)`` (``tan``, ``asin``, ...);
* ``piecewise_constant``: the derivative is zero wherever it is defined (no tangent, ``ops/dual.py``);
* ``int_division``: on integers a zero divisor traps (a masked vector tail must not evaluate it).

Integer ``floordiv`` and ``mod`` are index arithmetic in kernel IR: their operands are non-negative there (the
code generator divides and takes remainders truncating). Op bodies build a signed integer ``mod`` from
``fmod`` instead.

The LLVM emitters of the ops are registered by name in ``codegen/llvm/scalar_ops.py``, which checks that every
op here has one.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .dtype import DType


class Kind(enum.Enum):
    BINARY = "binary op"
    COMPARE = "comparison"
    UNARY = "unary op"

    @property
    def arity(self) -> int:
        return 1 if self is Kind.UNARY else 2


@dataclass(frozen=True)
class ScalarOp:
    """One op of the table (the fields are described in the module docstring)."""

    name: str
    kind: Kind
    numpy: Callable[..., np.ndarray]
    symbol: str | None = None
    predicate: bool = False
    identity: Callable[[DType], int | float | bool] | None = None
    handler: tuple[str, ...] = ()
    piecewise_constant: bool = False
    int_division: bool = False

    @property
    def reducible(self) -> bool:
        """Whether the vectorizer may reduce vector lanes with this op (``HReduce``)."""
        return self.identity is not None

    def result_dtype(self, operand: DType) -> DType:
        return DType.BOOL if self.predicate else operand

    def format(self, *operands: str) -> str:
        """The printer's text of the op applied to already formatted operands."""
        if self.symbol is not None:
            return f"({operands[0]} {self.symbol} {operands[1]})"
        return f"{self.name}({', '.join(operands)})"


def keep_dtype(r, like):
    """numpy may promote (e.g. int8 * int8 scalar); ONNX keeps the input dtype."""
    like = np.asarray(like)
    r = np.asarray(r)
    return r.astype(like.dtype, copy=False) if r.dtype != like.dtype else r


def _ufunc(fn, keep: bool = False, **errstate):
    """``fn`` on arrays with numpy's floating-point errors ``errstate`` (e.g. ``divide="ignore"``); with
    ``keep`` the result keeps the first operand's dtype."""

    def apply(*xs):
        with np.errstate(**errstate):
            r = fn(*xs)
            return keep_dtype(r, xs[0]) if keep else r

    return apply


def _div(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "iu":  # truncating, as C and ONNX
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.floor_divide(a, b)
            r = np.remainder(a, b)
            adj = (r != 0) & ((a < 0) ^ (b < 0))
            return (q + adj.astype(q.dtype)).astype(a.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        return keep_dtype(np.divide(a, b), a)


def _floordiv(a, b):
    a, b = np.asarray(a), np.asarray(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.floor_divide(a, b) if a.dtype.kind in "iu" else np.floor(np.divide(a, b))
        return keep_dtype(q, a)


def _sigmoid(x):
    x = np.asarray(x)
    with np.errstate(over="ignore"):
        return keep_dtype(1.0 / (1.0 + np.exp(-x)), x)


def _erf(x):
    x = np.asarray(x)
    return np.vectorize(math.erf, otypes=[x.dtype])(x) if x.size else x.copy()


def _recip(x):
    x = np.asarray(x)
    with np.errstate(divide="ignore"):
        return keep_dtype(1.0 / x, x)


def _rsqrt(x):
    x = np.asarray(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        return keep_dtype(1.0 / np.sqrt(x), x)


def _all_ones(dt: DType):
    """The identity of ``and``: every bit set (bool: true; ``and`` is not defined on floats)."""
    if not dt.is_int:
        return 1
    return -1 if dt.is_signed else int(np.iinfo(dt.np).max)


def _lowest(dt: DType):
    if dt.is_float:
        return -math.inf
    return int(np.iinfo(dt.np).min) if dt.is_int else False


def _highest(dt: DType):
    if dt.is_float:
        return math.inf
    return int(np.iinfo(dt.np).max) if dt.is_int else True


BINARY, COMPARE, UNARY = Kind.BINARY, Kind.COMPARE, Kind.UNARY
_ZERO, _ONE = (lambda dt: 0), (lambda dt: 1)
_ANY = {"all": "ignore"}


def _op(name: str, kind: Kind, numpy, symbol: str | None = None, handler: tuple[str, ...] | None = None,
        **flags) -> ScalarOp:  # fmt: skip
    """An entry; ``handler`` defaults to the op's own name (``()``: not in the op-body vocabulary)."""
    if kind is COMPARE:
        flags.update(predicate=True, piecewise_constant=True)
    return ScalarOp(name, kind, numpy, symbol, handler=(name,) if handler is None else handler, **flags)


def _math(name: str, fn, **errstate) -> ScalarOp:
    """A named float function reached through ``unary(name, x)``."""
    return _op(name, UNARY, _ufunc(fn, **errstate), handler=())


_TABLE = [
    _op("add", BINARY, _ufunc(np.add, keep=True), "+", identity=_ZERO),
    _op("sub", BINARY, _ufunc(np.subtract, keep=True), "-"),
    _op("mul", BINARY, _ufunc(np.multiply, keep=True), "*", identity=_ONE),
    _op("div", BINARY, _div, "/", int_division=True),
    _op("floordiv", BINARY, _floordiv, "//", handler=(), int_division=True),
    _op("mod", BINARY, _ufunc(np.mod, keep=True, divide="ignore", invalid="ignore"), "%", int_division=True),
    _op("fmod", BINARY, _ufunc(np.fmod, keep=True, divide="ignore", invalid="ignore"), int_division=True),
    _op("pow", BINARY, _ufunc(np.power, keep=True, **_ANY)),
    _op("min", BINARY, _ufunc(np.minimum, keep=True), identity=_highest),
    _op("max", BINARY, _ufunc(np.maximum, keep=True), identity=_lowest),
    _op("and", BINARY, np.bitwise_and, "&", ("logical_and", "bit_and"), identity=_all_ones, piecewise_constant=True),
    _op("or", BINARY, np.bitwise_or, "|", ("logical_or", "bit_or"), identity=_ZERO, piecewise_constant=True),
    _op("xor", BINARY, np.bitwise_xor, "^", ("logical_xor", "bit_xor"), piecewise_constant=True),
    _op("shl", BINARY, np.left_shift, "<<", piecewise_constant=True),
    _op("shr", BINARY, np.right_shift, ">>", piecewise_constant=True),
    _op("lt", COMPARE, np.less, "<"),
    _op("le", COMPARE, np.less_equal, "<="),
    _op("gt", COMPARE, np.greater, ">"),
    _op("ge", COMPARE, np.greater_equal, ">="),
    _op("eq", COMPARE, np.equal, "=="),
    _op("ne", COMPARE, np.not_equal, "!="),
    _op("not", UNARY, np.invert, handler=("logical_not", "bit_not"), piecewise_constant=True),
    _op("neg", UNARY, np.negative),
    _op("abs", UNARY, np.abs),
    _op("sign", UNARY, np.sign, piecewise_constant=True),
    _op("floor", UNARY, np.floor, piecewise_constant=True),
    _op("ceil", UNARY, np.ceil, piecewise_constant=True),
    _op("round", UNARY, np.round, piecewise_constant=True),
    _op("trunc", UNARY, np.trunc, piecewise_constant=True),
    _op("recip", UNARY, _recip),
    _op("exp", UNARY, _ufunc(np.exp, over="ignore")),
    _op("log", UNARY, _ufunc(np.log, divide="ignore", invalid="ignore")),
    _op("sqrt", UNARY, _ufunc(np.sqrt, invalid="ignore")),
    _op("rsqrt", UNARY, _rsqrt, handler=()),
    _op("tanh", UNARY, np.tanh),
    _op("sigmoid", UNARY, _sigmoid),
    _op("erf", UNARY, _erf),
    _op("sin", UNARY, np.sin),
    _op("cos", UNARY, np.cos),
    _math("tan", np.tan, **_ANY),
    _math("asin", np.arcsin, **_ANY),
    _math("acos", np.arccos, **_ANY),
    _math("atan", np.arctan, **_ANY),
    _math("sinh", np.sinh, **_ANY),
    _math("cosh", np.cosh, **_ANY),
    _math("asinh", np.arcsinh, **_ANY),
    _math("acosh", np.arccosh, **_ANY),
    _math("atanh", np.arctanh, **_ANY),
    _math("log1p", np.log1p, **_ANY),
    _math("expm1", np.expm1, **_ANY),
    _op("isnan", UNARY, np.isnan, predicate=True, piecewise_constant=True),
    _op("isinf", UNARY, np.isinf, predicate=True, piecewise_constant=True),
    _op("isposinf", UNARY, np.isposinf, predicate=True, piecewise_constant=True),
    _op("isneginf", UNARY, np.isneginf, predicate=True, piecewise_constant=True),
]

SCALAR_OPS: dict[str, ScalarOp] = {op.name: op for op in _TABLE}

VOCABULARY: dict[str, ScalarOp] = {name: op for op in _TABLE for name in op.handler}
"""The op-body vocabulary's names for ops of the table (``ops/handler.ScalarHandler`` adds the rest)."""


def scalar_op(name: str, kind: Kind) -> ScalarOp:
    """The table's entry for ``name``, which must be an op of ``kind`` (ValueError otherwise)."""
    op = SCALAR_OPS.get(name)
    if op is None or op.kind is not kind:
        raise ValueError(f"unknown {kind.value} {name}")
    return op
