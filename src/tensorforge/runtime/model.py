"""The compiled model: an ``Executable`` called with numpy arrays, guarded at the border, and everything a
user may want to see of it (graph, kernels, kernel IR, LLVM IR, assembly, report).

Inputs are checked (names, dtypes, shapes; ``ir/signature.py``) before native code is entered; the code
is only ever called with exactly the shapes it was compiled for. Outputs are fresh numpy arrays;
intermediates live in one preallocated arena.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..codegen.emit import split_assembly
from ..ir.graph import Graph
from ..ir.signature import check_feeds, check_inputs
from ..lower.program import Program
from .artifact import Artifact
from .executable import Executable


class CompiledModel(Executable):
    """A model compiled for fixed input shapes. Call it with numpy arrays."""

    def __init__(self, artifact: Artifact, num_threads: int | None = None, cache_hit: bool = False,
                 load_seconds: float = 0.0):  # fmt: skip
        super().__init__(artifact, num_threads)
        # the exact arrays a call may pass straight through (anything else goes through check_inputs)
        self._exact = [(s.dtype.np, s.shape) for s in self.inputs]
        self.cache_hit = cache_hit
        self.compile_seconds = load_seconds if cache_hit else artifact.metadata.get("compile_seconds", 0.0)

    # -- running --------------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        outs = self.call(self._checked(args, kwargs))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run with named inputs; returns {output name: array}."""
        return dict(zip(self.output_names, self.call(self._checked((), check_feeds(self.name, feeds)))))

    def _checked(self, args, kwargs) -> list[np.ndarray]:
        """The inputs, checked. C-contiguous arrays of exactly the compiled dtype and shape, all passed
        positionally or all by name, pass at once (the common case, in a fraction of a microsecond);
        everything else — conversions, errors — goes through ``check_inputs``."""
        if args and kwargs:
            xs = None
        elif kwargs:
            xs = [kwargs.get(n) for n in self.input_names] if len(kwargs) == len(self._exact) else None
        else:
            xs = list(args) if len(args) == len(self._exact) else None
        if xs is not None:
            for x, (dt, shape) in zip(xs, self._exact):
                if type(x) is not np.ndarray or x.dtype != dt or x.shape != shape or not x.flags.c_contiguous:
                    break
            else:
                return xs
        return check_inputs(self.name, self.inputs, args, kwargs)[0]

    def profile(self, feeds: Mapping[str, np.ndarray], repeat: int = 20, warmup: int = 2):
        """Per-kernel median times over ``repeat`` runs on ``feeds`` (rows for ``runtime/profile.py``'s
        table) and the median total seconds."""
        xs, _ = check_inputs(self.name, self.inputs, (), feeds)
        return self.profile_kernels(xs, repeat, warmup)

    # -- what was compiled ----------------------------------------------------------------------------
    @property
    def graph(self) -> Graph:
        """The optimized graph the code was generated from."""
        return self.artifact.graph

    @property
    def target(self):
        return self.artifact.target

    @property
    def kernels(self):
        return self.program.kernels

    def assembly(self, kernel: str | None = None) -> str:
        """Assembly of every kernel (or the one named), each headed by the graph nodes it implements."""
        return format_listing(self.artifact.assembly(), self.program, kernel, self.artifact.aliases)

    def kernel_ir(self) -> str:
        return self.artifact.kernel_ir()

    def llvm_ir(self) -> str:
        return self.artifact.llvm_ir

    def report(self) -> str:
        from .report import format_report

        return format_report(self.artifact, self.num_threads, self.cache_hit, self.compile_seconds)

    def export(self, out_dir: str, name: str = "model", weights: str = "embedded") -> dict:
        """Write this model as a standalone C library (``lib<name>.so``/``.a``, ``<name>.h``, an example program
        and its Makefile; see runtime/aot.py and docs/C_API.md). ``name`` (a C identifier) prefixes every
        symbol; ``weights``: "embedded" or "file" (``<name>.weights``). ``tfg.load(out_dir)`` runs it."""
        from .aot import export_library

        return export_library(self.artifact, out_dir, name, weights=weights)

    def save(self, path: str) -> None:
        """Write the compiled model to one file; ``tfg.load(path)`` runs it again without compiling."""
        self.artifact.save(path)


def format_listing(asm: str, program: Program, kernel: str | None = None, aliases: dict | None = None) -> str:
    """Assembly cut per kernel, each part headed by the graph nodes the kernel implements."""
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


__all__ = ["CompiledModel", "format_listing"]
