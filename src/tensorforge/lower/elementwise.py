"""Lowering of elementwise ops: the op bodies of ``ops/elementwise.py`` run over kernel-IR expressions."""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from ..ir.scalar_ops import Kind, ScalarOp
from ..ops.elementwise import BODIES
from ..ops.handler import ScalarHandler
from . import kir as K
from .rules import LowerCtx, index_rule
from .tensor import TExpr, broadcast_index

_BUILD = {Kind.BINARY: K.binop, Kind.COMPARE: K.cmp, Kind.UNARY: K.unop}


class KirHandler(ScalarHandler):
    """The scalar-op vocabulary of op bodies, building kernel-IR expressions."""

    def table_op(self, name: str, op: ScalarOp, *xs: K.Expr) -> K.Expr:
        return _BUILD[op.kind](op.name, *xs)

    @staticmethod
    def dtype(x: K.Expr) -> DType:
        return x.dtype

    def const(self, value, like: K.Expr) -> K.Expr:
        return K.const(value, like.dtype)

    def const_of(self, value, dtype: DType) -> K.Expr:
        return K.const(value, dtype)

    def cast(self, x, dtype: DType):
        if x.dtype.is_float and dtype.is_int:
            return K.cast(K.unop("trunc", x), dtype)
        return K.cast(x, dtype)

    def bitcast(self, x, dtype: DType):
        return K.Bitcast(x, dtype)

    def mod(self, a, b):
        if a.dtype.is_float:
            return K.binop("mod", a, b)
        # integer mod with the sign of the divisor (Python semantics); kernel-IR integer mod is index arithmetic
        r = K.binop("fmod", a, b)
        zero = K.const(0, a.dtype)
        fix = K.binop("and", K.cmp("ne", r, zero), K.binop("xor", K.cmp("lt", r, zero), K.cmp("lt", b, zero)))
        return K.select(fix, K.binop("add", r, b), r)

    def pow(self, a, b):
        if isinstance(b, K.Const) and b.lanes == 1 and a.dtype.is_float:
            if b.value == 2:
                return K.binop("mul", a, a)
            if b.value == 1:
                return a
            if b.value == 0.5:
                return K.unop("sqrt", a)
            if b.value == 3:
                return K.binop("mul", K.binop("mul", a, a), a)
        return K.binop("pow", a, b)

    def select(self, c, a, b):
        return K.select(c, a, b)

    def fma(self, a, b, c):
        return K.Fma(a, b, c)


KIR = KirHandler()


def apply_body(name: str, attrs: dict, ins: list[TExpr | None], out_shape, out_dtype: DType) -> TExpr:
    """The TExpr of elementwise op ``name`` over (broadcast) inputs."""
    e = BODIES[name]
    merged = dict(e.attrs)
    merged.update(attrs)
    out_shape = tuple(out_shape)

    def fn(idx):
        args = []
        for i, t in enumerate(ins):
            if t is None:
                args.append(None)
            elif i in e.dtype_only:
                args.append(K.const(0, t.dtype))
            elif t.shape == out_shape:
                args.append(t.fn(idx))
            else:
                args.append(t.fn(broadcast_index(idx, t.shape, out_shape)))
        while args and args[-1] is None:
            args.pop()
        return K.cast(e.body(KIR, merged, *args), out_dtype)

    return TExpr.compute(out_shape, out_dtype, fn)


def _elementwise(ctx: LowerCtx, node, ins: list[TExpr]) -> list[TExpr]:
    out = node.outputs[0]
    return [apply_body(node.op, dict(node.attrs), ins, tuple(out.shape), out.dtype)]


index_rule(*BODIES)(_elementwise)


@index_rule("BatchNormalization")
def _batchnorm(ctx: LowerCtx, node, ins: list[TExpr]) -> list[TExpr]:
    x, scale, bias, mean, var = ins
    eps = float(node.attrs.get("epsilon", 1e-5))
    out = node.outputs[0]
    c = x.shape[1]
    if all(t.const is not None for t in (scale, bias, mean, var)):
        # fold into y = x * a[c] + b[c] at compile time
        s64 = scale.const.astype(np.float64) / np.sqrt(var.const.astype(np.float64) + eps)
        b64 = bias.const.astype(np.float64) - mean.const.astype(np.float64) * s64
        a_t = ctx.builder.add_const(s64.astype(x.dtype.np).reshape(c), node.name + "_scale")
        b_t = ctx.builder.add_const(b64.astype(x.dtype.np).reshape(c), node.name + "_shift")

        def fn(idx):
            ch = idx[1]
            return K.Fma(x(idx), a_t.load([ch]), b_t.load([ch]))

        return [TExpr.compute(out.shape, out.dtype, fn)]

    def fn_dyn(idx):
        ch = [idx[1]]
        inv = K.unop("rsqrt", K.binop("add", var(ch), K.const(eps, x.dtype)))
        return K.binop(
            "add", K.binop("mul", K.binop("sub", x(idx), mean(ch)), K.binop("mul", inv, scale(ch))), bias(ch)
        )

    return [TExpr.compute(out.shape, out.dtype, fn_dyn)]
