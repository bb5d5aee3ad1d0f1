"""LLVM emitters of the bf16 kernel-IR nodes (``lower/kir/bf16.py``): ``ToBF16``, ``BfDot``, ``BfTileDot``.

* ``ToBF16``: on AVX512-BF16 ``vcvtneps2bf16`` (``llvm.x86.avx512bf16.cvtneps2bf16.{128,256,512}``) and, for
  pairs or 32 lanes, ``vcvtne2ps2bf16`` (``...cvtne2ps2bf16.512``: its low half is the second operand's), the
  pairs interleaved by one ``vpermw``; elsewhere the same rounding in integer arithmetic.
* ``BfDot``: ``vdpbf16ps`` (``llvm.x86.avx512bf16.dpbf16ps.{256,512}``, operands ``<2L x bfloat>``); a one-pair
  operand is broadcast as one 32-bit element. Elsewhere: widen to float32, multiply and add the pairs.
* ``BfTileDot``: AMX ``tdpbf16ps`` (``llvm.x86.tdpbf16ps.internal``); the float32 accumulator travels as
  ``<256 x float>`` through ``llvm.x86.cast.{vector.to.tile,tile.to.vector}.v256f32`` (LLVM keeps it in a tile
  register and inserts ``ldtilecfg``), as the int8 tiles do (``intdot.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import llvmlite.ir as ir

from ...errors import CompileError
from ...lower.kir.bf16 import BfDot, BfTileDot, ToBF16
from . import emitter as E
from .intdot import X86_AMX
from .lltypes import I16, I32, I64, PTR, gep, memty

if TYPE_CHECKING:
    from .emitter import Emitter


class BFloatType(ir.Type):
    """LLVM's ``bfloat``, which llvmlite.ir does not know (only ever a bitcast of 16 bits here)."""

    def _to_string(self) -> str:
        return "bfloat"

    def __eq__(self, other) -> bool:
        return isinstance(other, BFloatType)

    def __hash__(self) -> int:
        return hash("bfloat")


BFLOAT = BFloatType()
F32 = ir.FloatType()


def _vec(t: ir.Type, n: int) -> ir.VectorType:
    return ir.VectorType(t, n)


def _x86(em: Emitter, feature: str) -> bool:
    t = em.mb.target
    return t.arch == "x86_64" and t.has_feature(feature)


def _half(b: ir.IRBuilder, v: ir.Value, lo: int, n: int) -> ir.Value:
    return b.shuffle_vector(v, ir.Constant(v.type, ir.Undefined), ir.Constant(_vec(I32, n), list(range(lo, lo + n))))


def _soft_bits(em: Emitter, x: ir.Value) -> ir.Value:
    """float32 lanes -> bf16 bits, ties to even, NaN -> quiet NaN (integer arithmetic, any target)."""
    b = em.b
    n = x.type.count if isinstance(x.type, ir.VectorType) else 1
    it = _vec(I32, n) if n > 1 else I32

    def c(v: int) -> ir.Constant:
        return ir.Constant(it, [v] * n) if n > 1 else ir.Constant(I32, v)

    bits = b.bitcast(x, it)
    lsb = b.and_(b.lshr(bits, c(16)), c(1))
    r = b.lshr(b.add(bits, b.add(c(0x7FFF), lsb)), c(16))
    r = b.select(b.fcmp_unordered("uno", x, x), b.or_(c(0x7FC0), b.and_(b.lshr(bits, c(16)), c(0x8000))), r)
    return b.trunc(r, _vec(I16, n) if n > 1 else I16)


def _hw_bits(em: Emitter, x: ir.Value) -> ir.Value | None:
    """``vcvtneps2bf16`` / ``vcvtne2ps2bf16`` of 4, 8, 16 or 32 float32 lanes; None when the target cannot."""
    b, mb = em.b, em.mb
    n = x.type.count if isinstance(x.type, ir.VectorType) else 1
    if not _x86(em, "avx512bf16") or n not in (4, 8, 16, 32) or (n < 16 and not _x86(em, "avx512vl")):
        return None
    if n == 32:
        lo, hi = _half(b, x, 0, 16), _half(b, x, 16, 16)
        fn = mb.declare("llvm.x86.avx512bf16.cvtne2ps2bf16.512", _vec(BFLOAT, 32), [_vec(F32, 16)] * 2)
        return b.bitcast(b.call(fn, [hi, lo]), _vec(I16, 32))
    if n == 4:  # the 128-bit form converts into the low half of an 8-lane result
        fn = mb.declare("llvm.x86.avx512bf16.mask.cvtneps2bf16.128", _vec(BFLOAT, 8),
                        [_vec(F32, 4), _vec(BFLOAT, 8), _vec(ir.IntType(1), 4)])  # fmt: skip
        r = b.call(fn, [x, ir.Constant(_vec(BFLOAT, 8), None), ir.Constant(_vec(ir.IntType(1), 4), [1] * 4)])
        return _half(b, b.bitcast(r, _vec(I16, 8)), 0, 4)
    fn = mb.declare(f"llvm.x86.avx512bf16.cvtneps2bf16.{32 * n}", _vec(BFLOAT, n), [_vec(F32, n)])
    return b.bitcast(b.call(fn, [x]), _vec(I16, n))


def _bits(em: Emitter, x: ir.Value) -> ir.Value:
    hw = _hw_bits(em, x)
    return hw if hw is not None else _soft_bits(em, x)


