"""Lowering: graph -> kernel IR. Importing this package registers every lowering rule."""

from . import conv, elementwise, gemm, generate, grad, indexing, movement, pool, reduce, shape_ops, sort  # noqa: F401
from .kir import Kernel
from .program import Program, ProgramBuilder, lower_graph
from .rules import has_lowering

__all__ = ["Kernel", "Program", "ProgramBuilder", "has_lowering", "lower_graph"]
