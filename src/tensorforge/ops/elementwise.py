"""Elementwise ops, each defined once as a body over a scalar-op handler (see ``handler.py``).

``BODIES[name]`` is used by the reference semantics (numpy handler), the lowering (kernel-IR handler)
and the fusion passes; the type rule is derived from the declared dtype class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..ir.dtype import DType
from ..ir.graph import Node, TensorType
from .common import broadcast_shapes, prod
from .handler import NUMPY
from .registry import InferCtx, OpDef, Pattern, register

FLOAT = "float"
NUMERIC = "numeric"
INT = "int"
BOOLEAN = "bool"
ANY = "any"


@dataclass(frozen=True)
class Elementwise:
    name: str
    body: Callable  # body(h, attrs, *xs)
    arity: tuple[int, int]
    types: str  # accepted input dtype class
    out: str  # "same" | "bool" | "attr:to"
    attrs: dict
    flops: int  # per output element
    same_dtype: bool = True  # all (non-optional) inputs must share a dtype
    dtype_only: tuple[int, ...] = ()  # inputs that only give a dtype (their values are never read)


BODIES: dict[str, Elementwise] = {}


def _accepts(cls: str, dt: DType) -> bool:
    if cls == ANY:
        return True
    if cls == FLOAT:
        return dt.is_float
    if cls == NUMERIC:
        return dt is not DType.BOOL
    if cls == INT:
        return dt.is_int
    if cls == BOOLEAN:
        return dt is DType.BOOL
    raise ValueError(cls)


def _make_infer(e: Elementwise):
    def infer(ctx: InferCtx) -> list[TensorType]:
        present = [i for i, v in enumerate(ctx.inputs) if v is not None]
        dts = [ctx.dtype(i) for i in present]
        for i, dt in zip(present, dts):
            if not _accepts(e.types, dt):
                ctx.fail(f"input {i} has dtype {dt}, but {e.name} needs {e.types} inputs")
        if e.same_dtype and len(set(dts)) > 1:
            ctx.fail(f"inputs must have one dtype, got {', '.join(str(d) for d in dts)}")
        shape = broadcast_shapes(ctx, [ctx.shape(i) for i in present])
        if e.out == "same":
            dt = dts[0]
        elif e.out == "bool":
            dt = DType.BOOL
        elif e.out.startswith("attr:"):
            to = ctx.attr(e.out[5:])
            try:
                dt = to if isinstance(to, DType) else DType.from_onnx(int(to))
            except TypeError as err:
                ctx.unsupported(f"target dtype: {err}")
        else:
            raise ValueError(e.out)
        return [TensorType(dt, shape)]

    return infer


def _make_reference(e: Elementwise):
    def reference(attrs, *xs):
        arrs = [None if x is None else np.asarray(x) for x in xs]
        return (np.asarray(e.body(NUMPY, attrs, *arrs)),)

    return reference


def _make_flops(e: Elementwise):
    def flops(node: Node) -> int:
        shape = node.outputs[0].shape
        return e.flops * prod(shape) if all(isinstance(d, int) for d in shape) else 0

    return flops


def elementwise(name: str, arity=1, types: str = FLOAT, out: str = "same", attrs=None, flops: int = 1,
                pattern: Pattern | None = None, same_dtype: bool = True, dtype_only: tuple[int, ...] = ()):  # fmt: skip
    """Register an elementwise op whose semantics is ``body(h, attrs, *xs)``."""
    ar = (arity, arity) if isinstance(arity, int) else arity

    def deco(body):
        e = Elementwise(name, body, ar, types, out, dict(attrs or {}), flops, same_dtype, dtype_only)
        BODIES[name] = e
        pat = pattern if pattern is not None else (Pattern.ELEMWISE if ar == (1, 1) else Pattern.BROADCAST)
        register(OpDef(name, pat, _make_infer(e), _make_reference(e), e.attrs, ar, flops=_make_flops(e),
                       doc=(body.__doc__ or "").strip()))  # fmt: skip
        return body

    return deco


# -- unary float ------------------------------------------------------------------------------------
@elementwise("Relu", types=NUMERIC)
def relu(h, a, x):
    zero = h.const(0, x)
    return h.select(h.lt(x, zero), zero, x)


@elementwise("Sigmoid", flops=4)
def sigmoid(h, a, x):
    return h.sigmoid(x)


@elementwise("Tanh", flops=6)
def tanh(h, a, x):
    return h.tanh(x)


@elementwise("Exp", flops=4)
def exp(h, a, x):
    return h.exp(x)


@elementwise("Log", flops=4)
def log(h, a, x):
    return h.log(x)


@elementwise("Sqrt")
def sqrt(h, a, x):
    return h.sqrt(x)


@elementwise("Neg", types=NUMERIC)
def neg(h, a, x):
    return h.neg(x)


@elementwise("Abs", types=NUMERIC)
def abs_(h, a, x):
    return h.abs(x)


@elementwise("Reciprocal")
def reciprocal(h, a, x):
    return h.recip(x)


@elementwise("Floor")
def floor(h, a, x):
    return h.floor(x)


@elementwise("Ceil")
def ceil(h, a, x):
    return h.ceil(x)


@elementwise("Round")
def round_(h, a, x):
    return h.round(x)


@elementwise("Sign", types=NUMERIC)
def sign(h, a, x):
    return h.sign(x)


@elementwise("Erf", flops=8)
def erf(h, a, x):
    return h.erf(x)


@elementwise("Sin", flops=8)
def sin(h, a, x):
    return h.sin(x)


@elementwise("Cos", flops=8)
def cos(h, a, x):
    return h.cos(x)


for _name, _fn in [("Tan", "tan"), ("Asin", "asin"), ("Acos", "acos"), ("Atan", "atan"), ("Sinh", "sinh"),
                   ("Cosh", "cosh"), ("Asinh", "asinh"), ("Acosh", "acosh"), ("Atanh", "atanh")]:  # fmt: skip

    def _mk(fn_name):
        def body(h, a, x):
            return h.unary(fn_name, x)

        return body

    elementwise(_name, flops=8)(_mk(_fn))


@elementwise("LeakyRelu", attrs={"alpha": 0.01})
def leaky_relu(h, a, x):
    return h.select(h.lt(x, h.const(0, x)), h.mul(x, h.const(a["alpha"], x)), x)


@elementwise("Elu", attrs={"alpha": 1.0}, flops=5)
def elu(h, a, x):
    one = h.const(1, x)
    neg = h.mul(h.const(a["alpha"], x), h.sub(h.exp(x), one))
    return h.select(h.lt(x, h.const(0, x)), neg, x)


@elementwise("Selu", attrs={"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}, flops=6)
def selu(h, a, x):
    alpha, gamma = h.const(a["alpha"], x), h.const(a["gamma"], x)
    neg = h.sub(h.mul(alpha, h.exp(x)), alpha)
    return h.mul(gamma, h.select(h.le(x, h.const(0, x)), neg, x))


@elementwise("Celu", attrs={"alpha": 1.0}, flops=6)
def celu(h, a, x):
    alpha = h.const(a["alpha"], x)
    zero = h.const(0, x)
    neg = h.mul(alpha, h.sub(h.exp(h.div(x, alpha)), h.const(1, x)))
    return h.add(h.max(zero, x), h.min(zero, neg))


@elementwise("HardSigmoid", attrs={"alpha": 0.2, "beta": 0.5}, flops=3)
def hard_sigmoid(h, a, x):
    y = h.add(h.mul(x, h.const(a["alpha"], x)), h.const(a["beta"], x))
    return h.min(h.max(y, h.const(0, x)), h.const(1, x))


@elementwise("HardSwish", flops=4)
def hard_swish(h, a, x):
    y = h.add(h.mul(x, h.const(1 / 6, x)), h.const(0.5, x))
    return h.mul(x, h.min(h.max(y, h.const(0, x)), h.const(1, x)))


@elementwise("Softplus", flops=6)
def softplus(h, a, x):
    # log(1 + exp(x)) computed without overflow: max(x, 0) + log(1 + exp(-|x|))
    zero = h.const(0, x)
    return h.add(h.max(x, zero), h.log(h.add(h.const(1, x), h.exp(h.neg(h.abs(x))))))


@elementwise("Softsign", flops=3)
def softsign(h, a, x):
    return h.div(x, h.add(h.const(1, x), h.abs(x)))


@elementwise("Mish", flops=12)
def mish(h, a, x):
    return h.mul(x, h.tanh(softplus(h, a, x)))


@elementwise("Gelu", attrs={"approximate": "none"}, flops=10)
def gelu(h, a, x):
    half = h.const(0.5, x)
    if a.get("approximate", "none") == "tanh":
        inner = h.mul(h.const(0.7978845608028654, x), h.add(x, h.mul(h.const(0.044715, x), h.mul(x, h.mul(x, x)))))
        return h.mul(h.mul(half, x), h.add(h.const(1, x), h.tanh(inner)))
    return h.mul(h.mul(half, x), h.add(h.const(1, x), h.erf(h.mul(x, h.const(0.7071067811865476, x)))))


@elementwise("ThresholdedRelu", attrs={"alpha": 1.0})
def thresholded_relu(h, a, x):
    return h.select(h.gt(x, h.const(a["alpha"], x)), x, h.const(0, x))


@elementwise("Shrink", attrs={"bias": 0.0, "lambd": 0.5}, types=NUMERIC, flops=3)
def shrink(h, a, x):
    lambd, bias = h.const(a["lambd"], x), h.const(a["bias"], x)
    lo = h.select(h.lt(x, h.neg(lambd)), h.add(x, bias), h.const(0, x))
    return h.select(h.gt(x, lambd), h.sub(x, bias), lo)


# -- binary -----------------------------------------------------------------------------------------
@elementwise("Add", 2, types=NUMERIC)
def add(h, a, x, y):
    return h.add(x, y)


@elementwise("Sub", 2, types=NUMERIC)
def sub(h, a, x, y):
    return h.sub(x, y)


@elementwise("Mul", 2, types=NUMERIC)
def mul(h, a, x, y):
    return h.mul(x, y)


@elementwise("Div", 2, types=NUMERIC)
def div(h, a, x, y):
    return h.div(x, y)


@elementwise("Pow", 2, types=NUMERIC, same_dtype=False, flops=8)
def pow_(h, a, x, y):
    return h.pow(x, h.cast(y, h.dtype(x)))


@elementwise("Mod", 2, types=NUMERIC, attrs={"fmod": 0})
def mod(h, a, x, y):
    return h.fmod(x, y) if a.get("fmod", 0) else h.mod(x, y)


@elementwise("PRelu", 2, types=NUMERIC)
def prelu(h, a, x, slope):
    return h.select(h.lt(x, h.const(0, x)), h.mul(x, slope), x)


for _name, _op in [("Equal", "eq"), ("Less", "lt"), ("LessOrEqual", "le"), ("Greater", "gt"),
                   ("GreaterOrEqual", "ge")]:  # fmt: skip

    def _mkc(op):
        def body(h, a, x, y):
            return getattr(h, op)(x, y)

        return body

    elementwise(_name, 2, types=ANY, out="bool")(_mkc(_op))


@elementwise("And", 2, types=BOOLEAN)
def and_(h, a, x, y):
    return h.logical_and(x, y)


@elementwise("Or", 2, types=BOOLEAN)
def or_(h, a, x, y):
    return h.logical_or(x, y)


@elementwise("Xor", 2, types=BOOLEAN)
def xor_(h, a, x, y):
    return h.logical_xor(x, y)


@elementwise("Not", types=BOOLEAN)
def not_(h, a, x):
    return h.logical_not(x)


@elementwise("BitwiseAnd", 2, types=INT)
def bitwise_and(h, a, x, y):
    return h.bit_and(x, y)


@elementwise("BitwiseOr", 2, types=INT)
def bitwise_or(h, a, x, y):
    return h.bit_or(x, y)


@elementwise("BitwiseXor", 2, types=INT)
def bitwise_xor(h, a, x, y):
    return h.bit_xor(x, y)


@elementwise("BitwiseNot", types=INT)
def bitwise_not(h, a, x):
    return h.bit_not(x)


@elementwise("BitShift", 2, types=INT, attrs={"direction": "LEFT"})
def bit_shift(h, a, x, y):
    # shift amounts are unsigned: one of at least the bit width (a negative one included) shifts every bit
    # out (0, or the sign for a right shift of a signed value), rather than being undefined
    dt = h.dtype(x)
    zero = h.const(0, y)
    ok = h.logical_and(h.ge(y, zero), h.lt(y, h.const(dt.bits, y)))
    s = h.select(ok, y, zero)
    if a.get("direction", "LEFT") == "LEFT":
        return h.select(ok, h.shl(x, s), h.const(0, x))
    fill = h.select(h.lt(x, h.const(0, x)), h.const(-1, x), h.const(0, x)) if dt.is_signed else h.const(0, x)
    return h.select(ok, h.shr(x, s), fill)


@elementwise("IsNaN", types=FLOAT, out="bool")
def isnan(h, a, x):
    return h.isnan(x)


@elementwise("IsInf", types=FLOAT, out="bool", attrs={"detect_negative": 1, "detect_positive": 1})
def isinf(h, a, x):
    neg, pos = a.get("detect_negative", 1), a.get("detect_positive", 1)
    if neg and pos:
        return h.isinf(x)
    if pos:
        return h.isposinf(x)
    if neg:
        return h.isneginf(x)
    return h.logical_and(h.isinf(x), h.isnan(x))  # never both: all false


# -- variadic / ternary -----------------------------------------------------------------------------
@elementwise("Max", (1, -1), types=NUMERIC)
def max_(h, a, *xs):
    r = xs[0]
    for x in xs[1:]:
        r = h.max(r, x)
    return r


@elementwise("Min", (1, -1), types=NUMERIC)
def min_(h, a, *xs):
    r = xs[0]
    for x in xs[1:]:
        r = h.min(r, x)
    return r


@elementwise("Sum", (1, -1), types=NUMERIC)
def sum_(h, a, *xs):
    r = xs[0]
    for x in xs[1:]:
        r = h.add(r, x)
    return r


@elementwise("Mean", (1, -1), types=FLOAT)
def mean(h, a, *xs):
    r = sum_(h, a, *xs)
    return h.div(r, h.const(len(xs), r)) if len(xs) > 1 else r


@elementwise("Clip", (1, 3), types=NUMERIC)
def clip(h, a, x, lo=None, hi=None):
    if lo is not None:
        x = h.max(x, lo)
    if hi is not None:
        x = h.min(x, hi)
    return x


@elementwise("Where", 3, types=ANY, same_dtype=False, pattern=Pattern.BROADCAST)
def where(h, a, c, x, y):
    return h.select(c, x, y)


@elementwise("Cast", types=ANY, out="attr:to", attrs={"saturate": 1})
def cast(h, a, x):
    to = a["to"]
    return h.cast(x, to if isinstance(to, DType) else DType.from_onnx(int(to)))


@elementwise("BitCast", types=ANY, out="attr:to")
def bit_cast(h, a, x):
    to = a["to"]
    return h.bitcast(x, to if isinstance(to, DType) else DType.from_onnx(int(to)))


@elementwise("CastLike", 2, types=ANY, same_dtype=False, dtype_only=(1,))
def cast_like(h, a, x, like):
    return h.cast(x, h.dtype(like))


# Where's output dtype is that of x (input 1), and its condition must be bool: fix the generic rule.
def _where_infer(ctx: InferCtx) -> list[TensorType]:
    if ctx.dtype(0) is not DType.BOOL:
        ctx.fail(f"condition must be bool, got {ctx.dtype(0)}")
    if ctx.dtype(1) != ctx.dtype(2):
        ctx.fail(f"X and Y must have one dtype, got {ctx.dtype(1)} and {ctx.dtype(2)}")
    shape = broadcast_shapes(ctx, [ctx.shape(0), ctx.shape(1), ctx.shape(2)])
    return [TensorType(ctx.dtype(1), shape)]


def _cast_like_infer(ctx: InferCtx) -> list[TensorType]:
    return [TensorType(ctx.dtype(1), ctx.shape(0))]


def _replace_infer(name: str, infer) -> None:
    from . import registry

    old = registry._REGISTRY.pop(name)
    register(OpDef(old.name, old.pattern, infer, old.reference, old.attrs, old.inputs, old.value, old.flops,
                   old.doc))  # fmt: skip


_replace_infer("Where", _where_infer)
_replace_infer("CastLike", _cast_like_infer)


def _clip_infer(ctx: InferCtx) -> list[TensorType]:
    dt = ctx.dtype(0)
    if dt is DType.BOOL:
        ctx.fail("Clip needs a numeric input, got bool")
    for i in (1, 2):
        if ctx.has(i):
            if ctx.dtype(i) != dt:
                ctx.fail(f"{'min' if i == 1 else 'max'} has dtype {ctx.dtype(i)}, input has {dt}")
            if ctx.type(i).rank != 0 and ctx.type(i).numel != 1:
                ctx.fail(f"{'min' if i == 1 else 'max'} must be a scalar, got shape {list(ctx.shape(i))}")
    return [TensorType(dt, ctx.shape(0))]


_replace_infer("Clip", _clip_infer)


def _bitcast_infer(ctx: InferCtx) -> list[TensorType]:
    try:
        to = DType.from_onnx(int(ctx.attr("to")))
    except TypeError as err:
        ctx.unsupported(f"target dtype: {err}")
    if to.itemsize != ctx.dtype(0).itemsize:
        ctx.unsupported(f"bit cast between types of different widths ({ctx.dtype(0)} -> {to}) changes the shape")
    return [TensorType(to, ctx.shape(0))]


_replace_infer("BitCast", _bitcast_infer)
