"""Lowering: graph -> kernel IR. Importing this package registers every lowering rule."""

from . import (  # noqa: F401
    bf16_conv,
    bf16_gemm,
    conv,
    conv_transpose,
    einsum,
    elementwise,
    gemm,
    generate,
    gpu_gemm,
    grad,
    grid_sample,
    indexing,
    linalg,
    movement,
    norm,
    pool,
    pooling,
    qgemm,
    random,
    reduce,
    resize,
    shape_ops,
    sort,
    sparse_gemm,
    text,
)
from .kir import Kernel
from .program import Program, ProgramBuilder, lower_graph
from .rules import has_lowering

__all__ = ["Kernel", "Program", "ProgramBuilder", "has_lowering", "lower_graph"]
