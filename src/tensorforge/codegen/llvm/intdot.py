"""LLVM emitters of the integer dot-accumulates of the kernel IR (``Dot``, ``TileDot``).

``Dot`` picks the instruction from the operands' types and the target's features:

* 4 x 8-bit, one operand unsigned and one signed, on VNNI (``avx512vnni``: zmm, or ymm with ``avx512vl``;
  ``avxvnni``: ymm): ``vpdpbusd`` (the unsigned operand goes first);
* 2 x int16 on AVX2 / AVX-512BW: ``vpmaddwd`` (exact: no pair of int16 products overflows int32 unless both
  are -32768 * -32768, which 8-bit data shifted by a zero point never is) and an add;
* anything else (AArch64, SSE, other signedness): widen both operands to the accumulator's type, multiply
  and add the groups' lanes with shuffles: exact everywhere, LLVM picks the target's instructions.

``TileGemm`` (a whole AMX micro-kernel) takes ``tdpbf16ps`` too (``kind="bf16"``, float32 tiles).

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
from ...lower.kir.tile import Interleave, TileGemm
from . import emitter as E
from .lltypes import I16, I32, I64, PTR, gep, memty

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


def _elem_ptr(em: Emitter, ld, extra: ir.Value | None = None) -> ir.Value:
    idx = em.expr(ld.index)
    if extra is not None:
        idx = em.b.add(idx, extra)
    return gep(em.b, em.buf_ptr(ld.buf), [idx], source_etype=memty(ld.buf.dtype))


def emit_tile_gemm(em: Emitter, s) -> bool:
    """``TileGemm`` (``lower/kir/tile.py``): the K loop (one per segment) with the accumulators as ``x86_amx``
    phis. Offsets and strides are in elements of the operands' buffers (bytes for 8-bit, 2 for bf16 bits)."""
    if not isinstance(s, TileGemm):
        return False
    bf16 = s.kind == "bf16"
    need = "amx-bf16" if bf16 else "amx-int8"
    if not (_feature(em, need) and _feature(em, "amx-tile")):
        raise CompileError(f"TileGemm needs a target with {need} (target {em.mb.target.name} lacks it)")
    b, mb = em.b, em.mb
    load = mb.declare("llvm.x86.tileloadd64.internal", X86_AMX, [I16, I16, PTR, I64])
    zero = mb.declare("llvm.x86.tilezero.internal", X86_AMX, [I16, I16])
    store = mb.declare("llvm.x86.tilestored64.internal", ir.VoidType(), [I16, I16, PTR, I64, X86_AMX])
    op = "tdpbf16ps" if bf16 else _TDP[(_SIGNED8[s.a.buf.dtype], _SIGNED8[s.b.buf.dtype])]
    dot = mb.declare(f"llvm.x86.{op}.internal", X86_AMX, [I16, I16, I16, X86_AMX, X86_AMX, X86_AMX])
    rows, colb = ir.Constant(I16, 16), ir.Constant(I16, 64)
    i64 = lambda v: ir.Constant(I64, v)  # noqa: E731
    ea, eb = s.a.buf.dtype.itemsize, s.b.buf.dtype.itemsize
    cstride = i64(4 * s.c_stride)
    offs = [[i * 16 * s.c_stride + j * 16 for j in range(s.nb)] for i in range(s.ma)]
    ins = s.c_in_stride or s.c_stride
    in_offs = [[i * 16 * ins + j * 16 for j in range(s.nb)] for i in range(s.ma)]
    a0, b0 = _elem_ptr(em, s.a), _elem_ptr(em, s.b)
    accs = [[b.call(load, [rows, colb, _elem_ptr(em, s.c_in, i64(in_offs[i][j])), i64(4 * ins)]) if s.c_in is not None
             else b.call(zero, [rows, colb]) for j in range(s.nb)] for i in range(s.ma)]  # fmt: skip
    n = em.expr(s.ksteps)
    fn = em.s.fn
    i8 = ir.IntType(8)
    pf = mb.declare("llvm.prefetch.p0", ir.VoidType(), [PTR, I32, I32, I32])
    for si, (a_off, b_off) in enumerate(s.segments or ((0, 0),)):
        pre = b.block
        head, body, done = (fn.append_basic_block(f"tile.{x}{si}") for x in ("head", "body", "end"))
        a_seg = b.gep(a0, [i64(a_off * ea)], source_etype=i8) if a_off else a0
        b_seg = b.gep(b0, [i64(b_off * eb)], source_etype=i8) if b_off else b0
        b.branch(head)
        b.position_at_end(head)
        k = b.phi(I64, "tk")
        phis = [[b.phi(X86_AMX, f"tacc{i}{j}") for j in range(s.nb)] for i in range(s.ma)]
        k.add_incoming(i64(0), pre)
        for i in range(s.ma):
            for j in range(s.nb):
                phis[i][j].add_incoming(accs[i][j], pre)
        b.cbranch(b.icmp_signed("<", k, n), body, done)
        b.position_at_end(body)
        pa = b.gep(a_seg, [b.mul(k, i64(s.a_k * ea))], source_etype=i8)
        pb = b.gep(b_seg, [b.mul(k, i64(s.b_k * eb))], source_etype=i8)

        def tile_a(i, pa=pa):
            at = b.gep(pa, [i64(i * s.a_tile * ea)], source_etype=i8)
            return b.call(load, [rows, colb, at, i64(s.a_stride * ea)])

        def tile_b(j, pb=pb):
            at = b.gep(pb, [i64(j * s.b_tile * eb)], source_etype=i8)
            return b.call(load, [rows, colb, at, i64(s.b_stride * eb)])

        # loads in the order that keeps the fewest tiles live: the side with one tile first (1 x nb: A, then
        # each B tile used at once; ma x 1 the other way round), else all B tiles and one A row at a time
        new = [[None] * s.nb for _ in range(s.ma)]
        if s.ma == 1:
            at = tile_a(0)
            for j in range(s.nb):
                new[0][j] = b.call(dot, [rows, colb, colb, phis[0][j], at, tile_b(j)])
        else:
            bt = [tile_b(j) for j in range(s.nb)]
            for i in range(s.ma):
                at = tile_a(i)
                for j in range(s.nb):
                    new[i][j] = b.call(dot, [rows, colb, colb, phis[i][j], at, bt[j]])
        if s.prefetch:  # the 16 rows of each tile ``prefetch`` steps ahead
            for base, step, ntiles, tile, rs, e in ((pa, s.a_k, s.ma, s.a_tile, s.a_stride, ea),
                                                    (pb, s.b_k, s.nb, s.b_tile, s.b_stride, eb)):  # fmt: skip
                ahead = b.gep(base, [i64(s.prefetch * step * e)], source_etype=i8)
                for t in range(ntiles):
                    for row in range(16):
                        p = b.gep(ahead, [i64((t * tile + row * rs) * e)], source_etype=i8)
                        b.call(pf, [p, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])
        k.add_incoming(b.add(k, i64(1)), b.block)
        for i in range(s.ma):
            for j in range(s.nb):
                phis[i][j].add_incoming(new[i][j], b.block)
        b.branch(head)
        b.position_at_end(done)
        accs = phis
    for i in range(s.ma):
        for j in range(s.nb):
            b.call(store, [rows, colb, _elem_ptr(em, s.c_out, i64(offs[i][j])), cstride, accs[i][j]])
    em._invalidate(buf=s.c_out.buf)
    return True


