"""The LLVM side of the scalar-op table (``ir/scalar_ops.py``): one emitter per op, registered by name, and
the horizontal reductions of the reducible ops. Importing this module fails when an op of the table has no
emitter (or a reducible op no reduction).

An emitter is ``emit(em, op, a, b, dtype)`` for binary ops and comparisons and ``emit(em, op, x, dtype,
lanes)`` for unary ops, where ``dtype`` is the kernel-IR dtype of the (first) operand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import llvmlite.ir as ir

from ...errors import CompileError
from ...ir.dtype import DType
from ...ir.scalar_ops import SCALAR_OPS, Kind
from ..mathlib import MATH_FUNCS, get_math_fn
from .lltypes import I1, I32, const_value, element_type, lanes_of, llty, suffix

if TYPE_CHECKING:
    from .emitter import Emitter

EMITTERS: dict[str, Callable[..., ir.Value]] = {}
REDUCTIONS: dict[str, Callable[..., ir.Value]] = {}
CONTRACT = ("contract",)  # a * b + c may become one FMA


def emit_scalar_op(em: Emitter, op: str, *args) -> ir.Value:
    fn = EMITTERS.get(op)
    if fn is None:
        raise CompileError(f"unknown scalar op {op}")
    return fn(em, op, *args)


def _emits(*names: str, table: dict = EMITTERS):
    def register(fn):
        for name in names:
            table[name] = fn
        return fn

    return register


def _unsupported(op: str, dt: DType) -> CompileError:
    kind = "float" if dt.is_float else "bool" if dt is DType.BOOL else "integer"
    return CompileError(f"{kind} op {op} unsupported")


# -- binary ops -------------------------------------------------------------------------------------
@_emits("add")
def _add(em: Emitter, op: str, a: ir.Value, c: ir.Value, dt: DType) -> ir.Value:
    if dt.is_float:
        return em.b.fadd(a, c, flags=CONTRACT)
    return em.b.or_(a, c) if dt is DType.BOOL else em.b.add(a, c)


@_emits("sub")
def _sub(em: Emitter, op: str, a: ir.Value, c: ir.Value, dt: DType) -> ir.Value:
    if dt.is_float:
        return em.b.fsub(a, c, flags=CONTRACT)
    if dt is DType.BOOL:
        raise _unsupported(op, dt)
    return em.b.sub(a, c)


@_emits("mul")
def _mul(em: Emitter, op: str, a: ir.Value, c: ir.Value, dt: DType) -> ir.Value:
    if dt.is_float:
        return em.b.fmul(a, c, flags=CONTRACT)
    return em.b.and_(a, c) if dt is DType.BOOL else em.b.mul(a, c)


@_emits("div", "floordiv", "mod", "fmod")
def _division(em: Emitter, op: str, a: ir.Value, c: ir.Value, dt: DType) -> ir.Value:
    b = em.b
    if dt is DType.BOOL:
        raise _unsupported(op, dt)
    if not dt.is_float:  # truncating, as C and ONNX (floordiv and mod: index arithmetic, non-negative operands)
        if op in ("div", "floordiv"):
            return b.sdiv(a, c) if dt.is_signed else b.udiv(a, c)
        return b.srem(a, c) if dt.is_signed else b.urem(a, c)
    if op == "div":
        return b.fdiv(a, c)
    if op == "floordiv":
        return b.call(em.mb.intrinsic("floor", a.type), [b.fdiv(a, c)])
    r = b.frem(a, c)
    if op == "fmod":
        return r
    # mod is python-style: the result has the sign of the divisor
    zero = ir.Constant(a.type, None)
    fix = b.and_(b.fcmp_ordered("!=", r, zero), b.xor(b.fcmp_ordered("<", r, zero), b.fcmp_ordered("<", c, zero)))
    return b.select(fix, b.fadd(r, c), r)


@_emits("min", "max")
def _minmax(em: Emitter, op: str, a: ir.Value, c: ir.Value, dt: DType) -> ir.Value:
    b = em.b
    if dt.is_float:
        return fminmax(em, op, a, c)
    if dt is DType.BOOL:
        return b.and_(a, c) if op == "min" else b.or_(a, c)
    sym = "<" if op == "min" else ">"
    return b.select(b.icmp_signed(sym, a, c) if dt.is_signed else b.icmp_unsigned(sym, a, c), a, c)


def fminmax(em: Emitter, op: str, a: ir.Value, c: ir.Value) -> ir.Value:
    """max/min that propagate NaN from either side (as numpy/ONNX do), in three x86 instructions
    (vcmpunordps, vmaxps, blend) instead of llvm.maximum's signed-zero-exact sequence."""
    b = em.b
    pick = b.fcmp_ordered(">" if op == "max" else "<", a, c)
    r = b.select(pick, a, c)  # x86 vmaxps/vminps: the second operand when unordered
    return b.select(b.fcmp_unordered("uno", a, a), a, r)


