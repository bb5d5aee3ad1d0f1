"""Native code in this process: object code loaded by LLVM's MCJIT (the linker part only: the code was
compiled by the object stage of the pipeline), plus the libraries every module links against — libm and
tensorforge's own thread pool (``codegen/threadpool.py``), built once per process and made visible by name.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
import sys
import threading

import llvmlite.binding as llvm

from ..codegen.amx import request_amx
from ..codegen.emit import compile_object, target_machine, unpack_objects
from ..codegen.targets import Target, host
from ..codegen.threadpool import pool_ir
from ..errors import CompileError
from ..util.files import atomic_write
from ..util.forksafe import renew_in_child
from .cache import cache_dir

_LOCK = threading.Lock()  # MCJIT engines are created one at a time
renew_in_child(sys.modules[__name__], "_LOCK")

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


_POOL: list = []  # the thread pool's code, kept alive for the process


@functools.cache
def load_runtime_libraries() -> None:
    """Make libm and tensorforge's thread pool (``tf_parallel``) visible to loaded code."""
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
    pool = NativeCode(_pool_object(target), target, _runtime=True)
    ctypes.c_int32.from_address(pool.global_address("tf_pool_spin")).value = pool_spin()
    llvm.add_symbol("tf_parallel", pool.address("tf_parallel"))
    _POOL.append(pool)


def _pool_object(target: Target) -> bytes:
    """The thread pool's object code: compiled once per machine and kept in the cache directory (a process
    that only loads cached models then runs no LLVM optimization at all)."""
    ir_text = pool_ir(target)
    d = cache_dir()
    key = hashlib.sha256(f"{llvm.llvm_version_info} {target!r}\n{ir_text}".encode()).hexdigest()[:40]
    path = None if d is None else os.path.join(d, f"pool-{key}.o")
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = f.read()
            if len(data) > 32 and hashlib.sha256(data[32:]).digest() == data[:32]:
                return data[32:]
        except OSError:
            pass
    obj = compile_object(ir_text, target, opt=2)
    if path is not None:
        try:
            atomic_write(path, hashlib.sha256(obj).digest() + obj)
        except OSError:
            pass
    return obj


class NativeCode:
    """An object file linked into this process. Keep it alive as long as its functions are used."""

    def __init__(self, obj: bytes, target: Target, _runtime: bool = False):
        if not target.is_host:
            raise CompileError(f"code for target {target.name} cannot run in this process (host only)")
        if target.has_feature("amx-tile") and not request_amx():
            raise CompileError(f"code for target {target.name} uses AMX, which this process may not use "
                               "(arch_prctl refused the tile state); recompile for the host")  # fmt: skip
        if not _runtime:
            load_runtime_libraries()
        first, *more = unpack_objects(obj)  # a program built in parts is one object per part
        with _LOCK:
            self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), target_machine(target, jit=True))
            self.engine.set_object_cache(lambda module, data: None, lambda module: first)
            self._objects = [llvm.ObjectFileRef.from_data(o) for o in more]
            for o in self._objects:  # before finalizing: the parts' symbols resolve against each other
                self.engine.add_object_file(o)
            self.engine.finalize_object()

    def address(self, name: str) -> int:
        addr = self.engine.get_function_address(name)
        if not addr:
            raise CompileError(f"symbol {name} not found in the loaded code")
        return addr

    def global_address(self, name: str) -> int:
        addr = self.engine.get_global_value_address(name)
        if not addr:
            raise CompileError(f"global {name} not found in the loaded code")
        return addr


def jit(ir_text: str, target: Target | None = None, opt: int = 3) -> NativeCode:
    """Compile LLVM IR for the host and load it (the runtime's own small modules: machine probes)."""
    target = target or host()
    return NativeCode(compile_object(ir_text, target, opt), target)


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
