"""Writing graph code from Python: what gradient rules, losses and optimizers are written in.

``b.op("Gemm", [ct, w], transB=1)`` appends a node and returns its output, typed by the op's own type
rule — so everything autodiff builds is ordinary IR, checked by the same code as an imported model, and
goes through the same passes and lowering.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import CompileError, ShapeError
from ..ir.dtype import DType
from ..ir.graph import Node, Shape, TensorType, Value, clean_name
from ..ops.registry import infer_node


class GraphBuilder:
    """Appends typed nodes to ``nodes``, giving every value a name not yet used in the graph."""

    def __init__(self, model: str = "model", taken: Iterable[str] = ()):
        self.model = model
        self.nodes: list[Node] = []
        self._names: set[str] = set(taken)
        self.label = ""  # the node (or stage) being built for: names the nodes and values built
        self.prefix = ""  # "d_" while building a gradient

    def fresh(self, base: str) -> str:
        base = clean_name(base)  # labels such as "update check" name values too
        name, k = base, 1
        while name in self._names:
            name = f"{base}_{k}"
            k += 1
        self._names.add(name)
        return name

    # -- nodes and values ---------------------------------------------------------------------------
    def op(self, op: str, inputs: Sequence[Value | None], /, *, out: str = "", n_out: int = 1, **attrs) -> Value:
        """Append ``op(inputs) {attrs}``; returns its output (a tuple when ``n_out > 1``)."""
        base = out or (f"{self.prefix}{self.label}_{op.lower()}" if self.label else f"{self.prefix}{op.lower()}")
        outs = tuple(Value(self.fresh(base)) for _ in range(n_out))
        node = Node(op, tuple(inputs), outs, attrs, self.label)
        try:
            types = infer_node(node, self.model)
        except ShapeError as e:
            raise CompileError(f"building {op} for '{self.label}' failed (a gradient-rule bug): {e}") from None
        for v, t in zip(outs, types):
            v.type = t
        self.nodes.append(node)
        return outs if n_out > 1 else outs[0]

    def const(self, data, name: str = "c", dtype: DType | None = None) -> Value:
        arr = np.asarray(data, dtype=None if dtype is None else dtype.np)
        return Value(self.fresh(name), const=arr)

    def scalar(self, value: float, like: Value, name: str = "c") -> Value:
        return self.const(np.array(value, dtype=like.dtype.np), name)

    def ints(self, values: Iterable[int], name: str = "shape") -> Value:
        return self.const(np.array(list(values), dtype=np.int64), name)

    def input(self, name: str, type: TensorType) -> Value:
        return Value(self.fresh(name), type)

    # -- tensor helpers (no node when there is nothing to do) ---------------------------------------
    def add(self, a: Value, b: Value) -> Value:
        return self.op("Add", [a, b])

    def sub(self, a: Value, b: Value) -> Value:
        return self.op("Sub", [a, b])

    def mul(self, a: Value, b: Value) -> Value:
        return self.op("Mul", [a, b])

    def div(self, a: Value, b: Value) -> Value:
        return self.op("Div", [a, b])

    def neg(self, x: Value) -> Value:
        return self.op("Neg", [x])

    def scale(self, x: Value, s: float) -> Value:
        if s == 1.0:
            return x
        if s == -1.0:
            return self.neg(x)
        return self.mul(x, self.scalar(s, x))

    def reshape(self, x: Value, shape: Shape) -> Value:
        if tuple(x.shape) == tuple(shape):
            return x
        return self.op("Reshape", [x, self.ints(shape)])

    def transpose(self, x: Value, perm: Sequence[int]) -> Value:
        if list(perm) == list(range(len(perm))):
            return x
        return self.op("Transpose", [x], perm=tuple(int(p) for p in perm))

    def expand(self, x: Value, shape: Shape) -> Value:
        if tuple(x.shape) == tuple(shape):
            return x
        return self.op("Expand", [x, self.ints(shape)])

    def zeros(self, shape: Shape, like: Value) -> Value:
        """Zeros of ``like``'s dtype: a broadcast scalar, so a large one is not stored as a constant."""
        return self.op("Expand", [self.scalar(0, like, "zero"), self.ints(shape)])

    def reduce_sum(self, x: Value, axes: Sequence[int], keepdims: bool = True) -> Value:
        if not axes:
            return x
        return self.op("ReduceSum", [x, self.ints(sorted(axes), "axes")], keepdims=int(keepdims))

    def sum_to(self, x: Value, shape: Shape) -> Value:
        """Sum ``x`` over the axes along which ``shape`` was broadcast to ``x.shape`` (the adjoint of
        numpy broadcasting)."""
        shape = tuple(shape)
        if tuple(x.shape) == shape:
            return x
        pad = len(x.shape) - len(shape)
        axes = [i for i, d in enumerate(x.shape) if i < pad or (shape[i - pad] == 1 and d != 1)]
        return self.reshape(self.reduce_sum(x, axes), shape)
