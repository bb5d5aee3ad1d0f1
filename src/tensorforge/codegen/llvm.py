"""Kernel IR -> LLVM IR (llvmlite.ir).

Each kernel becomes one function taking one pointer per buffer. Locals and loop counters are allocas
(promoted to registers by LLVM's mem2reg). ``PARALLEL`` loops are outlined into a function that runs on
tensorforge's thread pool (``tf_parallel``, codegen/threadpool.py); threads claim chunks of the iteration
range from a shared atomic counter (a thread the OS delays does not stall the others).
float16 values are loaded as half and computed as float; bool is i1 in registers and one byte in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import llvmlite.ir as ir

from ..errors import CompileError
from ..ir.dtype import DType
from ..lower.kir import (
    Assign,
    Bin,
    Bitcast,
    Broadcast,
    Buffer,
    Cast,
    Cmp,
    Const,
    Decl,
    Expr,
    Fma,
    For,
    HReduce,
    If,
    Kernel,
    Load,
    LoopKind,
    Prefetch,
    Ramp,
    Select,
    Seq,
    Stmt,
    Store,
    Un,
    Var,
    buffers_of,
    expr_vars,
    stmt_exprs,
    walk_expr,
    walk_stmt,
)
from .mathlib import MATH_FUNCS, get_math_fn
from .targets import Target

PTR = ir.PointerType()
MAX_SHUFFLE_STRIDE = 4  # strided vector loads up to this stride become contiguous loads + a shuffle
I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
VOID = ir.VoidType()

_SCALAR = {
    DType.BOOL: I1,
    DType.I8: I8, DType.U8: I8,
    DType.I16: ir.IntType(16), DType.U16: ir.IntType(16),
    DType.I32: I32, DType.U32: I32,
    DType.I64: I64, DType.U64: I64,
    DType.F16: ir.FloatType(),  # computed in f32
    DType.BF16: ir.FloatType(),  # computed in f32, stored as the high 16 bits of a float
    DType.F32: ir.FloatType(),
    DType.F64: ir.DoubleType(),
}  # fmt: skip
_MEM = {**_SCALAR, DType.BOOL: I8, DType.F16: ir.HalfType(), DType.BF16: ir.IntType(16)}


def llty(dtype: DType, lanes: int = 1) -> ir.Type:
    t = _SCALAR[dtype]
    return ir.VectorType(t, lanes) if lanes > 1 else t


def memty(dtype: DType, lanes: int = 1) -> ir.Type:
    t = _MEM[dtype]
    return ir.VectorType(t, lanes) if lanes > 1 else t


def _suffix(t: ir.Type) -> str:
    def one(s):
        if isinstance(s, ir.FloatType):
            return "f32"
        if isinstance(s, ir.DoubleType):
            return "f64"
        if isinstance(s, ir.HalfType):
            return "f16"
        if isinstance(s, ir.IntType):
            return f"i{s.width}"
        raise TypeError(s)

    if isinstance(t, ir.VectorType):
        return f"v{t.count}{one(t.element)}"
    return one(t)


def const_value(value, dtype: DType, lanes: int = 1) -> ir.Constant:
    t = _SCALAR[dtype]
    if dtype is DType.BOOL:
        v = int(bool(value))
    elif dtype.is_float:
        v = float(value)
    else:
        v = int(value)
        bits = t.width
        v &= (1 << bits) - 1  # two's complement for negatives / unsigned
        if v >= 1 << (bits - 1):
            v -= 1 << bits
    if lanes > 1:
        return ir.Constant(ir.VectorType(t, lanes), [v] * lanes)
    return ir.Constant(t, v)


@dataclass
class _Scope:
    fn: ir.Function
    builder: ir.IRBuilder
    bufs: dict[int, ir.Value]  # id(Buffer) -> pointer
    vars: dict[int, ir.AllocaInstr]  # Var.uid -> alloca
    entry: ir.Block


class ModuleBuilder:
    """Accumulates kernels (and an entry function) into one LLVM module for a target."""

    def __init__(self, target: Target, name: str = "tensorforge"):
        self.target = target
        self.module = ir.Module(name=name)
        self.module.triple = target.triple
        self._counter = 0
        self.nthreads = None
        if not target.is_gpu:
            self.nthreads = ir.GlobalVariable(self.module, I32, "tf_num_threads")
            self.nthreads.initializer = ir.Constant(I32, 1)

    # -- helpers ----------------------------------------------------------------------------------
    def _declare(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ret, args), name)
        return fn

    def intrinsic(self, name: str, ty: ir.Type, nargs: int = 1, ret: ir.Type | None = None, types=None):
        full = f"llvm.{name}.{_suffix(types or ty)}"
        return self._declare(full, ret or ty, [ty] * nargs)

    def _fn_attrs(self, fn: ir.Function) -> None:
        fn.attributes.add("nounwind")

    # -- kernels ----------------------------------------------------------------------------------
    def add_kernel(self, k: Kernel, internal: bool = True) -> ir.Function:
        fnty = ir.FunctionType(VOID, [PTR] * len(k.params))
        fn = ir.Function(self.module, fnty, k.name)
        if self.target.is_gpu:
            fn.calling_convention = "ptx_kernel"
        else:
            if internal:
                fn.linkage = "internal"
            fn.attributes.add("noinline")
        self._fn_attrs(fn)
        for a, b in zip(fn.args, k.params):
            a.name = b.name
            a.add_attribute("noalias")
        entry = fn.append_basic_block("entry")
        builder = ir.IRBuilder(entry)
        scope = _Scope(fn, builder, {id(b): a for a, b in zip(fn.args, k.params)}, {}, entry)
        body = k.body
        em = _Emitter(self, scope, k)
        try:
            if self.target.is_gpu and not isinstance(body, For):
                # not a single loop nest: run the whole body on one thread (correct, not fast)
                em.gpu_pending = False
                body = If(Cmp("eq", _GpuTid(), Const(0)), body)
            em.stmt(body)
        except CompileError:
            raise
        except Exception as e:  # a bug in lowering/codegen: say which kernel
            raise CompileError(f"code generation failed for kernel {k.name} ({'; '.join(k.labels)}): {e}") from e
        scope.builder.ret_void()
        return fn

    def add_entry(self, name: str, kernels: list[tuple[ir.Function, list[tuple[str, int]]]],
                  profile: bool = False) -> ir.Function:  # fmt: skip
        """``void name(ptr inputs, ptr outputs, ptr consts, ptr arena)``: calls kernels in order.

        Each kernel argument is ``(kind, index)``: kind ``in``/``out``/``const`` reads a pointer from the
        matching table, ``arena`` adds a byte offset to the arena pointer. With ``profile`` a fifth
        argument ``i64 times[len(kernels) + 1]`` receives CLOCK_MONOTONIC nanoseconds before each kernel
        and after the last (per-kernel times from one native call).
        """
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR] * (5 if profile else 4)), name)
        self._fn_attrs(fn)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        tables = dict(zip(("in", "out", "const", "arena"), fn.args))
        cache: dict[tuple[str, int], ir.Value] = {}
        stamp = self._timestamp_fn() if profile else None

        def mark(i: int) -> None:
            if stamp is not None:
                b.store(b.call(stamp, []), _gep(b, fn.args[4], [ir.Constant(I64, i)], source_etype=I64))

        for ki, (kfn, args) in enumerate(kernels):
            mark(ki)
            vals = []
            for kind, idx in args:
                key = (kind, idx)
                if key not in cache:
                    if kind == "arena":
                        cache[key] = _gep(b, tables["arena"], [ir.Constant(I64, idx)], source_etype=I8)
                    else:
                        p = _gep(b, tables[kind], [ir.Constant(I64, idx)], source_etype=PTR)
                        cache[key] = b.load(p, typ=PTR)
                vals.append(cache[key])
            b.call(kfn, vals)
        mark(len(kernels))
        b.ret_void()
        return fn

    def _timestamp_fn(self) -> ir.Function:
        """``i64 tf_now_ns()``: clock_gettime(CLOCK_MONOTONIC) in nanoseconds (libc, in every process)."""
        fn = self.module.globals.get("tf_now_ns")
        if fn is not None:
            return fn
        ts_ty = ir.LiteralStructType([I64, I64])
        cgt = self._declare("clock_gettime", I32, [I32, PTR])
        fn = ir.Function(self.module, ir.FunctionType(I64, []), "tf_now_ns")
        fn.linkage = "internal"
        self._fn_attrs(fn)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        ts = b.alloca(ts_ty)
        b.call(cgt, [ir.Constant(I32, 1), ts])  # CLOCK_MONOTONIC
        sec = b.load(_gep(b, ts, [ir.Constant(I32, 0), ir.Constant(I32, 0)], source_etype=ts_ty), typ=I64)
        nsec = b.load(_gep(b, ts, [ir.Constant(I32, 0), ir.Constant(I32, 1)], source_etype=ts_ty), typ=I64)
        b.ret(b.add(b.mul(sec, ir.Constant(I64, 1_000_000_000)), nsec))
        return fn

    def add_py_entry(self, name: str, entry: ir.Function, n_in: int, n_out: int, data_offset: int) -> ir.Function:
        """``void name(PyArrayObject* in0, ..., PyArrayObject* out0, ...)``: reads each array's data pointer
        (the ``data`` field at ``data_offset``, numpy's stable ABI), then calls ``entry`` with the constant
        table and arena held in the globals ``tf_consts_table`` / ``tf_arena_ptr``. Lets Python make one
        ctypes call with the arrays themselves (no per-array pointer lookups in Python)."""
        gc = ir.GlobalVariable(self.module, PTR, "tf_consts_table")
        gc.initializer = ir.Constant(PTR, None)
        ga = ir.GlobalVariable(self.module, PTR, "tf_arena_ptr")
        ga.initializer = ir.Constant(PTR, None)
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR] * (n_in + n_out)), name)
        self._fn_attrs(fn)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        tin = b.alloca(PTR, size=ir.Constant(I64, max(n_in, 1)))
        tout = b.alloca(PTR, size=ir.Constant(I64, max(n_out, 1)))
        for i, obj in enumerate(fn.args):
            data = b.load(_gep(b, obj, [ir.Constant(I64, data_offset)], source_etype=I8), typ=PTR)
            table, k = (tin, i) if i < n_in else (tout, i - n_in)
            b.store(data, _gep(b, table, [ir.Constant(I64, k)], source_etype=PTR))
        b.call(entry, [tin, tout, b.load(gc, typ=PTR), b.load(ga, typ=PTR)])
        b.ret_void()
        return fn

    def new_name(self, base: str) -> str:
        self._counter += 1
        return f"{base}.{self._counter}"

    def ir_text(self) -> str:
        return str(self.module)


class _GpuTid(Var):
    """The global thread index on GPU targets (only used by the code generator)."""

    def __init__(self):
        super().__init__("gpu_tid")


class _Emitter:
    def __init__(self, mb: ModuleBuilder, scope: _Scope, kernel: Kernel):
        self.mb = mb
        self.s = scope
        self.k = kernel
        self.gpu_pending = mb.target.is_gpu  # the next loop becomes a grid-stride loop
        # Values already emitted in the current basic block, by expression identity (kernel IR shares
        # subexpression objects, e.g. a broadcast A element used by every FMA of a micro-kernel row):
        # id -> (block, value, var uids it reads, reads memory, expr kept alive)
        self._memo: dict[int, tuple] = {}
        self._deps: dict[int, tuple[frozenset, bool, Expr]] = {}

    @property
    def b(self) -> ir.IRBuilder:
        return self.s.builder

    # -- variables and buffers --------------------------------------------------------------------
    def alloca(self, ty: ir.Type, name: str, count: int | None = None, align: int | None = None):
        b = self.b
        with b.goto_block(self.s.entry):
            if self.s.entry.instructions:
                b.position_before(self.s.entry.instructions[0])
            a = b.alloca(ty, size=None if count is None else ir.Constant(I64, count), name=name)
            if align:
                a.align = align
        return a

    def var_slot(self, v: Var) -> ir.AllocaInstr:
        slot = self.s.vars.get(v.uid)
        if slot is None:
            slot = self.alloca(llty(v.dtype, v.lanes), v.name)
            self.s.vars[v.uid] = slot
        return slot

    def buf_ptr(self, buf: Buffer) -> ir.Value:
        p = self.s.bufs.get(id(buf))
        if p is None:
            # a buffer that is not a parameter: scratch memory on this function's stack
            p = self.alloca(memty(buf.dtype), buf.name, count=max(buf.numel, 1), align=64)
            self.s.bufs[id(buf)] = p
        return p

    # -- statements -------------------------------------------------------------------------------
    def _deps_of(self, e: Expr) -> tuple[frozenset, frozenset]:
        """(uids of the variables, ids of the buffers) that ``e`` reads."""
        d = self._deps.get(id(e))
        if d is None or d[2] is not e:
            vs: set[int] = set()
            bufs: set[int] = {id(e.buf)} if isinstance(e, Load) else set()
            if isinstance(e, Var):
                vs.add(e.uid)
            for c in _children(e):
                cv, cb = self._deps_of(c)
                vs |= cv
                bufs |= cb
            d = (frozenset(vs), frozenset(bufs), e)  # e kept alive: ids of freed expressions are reused
            self._deps[id(e)] = d
        return d[0], d[1]

    def _invalidate(self, var_uid: int | None = None, buf: Buffer | None = None) -> None:
        """Forget values that read ``var_uid`` or buffer ``buf`` (distinct buffers never overlap: in-place
        planning merges buffers into one Buffer object, and parameters are noalias)."""
        key = id(buf) if buf is not None else None
        dead = [k for k, (_, _, vs, bufs, _) in self._memo.items() if (var_uid in vs) or (key in bufs)]
        for k in dead:
            del self._memo[k]

    def stmt(self, s: Stmt) -> None:
        self._stmt(s)
        # what the statement changed makes remembered values stale (after it: its own operands were read
        # before the write)
        if isinstance(s, Decl | Assign):
            self._invalidate(var_uid=s.var.uid)
        elif isinstance(s, Store):
            self._invalidate(buf=s.buf)

    def _stmt(self, s: Stmt) -> None:
        if isinstance(s, Seq):
            for x in s.body:
                self.stmt(x)
        elif isinstance(s, Store):
            self.store(s)
        elif isinstance(s, For):
            if self.gpu_pending:
                self.gpu_pending = False
                self.gpu_loop(s)
            elif s.kind is LoopKind.PARALLEL and not self.mb.target.is_gpu:
                self.parallel_loop(s)
            else:
                self.loop(s)
        elif isinstance(s, Decl):
            slot = self.var_slot(s.var)
            self.b.store(self.expr(s.init), slot)
        elif isinstance(s, Assign):
            slot = self.var_slot(s.var)
            self.b.store(self.expr(s.value), slot)
        elif isinstance(s, If):
            cond = self.expr(s.cond)
            if s.orelse is None:
                with self.b.if_then(cond):
                    self.stmt(s.then)
            else:
                with self.b.if_else(cond) as (then, orelse):
                    with then:
                        self.stmt(s.then)
                    with orelse:
                        self.stmt(s.orelse)
        elif isinstance(s, Prefetch):
            if not self.mb.target.is_gpu:
                p = _gep(self.b, self.buf_ptr(s.buf), [self.expr(s.index)], source_etype=memty(s.buf.dtype))
                fn = self.mb._declare("llvm.prefetch.p0", VOID, [PTR, I32, I32, I32])
                self.b.call(fn, [p, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])
        else:
            raise CompileError(f"unknown statement {type(s).__name__}")

    def store(self, s: Store) -> None:
        val = self.expr(s.value)
        lanes = s.value.lanes
        dt = s.buf.dtype
        base = self.buf_ptr(s.buf)
        et = memty(dt)
        if s.mask is not None and s.index.lanes == 1:  # masked contiguous store
            vt = memty(dt, lanes)
            fn = self.mb._declare(f"llvm.masked.store.{_suffix(vt)}.p0", VOID, [vt, PTR, I32, llty(DType.BOOL, lanes)])
            p = _gep(self.b, base, [self.expr(s.index)], source_etype=et)
            self.b.call(fn, [self.to_mem(val, dt), p, ir.Constant(I32, et_align(dt)), self.expr(s.mask)])
            return
        if s.index.lanes > 1:  # scatter
            idx = self.expr(s.index)
            if s.mask is not None:  # masked-off lanes rewrite lane 0's element with lane 0's value
                idx, val = self._lane0_fallback(idx, s.mask), self._lane0_fallback(val, s.mask)
            for i in range(s.index.lanes):
                li = self.b.extract_element(idx, ir.Constant(I32, i))
                lv = self.b.extract_element(val, ir.Constant(I32, i)) if lanes > 1 else val
                self.b.store(self.to_mem(lv, dt), _gep(self.b, base, [li], source_etype=et), align=et_align(dt))
            return
        p = _gep(self.b, base, [self.expr(s.index)], source_etype=et)
        self.b.store(self.to_mem(val, dt), p, align=et_align(dt))

    def loop(self, s: For) -> None:
        b = self.b
        start = self.expr(s.start)
        stop = self.expr(s.stop)
        slot = self.var_slot(s.var)
        b.store(start, slot)
        fn = self.s.fn
        head = fn.append_basic_block("loop.head")
        body = fn.append_basic_block("loop.body")
        done = fn.append_basic_block("loop.end")
        b.branch(head)
        b.position_at_end(head)
        i = b.load(slot)
        b.cbranch(b.icmp_signed("<", i, stop), body, done)
        b.position_at_end(body)
        self.stmt(s.body)
        i = b.load(slot)
        b.store(b.add(i, ir.Constant(I64, s.step), flags=["nsw"]), slot)
        b.branch(head)
        b.position_at_end(done)

    def _sreg(self, name: str) -> ir.Value:
        fn = self.mb._declare(f"llvm.nvvm.read.ptx.sreg.{name}", I32, [])
        return self.b.zext(self.b.call(fn, []), I64)

    def gpu_tid(self) -> ir.Value:
        return self.b.add(self.b.mul(self._sreg("ctaid.x"), self._sreg("ntid.x")), self._sreg("tid.x"))

    def gpu_loop(self, s: For) -> None:
        """Outermost loop on GPU: for (i = start + tid; i < stop; i += nthreads)."""
        b = self.b
        tid = self.gpu_tid()
        nth = b.mul(self._sreg("nctaid.x"), self._sreg("ntid.x"))
        start = self.expr(s.start)
        stop = self.expr(s.stop)
        slot = self.var_slot(s.var)
        step = b.mul(nth, ir.Constant(I64, s.step))
        b.store(b.add(start, b.mul(tid, ir.Constant(I64, s.step))), slot)
        fn = self.s.fn
        head, body, done = (fn.append_basic_block(n) for n in ("grid.head", "grid.body", "grid.end"))
        b.branch(head)
        b.position_at_end(head)
        i = b.load(slot)
        b.cbranch(b.icmp_signed("<", i, stop), body, done)
        b.position_at_end(body)
        self.stmt(s.body)
        b.store(b.add(b.load(slot), step), slot)
        b.branch(head)
        b.position_at_end(done)

    def parallel_loop(self, s: For) -> None:
        """Outline the loop body; run it on the thread pool (``tf_parallel``), chunks claimed dynamically."""
        mb = self.mb
        captured = _free_vars(s, self.s.vars)
        bufs = [b for b in buffers_of(s) if id(b) in self.s.bufs]
        fields = [PTR] * len(bufs) + [llty(v.dtype, v.lanes) for v in captured] + [I64, I64, I64]
        ctx_ty = ir.LiteralStructType(fields)
        # caller side: fill the context
        b = self.b
        ctx = self.alloca(ctx_ty, "par.ctx")
        k = 0
        for buf in bufs:
            b.store(self.s.bufs[id(buf)], _gep(b, ctx, [ir.Constant(I32, 0), ir.Constant(I32, k)], source_etype=ctx_ty))
            k += 1
        for v in captured:
            b.store(
                b.load(self.s.vars[v.uid]),
                _gep(b, ctx, [ir.Constant(I32, 0), ir.Constant(I32, k)], source_etype=ctx_ty),
            )
            k += 1
        start, stop = self.expr(s.start), self.expr(s.stop)
        b.store(start, _gep(b, ctx, [ir.Constant(I32, 0), ir.Constant(I32, k)], source_etype=ctx_ty))
        b.store(stop, _gep(b, ctx, [ir.Constant(I32, 0), ir.Constant(I32, k + 1)], source_etype=ctx_ty))
        b.store(start, _gep(b, ctx, [ir.Constant(I32, 0), ir.Constant(I32, k + 2)], source_etype=ctx_ty))
        # the outlined body
        name = mb.new_name(f"{self.k.name}.par")
        ofn = ir.Function(mb.module, ir.FunctionType(VOID, [PTR]), name)
        ofn.linkage = "internal"
        mb._fn_attrs(ofn)
        oentry = ofn.append_basic_block("entry")
        ob = ir.IRBuilder(oentry)
        inner = _Scope(ofn, ob, {}, {}, oentry)
        em = _Emitter(mb, inner, self.k)
        octx = ofn.args[0]
        k = 0
        for buf in bufs:
            inner.bufs[id(buf)] = ob.load(
                _gep(ob, octx, [ir.Constant(I32, 0), ir.Constant(I32, k)], source_etype=ctx_ty), typ=PTR
            )
            k += 1
        for v in captured:
            val = ob.load(
                _gep(ob, octx, [ir.Constant(I32, 0), ir.Constant(I32, k)], source_etype=ctx_ty), typ=fields[k]
            )
            slot = em.var_slot(v)
            ob.store(val, slot)
            k += 1
        lo = ob.load(_gep(ob, octx, [ir.Constant(I32, 0), ir.Constant(I32, k)], source_etype=ctx_ty), typ=I64)
        hi = ob.load(_gep(ob, octx, [ir.Constant(I32, 0), ir.Constant(I32, k + 1)], source_etype=ctx_ty), typ=I64)
        # Dynamic schedule: threads claim chunks of about n/(4*threads) iterations from a shared counter,
        # so a thread the OS delays (shared machines) does not hold the others up at the join.
        nxt = _gep(ob, octx, [ir.Constant(I32, 0), ir.Constant(I32, k + 2)], source_etype=ctx_ty)
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
        ob.store(c, em.var_slot(lo_v))
        ob.store(ob.select(ob.icmp_signed("<", e, hi), e, hi), em.var_slot(hi_v))
        em.loop(For(s.var, lo_v, hi_v, s.body, LoopKind.SERIAL, s.step))
        em.b.branch(head)
        em.b.position_at_end(done)
        em.b.ret_void()
        # launch: tf_parallel(fn, ctx, nthreads); with one thread (or one iteration) call directly
        nthr = b.load(mb.nthreads)
        trips = b.trunc(b.sub(stop, start), I32)
        nthr = b.select(b.icmp_signed("<", trips, nthr), trips, nthr)
        pool = mb._declare("tf_parallel", VOID, [PTR, PTR, I32])
        with b.if_else(b.icmp_signed(">", nthr, ir.Constant(I32, 1))) as (par, ser):
            with par:
                b.call(pool, [ofn, ctx, nthr])
            with ser:
                b.call(ofn, [ctx])

    # -- expressions ------------------------------------------------------------------------------
    def expr(self, e: Expr) -> ir.Value:
        if isinstance(e, Const):
            return const_value(e.value, e.dtype, e.lanes)
        hit = self._memo.get(id(e))
        block = self.b.block
        if hit is not None and hit[0] is block and hit[4] is e:
            return hit[1]
        v = self._expr(e)
        if self.b.block is block:
            vs, mem = self._deps_of(e)
            self._memo[id(e)] = (block, v, vs, mem, e)
        return v

    def _expr(self, e: Expr) -> ir.Value:
        b = self.b
        if isinstance(e, Const):
            return const_value(e.value, e.dtype, e.lanes)
        if isinstance(e, _GpuTid):
            return self.gpu_tid()
        if isinstance(e, Var):
            slot = self.s.vars.get(e.uid)
            if slot is None:
                raise CompileError(f"variable {e.name} used before definition in kernel {self.k.name}")
            return b.load(slot)
        if isinstance(e, Load):
            return self.load(e)
        if isinstance(e, Bin):
            return self.binary(e.op, self.expr(e.a), self.expr(e.b), e.dtype)
        if isinstance(e, Cmp):
            return self.compare(e.op, self.expr(e.a), self.expr(e.b), e.a.dtype)
        if isinstance(e, Un):
            return self.unary(e.op, self.expr(e.a), e.a.dtype, e.a.lanes)
        if isinstance(e, Select):
            return b.select(self.expr(e.cond), self.expr(e.a), self.expr(e.b))
        if isinstance(e, Bitcast):  # reinterpret at memory width (float16 and bool live widened in registers)
            m = self.to_mem(self.expr(e.a), e.a.dtype)
            return self.from_mem(self.b.bitcast(m, memty(e.dtype, e.lanes)), e.dtype)
        if isinstance(e, Cast):
            return self.cast(self.expr(e.a), e.a.dtype, e.dtype, e.lanes)
        if isinstance(e, Fma):
            a, bb, c = self.expr(e.a), self.expr(e.b), self.expr(e.c)
            if e.dtype.is_float:
                return b.call(self.mb.intrinsic("fma", c.type, 3), [a, bb, c])
            return b.add(b.mul(a, bb), c)
        if isinstance(e, Broadcast):
            x = self.expr(e.a)
            if e.lanes == 1:
                return x
            vt = ir.VectorType(x.type, e.lanes)
            v = b.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(I32, 0))
            return b.shuffle_vector(
                v, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(I32, e.lanes), [0] * e.lanes)
            )
        if isinstance(e, Ramp):
            base = self.expr(Broadcast(e.base, e.lanes))
            return b.add(base, ir.Constant(ir.VectorType(I64, e.lanes), [i * e.stride for i in range(e.lanes)]))
        if isinstance(e, HReduce):
            return self.hreduce(e.op, self.expr(e.a), e.a.dtype)
        raise CompileError(f"unknown expression {type(e).__name__}")

    def load(self, e: Load) -> ir.Value:
        b = self.b
        dt = e.buf.dtype
        base = self.buf_ptr(e.buf)
        et = memty(dt)
        if e.mask is not None and e.index.lanes == 1:  # masked contiguous load
            vt = memty(dt, e.lanes)
            fn = self.mb._declare(f"llvm.masked.load.{_suffix(vt)}.p0", vt, [PTR, I32, llty(DType.BOOL, e.lanes), vt])
            p = _gep(b, base, [self.expr(e.index)], source_etype=et)
            x = b.call(fn, [p, ir.Constant(I32, et_align(dt)), self.expr(e.mask), ir.Constant(vt, None)])
            return self.from_mem(x, dt)
        if isinstance(e.index, Ramp) and 2 <= e.index.stride <= MAX_SHUFFLE_STRIDE and self.mb.target.masked_ops:
            return self.strided_load(e.buf, e.index, e.lanes, e.mask)
        if e.index.lanes > 1:  # gather by scalar loads
            idx = self.expr(e.index)
            if e.mask is not None:  # masked-off lanes read lane 0's element
                idx = self._lane0_fallback(idx, e.mask)
            vec = ir.Constant(llty(dt, e.index.lanes), ir.Undefined)
            for i in range(e.index.lanes):
                li = b.extract_element(idx, ir.Constant(I32, i))
                x = b.load(_gep(b, base, [li], source_etype=et), typ=et, align=et_align(dt))
                vec = b.insert_element(vec, self.from_mem(x, dt), ir.Constant(I32, i))
            return vec
        p = _gep(b, base, [self.expr(e.index)], source_etype=et)
        x = b.load(p, typ=memty(dt, e.lanes), align=et_align(dt))
        return self.from_mem(x, dt)

    def strided_load(self, buf: Buffer, index: Ramp, lanes: int, mask: Expr | None = None) -> ir.Value:
        """Elements ``base, base+s, ..., base+(lanes-1)*s``: ``s`` contiguous vector loads and one shuffle
        that keeps every s-th lane, instead of ``lanes`` scalar loads. The loads are masked so that they
        touch only elements that are needed (up to the last lane; with ``mask``, of the active lanes)."""
        b = self.b
        dt = buf.dtype
        s = index.stride
        base = self.expr(index.base)
        ptr = self.buf_ptr(buf)
        et = memty(dt)
        vt = memty(dt, lanes)
        mty = llty(DType.BOOL, lanes)
        needed = (lanes - 1) * s + 1
        elem_mask = None
        if mask is not None:  # element e of the s*lanes loaded is needed iff e % s == 0 and lane e // s is on
            sel = [e // s if e % s == 0 else lanes for e in range(s * lanes)]
            elem_mask = b.shuffle_vector(self.expr(mask), ir.Constant(mty, None),
                                         ir.Constant(ir.VectorType(I32, s * lanes), sel))  # fmt: skip
        fn = self.mb._declare(f"llvm.masked.load.{_suffix(vt)}.p0", vt, [PTR, I32, mty, vt])
        parts = []
        for j in range(s):
            count = min(lanes, needed - j * lanes)
            if count <= 0:
                parts.append(ir.Constant(vt, None))
                continue
            p = _gep(b, ptr, [b.add(base, ir.Constant(I64, j * lanes))], source_etype=et)
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
        return self.from_mem(x, dt)

    def _lane0_fallback(self, v: ir.Value, mask: Expr) -> ir.Value:
        """``v`` with the lanes off in ``mask`` replaced by lane 0 (masks from vector-loop tails always
        have lane 0 on), so that masked gathers and scatters touch only addresses of active lanes."""
        b = self.b
        if not isinstance(v.type, ir.VectorType):
            return v
        n = v.type.count
        first = b.extract_element(v, ir.Constant(I32, 0))
        splat = b.insert_element(ir.Constant(v.type, ir.Undefined), first, ir.Constant(I32, 0))
        splat = b.shuffle_vector(splat, ir.Constant(v.type, ir.Undefined), ir.Constant(ir.VectorType(I32, n), [0] * n))
        return b.select(self.expr(mask), v, splat)

    def from_mem(self, x: ir.Value, dt: DType) -> ir.Value:
        if dt is DType.F16:
            return self.b.fpext(x, llty(dt, _lanes(x)))
        if dt is DType.BF16:  # the high half of a float32
            n = _lanes(x)
            wide = self.b.zext(x, _ivec(32, n))
            return self.b.bitcast(self.b.shl(wide, _iconst(32, 16, n)), llty(dt, n))
        if dt is DType.BOOL:
            return self.b.icmp_unsigned("!=", x, ir.Constant(x.type, None))
        return x

    def to_mem(self, x: ir.Value, dt: DType) -> ir.Value:
        if dt is DType.F16:
            return self.b.fptrunc(x, memty(dt, _lanes(x)))
        if dt is DType.BF16:
            return self._to_bf16_bits(x)
        if dt is DType.BOOL:
            return self.b.zext(x, memty(dt, _lanes(x)))
        return x

    def binary(self, op: str, a: ir.Value, c: ir.Value, dt: DType) -> ir.Value:
        b = self.b
        fl = ("contract",)
        if dt.is_float:
            if op == "add":
                return b.fadd(a, c, flags=fl)
            if op == "sub":
                return b.fsub(a, c, flags=fl)
            if op == "mul":
                return b.fmul(a, c, flags=fl)
            if op == "div":
                return b.fdiv(a, c)
            if op in ("fmod",):
                return b.frem(a, c)
            if op in ("mod",):  # python-style: result has the sign of the divisor
                r = b.frem(a, c)
                zero = ir.Constant(a.type, None)
                fix = b.and_(
                    b.fcmp_ordered("!=", r, zero), b.xor(b.fcmp_ordered("<", r, zero), b.fcmp_ordered("<", c, zero))
                )
                return b.select(fix, b.fadd(r, c), r)
            if op == "floordiv":
                return b.call(self.mb.intrinsic("floor", a.type), [b.fdiv(a, c)])
            if op in ("max", "min"):
                return self.fminmax(op, a, c)
            if op == "pow":
                return self.pow(a, c)
            raise CompileError(f"float op {op} unsupported")
        signed = dt.is_signed
        if dt is DType.BOOL:
            if op in ("and", "mul", "min"):
                return b.and_(a, c)
            if op in ("or", "add", "max"):
                return b.or_(a, c)
            if op in ("xor", "ne"):
                return b.xor(a, c)
            raise CompileError(f"bool op {op} unsupported")
        if op == "add":
            return b.add(a, c)
        if op == "sub":
            return b.sub(a, c)
        if op == "mul":
            return b.mul(a, c)
        if op == "div":  # truncating, as C and ONNX
            return b.sdiv(a, c) if signed else b.udiv(a, c)
        if op == "floordiv":  # kernel-IR index arithmetic: operands are non-negative
            return b.sdiv(a, c) if signed else b.udiv(a, c)
        if op == "mod":
            return b.srem(a, c) if signed else b.urem(a, c)
        if op == "fmod":
            return b.srem(a, c) if signed else b.urem(a, c)
        if op == "max":
            return b.select(b.icmp_signed(">", a, c) if signed else b.icmp_unsigned(">", a, c), a, c)
        if op == "min":
            return b.select(b.icmp_signed("<", a, c) if signed else b.icmp_unsigned("<", a, c), a, c)
        if op == "and":
            return b.and_(a, c)
        if op == "or":
            return b.or_(a, c)
        if op == "xor":
            return b.xor(a, c)
        if op == "shl":
            return b.shl(a, c)
        if op == "shr":
            return b.lshr(a, c) if not signed else b.ashr(a, c)
        if op == "pow":
            fa = b.sitofp(a, llty(DType.F64, _lanes(a))) if signed else b.uitofp(a, llty(DType.F64, _lanes(a)))
            fc = b.sitofp(c, fa.type) if signed else b.uitofp(c, fa.type)
            r = self.pow(fa, fc)
            return b.fptosi(r, a.type) if signed else b.fptoui(r, a.type)
        raise CompileError(f"integer op {op} unsupported")

    def pow(self, a: ir.Value, c: ir.Value) -> ir.Value:
        return self.b.call(self.mb.intrinsic("pow", a.type, 2), [a, c])

    def compare(self, op: str, a: ir.Value, c: ir.Value, dt: DType) -> ir.Value:
        sym = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}[op]
        if dt.is_float:
            if op == "ne":
                return self.b.fcmp_unordered(sym, a, c)
            return self.b.fcmp_ordered(sym, a, c)
        if dt.is_signed:
            return self.b.icmp_signed(sym, a, c)
        return self.b.icmp_unsigned(sym, a, c)

    def unary(self, op: str, x: ir.Value, dt: DType, lanes: int) -> ir.Value:
        b = self.b
        t = x.type
        if op == "neg":
            return b.fneg(x) if dt.is_float else b.sub(ir.Constant(t, None), x)
        if op == "not":
            return b.xor(
                x,
                ir.Constant(t, [1] * lanes if lanes > 1 else 1)
                if dt is DType.BOOL
                else (ir.Constant(t, [-1] * lanes) if lanes > 1 else ir.Constant(t, -1)),
            )
        if op == "abs":
            if dt.is_float:
                return b.call(self.mb.intrinsic("fabs", t), [x])
            if not dt.is_signed:
                return x
            return b.call(self.mb._declare(f"llvm.abs.{_suffix(t)}", t, [t, I1]), [x, ir.Constant(I1, 0)])
        if op == "sign":
            one = self._fconst(1, dt, lanes)
            zero = self._fconst(0, dt, lanes)
            if dt.is_float:
                pos = b.fcmp_ordered(">", x, zero)
                neg = b.fcmp_ordered("<", x, zero)
                r = b.select(neg, b.fneg(one), x)  # keeps 0, -0 and NaN
                return b.select(pos, one, r)
            pos = b.icmp_signed(">", x, zero) if dt.is_signed else b.icmp_unsigned(">", x, zero)
            neg = b.icmp_signed("<", x, zero) if dt.is_signed else ir.Constant(I1, 0)
            r = b.select(neg, b.sub(zero, one), zero)
            return b.select(pos, one, r)
        if not dt.is_float:
            if op in ("floor", "ceil", "round", "trunc"):
                return x
            raise CompileError(f"unary op {op} on {dt} unsupported")
        if op == "recip":
            return b.fdiv(self._fconst(1, dt, lanes), x)
        if op in ("isnan",):
            return b.fcmp_unordered("uno", x, x)
        if op in ("isinf", "isposinf", "isneginf"):
            inf = self._fconst(math.inf, dt, lanes)
            if op == "isposinf":
                return b.fcmp_ordered("==", x, inf)
            if op == "isneginf":
                return b.fcmp_ordered("==", x, b.fneg(inf))
            return b.fcmp_ordered("==", b.call(self.mb.intrinsic("fabs", t), [x]), inf)
        is_f32 = (t.element if isinstance(t, ir.VectorType) else t) == ir.FloatType()
        if op in MATH_FUNCS and is_f32:
            return b.call(get_math_fn(self.mb.module, op, t), [x])
        if op == "sigmoid":
            one = self._fconst(1, dt, lanes)
            return b.fdiv(one, b.fadd(one, self.unary("exp", b.fneg(x), dt, lanes)))
        if op == "rsqrt":
            return b.fdiv(self._fconst(1, dt, lanes), b.call(self.mb.intrinsic("sqrt", t), [x]))
        if op == "round":
            return b.call(self.mb.intrinsic("roundeven", t), [x])
        if op in ("sqrt", "floor", "ceil", "trunc", "exp", "log", "sin", "cos"):
            if self.mb.target.is_gpu and op in ("exp", "log", "sin", "cos"):
                raise CompileError(f"{op} on {dt} is not available on {self.mb.target.name}")
            return b.call(self.mb.intrinsic(op, t), [x])
        # remaining functions: libm per lane
        libm = {"tanh": "tanh", "erf": "erf", "tan": "tan", "asin": "asin", "acos": "acos", "atan": "atan",
                "sinh": "sinh", "cosh": "cosh", "asinh": "asinh", "acosh": "acosh", "atanh": "atanh",
                "log1p": "log1p", "expm1": "expm1"}.get(op)  # fmt: skip
        if libm is None or self.mb.target.is_gpu:
            raise CompileError(f"unary op {op} on {dt} unsupported on {self.mb.target.name}")
        st = t.element if isinstance(t, ir.VectorType) else t
        name = libm + ("f" if st == ir.FloatType() else "")
        fn = self.mb._declare(name, st, [st])
        if lanes == 1:
            return b.call(fn, [x])
        out = ir.Constant(t, ir.Undefined)
        for i in range(lanes):
            xi = b.extract_element(x, ir.Constant(I32, i))
            out = b.insert_element(out, b.call(fn, [xi]), ir.Constant(I32, i))
        return out

    def _fconst(self, v, dt: DType, lanes: int) -> ir.Constant:
        return const_value(v, dt, lanes)

    def cast(self, x: ir.Value, src: DType, dst: DType, lanes: int) -> ir.Value:
        b = self.b
        dt = llty(dst, lanes)
        if src is dst:
            return x
        if dst is DType.BOOL:
            zero = ir.Constant(x.type, None)
            return b.fcmp_unordered("!=", x, zero) if src.is_float else b.icmp_unsigned("!=", x, zero)
        if src is DType.BOOL:
            return b.uitofp(x, dt) if dst.is_float else b.zext(x, dt)
        if src.is_float and dst.is_float:
            if dst is DType.F16:  # round to half precision, keep computing in float
                if _fwidth(x.type) == 64:
                    x = self._f64_to_f32_round_odd(x, lanes)
                h = b.fptrunc(x, memty(DType.F16, lanes))
                return b.fpext(h, dt)
            if dst is DType.BF16:
                if _fwidth(x.type) == 64:
                    x = self._f64_to_f32_round_odd(x, lanes)
                return self.from_mem(self._to_bf16_bits(x), DType.BF16)
            sw, dw = _fwidth(x.type), _fwidth(dt)
            if sw == dw:
                return x
            return b.fpext(x, dt) if dw > sw else b.fptrunc(x, dt)
        if src.is_float:
            return b.fptosi(x, dt) if dst.is_signed else b.fptoui(x, dt)
        if dst.is_float:
            r = b.sitofp(x, dt) if src.is_signed else b.uitofp(x, dt)
            if dst is DType.F16:
                r = b.fpext(b.fptrunc(r, memty(DType.F16, lanes)), dt)
            elif dst is DType.BF16:
                r = self.from_mem(self._to_bf16_bits(r), DType.BF16)
            return r
        sw, dw = src.bits, dst.bits
        if dw < sw:
            return b.trunc(x, dt)
        if dw > sw:
            return b.sext(x, dt) if src.is_signed else b.zext(x, dt)
        return x

    def _to_bf16_bits(self, x: ir.Value) -> ir.Value:
        """float32 -> the 16 bits of the nearest bfloat16 (ties to even; NaN stays a quiet NaN)."""
        b = self.b
        n = _lanes(x)
        bits = b.bitcast(x, _ivec(32, n))
        lsb = b.and_(b.lshr(bits, _iconst(32, 16, n)), _iconst(32, 1, n))
        rounded = b.lshr(b.add(bits, b.add(_iconst(32, 0x7FFF, n), lsb)), _iconst(32, 16, n))
        rounded = b.select(b.fcmp_unordered("uno", x, x), _iconst(32, 0x7FC0, n), rounded)
        return b.trunc(rounded, _ivec(16, n))

    def _f64_to_f32_round_odd(self, x: ir.Value, lanes: int) -> ir.Value:
        """double -> float rounded to odd, so that a following float -> half rounding is exact.

        A direct ``fptrunc double to half`` becomes a call to compiler-rt's __truncdfhf2, which the JIT
        cannot resolve; rounding through float to nearest twice can be off by one ulp at ties. Rounding
        to odd first (truncate toward zero, set the last bit if inexact) is exact, since float carries
        more than twice half's precision plus two bits."""
        b = self.b
        ft = llty(DType.F32, lanes)
        it = ir.VectorType(I32, lanes) if lanes > 1 else I32
        t = b.fptrunc(x, ft)
        back = b.fpext(t, x.type)
        fabs = self.mb.intrinsic("fabs", x.type)
        bits = b.bitcast(t, it)
        one = ir.Constant(it, [1] * lanes) if lanes > 1 else ir.Constant(I32, 1)
        over = b.fcmp_ordered(">", b.call(fabs, [back]), b.call(fabs, [x]))  # rounded away from zero
        bits = b.select(over, b.sub(bits, one), bits)
        inexact = b.fcmp_ordered("!=", back, x)
        bits = b.select(inexact, b.or_(bits, one), bits)
        return b.bitcast(bits, ft)

    def fminmax(self, op: str, a: ir.Value, c: ir.Value) -> ir.Value:
        """max/min that propagate NaN from either side (as numpy/ONNX do), in three x86 instructions
        (vcmpunordps, vmaxps, blend) instead of llvm.maximum's signed-zero-exact sequence."""
        b = self.b
        pick = b.fcmp_ordered(">" if op == "max" else "<", a, c)
        r = b.select(pick, a, c)  # x86 vmaxps/vminps: the second operand when unordered
        return b.select(b.fcmp_unordered("uno", a, a), a, r)

    def hreduce(self, op: str, x: ir.Value, dt: DType) -> ir.Value:
        b = self.b
        t = x.type
        st = t.element
        if dt.is_float:
            if op == "add":
                fn = self.mb._declare(f"llvm.vector.reduce.fadd.{_suffix(t)}", st, [st, t])
                return b.call(fn, [ir.Constant(st, -0.0), x], fastmath=("reassoc",))
            if op == "mul":
                fn = self.mb._declare(f"llvm.vector.reduce.fmul.{_suffix(t)}", st, [st, t])
                return b.call(fn, [ir.Constant(st, 1.0), x], fastmath=("reassoc",))
            # halve the vector log2(lanes) times with the NaN-propagating max/min below
            n = t.count
            while n > 1:
                h = n // 2
                lo_half = b.shuffle_vector(x, x, ir.Constant(ir.VectorType(I32, h), list(range(h))))
                hi_half = b.shuffle_vector(x, x, ir.Constant(ir.VectorType(I32, h), list(range(h, n))))
                x = self.fminmax(op, lo_half, hi_half)
                n = h
            return b.extract_element(x, ir.Constant(I32, 0))
        else:
            signed = dt.is_signed
            name = {"add": "add", "mul": "mul", "and": "and", "or": "or",
                    "max": "smax" if signed else "umax", "min": "smin" if signed else "umin"}[op]  # fmt: skip
            if dt is DType.BOOL:
                name = {"max": "or", "min": "and", "add": "or", "mul": "and"}.get(op, name)
        fn = self.mb._declare(f"llvm.vector.reduce.{name}.{_suffix(t)}", st, [t])
        return b.call(fn, [x])


def _gep(b: ir.IRBuilder, base: ir.Value, indices, source_etype) -> ir.Value:
    """getelementptr whose result is an opaque ``ptr`` (so vector and scalar accesses share it)."""
    g = b.gep(base, indices, source_etype=source_etype)
    g.type = PTR
    return g


def _children(e: Expr) -> tuple:
    from ..lower.kir import children

    return children(e)


def _ivec(bits: int, n: int) -> ir.Type:
    t = ir.IntType(bits)
    return ir.VectorType(t, n) if n > 1 else t


def _iconst(bits: int, v: int, n: int) -> ir.Constant:
    return ir.Constant(_ivec(bits, n), [v] * n if n > 1 else v)


def _lanes(x: ir.Value) -> int:
    return x.type.count if isinstance(x.type, ir.VectorType) else 1


def _fwidth(t: ir.Type) -> int:
    s = t.element if isinstance(t, ir.VectorType) else t
    return 64 if isinstance(s, ir.DoubleType) else 32


def et_align(dt: DType) -> int:
    return 1 if dt is DType.BOOL else dt.itemsize


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


__all__ = ["ModuleBuilder", "llty", "memty", "walk_expr"]
