"""An ``Executable``: an artifact's native code in this process, with the tables it runs on.

One native call runs the whole program: ``tf_run(inputs, outputs, consts, arena)`` takes tables of
pointers. The executable owns the constants (and their pointer table) and one preallocated arena for
every intermediate, and offers two ways in:

* ``call(arrays)``: fresh output arrays per call (inference). When numpy's array layout is the one the
  code was built for, the call goes through ``tf_call``, which reads each array's data pointer itself, so
  Python makes one ctypes call with the arrays (no per-array pointer lookups);
* ``bind_input``/``bind_output`` + ``run_bound()``: arrays bound to slots once and reused (a training step's
  parameters and optimizer state, updated in place by the code; a new batch only swaps a pointer).

The arrays must already have been checked (``ir/signature.py``): the code trusts the tables. What only the
data can show — an index out of range — the code checks itself (``lower/checks.py``): the entry returns a
non-zero status, and the call raises ``DataError`` with the message of the failing check, read from the
status word the code left in the arena. ``profile_kernels`` runs the module's timestamping entry.
``upgrade`` swaps in another build of the same program (an optimized tier compiled in the background)
between two calls.

A process that forks while another thread is inside a call would leave the child a lock nobody will ever
release: the child gets a new lock (``util/forksafe.py``).
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from ..codegen.emit import ENTRY, NUMPY_DATA_OFFSET, PROFILE_ENTRY, PY_ENTRY
from ..errors import CompileError, DataError
from ..ir.signature import InputSpec
from ..lower.checks import STATUS_WORDS
from ..util.forksafe import renew_in_child
from .artifact import Artifact
from .jit import NativeCode, default_num_threads

_RUN = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
_PROFILE = ctypes.CFUNCTYPE(ctypes.c_int32, *([ctypes.c_void_p] * 5))


def _ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _numpy_abi_ok() -> bool:
    """True when an ndarray's data pointer sits at NUMPY_DATA_OFFSET in its object (so generated code may
    read it directly, see the Python-call entry in codegen)."""
    probe = [np.empty(3, np.float32), np.empty((2, 5), np.int64)[:, 1:]]
    try:
        return all(ctypes.c_void_p.from_address(id(a) + NUMPY_DATA_OFFSET).value == _ptr(a) for a in probe)
    except (ValueError, OSError):
        return False


_NUMPY_ABI_OK = _numpy_abi_ok()


class _Code:
    """One build's entry points (a program may be upgraded to another build of itself)."""

    def __init__(self, artifact: Artifact, const_table, arena_ptr: int, n_args: int):
        if artifact.object is None:
            raise CompileError(f"artifact '{artifact.name}' has no object code (it was compiled for "
                               f"{artifact.target.name} up to LLVM IR)")  # fmt: skip
        self.native = NativeCode(artifact.object, artifact.target)
        self.run = _RUN(self.native.address(ENTRY))
        self.profile = _PROFILE(self.native.address(PROFILE_ENTRY))
        self.threads = ctypes.c_int32.from_address(self.native.global_address("tf_num_threads"))
        self.fast = None
        if _NUMPY_ABI_OK:
            ctypes.c_void_p.from_address(self.native.global_address("tf_consts_table")).value = ctypes.addressof(
                const_table
            )
            ctypes.c_void_p.from_address(self.native.global_address("tf_arena_ptr")).value = arena_ptr
            self.fast = ctypes.CFUNCTYPE(ctypes.c_int32, *([ctypes.py_object] * n_args))(self.native.address(PY_ENTRY))


