"""Derivatives of elementwise op bodies, derived from the bodies themselves.

An elementwise op is one body over a scalar-op handler (``handler.py``). Running that body with
``DualHandler(h)`` computes, next to every value, its tangent (forward mode, dual numbers) in terms of
``h``'s own operations — so the derivative of every elementwise op comes from its single definition, and
runs as numpy (reference) or as kernel IR (lowering) just like the op.

Because an elementwise op's Jacobian is diagonal, seeding one input's tangent with the output cotangent
gives that input's vector-Jacobian product directly: ``ElementwiseGrad`` (``ops/grad.py``) does exactly
that. A tangent of ``None`` is an exact zero (constants, integer and boolean values), so no arithmetic is
spent on it and no ``0 * inf`` appears (``pow``'s exponent term is only built when the exponent varies).
"""

from __future__ import annotations

import math

from ..errors import UnsupportedError
from ..ir.dtype import DType
from ..ir.scalar_ops import ScalarOp
from .handler import ScalarHandler


class Dual:
    """A value and its tangent (``None`` = zero)."""

    __slots__ = ("p", "t")

    def __init__(self, p, t=None):
        self.p = p
        self.t = t


# d/dx of the handler's named unary functions, as f(h, x, y) with y = f(x), times the tangent
_UNARY_DERIV = {
    "tan": lambda h, x, y: h.add(h.const(1, x), h.mul(y, y)),
    "asin": lambda h, x, y: h.recip(h.sqrt(h.sub(h.const(1, x), h.mul(x, x)))),
    "acos": lambda h, x, y: h.neg(h.recip(h.sqrt(h.sub(h.const(1, x), h.mul(x, x))))),
    "atan": lambda h, x, y: h.recip(h.add(h.const(1, x), h.mul(x, x))),
    "sinh": lambda h, x, y: h.unary("cosh", x),
    "cosh": lambda h, x, y: h.unary("sinh", x),
    "asinh": lambda h, x, y: h.recip(h.sqrt(h.add(h.mul(x, x), h.const(1, x)))),
    "acosh": lambda h, x, y: h.recip(h.sqrt(h.sub(h.mul(x, x), h.const(1, x)))),
    "atanh": lambda h, x, y: h.recip(h.sub(h.const(1, x), h.mul(x, x))),
    "log1p": lambda h, x, y: h.recip(h.add(h.const(1, x), x)),
    "expm1": lambda h, x, y: h.add(y, h.const(1, x)),
}

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


