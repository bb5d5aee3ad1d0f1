"""The compiled model: one native call per inference, guarded at the border.

Inputs are checked (names, dtypes, shapes) in Python before native code is entered; the generated code
is only ever called with exactly the shapes it was compiled for. Outputs are fresh numpy arrays;
intermediates live in one preallocated arena.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Mapping, Sequence

import numpy as np

from ..codegen.emit import (
    ENTRY,
    NUMPY_DATA_OFFSET,
    PY_ENTRY,
    LLVMModule,
    emit_assembly,
    parse_and_optimize,
    split_assembly,
    target_machine,
)
from ..errors import InputError
from ..ir.dtype import DType
from ..ir.graph import Graph
from ..lower.program import Program
from .jit import JitModule, default_num_threads

_RUN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


def _ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _numpy_abi_ok() -> bool:
    """True when an ndarray's data pointer sits at NUMPY_DATA_OFFSET in its object (so generated code may
    read it directly, see ModuleBuilder.add_py_entry)."""
    probe = [np.empty(3, np.float32), np.empty((2, 5), np.int64)[:, 1:]]
    try:
        return all(ctypes.c_void_p.from_address(id(a) + NUMPY_DATA_OFFSET).value == _ptr(a) for a in probe)
    except (ValueError, OSError):
        return False


_NUMPY_ABI_OK = _numpy_abi_ok()


class CompiledModel:
    """A model compiled for fixed input shapes. Call it with numpy arrays."""

    def __init__(self, graph: Graph, program: Program, module: LLVMModule, jit: JitModule, compile_seconds: float = 0.0,
                 source_graph: Graph | None = None, pass_log: list | None = None):  # fmt: skip
        self.graph = graph
        self.source_graph = source_graph or graph
        self.program = program
        self.llvm = module
        self.jit = jit
        self.name = graph.name
        self.compile_seconds = compile_seconds
        self.pass_log = pass_log or []
        self.input_names = [n for n, _, _ in program.inputs]
        self.output_names = [n for n, _, _ in program.outputs]
        self._in_specs = [(n, dt, tuple(s)) for n, dt, s in program.inputs]
        self._out_specs = [(n, dt, tuple(s)) for n, dt, s in program.outputs]
        self._np_in = [dt.np for _, dt, _ in self._in_specs]
        self._np_out = [dt.np for _, dt, _ in self._out_specs]
        # constants stay alive here; the code reads them through a pointer table
        self._consts = [np.ascontiguousarray(c) for c in program.consts]
        self._const_table = (ctypes.c_void_p * max(1, len(self._consts)))(*[_ptr(c) for c in self._consts])
        self._arena = np.empty(program.arena_bytes + 64, dtype=np.uint8)
        base = _ptr(self._arena)
        self._arena_ptr = (base + 63) // 64 * 64
        self._in_table = (ctypes.c_void_p * max(1, len(self._in_specs)))()
        self._out_table = (ctypes.c_void_p * max(1, len(self._out_specs)))()
        self._fn = _RUN(jit.address(ENTRY))
        self._fast = None
        if _NUMPY_ABI_OK:
            ctypes.c_void_p.from_address(jit.global_address("tf_consts_table")).value = ctypes.addressof(
                self._const_table
            )
            ctypes.c_void_p.from_address(jit.global_address("tf_arena_ptr")).value = self._arena_ptr
            n = len(self._in_specs) + len(self._out_specs)
            self._fast = ctypes.CFUNCTYPE(None, *([ctypes.py_object] * n))(jit.address(PY_ENTRY))
        self._nthreads_addr = jit.global_address("tf_num_threads")
        self._lock = threading.Lock()
        self.num_threads = default_num_threads()
        self._asm: str | None = None

    # -- threads ------------------------------------------------------------------------------------
    @property
    def num_threads(self) -> int:
        return ctypes.c_int32.from_address(self._nthreads_addr).value

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        if int(n) < 1:
            raise ValueError("num_threads must be >= 1")
        ctypes.c_int32.from_address(self._nthreads_addr).value = int(n)

    # -- running ------------------------------------------------------------------------------------
    def _check(self, i: int, x) -> np.ndarray:
        name, dt, shape = self._in_specs[i]
        if not isinstance(x, np.ndarray):
            if isinstance(x, (int, float, bool, list, tuple, np.generic)):
                x = np.asarray(x)
            else:
                raise InputError(f"model '{self.name}': input '{name}' must be a numpy array, got {type(x).__name__}")
        if x.dtype != self._np_in[i]:
            raise InputError(
                f"model '{self.name}': input '{name}' has dtype {x.dtype}, expected {dt.np} "
                f"(convert with x.astype(np.{dt.np.name}))"
            )
        if x.shape != shape:
            raise InputError(f"model '{self.name}': input '{name}' has shape {list(x.shape)}, expected {list(shape)}")
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        return x

    def _bind(self, args: Sequence, kwargs: Mapping) -> list[np.ndarray]:
        n = len(self._in_specs)
        if args and kwargs:
            raise InputError(f"model '{self.name}': pass inputs either positionally or by name, not both")
        if kwargs:
            missing = [nm for nm in self.input_names if nm not in kwargs]
            extra = [k for k in kwargs if k not in self.input_names]
            if extra:
                raise InputError(f"model '{self.name}': unknown input(s) {extra}; inputs are {self.input_names}")
            if missing:
                raise InputError(f"model '{self.name}': missing input(s) {missing}; inputs are {self.input_names}")
            args = [kwargs[nm] for nm in self.input_names]
        if len(args) != n:
            if len(args) < n:
                missing = self.input_names[len(args) :]
                raise InputError(f"model '{self.name}': missing input(s) {missing}; expected {n} input(s) "
                                 f"{self.input_names}, got {len(args)}")  # fmt: skip
            raise InputError(f"model '{self.name}': expected {n} input(s) {self.input_names}, got {len(args)}")
        return [self._check(i, x) for i, x in enumerate(args)]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run with named inputs; returns {output name: array}."""
        outs = self._run(self._bind((), feeds))
        return dict(zip(self.output_names, outs))

    def __call__(self, *args, **kwargs):
        outs = self._run(self._bind(args, kwargs))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _run(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        outs = []
        for i, (_, _, shape) in enumerate(self._out_specs):
            c = self.program.const_outputs.get(i)
            outs.append(np.array(c, copy=True) if c is not None else np.empty(shape, self._np_out[i]))
        with self._lock:
            if self._fast is not None:
                self._fast(*xs, *outs)
            else:
                for i, x in enumerate(xs):
                    self._in_table[i] = _ptr(x)
                for i, o in enumerate(outs):
                    self._out_table[i] = _ptr(o)
                self._fn(self._in_table, self._out_table, self._const_table, self._arena_ptr)
        return outs

    # -- introspection ------------------------------------------------------------------------------
    @property
    def inputs(self) -> list[tuple[str, DType, tuple[int, ...]]]:
        return list(self._in_specs)

    @property
    def outputs(self) -> list[tuple[str, DType, tuple[int, ...]]]:
        return list(self._out_specs)

    @property
    def kernels(self):
        return self.program.kernels

    def assembly(self, kernel: str | None = None) -> str:
        """Assembly of every kernel (or the one named), each headed by the graph nodes it implements."""
        if self._asm is None:
            tm = target_machine(self.llvm.target, jit=False)
            mod = parse_and_optimize(self.llvm.ir, tm)
            self._asm = emit_assembly(mod, tm)
        return format_listing(self._asm, self.program, kernel, self.llvm.aliases)

    def export(self, out_dir: str, name: str = "model") -> dict[str, str]:
        """Write this model as a standalone shared library + C header (see runtime/aot.py)."""
        from .aot import export_library

        return export_library(self.program, out_dir, name)

    def kernel_ir(self) -> str:
        return "\n\n".join(str(k) for k in self.program.kernels)

    def llvm_ir(self) -> str:
        return self.llvm.ir

    def report(self) -> str:
        from ..report import format_report

        return format_report(self)


def format_listing(asm: str, program: Program, kernel: str | None = None, aliases: dict | None = None) -> str:
    aliases = aliases or {}
    names = [k.name for k in program.kernels]
    parts = split_assembly(asm, names)
    out = []
    found = False
    for k in program.kernels:
        if kernel is not None and kernel not in (k.name,) and not any(kernel in lab for lab in k.labels):
            continue
        found = True
        head = f"# ---- kernel {k.name}: {'; '.join(k.labels)}"
        if k.flops:
            head += f"  [{k.flops:,} flop]"
        out.append(head)
        if k.name in aliases:
            out.append(f"    (same code as {aliases[k.name]}: structurally identical kernels share one function)")
        else:
            out.append(parts.get(k.name, "    (inlined or empty)"))
        out.append("")
    if kernel is not None and not found:
        raise KeyError(f"no kernel named or labelled {kernel!r}; kernels: {', '.join(names)}")
    return "\n".join(out)