class Executable:
    """See the module docstring."""

    def __init__(self, artifact: Artifact, num_threads: int | None = None):
        p = artifact.program
        self.artifact = artifact
        self.program = p
        self.name = p.name
        self.inputs = [InputSpec(n, dt, tuple(s)) for n, dt, s in p.inputs]
        self.outputs = [InputSpec(n, dt, tuple(s)) for n, dt, s in p.outputs]
        self.input_names = [s.name for s in self.inputs]
        self.output_names = [s.name for s in self.outputs]
        self.input_index = {n: i for i, n in enumerate(self.input_names)}
        self.output_index = {n: i for i, n in enumerate(self.output_names)}
        # constants stay alive here; the code reads them through a pointer table
        self._consts = [c if c.flags.c_contiguous else c.copy(order="C") for c in map(np.asarray, p.consts)]
        self._const_table = (ctypes.c_void_p * max(1, len(self._consts)))(*[_ptr(c) for c in self._consts])
        self._arena = np.empty(p.arena_bytes + 64, dtype=np.uint8)
        self._arena_ptr = (_ptr(self._arena) + 63) // 64 * 64
        self._in = (ctypes.c_void_p * max(1, len(self.inputs)))()
        self._out = (ctypes.c_void_p * max(1, len(self.outputs)))()
        self._bound_in: list[np.ndarray | None] = [None] * len(self.inputs)
        self._bound_out: list[np.ndarray | None] = [None] * len(self.outputs)
        self._lock = threading.Lock()
        renew_in_child(self, "_lock")
        self._code = self._load(artifact)
        self._retired: list[_Code] = []  # earlier builds stay mapped: a caller may still be inside one
        self._pending: _Code | None = None
        self._upgrading: threading.Thread | None = None
        # what a call allocates per output: (shape, dtype, constant value or None)
        self._out_alloc = [(s.shape, s.dtype.np, p.const_outputs.get(i)) for i, s in enumerate(self.outputs)]
        self.num_threads = num_threads or default_num_threads()

    def _load(self, artifact: Artifact) -> _Code:
        return _Code(artifact, self._const_table, self._arena_ptr, len(self.inputs) + len(self.outputs))

    # -- threads --------------------------------------------------------------------------------------
    @property
    def num_threads(self) -> int:
        return self._code.threads.value

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        if int(n) < 1:
            raise ValueError("num_threads must be >= 1")
        self._code.threads.value = int(n)

    # -- running --------------------------------------------------------------------------------------
    def call(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        """Run on checked input arrays; returns fresh output arrays."""
        outs = [np.empty(shape, dt) if c is None else np.array(c, copy=True) for shape, dt, c in self._out_alloc]
        with self._lock:
            code = self._code if self._pending is None else self._current()
            if code.fast is not None:
                rc = code.fast(*xs, *outs)
            else:
                for i, x in enumerate(xs):
                    self._in[i] = _ptr(x)
                for i, o in enumerate(outs):
                    self._out[i] = _ptr(o)
                rc = code.run(self._in, self._out, self._const_table, self._arena_ptr)
                self._restore_bound()
            if rc:
                raise self._error()
        return outs

    def bind_input(self, i: int, a: np.ndarray) -> None:
        """Point input slot ``i`` at ``a`` (checked, C-contiguous) for the following ``run_bound`` calls."""
        self._bound_in[i] = a
        self._in[i] = _ptr(a)

    def bind_output(self, i: int, a: np.ndarray) -> None:
        self._bound_out[i] = a
        self._out[i] = _ptr(a)

    def run_bound(self) -> None:
        """Run on the bound arrays."""
        with self._lock:
            rc = self._current().run(self._in, self._out, self._const_table, self._arena_ptr)
            if rc:
                raise self._error()

    def _error(self) -> DataError:
        """The error of a run that returned a non-zero status (only a failing check does), from the status
        word the check left in the arena (lock held)."""
        p = self.program
        _, check, value, pos = (ctypes.c_int64 * STATUS_WORDS).from_address(self._arena_ptr + p.status_offset)
        return DataError(p.checks[check].message(self.name, value, pos))

    def _restore_bound(self) -> None:
        for i, a in enumerate(self._bound_in):
            self._in[i] = _ptr(a) if a is not None else None
        for i, a in enumerate(self._bound_out):
            self._out[i] = _ptr(a) if a is not None else None

    def profile_kernels(self, xs: list[np.ndarray] | None = None, repeat: int = 20, warmup: int = 2
                        ) -> tuple[list, float]:  # fmt: skip
        """Per-kernel median seconds over ``repeat`` runs (after ``warmup``) on ``xs`` (fresh outputs) or the
        bound arrays (``xs`` None; state changes as in ``run_bound``). Returns (KernelTime rows, median
        total seconds)."""
        from .profile import KernelTime

        self.wait()
        times = np.zeros(len(self.program.kernels) + 1, np.int64)
        samples = []
        with self._lock:
            if xs is not None:
                outs = [np.empty(s.shape, s.dtype.np) for s in self.outputs]
                for i, x in enumerate(xs):
                    self._in[i] = _ptr(x)
                for i, o in enumerate(outs):
                    self._out[i] = _ptr(o)
            try:
                for r in range(warmup + max(1, repeat)):
                    rc = self._code.profile(self._in, self._out, self._const_table, self._arena_ptr, _ptr(times))
                    if rc:
                        raise self._error()
                    if r >= warmup:
                        samples.append(np.diff(times) * 1e-9)
            finally:
                self._restore_bound()
        per_kernel = np.median(np.stack(samples), axis=0)
        rows = [KernelTime(k.name, list(k.labels), float(t), k.flops, k.bytes)
                for k, t in zip(self.program.kernels, per_kernel)]  # fmt: skip
        return rows, float(np.median([s.sum() for s in samples]))

    # -- builds ---------------------------------------------------------------------------------------
    @property
    def optimized(self) -> bool:
        """False while a better build (started by ``upgrade_in_background``) is coming or not yet in use."""
        t = self._upgrading
        return self._pending is None and (t is None or not t.is_alive())

    def upgrade(self, artifact: Artifact) -> None:
        """Load another build of the same program (e.g. from a background thread); it is switched to at the
        start of the next call."""
        if artifact.program.kernels and [k.name for k in artifact.program.kernels] != [
            k.name for k in self.program.kernels
        ]:
            raise ValueError("upgrade: the artifact is not a build of the same program")
        self._pending = self._load(artifact)

    def upgrade_in_background(self, build) -> None:
        """Run ``build() -> Artifact`` on a thread and upgrade to its result (a failure keeps the current
        build: the error shows on the next compile)."""

        def work() -> None:
            try:
                self.upgrade(build())
            except Exception:
                pass

        self._upgrading = threading.Thread(target=work, name=f"tensorforge-O3-{self.name}", daemon=True)
        self._upgrading.start()

    def wait(self) -> None:
        """Block until a pending better build is in use (no-op when none is coming)."""
        t = self._upgrading
        if t is not None:
            t.join()
            self._upgrading = None
        with self._lock:
            self._current()

    def _current(self) -> _Code:
        """The build to run (switching to a pending one first); called with the lock held."""
        if self._pending is not None:
            new, self._pending = self._pending, None
            new.threads.value = self._code.threads.value
            self._retired.append(self._code)
            self._code = new
        return self._code


__all__ = ["Executable"]
