"""Models whose shapes are known only at run time: symbolic input dims, shapes computed from input
values, and data-dependent output shapes — compiled in stages, each cached per concrete shape.

Generated code is compiled for static shapes. A model whose shapes are not all known at import runs as
a sequence of *stages*. A stage starts at node ``start`` with concrete arrays for every value live at
that point (the graph inputs, for the first stage) and:

1. specializes the remaining nodes to those shapes (``passes/specialize``-style re-inference that folds
   shape computations). Small live values that a type rule needs as a constant (a Reshape target, a
   Range bound, OneHot's depth, TopK's k — found by ``NotConstantError.input_index`` and traced back
   through the nodes that compute them) are compiled in as constants;
2. stops at the first *break*: a node whose output shape depends on the data of a large value computed
   in this stage (a Reshape whose target is computed from tensor contents), or an op whose output shape
   is data-dependent by definition (``OpDef.data_dependent``: NonZero, Unique, ...);
3. compiles the nodes before the break as one native program (the *segment*) whose outputs are the
   values still needed later;
4. at run time executes the segment, then the break: a data-dependent op runs on the host (its numpy
   reference semantics, as a graph break does in torch.compile); a value-dependent node becomes the
   first node of the next stage, where its now-known input is compiled in.

Stages are cached by (start, shapes and dtypes of the live values, and the bytes of the values compiled
in), so a model with symbolic batch and sequence dims compiles once per (batch, sequence) pair and a
model without breaks is a single stage: one native call per run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import NotConstantError, ShapeError, UnsupportedError, node_context
from ..ir.dtype import DType
from ..ir.graph import Graph, Node, TensorType, Value
from ..ir.signature import InputSpec, check_feeds, check_inputs
from ..ops.fold import fold_node
from ..ops.registry import evaluate, get_op, infer_node
from ..util.forksafe import renew_in_child

INJECT_LIMIT = 4096  # elements: larger live values are never compiled in as constants


@dataclass
class Stage:
    """One cached stage: a compiled segment, then (unless this is the last stage) a break."""

    start: int
    segment: object | None  # CompiledModel of the nodes before the break (None: nothing to compile)
    graph: Graph | None  # the graph the segment was compiled from
    seg_inputs: list[tuple[int, str]]  # (template value id, segment input name)
    seg_outputs: list[tuple[int, str]]  # (template value id, segment output name)
    consts: dict[int, np.ndarray]  # live template values that specialization made constant
    live: list[int]  # template value ids live after this stage
    break_index: int | None  # None: last stage
    host: bool = False  # the break node runs on the host (data-dependent op)
    seconds: float = 0.0


@dataclass
class _Spec:
    """Result of specializing the template from ``start``."""

    nodes: list[Node]
    env: dict[int, Value]  # template value id -> specialized value
    inputs: dict[int, Value]  # template id -> specialized graph input (non-constant stage inputs)
    break_index: int | None
    host: bool = False
    missing: list[int] = field(default_factory=list)  # template ids to compile in before retrying


class DynamicModel:
    """A model compiled per concrete input shape (and per value of shape-determining inputs), in stages
    split at data-dependent ops. Call it like a ``CompiledModel``. ``compile_segment(graph)`` compiles one
    static segment (the compiler hands it in: the runtime does not compile)."""

    def __init__(self, graph: Graph, compile_segment: Callable[[Graph], object], num_threads: int | None = None):
        self.graph = graph
        self.name = graph.name
        self.compile_segment = compile_segment
        self.inputs = [InputSpec(v.name, v.dtype, tuple(v.shape)) for v in graph.inputs]
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = list(graph.output_names)
        self._num_threads = num_threads
        self._stages: dict[tuple, Stage] = {}
        self._inject: dict[int, set[int]] = {}  # stage start -> template ids compiled in at that stage
        self._lock = threading.RLock()
        renew_in_child(self, "_lock", threading.RLock)
        self._values = {v.id: v for v in graph.values()}

    # -- public ------------------------------------------------------------------------------------
    @property
    def num_threads(self) -> int | None:
        return self._num_threads

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        self._num_threads = int(n)
        for st in self._stages.values():
            if st.segment is not None:
                st.segment.num_threads = int(n)

    @property
    def compiled_shapes(self) -> list[tuple]:
        """Input shapes that have a compiled first stage."""
        return sorted({tuple(s for s, _, _ in key[1]) for key in self._stages if key[0] == 0})

    @property
    def stages(self) -> list[Stage]:
        return list(self._stages.values())

    def __call__(self, *args, **kwargs):
        out = self._run(check_inputs(self.name, self.inputs, args, kwargs)[0])
        vals = [out[n] for n in self.output_names]
        return vals[0] if len(vals) == 1 else tuple(vals)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._run(check_inputs(self.name, self.inputs, (), check_feeds(self.name, feeds))[0])

    def _run(self, xs: list[np.ndarray]) -> dict[str, np.ndarray]:
        arrays = {v.id: x for v, x in zip(self.graph.inputs, xs)}
        start = 0
        while True:
            stage = self._stage(start, arrays)
            arrays = self._execute(stage, arrays)
            if stage.break_index is None:
                break
            start = stage.break_index + (1 if stage.host else 0)
        outs = {}
        for name, v in zip(self.output_names, self.graph.outputs):
            outs[name] = np.array(v.const, copy=True) if v.is_const else arrays[v.id]
        return outs

    # -- stages -------------------------------------------------------------------------------------
    def _key(self, start: int, arrays: dict[int, np.ndarray]) -> tuple:
        inject = self._inject.get(start, set())
        sig = tuple((a.shape, a.dtype.str, a.tobytes() if tid in inject else b"") for tid, a in sorted(arrays.items()))
        return (start, sig)

    def _stage(self, start: int, arrays: dict[int, np.ndarray]) -> Stage:
        st = self._stages.get(self._key(start, arrays))
        if st is None:
            with self._lock:
                st = self._stages.get(self._key(start, arrays))
                if st is None:
                    st = self._build(start, arrays)
                    self._stages[self._key(start, arrays)] = st
        return st

    def _build(self, start: int, arrays: dict[int, np.ndarray]) -> Stage:
        t0 = time.perf_counter()
        inject = self._inject.setdefault(start, set())
        for _ in range(64):
            spec = self._specialize(start, arrays, inject)
            if not spec.missing:
                break
            inject.update(spec.missing)
        else:
            raise NotConstantError(f"model '{self.name}': shapes could not be resolved at node {start}")
        end = len(self.graph.nodes) if spec.break_index is None else spec.break_index
        live = self._live_after(start, end, arrays)
        consts = {tid: spec.env[tid].const for tid in live if tid in spec.env and spec.env[tid].is_const}
        produced = {v.id for n in spec.nodes for v in n.outputs}
        seg_out = [(tid, f"v{tid}") for tid in live if tid in spec.env and spec.env[tid].id in produced]
        segment, seg_in, g = None, [], None
        if seg_out:
            used = {v.id for n in spec.nodes for v in n.inputs if v is not None}
            ins = [(tid, v) for tid, v in spec.inputs.items() if v.id in used]
            g = Graph(spec.nodes, [v for _, v in ins], [spec.env[tid] for tid, _ in seg_out],
                      name=self.name, output_names=[name for _, name in seg_out])  # fmt: skip
            segment = self.compile_segment(g)
            if self._num_threads is not None:
                segment.num_threads = self._num_threads
            seg_in = [(tid, v.name) for tid, v in ins]
        return Stage(start, segment, g, seg_in, seg_out, consts, live, spec.break_index, spec.host,
                     time.perf_counter() - t0)  # fmt: skip

    def _live_after(self, start: int, end: int, arrays: dict[int, np.ndarray]) -> list[int]:
        """Template values needed by nodes[end:] or the graph outputs, and available by then."""
        nodes = self.graph.nodes
        needed = {v.id for v in self.graph.outputs if not v.is_const}
        for n in nodes[end:]:
            needed.update(v.id for v in n.inputs if v is not None and not v.is_const)
        avail = set(arrays) | {v.id for n in nodes[start:end] for v in n.outputs}
        return sorted(needed & avail)

    def _specialize(self, start: int, arrays: dict[int, np.ndarray], inject: set[int]) -> _Spec:
        g = self.graph
        env: dict[int, Value] = {}
        inputs: dict[int, Value] = {}
        for tid, arr in arrays.items():
            name = self._values[tid].name
            if tid in inject:
                env[tid] = Value(name, const=arr)
            else:
                env[tid] = inputs[tid] = Value(name, TensorType(DType.from_numpy(arr.dtype), arr.shape))
        out_nodes: list[Node] = []
        producer: dict[int, Node] = {}
        for k in range(start, len(g.nodes)):
            n = g.nodes[k]
            ins = tuple(None if v is None else env.get(v.id, v) for v in n.inputs)
            outs = tuple(Value(v.name) for v in n.outputs)
            node = Node(n.op, ins, outs, n.attrs, n.name)
            expand = get_op(n.op).expand
            try:
                if expand is not None:  # deferred control flow: import the body now that its control is known
                    new_nodes, values = expand(node, g.name, {v.name for v in env.values()})
                    for nn in new_nodes:
                        if get_op(nn.op).data_dependent or get_op(nn.op).expand is not None:
                            raise UnsupportedError(f"{node_context(g.name, nn.name, nn.op)}: data-dependent shapes "
                                                   "inside control flow are not supported")  # fmt: skip
                        out_nodes.append(nn)
                        for v in nn.outputs:
                            producer[v.id] = nn
                    for old, new in zip(n.outputs, values):
                        if new is not None:
                            env[old.id] = new
                    continue
                types = infer_node(node, g.name)
            except NotConstantError as e:
                missing = self._trace(node, e, producer, env, inputs, arrays)
                if missing:
                    return _Spec(out_nodes, env, inputs, k, missing=missing)
                if k == start:
                    raise
                return _Spec(out_nodes, env, inputs, k)  # value-dependent break: compute the prefix first
            for v, t in zip(outs, types):
                v.type = t
            if get_op(n.op).data_dependent:
                return _Spec(out_nodes, env, inputs, k, host=True)
            folded = fold_node(node, g.name, shapes_only=True)
            if folded is not None:
                for old, new in zip(n.outputs, folded):
                    env[old.id] = new
                continue
            for old, new in zip(n.outputs, outs):
                env[old.id] = new
                producer[new.id] = node
            out_nodes.append(node)
        return _Spec(out_nodes, env, inputs, None)

    def _trace(self, node: Node, e: NotConstantError, producer, env, inputs, arrays) -> list[int]:
        """Stage inputs to compile in so that ``node``'s required input becomes constant: the leaves the
        value is computed from, if all of them are small; [] when it depends on large data."""
        if e.input_index is None:
            return []
        target = node.inputs[e.input_index]
        by_value = {v.id: tid for tid, v in inputs.items()}
        leaves: set[int] = set()
        stack = [target]
        seen: set[int] = set()
        while stack:
            v = stack.pop()
            if v is None or v.is_const or v.id in seen:
                continue
            seen.add(v.id)
            if v.id in by_value:
                tid = by_value[v.id]
                if arrays[tid].size > INJECT_LIMIT:
                    return []
                leaves.add(tid)
                continue
            p = producer.get(v.id)
            if p is None:
                return []
            stack.extend(p.inputs)
        return sorted(leaves)

    # -- running ------------------------------------------------------------------------------------
    def _execute(self, st: Stage, arrays: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        out = {tid: arrays[tid] for tid in st.live if tid in arrays}
        out.update(st.consts)
        if st.segment is not None:
            res = st.segment.run({name: arrays[tid] for tid, name in st.seg_inputs})
            for tid, name in st.seg_outputs:
                out[tid] = res[name]
        if st.host and st.break_index is not None:
            node = self.graph.nodes[st.break_index]
            vals = [None if v is None else (v.const if v.is_const else out.get(v.id, arrays.get(v.id)))
                    for v in node.inputs]  # fmt: skip
            try:
                res = evaluate(node, vals)
            except (ValueError, IndexError) as e:
                raise ShapeError(f"{node_context(self.name, node.name, node.op)}: {e}") from None
            for v, r in zip(node.outputs, res):
                out[v.id] = _contiguous(np.asarray(r))
        return out


def _contiguous(a: np.ndarray) -> np.ndarray:
    """C-contiguous, keeping 0-d arrays 0-d (np.ascontiguousarray makes them shape (1,))."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


__all__ = ["DynamicModel", "Stage"]
