"""Op definitions. Importing this package registers every op."""

from . import elementwise, fused, generate, grad, indexing, movement, nn, reduce, shape, update  # noqa: F401
from .registry import InferCtx, OpDef, Pattern, all_ops, evaluate, get_op, has_op, infer_node, register

__all__ = ["InferCtx", "OpDef", "Pattern", "all_ops", "evaluate", "get_op", "has_op", "infer_node", "register"]
