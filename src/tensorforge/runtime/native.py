"""A compiled program whose buffers are bound once and reused: the engine of a training step.

Unlike ``CompiledModel`` (fresh outputs per call), a ``BoundProgram`` keeps a numpy array behind every
input and output slot. Persistent arrays (parameters, optimizer state) are bound once and updated in
place by the generated code itself (``Program.state``); per-call arrays (a batch) are rebound, which only
swaps a pointer in the table. A call is then one native function call — no Python work per op. Callers
check their arrays at the border before ``run``: the code trusts the table.
"""

from __future__ import annotations

import ctypes
import time

import numpy as np

from ..codegen.emit import ENTRY, LLVMModule, build_module
from ..codegen.targets import Target
from ..errors import CompileError
from ..ir.graph import Graph
from ..lower import lower_graph
from ..lower.program import Program
from .jit import JitModule, default_num_threads

_RUN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


def _ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


class BoundProgram:
    """Native code plus the pointer tables it runs on."""

    def __init__(self, graph: Graph, program: Program, module: LLVMModule, jit: JitModule, seconds: float = 0.0):
        self.graph = graph
        self.program = program
        self.llvm = module
        self.jit = jit
        self.compile_seconds = seconds
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
        self._fn(self._in, self._out, self._const_table, self._arena_ptr)


def compile_bound(g: Graph, target: Target, options, state: dict[int, int] | None = None) -> BoundProgram:
    """``g`` through the same passes, lowering and code generation as any model; ``state`` maps outputs to
    the inputs they update in place (see ``ProgramBuilder``)."""
    from ..compiler import check_lowerable, optimize

    t0 = time.perf_counter()
    check_lowerable(g)
    og, _ = optimize(g, options)
    if [v.name for v in og.inputs] != [v.name for v in g.inputs] or len(og.outputs) != len(g.outputs):
        raise CompileError(f"model {g.name!r}: the graph passes changed its inputs or outputs (a pass bug)")
    program = lower_graph(og, target, options.lowering, state=state)
    module = build_module(program, target)
    jit = JitModule(module.ir, target)
    return BoundProgram(og, program, module, jit, time.perf_counter() - t0)
