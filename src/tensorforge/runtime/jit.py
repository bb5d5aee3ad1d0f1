"""In-process JIT: LLVM IR -> machine code in this process (llvmlite MCJIT), with the object cache."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading

import llvmlite.binding as llvm

from ..codegen.emit import parse_and_optimize, target_machine
from ..codegen.targets import Target
from ..errors import CompileError
from . import cache

_LOCK = threading.Lock()


# Idle worker threads sleep almost at once unless the user asked otherwise: libgomp's default (spinning
# for ~300k iterations after every parallel region) made 2-thread inference 5-30x slower than 1 thread
# on a loaded machine, and spinning pools distort every side-by-side benchmark. Set OMP_WAIT_POLICY=ACTIVE
# for the lowest latency on a dedicated machine.
DEFAULT_SPINCOUNT = "1000"


@functools.cache
def load_runtime_libraries() -> None:
    """Make libgomp (thread pool) and libm visible to JIT-compiled code."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = DEFAULT_SPINCOUNT  # read by libgomp when it is loaded
    for name in ("gomp", "m"):
        path = ctypes.util.find_library(name)
        candidates = [path] if path else []
        candidates += [f"lib{name}.so.1", f"lib{name}.so.6", f"lib{name}.so"]
        for c in candidates:
            if not c:
                continue
            try:
                llvm.load_library_permanently(c)
                break
            except RuntimeError:
                continue
        else:
            if name == "gomp":
                raise CompileError("libgomp (GCC's OpenMP runtime) was not found; install gcc or libgomp1")


class JitModule:
    """A compiled module living in this process. Keep it alive as long as its functions are used."""

    def __init__(self, ir_text: str, target: Target, opt: int = 3):
        if not target.is_host:
            raise CompileError(f"cannot run code for target {target.name} in this process (host only)")
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