@_emits("pow")
def _pow(em: Emitter, op: str, a: ir.Value, c: ir.Value, dt: DType) -> ir.Value:
    b = em.b
    if dt.is_float:
        return b.call(em.mb.intrinsic("pow", a.type, 2), [a, c])
    if dt is DType.BOOL:
        raise _unsupported(op, dt)
    signed = dt.is_signed  # in double precision
    fa = b.sitofp(a, llty(DType.F64, lanes_of(a))) if signed else b.uitofp(a, llty(DType.F64, lanes_of(a)))
    fc = b.sitofp(c, fa.type) if signed else b.uitofp(c, fa.type)
    r = b.call(em.mb.intrinsic("pow", fa.type, 2), [fa, fc])
    return b.fptosi(r, a.type) if signed else b.fptoui(r, a.type)


@_emits("and", "or", "xor")
def _bitwise(em: Emitter, op: str, a: ir.Value, c: ir.Value, dt: DType) -> ir.Value:
    if dt.is_float:
        raise _unsupported(op, dt)
    return {"and": em.b.and_, "or": em.b.or_, "xor": em.b.xor}[op](a, c)


@_emits("shl", "shr")
def _shift(em: Emitter, op: str, a: ir.Value, c: ir.Value, dt: DType) -> ir.Value:
    if dt.is_float or dt is DType.BOOL:
        raise _unsupported(op, dt)
    if op == "shl":
        return em.b.shl(a, c)
    return em.b.ashr(a, c) if dt.is_signed else em.b.lshr(a, c)


# -- comparisons ------------------------------------------------------------------------------------
@_emits(*(name for name, op in SCALAR_OPS.items() if op.kind is Kind.COMPARE))
def _compare(em: Emitter, op: str, a: ir.Value, c: ir.Value, dt: DType) -> ir.Value:
    sym = SCALAR_OPS[op].symbol  # llvmlite names the predicates by the printer's symbols (<, <=, ==, ...)
    if dt.is_float:  # ordered, except ne: NaN != anything
        return em.b.fcmp_unordered(sym, a, c) if op == "ne" else em.b.fcmp_ordered(sym, a, c)
    return em.b.icmp_signed(sym, a, c) if dt.is_signed else em.b.icmp_unsigned(sym, a, c)


# -- unary ops of every dtype -----------------------------------------------------------------------
@_emits("neg")
def _neg(em: Emitter, op: str, x: ir.Value, dt: DType, lanes: int) -> ir.Value:
    return em.b.fneg(x) if dt.is_float else em.b.sub(ir.Constant(x.type, None), x)


@_emits("not")
def _not(em: Emitter, op: str, x: ir.Value, dt: DType, lanes: int) -> ir.Value:
    ones = 1 if dt is DType.BOOL else -1
    return em.b.xor(x, ir.Constant(x.type, [ones] * lanes if lanes > 1 else ones))


@_emits("abs")
def _abs(em: Emitter, op: str, x: ir.Value, dt: DType, lanes: int) -> ir.Value:
    t = x.type
    if dt.is_float:
        return em.b.call(em.mb.intrinsic("fabs", t), [x])
    if not dt.is_signed:
        return x
    return em.b.call(em.mb.declare(f"llvm.abs.{suffix(t)}", t, [t, I1]), [x, ir.Constant(I1, 0)])


