"""Kernel-IR statements and expressions -> LLVM instructions, for one function.

Locals and loop counters are allocas (promoted to registers by LLVM's mem2reg). Values already emitted in
the current basic block are reused by expression identity. The jobs that need more than a few lines live
beside this file: parallel and GPU loops (``loops.py``), loads and stores (``memory.py``), dtype
conversions (``convert.py``) and the scalar ops (``scalar_ops.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import llvmlite.ir as ir

from ...errors import CompileError
from ...lower.kir import (
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
    transform,
)
from . import convert, loops, memory
from .lltypes import I64, const_value, llty, memty, splat
from .scalar_ops import emit_fma, emit_hreduce, emit_scalar_op

if TYPE_CHECKING:
    from .module import ModuleBuilder


# Target vocabularies beyond the built-in nodes (codegen/ptx.py registers the GPU's): statement hooks are
# tried first and return True when they emitted the statement; expression and buffer hooks are found by class.
STMT_HOOKS: list[Callable[[Emitter, Stmt], bool]] = []
EXPR_HOOKS: dict[type, Callable[[Emitter, Expr], ir.Value]] = {}
BUF_HOOKS: dict[type, Callable[[Emitter, Buffer], ir.Value]] = {}


@dataclass
class Scope:
    fn: ir.Function
    builder: ir.IRBuilder
    bufs: dict[int, ir.Value]  # id(Buffer) -> pointer
    vars: dict[int, ir.AllocaInstr]  # Var.uid -> alloca
    entry: ir.Block


class Emitter:
    def __init__(self, mb: ModuleBuilder, scope: Scope, kernel: Kernel):
        self.mb = mb
        self.s = scope
        self.k = kernel
        self.gpu_pending = mb.target.is_gpu  # the next loop becomes a grid-stride loop
        # Values already emitted in the current basic block, by expression identity (kernel IR shares
        # subexpression objects, e.g. a broadcast A element used by every FMA of a micro-kernel row):
        # id -> (block, value, var uids it reads, reads memory, expr kept alive)
        self._memo: dict[int, tuple] = {}
        self._deps: dict[int, tuple[frozenset, frozenset, Expr]] = {}

    @property
    def b(self) -> ir.IRBuilder:
        return self.s.builder

    def outlined(self, fn: ir.Function) -> Emitter:
        """An emitter of this kernel into another function (an outlined loop body), with its own locals."""
        entry = fn.append_basic_block("entry")
        return Emitter(self.mb, Scope(fn, ir.IRBuilder(entry), {}, {}, entry), self.k)

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
        if p is None and type(buf) in BUF_HOOKS:
            p = self.s.bufs[id(buf)] = BUF_HOOKS[type(buf)](self, buf)
        if p is None:
            # a buffer that is not a parameter: scratch memory on this function's stack
            p = self.alloca(memty(buf.dtype), buf.name, count=max(buf.numel, 1), align=64)
            self.s.bufs[id(buf)] = p
        return p

    # -- statements -------------------------------------------------------------------------------
    def _deps_of(self, e: Expr) -> tuple[frozenset, frozenset]:
        """(uids of the variables, ids of the buffers) that ``e`` reads. Remembered per node in ``_deps``,
        whose entries keep their nodes alive (so an id there is never another node's)."""
        d = transform(e, _deps, self._deps)
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
        if STMT_HOOKS and any(hook(self, s) for hook in STMT_HOOKS):
            return
        if isinstance(s, Seq):
            for x in s.body:
                self.stmt(x)
        elif isinstance(s, Store):
            memory.store(self, s)
        elif isinstance(s, For):
            if self.gpu_pending:
                self.gpu_pending = False
                loops.gpu_loop(self, s)
            elif s.kind is LoopKind.PARALLEL and not self.mb.target.is_gpu:
                loops.parallel_loop(self, s)
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
            memory.prefetch(self, s)
        else:
            raise CompileError(f"unknown statement {type(s).__name__}")

    def loop(self, s: For) -> None:
        start = self.expr(s.start)
        stop = self.expr(s.stop)
        slot = self.var_slot(s.var)
        self.b.store(start, slot)
        self.counted_loop(slot, stop, s.body, ir.Constant(I64, s.step), "loop", flags=["nsw"])

    def counted_loop(self, slot: ir.AllocaInstr, stop: ir.Value, body: Stmt, step: ir.Value, label: str,
                     flags=()) -> None:  # fmt: skip
        """``while (*slot < stop) { body; *slot += step; }`` in blocks ``label.head/body/end``."""
        b = self.b
        fn = self.s.fn
        head, block, done = (fn.append_basic_block(f"{label}.{n}") for n in ("head", "body", "end"))
        b.branch(head)
        b.position_at_end(head)
        i = b.load(slot)
        b.cbranch(b.icmp_signed("<", i, stop), block, done)
        b.position_at_end(block)
        self.stmt(body)
        b.store(b.add(b.load(slot), step, flags=flags), slot)
        b.branch(head)
        b.position_at_end(done)

    # -- expressions ------------------------------------------------------------------------------
    def expr(self, e: Expr) -> ir.Value:
        """The value of ``e`` in the current block: operands first, in order, each distinct node once (without
        recursion: a fused chain may be thousands of nodes deep). Values emitted earlier in the block are
        reused, and so are their operands' (a remembered node's operands are not visited)."""
        block = self.b.block

        def remembered(x: Expr) -> ir.Value | None:
            hit = self._memo.get(id(x))
            return hit[1] if hit is not None and hit[0] is block and hit[4] is x else None

        def value(x: Expr, ops: tuple) -> ir.Value:
            if isinstance(x, Const):
                return const_value(x.value, x.dtype, x.lanes)
            v = remembered(x)
            if v is not None:
                return v
            v = self._op(x, ops) if isinstance(x, _COMPUTED) else self._leaf(x)
            if self.b.block is block:
                vs, mem = self._deps_of(x)
                self._memo[id(x)] = (block, v, vs, mem, x)
            return v

        return transform(e, value, {}, lambda x: isinstance(x, _COMPUTED) and remembered(x) is None)

    def _op(self, e: Expr, ops: tuple) -> ir.Value:
        """An operation on the values ``ops`` of its operands."""
        b = self.b
        if isinstance(e, Bin | Cmp):
            return emit_scalar_op(self, e.op, ops[0], ops[1], e.a.dtype)
        if isinstance(e, Un):
            return emit_scalar_op(self, e.op, ops[0], e.a.dtype, e.a.lanes)
        if isinstance(e, Select):
            return b.select(*ops)
        if isinstance(e, Bitcast):
            return convert.bitcast(self, ops[0], e.a.dtype, e.dtype, e.lanes)
        if isinstance(e, Cast):
            return convert.cast(self, ops[0], e.a.dtype, e.dtype, e.lanes)
        if isinstance(e, Fma):
            return emit_fma(self, *ops, e.dtype)
        if isinstance(e, Broadcast):
            return ops[0] if e.lanes == 1 else splat(b, ops[0], e.lanes)
        return emit_hreduce(self, e.op, ops[0], e.a.dtype)

    def _leaf(self, e: Expr) -> ir.Value:
        """Variables, and the nodes that emit their operands themselves (loads, ramps)."""
        b = self.b
        hook = EXPR_HOOKS.get(type(e))
        if hook is not None:
            return hook(self, e)
        if isinstance(e, loops.GpuTid):
            return loops.gpu_tid(self)
        if isinstance(e, Var):
            slot = self.s.vars.get(e.uid)
            if slot is None:
                raise CompileError(f"variable {e.name} used before definition in kernel {self.k.name}")
            return b.load(slot)
        if isinstance(e, Load):
            return memory.load(self, e)
        if isinstance(e, Ramp):
            base = self.expr(Broadcast(e.base, e.lanes))
            return b.add(base, ir.Constant(ir.VectorType(I64, e.lanes), [i * e.stride for i in range(e.lanes)]))
        raise CompileError(f"unknown expression {type(e).__name__}")


_COMPUTED = (Bin, Cmp, Un, Select, Cast, Fma, Broadcast, HReduce)  # emitted from their operands' values


def _deps(x: Expr, kids: tuple) -> tuple[frozenset, frozenset, Expr]:
    """What ``x`` reads (variable uids, buffer ids), from what its operands read; ``x`` kept alive."""
    vs: set[int] = {x.uid} if isinstance(x, Var) else set()
    bufs: set[int] = {id(x.buf)} if isinstance(x, Load) else set()
    for cv, cb, _ in kids:
        vs |= cv
        bufs |= cb
    return frozenset(vs), frozenset(bufs), x
