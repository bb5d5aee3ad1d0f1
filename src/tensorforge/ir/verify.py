"""The graph verifier: structural and type checks run after import and between passes (debug mode)."""

from __future__ import annotations

from ..errors import ShapeError, TensorforgeError, node_context
from .graph import Graph


class VerifyError(TensorforgeError):
    """The graph is malformed (a bug in a pass or frontend, or a broken model)."""


def verify(g: Graph, check_types: bool = True, where: str = "") -> None:
    from ..ops.registry import get_op, infer_node

    suffix = f" (after {where})" if where else ""
    defined: set[int] = {v.id for v in g.inputs}
    names: dict[str, int] = {}
    for v in g.inputs:
        if v.is_const:
            raise VerifyError(f"graph input %{v.name} is a constant{suffix}")
    for n in g.nodes:
        ctx = node_context(g.name, n.name, n.op)
        try:
            get_op(n.op)
        except TensorforgeError as e:
            raise VerifyError(f"{ctx}: {e}{suffix}") from None
        for i, v in enumerate(n.inputs):
            if v is None:
                continue
            if not v.is_const and v.id not in defined:
                raise VerifyError(f"{ctx}: input {i} %{v.name} is used before it is defined{suffix}")
        for v in n.outputs:
            if v.id in defined:
                raise VerifyError(f"{ctx}: output %{v.name} is defined twice{suffix}")
            if v.is_const:
                raise VerifyError(f"{ctx}: output %{v.name} is marked constant{suffix}")
            defined.add(v.id)
            if v.name in names and names[v.name] != v.id:
                raise VerifyError(f"{ctx}: value name %{v.name} is used by two values{suffix}")
            names[v.name] = v.id
        if check_types:
            try:
                types = infer_node(n, g.name)
            except ShapeError as e:
                raise VerifyError(f"{e}{suffix}") from None
            for v, t in zip(n.outputs, types):
                if v.type != t:
                    raise VerifyError(f"{ctx}: output %{v.name} is typed {v.type} but the op gives {t}{suffix}")
    for v in g.outputs:
        if not v.is_const and v.id not in defined:
            raise VerifyError(f"graph output %{v.name} is never defined{suffix}")
