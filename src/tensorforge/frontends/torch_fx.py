"""An FX graph of core-ATen ops (what ``torch.compile`` hands a backend through AOTAutograd: forward,
backward and inference graphs) -> Graph, specialized to the concrete inputs of one call.

    vals = trace_values(gm, args)                 # every node's value as FakeTensors of args' shapes
    g, plan = FxImporter(gm, vals, "fw0").run()   # a Graph and how to assemble the FX outputs

Unlike an ExportedProgram, every placeholder is an input: parameters, saved activations, tangents, and
SymInts (sizes under dynamic shapes), which are specialized to the call's values, so the graph is static
and a size is a Python int when the converters see it. The converters are the ones ``from_torch`` uses
(``torch_export.ATEN``). An FX output that is an input, ``None``, a size or a constant is not a graph
output: ``OutputPlan`` says where each comes from, so no weight is copied only to be returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import TensorforgeError, UnsupportedError
from ..ir.dtype import DType
from ..ir.graph import Graph, TensorType, Value
from .torch_export import ATEN, TorchImporter, op_name, source_of, torch, torch_dtype

SEED_POSITION = -1  # in the positions run() returns: the random seed, drawn per call, not an argument


def trace_values(gm, args: Sequence, frozen: dict[int, Any] | None = None) -> dict:
    """Every FX node's value for ``args`` (real tensors and ints): FakeTensors of the concrete shapes."""
    from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily

    vals: dict = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            vals[n] = out
            return out

    with unset_fake_temporarily():
        mode = FakeTensorMode(allow_non_fake_inputs=False)
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with mode:
            Recorder(gm).run(*fake)
    return vals


@dataclass
class OutputPlan:
    """Per FX output: ``("graph", k)`` the graph's output k, ``("input", i)`` argument i, ``("value", x)``
    a Python value or ``None``, ``("const", array)`` a constant tensor."""

    items: list[tuple[str, Any]] = field(default_factory=list)


class FxImporter(TorchImporter):
    """Converts one FX GraphModule, given every node's traced value (``trace_values``)."""

    def __init__(self, gm, vals: dict, name: str = "graph", constants: dict[int, np.ndarray] | None = None):
        super().__init__(None, name)
        self.gm = gm
        self.vals = vals
        self.constants = constants or {}  # placeholder position -> value (frozen parameters)
        self.failed = None  # the FX node whose conversion failed
        self.seed: Value | None = None  # the random ops' seed, an input drawn per call (SEED_POSITION)

    def fx_nodes(self):
        return self.gm.graph.nodes

    def random_seed(self, cx) -> Value:
        if self.seed is None:
            self.seed = Value(self.fresh("rng_seed"), TensorType(DType.I64, ()))
        return self.seed

    def unsupported_nodes(self) -> list:
        return [n for n in self.gm.graph.nodes if n.op == "call_function" and op_name(n.target) not in ATEN]

    def run(self) -> tuple[Graph | None, OutputPlan, list[int]]:
        """The graph (``None`` when nothing needs computing), the output plan, and which placeholders are
        the graph's inputs, in order (``SEED_POSITION`` for the random ops' seed)."""
        self.check_supported()
        inputs: list[Value] = []
        positions: list[int] = []
        input_of: dict[int, int] = {}
        pos = 0
        plan = OutputPlan()
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                v = self._fx_placeholder(node, pos)
                if isinstance(v, Value) and v.const is None:
                    input_of[id(v)] = pos
                    inputs.append(v)
                    positions.append(pos)
                self.env[node] = v
                pos += 1
            elif node.op == "call_function":
                val = self.val(node)
                if isinstance(val, int | float | bool) and not isinstance(val, torch.Tensor):
                    self.env[node] = val  # a size: specialized to this call
                    continue
                try:
                    self._convert(node)
                except TensorforgeError:
                    self.failed = node
                    raise
            elif node.op == "output":
                outputs = self._plan(node, plan, input_of)
        if self.seed is not None:
            inputs.append(self.seed)
            positions.append(SEED_POSITION)
        if not outputs:
            return None, plan, positions
        names = [f"output{i}" for i in range(len(outputs))]
        return Graph(self.nodes, inputs, outputs, name=self.name, output_names=names), plan, positions

    def _fx_placeholder(self, node, pos: int):
        val = self.val(node)
        if pos in self.constants:
            return self.const(self.constants[pos], node.name)
        if not isinstance(val, torch.Tensor):
            return val  # an int (a size), specialized
        dims = tuple(int(d) for d in val.shape)
        name = self.fresh(node.name)
        return Value(name, TensorType(torch_dtype(val.dtype), dims))

    def _plan(self, node, plan: OutputPlan, input_of: dict[int, int]) -> list[Value]:
        results = node.args[0] if isinstance(node.args[0], list | tuple) else [node.args[0]]
        outputs: list[Value] = []
        for r in results:
            v = self.env.get(r) if hasattr(r, "op") else r
            if isinstance(v, Value) and id(v) in input_of:
                plan.items.append(("input", input_of[id(v)]))
            elif isinstance(v, Value) and v.const is not None:
                plan.items.append(("const", np.asarray(v.const)))
            elif isinstance(v, Value):
                same = [k for k, o in enumerate(outputs) if o is v]
                if not same:
                    outputs.append(v)
                plan.items.append(("graph", same[0] if same else len(outputs) - 1))
            elif v is None or isinstance(v, int | float | bool):
                plan.items.append(("value", v))
            else:
                where = source_of(r) if hasattr(r, "meta") else "?"
                raise UnsupportedError(f"graph '{self.name}': output {r} is a {type(v).__name__}, which tensorforge "
                                       f"does not return; at {where}")  # fmt: skip
        return outputs