class DualHandler(ScalarHandler):
    """The scalar-op vocabulary over ``Dual`` values, built from a base handler ``h``. Ops of the table not
    written here are piecewise constant (their tangent is zero) or have no derivative."""

    def __init__(self, h):
        self.h = h

    # -- tangent arithmetic with None as an exact zero ----------------------------------------------
    def _zero(self, like):
        return self.h.const(0, like)

    def _full(self, t, like):
        return self._zero(like) if t is None else t

    def _tadd(self, a, b):
        if a is None:
            return b
        return a if b is None else self.h.add(a, b)

    def _tsub(self, a, b):
        if b is None:
            return a
        return self.h.neg(b) if a is None else self.h.sub(a, b)

    def _tmul(self, t, f):
        return None if t is None else self.h.mul(t, f)

    def _tdiv(self, t, f):
        return None if t is None else self.h.div(t, f)

    # -- values -------------------------------------------------------------------------------------
    def dtype(self, x: Dual) -> DType:
        return self.h.dtype(x.p)

    def const(self, value, like: Dual) -> Dual:
        return Dual(self.h.const(value, like.p))

    def const_of(self, value, dtype: DType) -> Dual:
        return Dual(self.h.const_of(value, dtype))

    def cast(self, x: Dual, dtype: DType) -> Dual:
        t = self.h.cast(x.t, dtype) if (x.t is not None and dtype.is_float) else None
        return Dual(self.h.cast(x.p, dtype), t)

    def bitcast(self, x: Dual, dtype: DType) -> Dual:
        raise UnsupportedError("no derivative is defined for the scalar operation 'bitcast'")

    def table_op(self, name: str, op: ScalarOp, *xs: Dual) -> Dual:
        if not op.piecewise_constant:
            raise UnsupportedError(f"no derivative is defined for the scalar operation {name!r}")
        return Dual(getattr(self.h, name)(*(x.p for x in xs)))

    # -- arithmetic ---------------------------------------------------------------------------------
    def add(self, a: Dual, b: Dual) -> Dual:
        return Dual(self.h.add(a.p, b.p), self._tadd(a.t, b.t))

    def sub(self, a: Dual, b: Dual) -> Dual:
        return Dual(self.h.sub(a.p, b.p), self._tsub(a.t, b.t))

    def mul(self, a: Dual, b: Dual) -> Dual:
        return Dual(self.h.mul(a.p, b.p), self._tadd(self._tmul(a.t, b.p), self._tmul(b.t, a.p)))

    def div(self, a: Dual, b: Dual) -> Dual:
        h = self.h
        p = h.div(a.p, b.p)
        if not h.dtype(p).is_float:
            return Dual(p)
        # d(a/b) = da/b - db * (a/b) / b
        return Dual(p, self._tsub(self._tdiv(a.t, b.p), self._tmul(b.t, h.div(p, b.p))))

    def fmod(self, a: Dual, b: Dual) -> Dual:
        h = self.h
        return Dual(h.fmod(a.p, b.p), self._tsub(a.t, self._tmul(b.t, h.trunc(h.div(a.p, b.p)))))

    def mod(self, a: Dual, b: Dual) -> Dual:
        h = self.h
        return Dual(h.mod(a.p, b.p), self._tsub(a.t, self._tmul(b.t, h.floor(h.div(a.p, b.p)))))

    def pow(self, a: Dual, b: Dual) -> Dual:
        h = self.h
        p = h.pow(a.p, b.p)
        ta = self._tmul(a.t, h.mul(b.p, h.pow(a.p, h.sub(b.p, h.const(1, b.p))))) if a.t is not None else None
        tb = self._tmul(b.t, h.mul(p, h.log(a.p))) if b.t is not None else None
        return Dual(p, self._tadd(ta, tb))

    def _pick(self, cond, a: Dual, b: Dual):
        if a.t is None and b.t is None:
            return None
        return self.h.select(cond, self._full(a.t, a.p), self._full(b.t, b.p))

    def min(self, a: Dual, b: Dual) -> Dual:
        return Dual(self.h.min(a.p, b.p), self._pick(self.h.le(a.p, b.p), a, b))

    def max(self, a: Dual, b: Dual) -> Dual:
        return Dual(self.h.max(a.p, b.p), self._pick(self.h.ge(a.p, b.p), a, b))

    def select(self, c: Dual, a: Dual, b: Dual) -> Dual:
        return Dual(self.h.select(c.p, a.p, b.p), self._pick(c.p, a, b))

    def fma(self, a: Dual, b: Dual, c: Dual) -> Dual:
        return self.add(self.mul(a, b), c)

    # -- unary functions ----------------------------------------------------------------------------
    def neg(self, x: Dual) -> Dual:
        return Dual(self.h.neg(x.p), None if x.t is None else self.h.neg(x.t))

    def abs(self, x: Dual) -> Dual:
        h = self.h
        t = None if x.t is None else h.select(h.lt(x.p, h.const(0, x.p)), h.neg(x.t), x.t)
        return Dual(h.abs(x.p), t)

    def exp(self, x: Dual) -> Dual:
        p = self.h.exp(x.p)
        return Dual(p, self._tmul(x.t, p))

    def log(self, x: Dual) -> Dual:
        return Dual(self.h.log(x.p), self._tdiv(x.t, x.p))

    def sqrt(self, x: Dual) -> Dual:
        p = self.h.sqrt(x.p)
        return Dual(p, self._tdiv(x.t, self.h.mul(p, self.h.const(2, p))))

    def tanh(self, x: Dual) -> Dual:
        h = self.h
        p = h.tanh(x.p)
        return Dual(p, self._tmul(x.t, h.sub(h.const(1, p), h.mul(p, p))))

    def sigmoid(self, x: Dual) -> Dual:
        h = self.h
        p = h.sigmoid(x.p)
        return Dual(p, self._tmul(x.t, h.mul(p, h.sub(h.const(1, p), p))))

    def erf(self, x: Dual) -> Dual:
        h = self.h
        d = h.mul(h.const(_TWO_OVER_SQRT_PI, x.p), h.exp(h.neg(h.mul(x.p, x.p))))
        return Dual(h.erf(x.p), self._tmul(x.t, d))

    def recip(self, x: Dual) -> Dual:
        h = self.h
        p = h.recip(x.p)
        return Dual(p, None if x.t is None else h.neg(h.mul(x.t, h.mul(p, p))))

    def sin(self, x: Dual) -> Dual:
        return Dual(self.h.sin(x.p), self._tmul(x.t, self.h.cos(x.p)))

    def cos(self, x: Dual) -> Dual:
        return Dual(self.h.cos(x.p), None if x.t is None else self.h.neg(self.h.mul(x.t, self.h.sin(x.p))))

    def unary(self, name: str, x: Dual) -> Dual:
        p = self.h.unary(name, x.p)
        if x.t is None:
            return Dual(p)
        if name not in _UNARY_DERIV:
            raise UnsupportedError(f"no derivative is defined for the scalar function {name!r}")
        return Dual(p, self.h.mul(x.t, _UNARY_DERIV[name](self.h, x.p, p)))
