"""Reverse-mode automatic differentiation as a graph transformation.

``grad`` turns a graph into its gradient graph; the per-op vector-Jacobian rules live in the ``rules_*``
modules, keyed by op name in ``VJP_RULES``. Importing this package registers every rule.
"""

from . import (  # noqa: F401  (register rules)
    rules_elementwise,
    rules_indexing,
    rules_nn,
    rules_norm,
    rules_reduce,
    rules_shape,
)
from .builder import GraphBuilder
from .check import evaluate_graph, numerical_vjp, relative_error
from .core import VJP_RULES, backward, vjp
from .transform import grad, promote

__all__ = [
    "VJP_RULES",
    "GraphBuilder",
    "backward",
    "evaluate_graph",
    "grad",
    "numerical_vjp",
    "promote",
    "relative_error",
    "vjp",
]
