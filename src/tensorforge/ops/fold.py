"""Compile-time evaluation of a node whose result is known (used by the importer, specialization, the
constant-folding pass and the dynamic-shape runtime). It is the one place constants are created from
nodes, so it is where their size is bounded (``ir/limits.py``): from the output types, before anything is
evaluated."""

from __future__ import annotations

import numpy as np

from ..errors import TensorforgeError
from ..ir.graph import Node, TensorType, Value
from ..ir.limits import max_fold_bytes, stored_bytes, type_bytes
from .registry import InferCtx, evaluate, get_op

SHAPE_FOLD_LIMIT = 4096  # elements: above this, integer constants are left to the fold pass


def fold_node(node: Node, model: str | None = None, shapes_only: bool = True, limit: int = SHAPE_FOLD_LIMIT):
    """Return constant output Values for ``node`` when they are known at compile time, else None.

    With ``shapes_only``, only shape computations are folded: ops computable from input types (Shape,
    Size) and small integer-valued ops on constants. Otherwise any all-constant node is folded.
    """
    opdef = get_op(node.op)
    vals = None
    if opdef.value is not None:  # cheap by contract: a folded ConstantOfShape stores one element
        vals = opdef.value(InferCtx(node, model))
    if vals is None and node.inputs and all(v is None or v.is_const for v in node.inputs) and within_fold_budget(node):
        if shapes_only:
            small = all(v is None or v.const.size <= limit for v in node.inputs)
            int_out = all(not v.type.dtype.is_float for v in node.outputs)
            tiny = all(v is None or v.const.size <= 64 for v in node.inputs)
            ok = small and (int_out or tiny)
        else:
            ok = opdef.reference is not None
        if ok:
            try:
                vals = evaluate(node, [None if v is None else v.const for v in node.inputs])
            except TensorforgeError:
                raise
            except Exception:
                vals = None
    if vals is None:
        return None
    out = []
    for v, arr in zip(node.outputs, vals):
        arr = np.asarray(arr).astype(v.type.dtype.np, copy=False)
        out.append(Value(v.name, TensorType(v.type.dtype, tuple(int(d) for d in arr.shape)), const=arr))
    return out


def within_fold_budget(node: Node) -> bool:
    """Whether folding ``node`` creates at most ``TENSORFORGE_MAX_FOLD_BYTES`` more than the constant data
    it reads: a weight transposed or scaled folds at any size, a few bytes expanded to a gigabyte do not
    (the node then runs at run time). Decided from the output types, before any memory is taken."""
    sizes = [None if v.type is None else type_bytes(v.type) for v in node.outputs]
    if None in sizes:
        return True  # untyped or symbolic: some input is not a constant, so nothing is evaluated
    read = sum(stored_bytes(v.const) for v in node.inputs if v is not None and v.is_const)
    return sum(sizes) <= max(max_fold_bytes(), read)