def emit_to_bf16(em: Emitter, e: ToBF16) -> ir.Value:
    b = em.b
    xa = em.expr(e.a)
    if e.b is None:
        return _bits(em, xa)
    xb = em.expr(e.b)
    n = e.a.lanes
    if n == 1:
        both = b.insert_element(b.insert_element(ir.Constant(_vec(F32, 2), None), xa, ir.Constant(I32, 0)), xb,
                                ir.Constant(I32, 1))  # fmt: skip
        return _soft_bits(em, both)
    if n == 16 and _x86(em, "avx512bf16"):  # one vcvtne2ps2bf16 ([a | b]) and one vpermw interleaving the halves
        fn = em.mb.declare("llvm.x86.avx512bf16.cvtne2ps2bf16.512", _vec(BFLOAT, 32), [_vec(F32, 16)] * 2)
        ab = b.bitcast(b.call(fn, [xb, xa]), _vec(I16, 32))
        order = [i // 2 + (i % 2) * 16 for i in range(32)]
        return b.shuffle_vector(ab, ir.Constant(ab.type, ir.Undefined), ir.Constant(_vec(I32, 32), order))
    ba, bb = _bits(em, xa), _bits(em, xb)
    order = [i // 2 + (i % 2) * n for i in range(2 * n)]
    return b.shuffle_vector(ba, bb, ir.Constant(_vec(I32, 2 * n), order))


def _as_f32(b: ir.IRBuilder, bits: ir.Value, n: int) -> ir.Value:
    wide = b.zext(bits, _vec(I32, n))
    return b.bitcast(b.shl(wide, ir.Constant(_vec(I32, n), [16] * n)), _vec(F32, n))


def _pairs(em: Emitter, v: ir.Value, lanes: int) -> ir.Value:
    """A ``<2 x i16>`` operand (one pair) repeated for every lane, else ``v``: ``<2*lanes x i16>``."""
    b = em.b
    if v.type.count == 2 * lanes:
        return v
    undef = ir.Constant(_vec(I32, lanes), ir.Undefined)
    one = b.insert_element(undef, b.bitcast(v, I32), ir.Constant(I32, 0))
    splat = b.shuffle_vector(one, undef, ir.Constant(_vec(I32, lanes), [0] * lanes))
    return b.bitcast(splat, _vec(I16, 2 * lanes))


def emit_bf_dot(em: Emitter, e: BfDot) -> ir.Value:
    b = em.b
    L = e.lanes
    acc = em.expr(e.acc)
    va, vb = _pairs(em, em.expr(e.a), L), _pairs(em, em.expr(e.b), L)
    if L in (8, 16) and _x86(em, "avx512bf16") and (L == 16 or _x86(em, "avx512vl")):
        bt = _vec(BFLOAT, 2 * L)
        fn = em.mb.declare(f"llvm.x86.avx512bf16.dpbf16ps.{32 * L}", _vec(F32, L), [_vec(F32, L), bt, bt])
        return b.call(fn, [acc, b.bitcast(va, bt), b.bitcast(vb, bt)])
    # generic: exact float32 products of bf16 values, the pair's sum added to the accumulator
    prod = b.fmul(_as_f32(b, va, 2 * L), _as_f32(b, vb, 2 * L))
    even = b.shuffle_vector(prod, ir.Constant(prod.type, None), ir.Constant(_vec(I32, L), [2 * i for i in range(L)]))
    odd = b.shuffle_vector(prod, ir.Constant(prod.type, None), ir.Constant(_vec(I32, L), [2 * i + 1 for i in range(L)]))
    return b.fadd(acc, b.fadd(even, odd))


def _tile_ptr(em: Emitter, ld) -> ir.Value:
    return gep(em.b, em.buf_ptr(ld.buf), [em.expr(ld.index)], source_etype=memty(ld.buf.dtype))


def emit_bf_tile_dot(em: Emitter, e: BfTileDot) -> ir.Value:
    t = em.mb.target
    if not (t.has_feature("amx-bf16") and t.has_feature("amx-tile")):
        raise CompileError(f"BfTileDot needs a target with amx-bf16 (target {t.name} lacks it)")
    b, mb = em.b, em.mb
    v256 = _vec(F32, 256)
    to_tile = mb.declare("llvm.x86.cast.vector.to.tile.v256f32", X86_AMX, [v256])
    to_vec = mb.declare("llvm.x86.cast.tile.to.vector.v256f32", v256, [X86_AMX])
    load = mb.declare("llvm.x86.tileloadd64.internal", X86_AMX, [I16, I16, PTR, I64])
    dot = mb.declare("llvm.x86.tdpbf16ps.internal", X86_AMX, [I16, I16, I16, X86_AMX, X86_AMX, X86_AMX])
    rows, colb = ir.Constant(I16, 16), ir.Constant(I16, 64)
    acc = b.call(to_tile, [em.expr(e.acc)])
    ta = b.call(load, [rows, colb, _tile_ptr(em, e.a), ir.Constant(I64, 2 * e.a_stride)])
    tb = b.call(load, [rows, colb, _tile_ptr(em, e.b), ir.Constant(I64, 2 * e.b_stride)])
    return b.call(to_vec, [b.call(dot, [rows, colb, colb, acc, ta, tb])])


E.EXPR_HOOKS[ToBF16] = emit_to_bf16
E.EXPR_HOOKS[BfDot] = emit_bf_dot
E.EXPR_HOOKS[BfTileDot] = emit_bf_tile_dot
