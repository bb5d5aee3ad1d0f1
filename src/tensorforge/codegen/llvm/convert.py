"""Dtype conversions: values between their memory form and their register form (float16 and bfloat16 are
computed in float, bool is i1 in registers and one byte in memory), casts and bitcasts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import llvmlite.ir as ir

from ...ir.dtype import DType
from .lltypes import fwidth, iconst, ivec, lanes_of, llty, memty

if TYPE_CHECKING:
    from .emitter import Emitter


def from_mem(em: Emitter, x: ir.Value, dt: DType) -> ir.Value:
    b = em.b
    if dt is DType.F16:
        return b.fpext(x, llty(dt, lanes_of(x)))
    if dt is DType.BF16:  # the high half of a float32
        n = lanes_of(x)
        wide = b.zext(x, ivec(32, n))
        return b.bitcast(b.shl(wide, iconst(32, 16, n)), llty(dt, n))
    if dt is DType.BOOL:
        return b.icmp_unsigned("!=", x, ir.Constant(x.type, None))
    return x


def to_mem(em: Emitter, x: ir.Value, dt: DType) -> ir.Value:
    if dt is DType.F16:
        return em.b.fptrunc(x, memty(dt, lanes_of(x)))
    if dt is DType.BF16:
        return _to_bf16_bits(em, x)
    if dt is DType.BOOL:
        return em.b.zext(x, memty(dt, lanes_of(x)))
    return x


def bitcast(em: Emitter, x: ir.Value, src: DType, dst: DType, lanes: int) -> ir.Value:
    """Reinterpret at memory width (float16 and bool live widened in registers)."""
    m = to_mem(em, x, src)
    return from_mem(em, em.b.bitcast(m, memty(dst, lanes)), dst)


def cast(em: Emitter, x: ir.Value, src: DType, dst: DType, lanes: int) -> ir.Value:
    b = em.b
    dt = llty(dst, lanes)
    if src is dst:
        return x
    if dst is DType.BOOL:
        zero = ir.Constant(x.type, None)
        return b.fcmp_unordered("!=", x, zero) if src.is_float else b.icmp_unsigned("!=", x, zero)
    if src is DType.BOOL:
        return b.uitofp(x, dt) if dst.is_float else b.zext(x, dt)
    if src.is_float and dst.is_float:
        if dst in (DType.F16, DType.BF16):
            if fwidth(x.type) == 64:
                x = _f64_to_f32_round_odd(em, x, lanes)
            return _round_to(em, x, dst, lanes)
        sw, dw = fwidth(x.type), fwidth(dt)
        if sw == dw:
            return x
        return b.fpext(x, dt) if dw > sw else b.fptrunc(x, dt)
    if src.is_float:
        return b.fptosi(x, dt) if dst.is_signed else b.fptoui(x, dt)
    if dst.is_float:
        r = b.sitofp(x, dt) if src.is_signed else b.uitofp(x, dt)
        return _round_to(em, r, dst, lanes) if dst in (DType.F16, DType.BF16) else r
    sw, dw = src.bits, dst.bits
    if dw < sw:
        return b.trunc(x, dt)
    if dw > sw:
        return b.sext(x, dt) if src.is_signed else b.zext(x, dt)
    return x


def _round_to(em: Emitter, x: ir.Value, dst: DType, lanes: int) -> ir.Value:
    """float ``x`` rounded to half precision (``dst`` float16 or bfloat16), kept in a float register."""
    if dst is DType.F16:
        return em.b.fpext(em.b.fptrunc(x, memty(DType.F16, lanes)), llty(dst, lanes))
    return from_mem(em, _to_bf16_bits(em, x), DType.BF16)


def _to_bf16_bits(em: Emitter, x: ir.Value) -> ir.Value:
    """float32 -> the 16 bits of the nearest bfloat16 (ties to even; NaN stays a quiet NaN)."""
    b = em.b
    n = lanes_of(x)
    bits = b.bitcast(x, ivec(32, n))
    lsb = b.and_(b.lshr(bits, iconst(32, 16, n)), iconst(32, 1, n))
    rounded = b.lshr(b.add(bits, b.add(iconst(32, 0x7FFF, n), lsb)), iconst(32, 16, n))
    rounded = b.select(b.fcmp_unordered("uno", x, x), iconst(32, 0x7FC0, n), rounded)
    return b.trunc(rounded, ivec(16, n))


def _f64_to_f32_round_odd(em: Emitter, x: ir.Value, lanes: int) -> ir.Value:
    """double -> float rounded to odd, so that a following float -> half rounding is exact.

    A direct ``fptrunc double to half`` becomes a call to compiler-rt's __truncdfhf2, which the JIT
    cannot resolve; rounding through float to nearest twice can be off by one ulp at ties. Rounding
    to odd first (truncate toward zero, set the last bit if inexact) is exact, since float carries
    more than twice half's precision plus two bits."""
    b = em.b
    ft = llty(DType.F32, lanes)
    it = ivec(32, lanes)
    t = b.fptrunc(x, ft)
    back = b.fpext(t, x.type)
    fabs = em.mb.intrinsic("fabs", x.type)
    bits = b.bitcast(t, it)
    one = iconst(32, 1, lanes)
    over = b.fcmp_ordered(">", b.call(fabs, [back]), b.call(fabs, [x]))  # rounded away from zero
    bits = b.select(over, b.sub(bits, one), bits)
    inexact = b.fcmp_ordered("!=", back, x)
    bits = b.select(inexact, b.or_(bits, one), bits)
    return b.bitcast(bits, ft)
