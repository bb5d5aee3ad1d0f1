"""The LLVM module of a program: kernels (one function each, taking one pointer per buffer), the entry that
calls them in order, its profiling variant and the entry Python calls with numpy arrays."""

from __future__ import annotations

import llvmlite.ir as ir

from ...errors import CompileError
from ...lower.kir import Cmp, Const, For, If, Kernel
from ..targets import Target
from .emitter import Emitter, Scope
from .lltypes import I8, I32, I64, PTR, VOID, gep, suffix
from .loops import GpuTid


class ModuleBuilder:
    """Accumulates kernels (and an entry function) into one LLVM module for a target."""

    def __init__(self, target: Target, name: str = "tensorforge", owns_globals: bool = True):
        """``owns_globals``: this module defines the program's globals (the thread count); a module that is
        one part of a program (``codegen/parallel.py``) only declares them."""
        self.target = target
        self.module = ir.Module(name=name)
        self.module.triple = target.triple
        self._counter = 0
        self.nthreads = None
        if not target.is_gpu:
            self.nthreads = ir.GlobalVariable(self.module, I32, "tf_num_threads")
            if owns_globals:
                self.nthreads.initializer = ir.Constant(I32, 1)

    # -- helpers ----------------------------------------------------------------------------------
    def declare(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        """The function ``name`` of the module, declared on first use."""
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ret, args), name)
        return fn

    def intrinsic(self, name: str, ty: ir.Type, nargs: int = 1) -> ir.Function:
        """``llvm.<name>`` on ``nargs`` operands of type ``ty``."""
        return self.declare(f"llvm.{name}.{suffix(ty)}", ty, [ty] * nargs)

    def add_fn_attrs(self, fn: ir.Function) -> None:
        fn.attributes.add("nounwind")

    # -- kernels ----------------------------------------------------------------------------------
    def add_kernel(self, k: Kernel, linkage: str = "internal") -> ir.Function:
        """The kernel's function: ``internal`` to its module, ``hidden`` (called from another part of the
        program, not exported from a library) or external (``""``, kernels tested one by one)."""
        fnty = ir.FunctionType(VOID, [PTR] * len(k.params))
        fn = ir.Function(self.module, fnty, k.name)
        if self.target.is_gpu:
            fn.calling_convention = "ptx_kernel"
        else:
            fn.linkage = linkage  # "hidden" is a visibility; LLVM reads it where the linkage goes
            fn.attributes.add("noinline")
        self.add_fn_attrs(fn)
        for a, b in zip(fn.args, k.params):
            a.name = b.name
            a.add_attribute("noalias")
        entry = fn.append_basic_block("entry")
        builder = ir.IRBuilder(entry)
        scope = Scope(fn, builder, {id(b): a for a, b in zip(fn.args, k.params)}, {}, entry)
        body = k.body
        em = Emitter(self, scope, k)
        try:
            if self.target.is_gpu and not isinstance(body, For):
                # not a single loop nest: run the whole body on one thread (correct, not fast)
                em.gpu_pending = False
                body = If(Cmp("eq", GpuTid(), Const(0)), body)
            em.stmt(body)
        except CompileError:
            raise
        except Exception as e:  # a bug in lowering/codegen: say which kernel
            raise CompileError(f"code generation failed for kernel {k.name} ({'; '.join(k.labels)}): {e}") from e
        scope.builder.ret_void()
        return fn

    def declare_kernel(self, name: str, n_params: int) -> ir.Function:
        """A kernel defined in another part of the program (hidden: never exported from a library)."""
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR] * n_params), name)
        fn.linkage = "hidden"
        return fn

    def add_entry(self, name: str, kernels: list[tuple[ir.Function, list[tuple[str, int]]]],
                  checks: tuple[int, list[int]] = (-1, []), profile: bool = False) -> ir.Function:  # fmt: skip
        """``i32 name(ptr inputs, ptr outputs, ptr consts, ptr arena)``: calls kernels in order; returns 0, or
        the error code a run-time check recorded (``lower/checks.py``).

        Each kernel argument is ``(kind, index)``: kind ``in``/``out``/``const`` reads a pointer from the
        matching table, ``arena`` adds a byte offset to the arena pointer. ``checks`` is the status word's
        arena offset and the kernels that may record an error: the word is cleared first, and after each of
        those kernels a non-zero code is returned at once, so no later kernel runs. With ``profile`` a fifth
        argument ``i64 times[len(kernels) + 1]`` receives CLOCK_MONOTONIC nanoseconds before each kernel
        and after the last (per-kernel times from one native call).
        """
        fn = ir.Function(self.module, ir.FunctionType(I32, [PTR] * (5 if profile else 4)), name)
        self.add_fn_attrs(fn)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        tables = dict(zip(("in", "out", "const", "arena"), fn.args))
        cache: dict[tuple[str, int], ir.Value] = {}
        stamp = self._timestamp_fn() if profile else None
        status_offset, failing = checks[0], set(checks[1])
        status = None
        if failing:
            status = gep(b, tables["arena"], [ir.Constant(I64, status_offset)], source_etype=I8)
            b.store(ir.Constant(I64, 0), status)

        def mark(i: int) -> None:
            if stamp is not None:
                b.store(b.call(stamp, []), gep(b, fn.args[4], [ir.Constant(I64, i)], source_etype=I64))

        for ki, (kfn, args) in enumerate(kernels):
            mark(ki)
            vals = []
            for kind, idx in args:
                key = (kind, idx)
                if key not in cache:
                    if kind == "arena":
                        cache[key] = gep(b, tables["arena"], [ir.Constant(I64, idx)], source_etype=I8)
                    else:
                        p = gep(b, tables[kind], [ir.Constant(I64, idx)], source_etype=PTR)
                        cache[key] = b.load(p, typ=PTR)
                vals.append(cache[key])
            b.call(kfn, vals)
            if ki in failing:
                code = b.load(status, typ=I64)
                with b.if_then(b.icmp_signed("!=", code, ir.Constant(I64, 0)), likely=False):
                    mark(ki + 1)
                    b.ret(b.trunc(code, I32))
        mark(len(kernels))
        b.ret(ir.Constant(I32, 0))
        return fn

    def _timestamp_fn(self) -> ir.Function:
        """``i64 tf_now_ns()``: clock_gettime(CLOCK_MONOTONIC) in nanoseconds (libc, in every process)."""
        fn = self.module.globals.get("tf_now_ns")
        if fn is not None:
            return fn
        ts_ty = ir.LiteralStructType([I64, I64])
        cgt = self.declare("clock_gettime", I32, [I32, PTR])
        fn = ir.Function(self.module, ir.FunctionType(I64, []), "tf_now_ns")
        fn.linkage = "internal"
        self.add_fn_attrs(fn)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        ts = b.alloca(ts_ty)
        b.call(cgt, [ir.Constant(I32, 1), ts])  # CLOCK_MONOTONIC
        sec = b.load(gep(b, ts, [ir.Constant(I32, 0), ir.Constant(I32, 0)], source_etype=ts_ty), typ=I64)
        nsec = b.load(gep(b, ts, [ir.Constant(I32, 0), ir.Constant(I32, 1)], source_etype=ts_ty), typ=I64)
        b.ret(b.add(b.mul(sec, ir.Constant(I64, 1_000_000_000)), nsec))
        return fn

    def add_py_entry(self, name: str, entry: ir.Function, n_in: int, n_out: int, data_offset: int) -> ir.Function:
        """``i32 name(PyArrayObject* in0, ..., PyArrayObject* out0, ...)``: reads each array's data pointer
        (the ``data`` field at ``data_offset``, numpy's stable ABI), then calls ``entry`` with the constant
        table and arena held in the globals ``tf_consts_table`` / ``tf_arena_ptr`` and returns its status.
        Lets Python make one ctypes call with the arrays themselves (no per-array pointer lookups in Python)."""
        gc = ir.GlobalVariable(self.module, PTR, "tf_consts_table")
        gc.initializer = ir.Constant(PTR, None)
        ga = ir.GlobalVariable(self.module, PTR, "tf_arena_ptr")
        ga.initializer = ir.Constant(PTR, None)
        fn = ir.Function(self.module, ir.FunctionType(I32, [PTR] * (n_in + n_out)), name)
        self.add_fn_attrs(fn)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        tin = b.alloca(PTR, size=ir.Constant(I64, max(n_in, 1)))
        tout = b.alloca(PTR, size=ir.Constant(I64, max(n_out, 1)))
        for i, obj in enumerate(fn.args):
            data = b.load(gep(b, obj, [ir.Constant(I64, data_offset)], source_etype=I8), typ=PTR)
            table, k = (tin, i) if i < n_in else (tout, i - n_in)
            b.store(data, gep(b, table, [ir.Constant(I64, k)], source_etype=PTR))
        b.ret(b.call(entry, [tin, tout, b.load(gc, typ=PTR), b.load(ga, typ=PTR)]))
        return fn

    def new_name(self, base: str) -> str:
        self._counter += 1
        return f"{base}.{self._counter}"

    def ir_text(self) -> str:
        return str(self.module)