def emit_interleave(em: Emitter, e: Interleave) -> ir.Value:
    """Lane ``G*i + j`` = lane ``i`` of part ``j``: pairs of equal width merged by shuffles (a tree for G = 4)."""
    vals = [em.expr(p) for p in e.parts]
    G, L = len(vals), e.parts[0].lanes
    b = em.b
    if G & (G - 1) == 0:
        width = L
        while len(vals) > 1:  # lane-interleave part j with part j + half: after log2(G) rounds, G-groups
            half = len(vals) // 2
            merged = []
            for j in range(half):
                x, y = vals[j], vals[j + half]
                idx = [v for i in range(width) for v in (i, width + i)]
                merged.append(b.shuffle_vector(x, y, ir.Constant(ir.VectorType(ir.IntType(32), 2 * width), idx)))
            vals, width = merged, 2 * width
        return vals[0]
    out = ir.Constant(ir.VectorType(vals[0].type.element, G * L), None)
    for j, v in enumerate(vals):
        for i in range(L):
            out = b.insert_element(out, b.extract_element(v, ir.Constant(I32, i)), ir.Constant(I32, G * i + j))
    return out


E.EXPR_HOOKS[Interleave] = emit_interleave
E.EXPR_HOOKS[Dot] = emit_dot
E.EXPR_HOOKS[TileDot] = emit_tile_dot
E.STMT_HOOKS.append(emit_tile_gemm)
