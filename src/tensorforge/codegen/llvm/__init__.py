"""Kernel IR -> LLVM IR (llvmlite.ir).

Each kernel becomes one function taking one pointer per buffer (``module.py``), its statements and
expressions emitted by ``emitter.py``. ``PARALLEL`` loops are outlined into a function that runs on
tensorforge's thread pool (``loops.py``). float16 values are loaded as half and computed as float; bool is
i1 in registers and one byte in memory (``lltypes.py``, ``convert.py``, ``memory.py``). The scalar ops of
the kernel IR are emitted by the LLVM side of the scalar-op table (``scalar_ops.py``).
"""

from . import (
    bf16dot,  # noqa: F401  (registers the bf16 emitters: ToBF16, BfDot, BfTileDot)
    intdot,  # noqa: F401  (registers the Dot / TileDot emitters)
)
from .lltypes import llty, memty
from .module import ModuleBuilder

__all__ = ["ModuleBuilder", "llty", "memty"]