@_emits("sign")
def _sign(em: Emitter, op: str, x: ir.Value, dt: DType, lanes: int) -> ir.Value:
    b = em.b
    one = const_value(1, dt, lanes)
    zero = const_value(0, dt, lanes)
    if dt.is_float:
        pos = b.fcmp_ordered(">", x, zero)
        neg = b.fcmp_ordered("<", x, zero)
        r = b.select(neg, b.fneg(one), x)  # keeps 0, -0 and NaN
        return b.select(pos, one, r)
    pos = b.icmp_signed(">", x, zero) if dt.is_signed else b.icmp_unsigned(">", x, zero)
    neg = b.icmp_signed("<", x, zero) if dt.is_signed else ir.Constant(I1, 0)
    r = b.select(neg, b.sub(zero, one), zero)
    return b.select(pos, one, r)


# -- unary float functions --------------------------------------------------------------------------
def _float_fn(*names: str, ints_unchanged: bool = False):
    """Register an emitter of float functions. On integers they are unsupported, or (``ints_unchanged``:
    rounding) the identity; on float32 the ones ``codegen/mathlib.py`` implements use it."""

    def register(fn):
        def emit(em: Emitter, op: str, x: ir.Value, dt: DType, lanes: int) -> ir.Value:
            if not dt.is_float:
                if ints_unchanged:
                    return x
                raise CompileError(f"unary op {op} on {dt} unsupported")
            if op in MATH_FUNCS and element_type(x.type) == ir.FloatType():
                return em.b.call(get_math_fn(em.mb.module, op, x.type), [x])
            return fn(em, op, x, dt, lanes)

        _emits(*names)(emit)
        return fn

    return register


@_float_fn("floor", "ceil", "trunc", ints_unchanged=True)
@_float_fn("sqrt", "exp", "log", "sin", "cos")
def _intrinsic(em: Emitter, op: str, x: ir.Value, dt: DType, lanes: int) -> ir.Value:
    if em.mb.target.is_gpu and op in ("exp", "log", "sin", "cos"):
        raise CompileError(f"{op} on {dt} is not available on {em.mb.target.name}")
    return em.b.call(em.mb.intrinsic(op, x.type), [x])


@_float_fn("round", ints_unchanged=True)
def _round(em: Emitter, op: str, x: ir.Value, dt: DType, lanes: int) -> ir.Value:
    return em.b.call(em.mb.intrinsic("roundeven", x.type), [x])


@_float_fn("recip")
def _recip(em: Emitter, op: str, x: ir.Value, dt: DType, lanes: int) -> ir.Value:
    return em.b.fdiv(const_value(1, dt, lanes), x)


@_float_fn("rsqrt")
def _rsqrt(em: Emitter, op: str, x: ir.Value, dt: DType, lanes: int) -> ir.Value:
    return em.b.fdiv(const_value(1, dt, lanes), em.b.call(em.mb.intrinsic("sqrt", x.type), [x]))


@_float_fn("sigmoid")
def _sigmoid(em: Emitter, op: str, x: ir.Value, dt: DType, lanes: int) -> ir.Value:
    one = const_value(1, dt, lanes)
    return em.b.fdiv(one, em.b.fadd(one, emit_scalar_op(em, "exp", em.b.fneg(x), dt, lanes)))


@_float_fn("isnan")
def _isnan(em: Emitter, op: str, x: ir.Value, dt: DType, lanes: int) -> ir.Value:
    return em.b.fcmp_unordered("uno", x, x)


@_float_fn("isinf", "isposinf", "isneginf")
def _isinf(em: Emitter, op: str, x: ir.Value, dt: DType, lanes: int) -> ir.Value:
    b = em.b
    inf = const_value(math.inf, dt, lanes)
    if op == "isposinf":
        return b.fcmp_ordered("==", x, inf)
    if op == "isneginf":
        return b.fcmp_ordered("==", x, b.fneg(inf))
    return b.fcmp_ordered("==", b.call(em.mb.intrinsic("fabs", x.type), [x]), inf)


