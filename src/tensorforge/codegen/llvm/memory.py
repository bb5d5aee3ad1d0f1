"""Loads, stores and prefetches of buffer elements: contiguous vectors, masked vectors (loop tails), strided
vectors (contiguous loads and a shuffle) and gathers / scatters lane by lane. Values are converted between
their memory and register forms on the way (``convert.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import llvmlite.ir as ir

from ...ir.dtype import DType
from ...lower.kir import Buffer, Expr, Load, Prefetch, Ramp, Store
from .convert import from_mem, to_mem
from .lltypes import I32, I64, PTR, VOID, et_align, gep, llty, memty, splat, suffix

if TYPE_CHECKING:
    from .emitter import Emitter

MAX_SHUFFLE_STRIDE = 4  # strided vector loads up to this stride become contiguous loads + a shuffle


def _masked_load_fn(em: Emitter, vt: ir.VectorType) -> ir.Function:
    mty = llty(DType.BOOL, vt.count)
    return em.mb.declare(f"llvm.masked.load.{suffix(vt)}.p0", vt, [PTR, I32, mty, vt])


def load(em: Emitter, e: Load) -> ir.Value:
    b = em.b
    dt = e.buf.dtype
    base = em.buf_ptr(e.buf)
    et = memty(dt)
    if e.mask is not None and e.index.lanes == 1:  # masked contiguous load
        vt = memty(dt, e.lanes)
        fn = _masked_load_fn(em, vt)
        p = gep(b, base, [em.expr(e.index)], source_etype=et)
        x = b.call(fn, [p, ir.Constant(I32, et_align(dt)), em.expr(e.mask), ir.Constant(vt, None)])
        return from_mem(em, x, dt)
    if isinstance(e.index, Ramp) and 2 <= e.index.stride <= MAX_SHUFFLE_STRIDE and em.mb.target.masked_ops:
        return strided_load(em, e.buf, e.index, e.lanes, e.mask)
    if e.index.lanes > 1:  # gather by scalar loads
        idx = em.expr(e.index)
        if e.mask is not None:  # masked-off lanes read lane 0's element
            idx = _lane0_fallback(em, idx, e.mask)
        vec = ir.Constant(llty(dt, e.index.lanes), ir.Undefined)
        for i in range(e.index.lanes):
            li = b.extract_element(idx, ir.Constant(I32, i))
            x = b.load(gep(b, base, [li], source_etype=et), typ=et, align=et_align(dt))
            vec = b.insert_element(vec, from_mem(em, x, dt), ir.Constant(I32, i))
        return vec
    p = gep(b, base, [em.expr(e.index)], source_etype=et)
    x = b.load(p, typ=memty(dt, e.lanes), align=et_align(dt))
    return from_mem(em, x, dt)


def strided_load(em: Emitter, buf: Buffer, index: Ramp, lanes: int, mask: Expr | None = None) -> ir.Value:
    """Elements ``base, base+s, ..., base+(lanes-1)*s``: ``s`` contiguous vector loads and one shuffle
    that keeps every s-th lane, instead of ``lanes`` scalar loads. The loads are masked so that they
    touch only elements that are needed (up to the last lane; with ``mask``, of the active lanes)."""
    b = em.b
    dt = buf.dtype
    s = index.stride
    base = em.expr(index.base)
    ptr = em.buf_ptr(buf)
    et = memty(dt)
    vt = memty(dt, lanes)
    mty = llty(DType.BOOL, lanes)
    needed = (lanes - 1) * s + 1
    elem_mask = None
    if mask is not None:  # element e of the s*lanes loaded is needed iff e % s == 0 and lane e // s is on
        sel = [e // s if e % s == 0 else lanes for e in range(s * lanes)]
        elem_mask = b.shuffle_vector(em.expr(mask), ir.Constant(mty, None),
                                     ir.Constant(ir.VectorType(I32, s * lanes), sel))  # fmt: skip
    fn = _masked_load_fn(em, vt)
    parts = []
    for j in range(s):
        count = min(lanes, needed - j * lanes)
        if count <= 0:
            parts.append(ir.Constant(vt, None))
            continue
        p = gep(b, ptr, [b.add(base, ir.Constant(I64, j * lanes))], source_etype=et)
        if elem_mask is not None:
            part = ir.Constant(ir.VectorType(I32, lanes), list(range(j * lanes, (j + 1) * lanes)))
            m = b.shuffle_vector(elem_mask, ir.Constant(elem_mask.type, ir.Undefined), part)
            parts.append(b.call(fn, [p, ir.Constant(I32, et_align(dt)), m, ir.Constant(vt, None)]))
        elif count >= lanes:
            parts.append(b.load(p, typ=vt, align=et_align(dt)))
        else:
            m = ir.Constant(mty, [1 if i < count else 0 for i in range(lanes)])
            parts.append(b.call(fn, [p, ir.Constant(I32, et_align(dt)), m, ir.Constant(vt, None)]))
    while len(parts) & (len(parts) - 1):  # pad to a power of two, then concatenate pairwise
        parts.append(ir.Constant(vt, None))
    while len(parts) > 1:
        n = parts[0].type.count
        idx = ir.Constant(ir.VectorType(I32, 2 * n), list(range(2 * n)))
        parts = [b.shuffle_vector(parts[i], parts[i + 1], idx) for i in range(0, len(parts), 2)]
    whole = parts[0]
    pick = ir.Constant(ir.VectorType(I32, lanes), [i * s for i in range(lanes)])
    x = b.shuffle_vector(whole, ir.Constant(whole.type, ir.Undefined), pick)
    return from_mem(em, x, dt)


def _lane0_fallback(em: Emitter, v: ir.Value, mask: Expr) -> ir.Value:
    """``v`` with the lanes off in ``mask`` replaced by lane 0 (masks from vector-loop tails always
    have lane 0 on), so that masked gathers and scatters touch only addresses of active lanes."""
    b = em.b
    if not isinstance(v.type, ir.VectorType):
        return v
    first = splat(b, b.extract_element(v, ir.Constant(I32, 0)), v.type.count)
    return b.select(em.expr(mask), v, first)


def store(em: Emitter, s: Store) -> None:
    b = em.b
    val = em.expr(s.value)
    lanes = s.value.lanes
    dt = s.buf.dtype
    base = em.buf_ptr(s.buf)
    et = memty(dt)
    if s.mask is not None and s.index.lanes == 1:  # masked contiguous store
        vt = memty(dt, lanes)
        fn = em.mb.declare(f"llvm.masked.store.{suffix(vt)}.p0", VOID, [vt, PTR, I32, llty(DType.BOOL, lanes)])
        p = gep(b, base, [em.expr(s.index)], source_etype=et)
        b.call(fn, [to_mem(em, val, dt), p, ir.Constant(I32, et_align(dt)), em.expr(s.mask)])
        return
    if s.index.lanes > 1:  # scatter
        idx = em.expr(s.index)
        if s.mask is not None:  # masked-off lanes rewrite lane 0's element with lane 0's value
            idx, val = _lane0_fallback(em, idx, s.mask), _lane0_fallback(em, val, s.mask)
        for i in range(s.index.lanes):
            li = b.extract_element(idx, ir.Constant(I32, i))
            lv = b.extract_element(val, ir.Constant(I32, i)) if lanes > 1 else val
            b.store(to_mem(em, lv, dt), gep(b, base, [li], source_etype=et), align=et_align(dt))
        return
    p = gep(b, base, [em.expr(s.index)], source_etype=et)
    b.store(to_mem(em, val, dt), p, align=et_align(dt))


def prefetch(em: Emitter, s: Prefetch) -> None:
    """A cache hint on CPUs (nothing on GPUs)."""
    if em.mb.target.is_gpu:
        return
    p = gep(em.b, em.buf_ptr(s.buf), [em.expr(s.index)], source_etype=memty(s.buf.dtype))
    fn = em.mb.declare("llvm.prefetch.p0", VOID, [PTR, I32, I32, I32])
    em.b.call(fn, [p, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])
