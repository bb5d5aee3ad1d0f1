"""In-process JIT: LLVM IR -> machine code in this process (llvmlite MCJIT), with the object cache, and
the process's thread pool (codegen/threadpool.py), compiled once and linked to every module by name."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading

import llvmlite.binding as llvm

from ..codegen.emit import parse_and_optimize, target_machine
from ..codegen.targets import Target, host
from ..codegen.threadpool import pool_ir
from ..errors import CompileError
from . import cache

_LOCK = threading.Lock()


# Idle workers of tensorforge's pool (codegen/threadpool.py) spin this many `pause` iterations (about a
# microsecond) after a parallel loop before they sleep: back-to-back kernels of one inference find them
# awake, and no pool spins while another program runs. TENSORFORGE_SPIN sets it; OMP_WAIT_POLICY=PASSIVE
# makes it 0 and OMP_WAIT_POLICY=ACTIVE very large, as for an OpenMP runtime.
DEFAULT_SPIN = 1000


def pool_spin() -> int:
    env = os.environ.get("TENSORFORGE_SPIN")
    if env is not None:
        try:
            return max(0, min(int(env), 2**31 - 1))
        except ValueError:
            raise CompileError(f"TENSORFORGE_SPIN must be an integer, got {env!r}") from None
    policy = os.environ.get("OMP_WAIT_POLICY", "").strip().upper()
    return {"PASSIVE": 0, "ACTIVE": 2**30}.get(policy, DEFAULT_SPIN)


_POOL: list = []  # the thread pool's JitModule, kept alive for the process


@functools.cache
def load_runtime_libraries() -> None:
    """Make libm and tensorforge's thread pool (``tf_parallel``) visible to JIT-compiled code."""
    path = ctypes.util.find_library("m")
    for c in [path, "libm.so.6", "libm.so"]:
        if not c:
            continue
        try:
            llvm.load_library_permanently(c)
            break
        except RuntimeError:
            continue
    target = host()
    pool = JitModule(pool_ir(target), target, opt=2, _runtime=True)
    ctypes.c_int32.from_address(pool.global_address("tf_pool_spin")).value = pool_spin()
    llvm.add_symbol("tf_parallel", pool.address("tf_parallel"))
    _POOL.append(pool)


class JitModule:
    """A compiled module living in this process. Keep it alive as long as its functions are used."""

    def __init__(self, ir_text: str, target: Target, opt: int = 3, _runtime: bool = False):
        if not target.is_host:
            raise CompileError(f"cannot run code for target {target.name} in this process (host only)")
        if not _runtime:
            load_runtime_libraries()
        self.target = target
        self.key = cache.key_for(ir_text, target.triple, target.cpu, target.features, str(opt))
        tm = target_machine(target, jit=True, opt=opt)
        self.cache_hit = False
        cached = cache.load(self.key)
        with _LOCK:
            if cached is not None:
                # the object is cached: skip optimization, MCJIT loads the object directly
                mod = llvm.parse_assembly(ir_text)
                self.cache_hit = True
            else:
                mod = None
        if mod is None:
            mod = parse_and_optimize(ir_text, tm, opt)
        with _LOCK:
            self.engine = llvm.create_mcjit_compiler(mod, tm)

            def notify(module, obj: bytes) -> None:
                cache.store(self.key, obj)

            def getbuffer(module):
                return cached

            self.engine.set_object_cache(notify, getbuffer)
            self.engine.finalize_object()
        self.module = mod

    def address(self, name: str) -> int:
        addr = self.engine.get_function_address(name)
        if not addr:
            raise CompileError(f"symbol {name} not found in compiled module")
        return addr

    def global_address(self, name: str) -> int:
        return self.engine.get_global_value_address(name)


def default_num_threads() -> int:
    env = os.environ.get("TENSORFORGE_NUM_THREADS")
    if env:
        try:
            n = int(env)
            if n >= 1:
                return n
        except ValueError:
            pass
    return os.cpu_count() or 1