@_float_fn("tanh", "erf", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "log1p", "expm1")
def _libm(em: Emitter, op: str, x: ir.Value, dt: DType, lanes: int) -> ir.Value:
    """libm's function, lane by lane (CPU targets)."""
    b = em.b
    if em.mb.target.is_gpu:
        raise CompileError(f"unary op {op} on {dt} unsupported on {em.mb.target.name}")
    st = element_type(x.type)
    fn = em.mb.declare(op + ("f" if st == ir.FloatType() else ""), st, [st])
    if lanes == 1:
        return b.call(fn, [x])
    out = ir.Constant(x.type, ir.Undefined)
    for i in range(lanes):
        xi = b.extract_element(x, ir.Constant(I32, i))
        out = b.insert_element(out, b.call(fn, [xi]), ir.Constant(I32, i))
    return out


# -- fused multiply-add and horizontal reductions ---------------------------------------------------
def emit_fma(em: Emitter, a: ir.Value, b: ir.Value, c: ir.Value, dt: DType) -> ir.Value:
    if dt.is_float:
        return em.b.call(em.mb.intrinsic("fma", c.type, 3), [a, b, c])
    return em.b.add(em.b.mul(a, b), c)


def emit_hreduce(em: Emitter, op: str, x: ir.Value, dt: DType) -> ir.Value:
    """The lanes of vector ``x`` combined with the reducible op ``op``."""
    fn = REDUCTIONS.get(op)
    if fn is None:
        raise CompileError(f"no horizontal reduction with {op}")
    return fn(em, op, x, dt)


def _vector_reduce(em: Emitter, name: str, x: ir.Value, *start: ir.Value, fastmath=()) -> ir.Value:
    t = x.type
    fn = em.mb.declare(f"llvm.vector.reduce.{name}.{suffix(t)}", t.element, [s.type for s in start] + [t])
    return em.b.call(fn, [*start, x], fastmath=fastmath)


@_emits("add", "mul", table=REDUCTIONS)
def _reduce_add_mul(em: Emitter, op: str, x: ir.Value, dt: DType) -> ir.Value:
    if dt.is_float:  # in any order, from the identity
        start = ir.Constant(x.type.element, -0.0 if op == "add" else 1.0)
        return _vector_reduce(em, "f" + op, x, start, fastmath=("reassoc",))
    if dt is DType.BOOL:
        return _vector_reduce(em, "or" if op == "add" else "and", x)
    return _vector_reduce(em, op, x)


@_emits("min", "max", table=REDUCTIONS)
def _reduce_min_max(em: Emitter, op: str, x: ir.Value, dt: DType) -> ir.Value:
    if dt.is_float:  # halve the vector log2(lanes) times with the NaN-propagating max/min
        b = em.b
        n = x.type.count
        while n > 1:
            h = n // 2
            lo_half = b.shuffle_vector(x, x, ir.Constant(ir.VectorType(I32, h), list(range(h))))
            hi_half = b.shuffle_vector(x, x, ir.Constant(ir.VectorType(I32, h), list(range(h, n))))
            x = fminmax(em, op, lo_half, hi_half)
            n = h
        return b.extract_element(x, ir.Constant(I32, 0))
    if dt is DType.BOOL:
        return _vector_reduce(em, "and" if op == "min" else "or", x)
    return _vector_reduce(em, ("s" if dt.is_signed else "u") + op, x)


@_emits("and", "or", table=REDUCTIONS)
def _reduce_bitwise(em: Emitter, op: str, x: ir.Value, dt: DType) -> ir.Value:
    if dt.is_float:
        raise _unsupported(op, dt)
    return _vector_reduce(em, op, x)


def check_complete() -> None:
    """Every op of the table has an emitter, every reducible op a reduction, and nothing else has one."""
    reducible = {n for n, op in SCALAR_OPS.items() if op.reducible}
    problems = [f"no LLVM emitter for scalar op {n!r}" for n in sorted(set(SCALAR_OPS) - set(EMITTERS))]
    problems += [f"an LLVM emitter for {n!r}, not a scalar op" for n in sorted(set(EMITTERS) - set(SCALAR_OPS))]
    problems += [f"no horizontal reduction with {n!r}" for n in sorted(reducible - set(REDUCTIONS))]
    problems += [f"a horizontal reduction with {n!r}, not reducible" for n in sorted(set(REDUCTIONS) - reducible)]
    if problems:
        raise RuntimeError("incomplete LLVM side of the scalar-op table: " + "; ".join(problems))


check_complete()
