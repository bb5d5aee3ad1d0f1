"""The graph IR: typed values, nodes and graphs.

A ``Graph`` is a flat, topologically ordered list of ``Node``s (like a jaxpr): each node applies one
registered op to input ``Value``s and defines output ``Value``s. Values are identities (two values are the
same only if they are the same object); a value whose ``const`` is set is a compile-time constant
(an initializer or a folded result). Shapes may hold symbolic dimensions (strings such as ``"batch"``).

Passes treat graphs as values: they build a new node list instead of editing nodes in place.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dtype import DType, is_float_dtype

Dim = int | str
Shape = tuple[Dim, ...]


@dataclass(frozen=True, slots=True)
class TensorType:
    dtype: DType
    shape: Shape

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> int:
        if not self.is_static:
            raise ValueError(f"numel of symbolic shape {self}")
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def with_shape(self, shape: Sequence[Dim]) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def __str__(self) -> str:
        return f"{self.dtype.short}[{','.join(str(d) for d in self.shape)}]"


_value_ids = itertools.count()

# the characters of a value name in the graph text (``%name``; ir/parser.py reads exactly these)
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.\-]")


def clean_name(name: str) -> str:
    """``name`` with every character the graph text cannot hold in a value name replaced by ``_``."""
    return _NOT_NAME.sub("_", name) or "v"


class Value:
    """A tensor flowing through the graph. ``const`` holds its data when known at compile time."""

    __slots__ = ("name", "type", "const", "id")

    def __init__(self, name: str, type: TensorType | None = None, const: np.ndarray | None = None):
        self.name = name
        self.id = next(_value_ids)
        if const is not None:
            const = np.asarray(const)
            if const.flags.writeable:
                const = const.copy()
                const.flags.writeable = False
            if type is None:
                type = TensorType(DType.from_numpy(const.dtype), tuple(int(d) for d in const.shape))
        self.type = type
        self.const = const

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def shape(self) -> Shape:
        return self.type.shape

    @property
    def is_const(self) -> bool:
        return self.const is not None

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


@dataclass(frozen=True, eq=False, slots=True)
class Node:
    """One op application. ``name`` is the source model's node name (used in every error message).
    ``source``: where the user wrote it, when the frontend knows (torch.export's stack trace: 'file:line in
    fn: code'); metadata only: passes and code generation ignore it, rewrites keep it through ``replace``."""

    op: str
    inputs: tuple[Value | None, ...]
    outputs: tuple[Value, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""
    source: str = ""

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def input(self, i: int) -> Value | None:
        return self.inputs[i] if i < len(self.inputs) else None

    @property
    def label(self) -> str:
        return f"{self.name or self.outputs[0].name} ({self.op})"

    def replace(self, **kw) -> Node:
        d = dict(
            op=self.op, inputs=self.inputs, outputs=self.outputs, attrs=self.attrs, name=self.name, source=self.source
        )
        d.update(kw)
        return Node(**d)

    def __repr__(self) -> str:
        return f"Node({self.label})"


class Graph:
    """A model: inputs, outputs and a topologically ordered node list."""

    def __init__(
        self,
        nodes: Iterable[Node],
        inputs: Sequence[Value],
        outputs: Sequence[Value],
        name: str = "model",
        output_names: Sequence[str] | None = None,
    ):
        self.nodes: list[Node] = list(nodes)
        self.inputs: list[Value] = list(inputs)
        self.outputs: list[Value] = list(outputs)
        self.name = name
        # The names users see for outputs (passes may swap the Value behind an output).
        self.output_names: list[str] = list(output_names) if output_names else [v.name for v in outputs]

    # -- queries -----------------------------------------------------------------------------------
    def producers(self) -> dict[Value, Node]:
        return {v: n for n in self.nodes for v in n.outputs}

    def consumers(self) -> dict[Value, list[Node]]:
        out: dict[Value, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                if v is not None:
                    out.setdefault(v, []).append(n)
        return out

    def values(self) -> list[Value]:
        """Every value in the graph, in definition order (inputs, constants, node outputs)."""
        seen: dict[int, Value] = {}
        for v in self.inputs:
            seen.setdefault(v.id, v)
        for n in self.nodes:
            for v in n.inputs:
                if v is not None:
                    seen.setdefault(v.id, v)
            for v in n.outputs:
                seen.setdefault(v.id, v)
        for v in self.outputs:
            seen.setdefault(v.id, v)
        return list(seen.values())

    def constants(self) -> list[Value]:
        return [v for v in self.values() if v.is_const]

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def parameter_count(self) -> int:
        return int(sum(v.const.size for v in self.constants() if is_float_dtype(v.const.dtype)))

    def with_nodes(self, nodes: Iterable[Node], outputs: Sequence[Value] | None = None) -> Graph:
        return Graph(
            nodes,
            self.inputs,
            self.outputs if outputs is None else outputs,
            name=self.name,
            output_names=self.output_names,
        )

    def copy(self) -> Graph:
        return self.with_nodes(self.nodes)

    def __str__(self) -> str:
        from .printer import format_graph

        return format_graph(self)

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.nodes)} nodes>"


def toposort(nodes: Sequence[Node], inputs: Iterable[Value] = ()) -> list[Node]:
    """Order nodes so that every value is defined before its use (stable w.r.t. the given order)."""
    producer = {v: n for n in nodes for v in n.outputs}
    order: list[Node] = []
    state: dict[int, int] = {}
    for root in nodes:
        if id(root) in state:
            continue
        stack = [(root, False)]
        while stack:
            n, done = stack.pop()
            if done:
                state[id(n)] = 2
                order.append(n)
                continue
            if state.get(id(n)) is not None:
                continue
            state[id(n)] = 1
            stack.append((n, True))
            for v in reversed(n.inputs):
                p = producer.get(v) if v is not None else None
                if p is not None and state.get(id(p)) is None:
                    stack.append((p, False))
    return order
