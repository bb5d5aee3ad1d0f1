"""Loops that leave the serial form: ``PARALLEL`` loops outlined into a function run on tensorforge's thread
pool (``tf_parallel``, codegen/threadpool.py), where threads claim chunks of the iteration range from a
shared atomic counter (a thread the OS delays does not stall the others); and on GPU targets the
outermost loop as a grid-stride loop over the global thread index."""

from __future__ import annotations

from typing import TYPE_CHECKING

import llvmlite.ir as ir

from ...errors import CompileError
from ...lower.kir import Assign, Decl, For, LoopKind, Var, buffers_of, expr_vars, stmt_exprs, walk_stmt
from .lltypes import I32, I64, PTR, VOID, gep, llty

if TYPE_CHECKING:
    from .emitter import Emitter


class GpuTid(Var):
    """The global thread index on GPU targets (only used by the code generator)."""

    def __init__(self):
        super().__init__("gpu_tid")


def _sreg(em: Emitter, name: str) -> ir.Value:
    fn = em.mb.declare(f"llvm.nvvm.read.ptx.sreg.{name}", I32, [])
    return em.b.zext(em.b.call(fn, []), I64)


def gpu_tid(em: Emitter) -> ir.Value:
    return em.b.add(em.b.mul(_sreg(em, "ctaid.x"), _sreg(em, "ntid.x")), _sreg(em, "tid.x"))


def gpu_loop(em: Emitter, s: For) -> None:
    """Outermost loop on GPU: for (i = start + tid; i < stop; i += nthreads)."""
    b = em.b
    tid = gpu_tid(em)
    nth = b.mul(_sreg(em, "nctaid.x"), _sreg(em, "ntid.x"))
    start = em.expr(s.start)
    stop = em.expr(s.stop)
    slot = em.var_slot(s.var)
    step = b.mul(nth, ir.Constant(I64, s.step))
    b.store(b.add(start, b.mul(tid, ir.Constant(I64, s.step))), slot)
    em.counted_loop(slot, stop, s.body, step, "grid")


def _field(b: ir.IRBuilder, ctx: ir.Value, ctx_ty: ir.Type, k: int) -> ir.Value:
    """Pointer to field ``k`` of the parallel-loop context ``ctx``."""
    return gep(b, ctx, [ir.Constant(I32, 0), ir.Constant(I32, k)], source_etype=ctx_ty)


def parallel_loop(em: Emitter, s: For) -> None:
    """Outline the loop body; run it on the thread pool (``tf_parallel``), chunks claimed dynamically."""
    mb = em.mb
    captured = _free_vars(s, em.s.vars)
    bufs = [b for b in buffers_of(s) if id(b) in em.s.bufs]
    fields = [PTR] * len(bufs) + [llty(v.dtype, v.lanes) for v in captured] + [I64, I64, I64]
    ctx_ty = ir.LiteralStructType(fields)
    # caller side: fill the context
    b = em.b
    ctx = em.alloca(ctx_ty, "par.ctx")
    k = 0
    for buf in bufs:
        b.store(em.s.bufs[id(buf)], _field(b, ctx, ctx_ty, k))
        k += 1
    for v in captured:
        b.store(b.load(em.s.vars[v.uid]), _field(b, ctx, ctx_ty, k))
        k += 1
    start, stop = em.expr(s.start), em.expr(s.stop)
    b.store(start, _field(b, ctx, ctx_ty, k))
    b.store(stop, _field(b, ctx, ctx_ty, k + 1))
    b.store(start, _field(b, ctx, ctx_ty, k + 2))
    # the outlined body
    name = mb.new_name(f"{em.k.name}.par")
    ofn = ir.Function(mb.module, ir.FunctionType(VOID, [PTR]), name)
    ofn.linkage = "internal"
    mb.add_fn_attrs(ofn)
    inner = em.outlined(ofn)
    ob = inner.b
    octx = ofn.args[0]
    k = 0
    for buf in bufs:
        inner.s.bufs[id(buf)] = ob.load(_field(ob, octx, ctx_ty, k), typ=PTR)
        k += 1
    for v in captured:
        val = ob.load(_field(ob, octx, ctx_ty, k), typ=fields[k])
        slot = inner.var_slot(v)
        ob.store(val, slot)
        k += 1
    lo = ob.load(_field(ob, octx, ctx_ty, k), typ=I64)
    hi = ob.load(_field(ob, octx, ctx_ty, k + 1), typ=I64)
    # Dynamic schedule: threads claim chunks of about n/(4*threads) iterations from a shared counter,
    # so a thread the OS delays (shared machines) does not hold the others up at the join.
    nxt = _field(ob, octx, ctx_ty, k + 2)
    nt = ob.sext(ob.load(mb.nthreads), I64)
    per = ob.mul(nt, ir.Constant(I64, 4))
    grain = ob.sdiv(ob.add(ob.sub(hi, lo), ob.sub(per, ir.Constant(I64, 1))), per)
    grain = ob.select(ob.icmp_signed("<", grain, ir.Constant(I64, 1)), ir.Constant(I64, 1), grain)
    lo_v, hi_v = Var("par_lo"), Var("par_hi")
    head = ofn.append_basic_block("chunk.head")
    body = ofn.append_basic_block("chunk.body")
    done = ofn.append_basic_block("chunk.done")
    ob.branch(head)
    ob.position_at_end(head)
    c = ob.atomic_rmw("add", nxt, grain, "monotonic")
    ob.cbranch(ob.icmp_signed("<", c, hi), body, done)
    ob.position_at_end(body)
    e = ob.add(c, grain)
    ob.store(c, inner.var_slot(lo_v))
    ob.store(ob.select(ob.icmp_signed("<", e, hi), e, hi), inner.var_slot(hi_v))
    inner.loop(For(s.var, lo_v, hi_v, s.body, LoopKind.SERIAL, s.step))
    inner.b.branch(head)
    inner.b.position_at_end(done)
    inner.b.ret_void()
    # launch: tf_parallel(fn, ctx, nthreads); with one thread (or one iteration) call directly
    nthr = b.load(mb.nthreads)
    trips = b.trunc(b.sub(stop, start), I32)
    nthr = b.select(b.icmp_signed("<", trips, nthr), trips, nthr)
    pool = mb.declare("tf_parallel", VOID, [PTR, PTR, I32])
    with b.if_else(b.icmp_signed(">", nthr, ir.Constant(I32, 1))) as (par, ser):
        with par:
            b.call(pool, [ofn, ctx, nthr])
        with ser:
            b.call(ofn, [ctx])


def _free_vars(s: For, defined: dict[int, ir.AllocaInstr]) -> list[Var]:
    """Variables used inside loop ``s`` that are defined outside it (must be passed to the outlined body)."""
    used: dict[int, Var] = {}
    inner: set[int] = {s.var.uid}
    for st in walk_stmt(s):
        if isinstance(st, For):
            inner.add(st.var.uid)
        if isinstance(st, Decl):
            inner.add(st.var.uid)
        for e in stmt_exprs(st):
            for v in expr_vars(e):
                used.setdefault(v.uid, v)
        if isinstance(st, Assign):
            used.setdefault(st.var.uid, st.var)
    out = []
    for uid, v in used.items():
        if uid in inner:
            continue
        if uid in defined:
            out.append(v)
    for st in walk_stmt(s):
        if isinstance(st, Assign) and st.var.uid not in inner and st.var.uid in defined:
            raise CompileError(f"parallel loop assigns to outer variable {st.var.name}")
    return out
