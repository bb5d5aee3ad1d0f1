"""LLVM emitters of the integer dot-accumulates of the kernel IR (``Dot``, ``TileDot``).

``Dot`` picks the instruction from the operands' types and the target's features:

* 4 x 8-bit, one operand unsigned and one signed, on VNNI (``avx512vnni``: zmm, or ymm with ``avx512vl``;
  ``avxvnni``: ymm): ``vpdpbusd`` (the unsigned operand goes first);
* 2 x int16 on AVX2 / AVX-512BW: ``vpmaddwd`` (exact: no pair of int16 products overflows int32 unless both
  are -32768 * -32768, which 8-bit data shifted by a zero point never is) and an add;
* anything else (AArch64, SSE, other signedness): widen both operands to the accumulator's type, multiply
  and add the groups' lanes with shuffles: exact everywhere, LLVM picks the target's instructions.

``TileDot`` is AMX: ``tdpb{s,u}{s,u}d`` on 16x16 int32 tiles; the accumulator travels between iterations as
a ``<256 x i32>`` vector (``llvm.x86.cast.{vector.to.tile,tile.to.vector}``, as clang emits it), so LLVM's
AMX passes keep it in a tile register and insert ``ldtilecfg`` / ``tilerelease``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import llvmlite.ir as ir

from ...errors import CompileError
from ...ir.dtype import DType
from ...lower.kir import Dot, TileDot
from . import emitter as E
from .lltypes import I16, I64, PTR, gep, memty

if TYPE_CHECKING:
    from .emitter import Emitter


class AmxType(ir.Type):
    """LLVM's ``x86_amx`` (an AMX tile register), which llvmlite.ir does not know."""

    def _to_string(self) -> str:
        return "x86_amx"

    def __eq__(self, other) -> bool:
        return isinstance(other, AmxType)

    def __hash__(self) -> int:
        return hash("x86_amx")


X86_AMX = AmxType()
_SIGNED8 = {DType.I8: True, DType.U8: False}


def _feature(em: Emitter, name: str) -> bool:
    return em.mb.target.has_feature(name)


def _as_group_vector(em: Emitter, v: ir.Value, group: int, lanes: int, bits: int) -> ir.Value:
    """An operand of ``group`` elements repeated for every one of ``lanes`` lanes; else ``v`` itself."""
    b = em.b
    if not isinstance(v.type, ir.VectorType):
        v = b.insert_element(ir.Constant(ir.VectorType(v.type, 1), None), v, ir.Constant(ir.IntType(32), 0))
    if v.type.count == group * lanes:
        return v
    word = ir.IntType(bits * group)
    w = b.bitcast(v, word) if group > 1 else v
    splat = b.shuffle_vector(b.insert_element(ir.Constant(ir.VectorType(word, lanes), None), w,
                                              ir.Constant(ir.IntType(32), 0)),
                             ir.Constant(ir.VectorType(word, lanes), None),
                             ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))  # fmt: skip
    return b.bitcast(splat, ir.VectorType(ir.IntType(bits), group * lanes))


def emit_dot(em: Emitter, e: Dot) -> ir.Value:
    b = em.b
    L, G = e.acc.lanes, e.group
    acc = em.expr(e.acc)
    da, db = e.a.dtype, e.b.dtype
    bits = da.itemsize * 8
    va = _as_group_vector(em, em.expr(e.a), G, L, bits)
    vb = _as_group_vector(em, em.expr(e.b), G, L, db.itemsize * 8)
    i32v = ir.VectorType(ir.IntType(32), L)
    x86 = em.mb.target.arch == "x86_64"
    if x86 and e.dtype is DType.I32 and G == 4 and {da, db} == {DType.U8, DType.I8}:
        vnni = (L == 16 and _feature(em, "avx512vnni")) or (L == 8 and (_feature(em, "avxvnni") or (
            _feature(em, "avx512vnni") and _feature(em, "avx512vl"))))  # fmt: skip
        if vnni:
            u, s = (va, vb) if da is DType.U8 else (vb, va)
            fn = em.mb.declare(f"llvm.x86.avx512.vpdpbusd.{32 * L}", i32v, [i32v, i32v, i32v])
            return b.call(fn, [acc, b.bitcast(u, i32v), b.bitcast(s, i32v)])
    if x86 and e.dtype is DType.I32 and G == 2 and da is DType.I16 and db is DType.I16:
        name = {8: "llvm.x86.avx2.pmadd.wd", 16: "llvm.x86.avx512.pmaddw.d.512"}.get(L)
        if name and (L == 8 or _feature(em, "avx512bw")):
            i16v = ir.VectorType(I16, 2 * L)
            return b.add(acc, b.call(em.mb.declare(name, i32v, [i16v, i16v]), [va, vb]))
    # generic: widen, multiply, sum each group's lanes
    wide = ir.VectorType(acc.type.element if isinstance(acc.type, ir.VectorType) else acc.type, G * L)
    xa = b.sext(va, wide) if da.is_signed else b.zext(va, wide)
    xb = b.sext(vb, wide) if db.is_signed else b.zext(vb, wide)
    prod = b.mul(xa, xb)
    out = acc
    for j in range(G):
        pick = ir.Constant(ir.VectorType(ir.IntType(32), L), [G * i + j for i in range(L)])
        part = b.shuffle_vector(prod, ir.Constant(wide, None), pick)
        if L == 1:
            part = b.extract_element(part, ir.Constant(ir.IntType(32), 0))
        out = b.add(out, part)
    return out


_TDP = {(True, True): "tdpbssd", (True, False): "tdpbsud", (False, True): "tdpbusd", (False, False): "tdpbuud"}


def _tile_ptr(em: Emitter, ld) -> ir.Value:
    return gep(em.b, em.buf_ptr(ld.buf), [em.expr(ld.index)], source_etype=memty(ld.buf.dtype))


def emit_tile_dot(em: Emitter, e: TileDot) -> ir.Value:
    if not (_feature(em, "amx-int8") and _feature(em, "amx-tile")):
        raise CompileError(f"TileDot needs a target with amx-int8 (target {em.mb.target.name} lacks it)")
    b = em.b
    mb = em.mb
    v256 = ir.VectorType(ir.IntType(32), 256)
    to_tile = mb.declare("llvm.x86.cast.vector.to.tile.v256i32", X86_AMX, [v256])
    to_vec = mb.declare("llvm.x86.cast.tile.to.vector.v256i32", v256, [X86_AMX])
    load = mb.declare("llvm.x86.tileloadd64.internal", X86_AMX, [I16, I16, PTR, I64])
    op = _TDP[(_SIGNED8[e.a.buf.dtype], _SIGNED8[e.b.buf.dtype])]
    dot = mb.declare(f"llvm.x86.{op}.internal", X86_AMX, [I16, I16, I16, X86_AMX, X86_AMX, X86_AMX])
    rows, colb = ir.Constant(I16, 16), ir.Constant(I16, 64)
    acc = b.call(to_tile, [em.expr(e.acc)])
    ta = b.call(load, [rows, colb, _tile_ptr(em, e.a), ir.Constant(I64, e.a_stride)])
    tb = b.call(load, [rows, colb, _tile_ptr(em, e.b), ir.Constant(I64, e.b_stride)])
    return b.call(to_vec, [b.call(dot, [rows, colb, colb, acc, ta, tb])])


E.EXPR_HOOKS[Dot] = emit_dot
E.EXPR_HOOKS[TileDot] = emit_tile_dot
