"""A compiled program whose buffers are bound once and reused: the engine of a training step.

Unlike ``CompiledModel`` (fresh outputs per call), a ``BoundProgram`` keeps a numpy array behind every
input and output slot. Persistent arrays (parameters, optimizer state) are bound once and updated in
place by the generated code itself (``Program.state``); per-call arrays (a batch) are rebound, which only
swaps a pointer in the table. A call is then one native function call — no Python work per op. Callers
check their arrays at the border before ``run``: the code trusts the table.

``compile_bound`` also keeps a graph-level cache next to the object cache: keyed by the graph (text and
constants), options, target and the compiler's own source files, it stores the lowered program's tables
and its object code, so compiling a graph again (the same training step in a new process) skips the
passes, lowering and LLVM entirely. On a miss it can compile in two tiers: LLVM without optimization
first (about ten times faster to build, a few times slower to run), so that work starts at once, and the
optimized build in a background thread (LLVM runs without the GIL, though llvmlite lets one thread into
LLVM at a time: another compile waits for it), swapped in between two calls.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import os
import pickle
import threading
import time

import llvmlite.binding as llvm
import numpy as np

from ..codegen.emit import ENTRY, LLVMModule, build_module, target_machine
from ..codegen.targets import Target
from ..errors import CompileError
from ..ir.graph import Graph
from ..lower import lower_graph
from ..lower.kir import Kernel, Seq
from ..lower.program import Program
from . import cache
from .jit import JitModule, default_num_threads, load_runtime_libraries

_RUN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


def _ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


class BoundProgram:
    """Native code plus the pointer tables it runs on."""

    def __init__(self, graph: Graph, program: Program, module: LLVMModule | None, jit, seconds: float = 0.0,
                 cache_hit: bool = False):  # fmt: skip
        self.graph = graph
        self.program = program
        self.llvm = module
        self.jit = jit
        self.compile_seconds = seconds
        self.cache_hit = cache_hit
        self._consts = [np.ascontiguousarray(c) for c in program.consts]
        self._const_table = (ctypes.c_void_p * max(1, len(self._consts)))(*[_ptr(c) for c in self._consts])
        self._arena = np.empty(program.arena_bytes + 64, dtype=np.uint8)
        self._arena_ptr = (_ptr(self._arena) + 63) // 64 * 64
        self._in = (ctypes.c_void_p * max(1, len(program.inputs)))()
        self._out = (ctypes.c_void_p * max(1, len(program.outputs)))()
        self._keep_in: list[np.ndarray | None] = [None] * len(program.inputs)
        self._keep_out: list[np.ndarray | None] = [None] * len(program.outputs)
        self._fn = _RUN(jit.address(ENTRY))
        self._nthreads = ctypes.c_int32.from_address(jit.global_address("tf_num_threads"))
        self._nthreads.value = default_num_threads()
        self.input_index = {name: i for i, (name, _, _) in enumerate(program.inputs)}
        self.output_index = {name: i for i, (name, _, _) in enumerate(program.outputs)}
        self.optimized = True  # False while running the unoptimized first tier
        self._next = None  # the optimized build, once ready (installed by the next ``run``)
        self._retired: list = []  # earlier tiers' code stays mapped
        self._upgrade: threading.Thread | None = None

    @property
    def num_threads(self) -> int:
        return self._nthreads.value

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        if int(n) < 1:
            raise ValueError("num_threads must be >= 1")
        self._nthreads.value = int(n)

    def bind_input(self, i: int, a: np.ndarray) -> None:
        """Point input ``i`` at ``a`` (C-contiguous, of the compiled dtype and shape: checked by callers)."""
        self._keep_in[i] = a
        self._in[i] = _ptr(a)

    def bind_output(self, i: int, a: np.ndarray) -> None:
        self._keep_out[i] = a
        self._out[i] = _ptr(a)

    def run(self) -> None:
        if self._next is not None:
            self._install(self._next)
        self._fn(self._in, self._out, self._const_table, self._arena_ptr)

    def profile(self, repeat: int = 20, warmup: int = 2) -> tuple[list, float]:
        """Per-kernel median seconds over ``repeat`` runs on the bound arrays (the module's profiling entry
        timestamps every kernel in one native call); returns (KernelTime rows, median total seconds). Runs
        change state like ``run`` does."""
        from ..codegen.emit import PROFILE_ENTRY
        from .profile import KernelTime

        self.wait()
        fn = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * 5))(self.jit.address(PROFILE_ENTRY))
        times = np.zeros(len(self.program.kernels) + 1, np.int64)
        samples = []
        for r in range(warmup + max(1, repeat)):
            fn(self._in, self._out, self._const_table, self._arena_ptr, _ptr(times))
            if r >= warmup:
                samples.append(np.diff(times) * 1e-9)
        per_kernel = np.median(np.stack(samples), axis=0)
        rows = [KernelTime(k.name, list(k.labels), float(t), k.flops, k.bytes)
                for k, t in zip(self.program.kernels, per_kernel)]  # fmt: skip
        return rows, float(np.median([s.sum() for s in samples]))

    def _install(self, jit) -> None:
        """Switch to ``jit``'s code: same program, same tables (called between runs, by the caller's thread)."""
        threads = ctypes.c_int32.from_address(jit.global_address("tf_num_threads"))
        threads.value = self._nthreads.value
        self._retired.append(self.jit)
        self.jit, self._fn, self._nthreads = jit, _RUN(jit.address(ENTRY)), threads
        self._next = None
        self.optimized = True

    def wait(self) -> None:
        """Block until the optimized build is in use (a no-op when there is none pending)."""
        if self._upgrade is not None:
            self._upgrade.join()
            self._upgrade = None
        if self._next is not None:
            self._install(self._next)


def compile_bound(g: Graph, target: Target, options, state: dict[int, int] | None = None,
                  tiered: bool = False) -> BoundProgram:  # fmt: skip
    """``g`` through the same passes, lowering and code generation as any model; ``state`` maps outputs to
    the inputs they update in place (see ``ProgramBuilder``). ``tiered``: start on unoptimized code and
    switch to the optimized build when the background compile is done."""
    from ..compiler import check_lowerable, optimize

    t0 = time.perf_counter()
    key = _artifact_key(g, target, options, state)
    hit = _load_artifact(key, target) if key else None
    if hit is not None:
        program, jit = hit
        return BoundProgram(g, program, None, jit, time.perf_counter() - t0, cache_hit=True)
    check_lowerable(g)
    og, _ = optimize(g, options)
    if [v.name for v in og.inputs] != [v.name for v in g.inputs] or len(og.outputs) != len(g.outputs):
        raise CompileError(f"model {g.name!r}: the graph passes changed its inputs or outputs (a pass bug)")
    program = lower_graph(og, target, options.lowering, state=state)
    module = build_module(program, target)

    def optimized() -> JitModule:
        jit = JitModule(module.ir, target)
        obj = cache.load(jit.key) if key else None
        if obj is not None:
            cache.store(key, pickle.dumps((_slim(program), obj)), ".prog")
        return jit

    if not tiered:
        return BoundProgram(og, program, module, optimized(), time.perf_counter() - t0)
    bp = BoundProgram(og, program, module, JitModule(module.ir, target, opt=0), time.perf_counter() - t0)
    bp.optimized = False

    def upgrade() -> None:
        try:
            bp._next = optimized()
        except Exception:  # keep running the first tier; the error will show on the next compile
            pass

    bp._upgrade = threading.Thread(target=upgrade, name=f"tensorforge-O3-{g.name}", daemon=True)
    bp._upgrade.start()
    return bp


# -- the graph-level cache ------------------------------------------------------------------------------
@functools.cache
def _source_fingerprint() -> str:
    """Every source file of the compiler (path, size, mtime): an edited compiler never reuses old code."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            if f.endswith(".py"):
                st = os.stat(os.path.join(d, f))
                h.update(f"{os.path.relpath(os.path.join(d, f), root)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _artifact_key(g: Graph, target: Target, options, state) -> str | None:
    if cache.cache_dir() is None:
        return None
    h = hashlib.sha256()
    h.update(str(g).encode())
    h.update(repr(list(g.output_names)).encode())
    for v in g.constants():
        h.update(f"{v.name} {v.type}".encode())
        h.update(np.ascontiguousarray(v.const).tobytes())
    opts = (options.opt_level, options.passes, sorted(options.lowering.items()), sorted((state or {}).items()))
    return cache.key_for(h.hexdigest(), repr(opts), target.triple, target.cpu, target.features, _source_fingerprint())


def _slim(p: Program) -> Program:
    """The program without its kernel bodies (what running it needs, plus names, labels and FLOPs)."""
    stubs = [Kernel(k.name, [], Seq(()), k.labels, k.flops, k.bytes) for k in p.kernels]
    return dataclasses.replace(p, kernels=stubs)


_LOAD = threading.Lock()


class _ObjectJit:
    """Cached object code loaded into this process (MCJIT takes it in place of compiling a module)."""

    def __init__(self, obj: bytes, target: Target):
        load_runtime_libraries()
        with _LOAD:
            self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), target_machine(target, jit=True))
            self.engine.set_object_cache(lambda module, data: None, lambda module: obj)
            self.engine.finalize_object()

    def address(self, name: str) -> int:
        addr = self.engine.get_function_address(name)
        if not addr:
            raise CompileError(f"symbol {name} not found in cached object code")
        return addr

    def global_address(self, name: str) -> int:
        return self.engine.get_global_value_address(name)


def _load_artifact(key: str, target: Target):
    data = cache.load(key, ".prog")
    if data is None:
        return None
    try:
        program, obj = pickle.loads(data)
        return program, _ObjectJit(obj, target)
    except Exception:  # a damaged or incompatible entry: compile instead
        return None
