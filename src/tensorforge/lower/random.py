"""Lowering of PhiloxUniform: Philox4x32-10 as an index expression (``ops/random.py`` holds the algorithm
and its numpy reference; both run the same ``philox4x32`` over their own primitives).

Each element's counter is its linear index, so the loop builder vectorizes it like any elementwise op: the
32x32->64 multiplies are u64 multiplies of zero-extended u32 lanes (``vpmuludq``), the rest xors and adds.
"""

from __future__ import annotations

from ..ir.dtype import DType
from ..ops.random import MASK32, philox4x32
from . import kir as K
from .movement import scalar_of
from .rules import LowerCtx, index_rule
from .tensor import TExpr, contiguous_strides

U32, U64 = DType.U32, DType.U64


def _mulhilo(m: int, x):
    p = K.binop("mul", K.cast(x, U64), K.const(m, U64))
    return K.cast(K.binop("shr", p, K.const(32, U64)), U32), K.cast(p, U32)


def _xor(a, b):
    return K.binop("xor", a, b)


def _bump(k, w: int):
    return K.binop("add", k, K.const(w, U32))


def _words(v) -> tuple:
    """The low and high 32 bits of a 64-bit scalar expression, as u32."""
    v = K.cast(v, U64)
    return K.cast(K.binop("and", v, K.const(MASK32, U64)), U32), K.cast(K.binop("shr", v, K.const(32, U64)), U32)


@index_rule("PhiloxUniform")
def _philox_uniform(ctx: LowerCtx, node, ins):
    seed, offset = ins
    out = node.outputs[0]
    strides = contiguous_strides(out.shape)
    k = list(_words(scalar_of(seed)))
    off = _words(scalar_of(offset))

    def fn(idx):
        lin = K.Const(0)
        for i, st, d in zip(idx, strides, out.shape):
            if d != 1:
                lin = K.binop("add", lin, K.binop("mul", i, st))
        c = [*_words(lin), *off]
        w0 = philox4x32(c, k, _mulhilo, _xor, _bump)[0]
        top = K.cast(K.binop("shr", w0, K.const(8, U32)), DType.F32)
        return K.binop("mul", top, K.const(2.0**-24, DType.F32))

    return [TExpr.compute(out.shape, out.dtype, fn)]
