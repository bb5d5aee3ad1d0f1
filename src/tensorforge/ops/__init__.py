"""Op definitions. Importing this package registers every op."""

from . import (  # noqa: F401
    conv_transpose,
    datadep,
    einsum,
    elementwise,
    fused,
    generate,
    grad,
    grid_sample,
    indexing,
    linalg,
    movement,
    nn,
    norm,
    pooling,
    quant,
    random,
    reduce,
    resize,
    shape,
    sort,
    text,
    update,
)
from .registry import InferCtx, OpDef, Pattern, all_ops, evaluate, get_op, has_op, infer_node, register

__all__ = ["InferCtx", "OpDef", "Pattern", "all_ops", "evaluate", "get_op", "has_op", "infer_node", "register"]
