"""Operator fusion: group nodes into kernels, so that intermediate tensors are never written to memory.

Decisions follow the op-pattern lattice (``ops.registry.Pattern``, as in TVM) and what the lowering can
do: which ops have view, index or kernel rules, the fusion capabilities each kernel rule declares
(``lower.rules.kernel_caps``) and the reductions a row kernel handles (``lower.fusion.row_reduce_axes``).
Nodes are visited in order; each one joins the group of one of its producers when that is legal, else
starts a group of its own:

* an elementwise / broadcast node joins a producer's group as an epilogue of a kernel op (GEMM, conv,
  pooling, reduction, softmax: ``kind='kernel'``), as part of a row reduction (``kind='rows'``) or of a
  loop nest (``kind='loop'``), preferring them in that order;
* an index op (reshape, transpose, slice) joins a loop nest only; alone it stays a view (free);
* a reduction over trailing axes joins the row group of its input (layer norm: mean, then variance of
  the centred input) or absorbs the loop group that computes its input; other kernel ops absorb
  elementwise producers as a prologue when they read their input a bounded number of times.

Every merge keeps the group graph acyclic (no path leaves a group and comes back). Groups then give
up members until their outputs are ones the lowering can write: a single output for a kernel group,
outputs of one shape for a loop. Each group of two or more nodes becomes one ``Fused`` node whose body
lists its members (``ops/fused.py``); the pass reports the kernel count before and after.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir.graph import Graph, Node, Value, toposort
from ..lower.fusion import row_reduce_axes
from ..lower.rules import INDEX_RULES, VIEW_RULES, kernel_caps
from ..ops.fused import FUSED
from ..ops.registry import Pattern, get_op
from .manager import Change, register_pass

KIND_RANK = {"kernel": 0, "rows": 1, "loop": 2}
# Most members a group of each kind may have. The lowering composes members as nested index functions
# (about two Python frames per member), so the cap bounds its recursion and the expression depth of a
# kernel: a 10,000-node elementwise chain becomes a sequence of loops. For loops it is also about speed:
# one iteration of a long fused body is a dependency chain longer than the core's out-of-order window, so
# iterations stop overlapping. Measured on chains of 256-480 ops over 64K-4M floats (AVX-512 host), the time
# per op and element of cheap ops (Relu, Neg, Abs, Floor) is lowest with 16-32 members per loop (0.012 ns;
# 64: 0.020, unbounded: 0.028, unfused: 0.145); with Sigmoid in the mix it is lowest at 8 (16: 1.2x, 32:
# 1.8x, unbounded: 2.5x). 32 keeps every loop group of the test models whole (the largest, an LSTM cell,
# has 17 members). Row and kernel groups keep a row or a tile in cache across their members (the largest
# seen, a layer-norm backward in BERT training, has 41); 64 bounds their depth.
MAX_NODES = {"loop": 32, "rows": 64, "kernel": 64}


@dataclass(eq=False)
class _Group:
    kind: str  # loop | kernel | rows | plain
    nodes: list[Node]
    shape: tuple = ()  # kernel: the kernel op's output; rows: the reduced input
    axes: tuple = ()  # rows: the reduced (trailing) axes
    dtype: object = None  # kernel: the kernel op's output dtype
    serial: int = 0  # creation order (later groups are preferred as merge targets)

    @property
    def reduced_shape(self) -> tuple:
        k = len(self.axes)
        return (*self.shape[:-k], *([1] * k))


def _numel(v: Value) -> int:
    return int(np.prod(v.shape)) if v.type.is_static else -1


@dataclass
class _Fuser:
    g: Graph
    group: dict[int, _Group] = field(default_factory=dict)  # id(node) -> group
    serial: int = 0

    def __post_init__(self) -> None:
        self.order = {id(n): i for i, n in enumerate(self.g.nodes)}
        self.producer = {v.id: n for n in self.g.nodes for v in n.outputs}
        self.consumers: dict[int, list[Node]] = {}
        for n in self.g.nodes:
            for v in n.inputs:
                if v is not None:
                    self.consumers.setdefault(v.id, []).append(n)
        self.graph_outputs = {v.id for v in self.g.outputs}

    # -- classification ---------------------------------------------------------------------------
    def is_elementwise(self, n: Node) -> bool:
        return (n.op in INDEX_RULES and len(n.outputs) == 1 and n.outputs[0].type.is_static
                and get_op(n.op).pattern in (Pattern.ELEMWISE, Pattern.BROADCAST))  # fmt: skip

    def is_index(self, n: Node) -> bool:
        return (n.op in INDEX_RULES and len(n.outputs) == 1 and n.outputs[0].type.is_static
                and get_op(n.op).pattern is Pattern.INJECTIVE)  # fmt: skip

    def is_anchor(self, n: Node) -> bool:
        """Whether ``n`` starts a kernel group: a kernel op that takes an epilogue, with one output used."""
        caps = kernel_caps(n.op)
        used = [v for v in n.outputs if v.id in self.consumers or v.id in self.graph_outputs]
        return caps is not None and caps.epilogue and used == [n.outputs[0]] and n.outputs[0].type.is_static

    # -- groups -----------------------------------------------------------------------------------
    def new_group(self, kind: str, nodes: list[Node], **kw) -> _Group:
        self.serial += 1
        grp = _Group(kind, list(nodes), serial=self.serial, **kw)
        for n in nodes:
            self.group[id(n)] = grp
        return grp

    def group_of(self, v: Value | None) -> _Group | None:
        if v is None or v.is_const:
            return None
        p = self.producer.get(v.id)
        return None if p is None else self.group[id(p)]

    def outputs(self, grp: _Group) -> list[Value]:
        """The values a group must store: those used outside it (or graph outputs)."""
        inside = {id(n) for n in grp.nodes}
        out = []
        for n in grp.nodes:
            for v in n.outputs:
                if v.id in self.graph_outputs or any(id(c) not in inside for c in self.consumers.get(v.id, ())):
                    out.append(v)
        return out

    def depends_on(self, starts: list[_Group], target: _Group) -> bool:
        """Whether one of ``starts`` reads, directly or through other groups, a value of ``target`` (each
        group explored once)."""
        seen = {id(g) for g in starts}
        stack = list(starts)
        while stack:
            grp = stack.pop()
            for n in grp.nodes:
                for v in n.inputs:
                    h = self.group_of(v)
                    if h is None or h is grp:
                        continue
                    if h is target:
                        return True
                    if id(h) not in seen:
                        seen.add(id(h))
                        stack.append(h)
        return False

    def read_elsewhere(self, q: _Group, p: _Group) -> bool:
        """Whether a group other than ``p`` and ``q`` reads a value of ``q``."""
        for n in q.nodes:
            for v in n.outputs:
                for c in self.consumers.get(v.id, ()):
                    g = self.group.get(id(c))
                    if g is not None and g is not p and g is not q:
                        return True
        return False

    def can_merge(self, a: _Group, b: _Group) -> bool:
        """Whether ``a`` may take ``b`` in: the group keeps within ``MAX_NODES`` of ``a``'s kind, and the
        group graph acyclic (no path a -> x -> b or b -> x -> a).

        A path from q through a third group x into p ends with a group other than p and q reading q (p
        itself would close the cycle p -> x -> p, and the graph is acyclic): without one, there is nothing
        to walk. That keeps fusing a long chain linear (the new node is read by no group yet, and the
        group before it only by the new node), where walking every group upstream was quadratic."""
        if len(a.nodes) + len(b.nodes) > MAX_NODES[a.kind]:
            return False
        for p, q in ((a, b), (b, a)):
            if not self.read_elsewhere(q, p):
                continue
            starts = {id(x): x for n in p.nodes for v in n.inputs
                      if (x := self.group_of(v)) is not None and x is not a and x is not b}  # fmt: skip
            if self.depends_on(list(starts.values()), q):
                return False
        return True

    def merge(self, into: _Group, other: _Group) -> None:
        into.nodes = sorted(into.nodes + other.nodes, key=lambda n: self.order[id(n)])
        for n in other.nodes:
            self.group[id(n)] = into

    # -- what may join what -----------------------------------------------------------------------
    def accepts(self, grp: _Group, n: Node) -> bool:
        """Whether node ``n`` may join ``grp`` (ignoring cycles, checked separately)."""
        out = n.outputs[0]
        mine = [v for v in n.inputs if v is not None and self.group_of(v) is grp]
        if grp.kind == "kernel":
            caps = next(c for m in grp.nodes if (c := kernel_caps(m.op)) is not None)
            if not (self.is_elementwise(n) and tuple(out.shape) == grp.shape
                    and (out.dtype == grp.dtype or caps.epilogue_casts)):  # fmt: skip
                return False
            return caps.epilogue_reads_tensors or not any(
                v is not None and not v.is_const and self.group_of(v) is not grp and _numel(v) == _numel(out)
                for v in n.inputs
            )  # a full-size operand computed elsewhere (a residual) only where the kernel reads it well
        if grp.kind == "rows":
            return self.is_elementwise(n) and tuple(out.shape) in (grp.shape, grp.reduced_shape)
        if grp.kind == "loop":
            if not (self.is_elementwise(n) or self.is_index(n)):
                return False
            if any(_numel(v) != _numel(out) for v in mine):
                return False  # no value is recomputed for several outputs (broadcast) or skipped
            trial = _Group("loop", grp.nodes + [n])
            outs = self.outputs(trial)
            return len({(tuple(v.shape), v.dtype) for v in outs}) <= 1
        return False

    def try_join(self, n: Node) -> _Group | None:
        cands: list[tuple] = []
        for v in n.inputs:
            grp = self.group_of(v)
            if grp is None or grp.kind == "plain" or any(grp is c[-1] for c in cands):
                continue
            single = len(self.consumers.get(v.id, ())) == 1 and v.id not in self.graph_outputs
            cands.append((KIND_RANK[grp.kind], not single, -grp.serial, grp))
        me = _Group("plain", [n])
        self.group[id(n)] = me
        for *_, grp in sorted(cands, key=lambda c: c[:3]):
            if self.accepts(grp, n) and self.can_merge(grp, me):
                self.merge(grp, me)
                return grp
        return None

    def absorb_loops(self, grp: _Group, n: Node, prologue: bool) -> None:
        """Merge loop groups that feed ``n`` and are used by nothing outside ``grp`` into ``grp``."""
        for v in n.inputs:
            h = self.group_of(v)
            if h is None or h is grp or h.kind != "loop":
                continue
            trial = _Group("trial", grp.nodes + h.nodes)
            if self.outputs(trial) != self.outputs(_Group("trial", grp.nodes)):
                continue  # h's results are needed elsewhere
            if prologue and any(_numel(x) != _numel(v) for x in self.outputs(h)):
                continue
            if grp.kind == "loop" and _numel(v) != _numel(n.outputs[0]):
                continue
            if self.can_merge(grp, h):
                self.merge(grp, h)

    # -- the walk ---------------------------------------------------------------------------------
    def visit(self, n: Node) -> None:
        axes = row_reduce_axes(n)
        if axes is not None:
            self.visit_row_reduction(n, axes)
            return
        if self.is_anchor(n):
            out = n.outputs[0]
            grp = self.new_group("kernel", [n], shape=tuple(out.shape), dtype=out.dtype)
            if kernel_caps(n.op).prologue:
                for v in n.inputs:
                    h = self.group_of(v)
                    if h is not None and h.kind == "loop" and self.outputs(h) == [v] and \
                            self.consumers.get(v.id) == [n] and v.id not in self.graph_outputs and \
                            self.can_merge(grp, h):  # fmt: skip
                        self.merge(grp, h)
            return
        if self.is_elementwise(n) or self.is_index(n):
            grp = self.try_join(n)
            if grp is None:
                grp = self.new_group("loop" if self.is_elementwise(n) else "plain", [n])
            if grp.kind == "loop":
                self.absorb_loops(grp, n, prologue=False)
            return
        self.new_group("plain", [n])

    def visit_row_reduction(self, n: Node, axes: tuple) -> None:
        x = n.inputs[0]
        shape = tuple(x.shape)
        h = self.group_of(x)
        me = self.new_group("rows", [n], shape=shape, axes=axes)
        if h is not None and h.kind == "rows" and h.shape == shape and h.axes == axes and self.can_merge(h, me):
            self.merge(h, me)
            return
        if h is not None and h.kind == "loop" and all(tuple(v.shape) == shape for v in self.outputs(h)) and \
                self.can_merge(me, h):  # fmt: skip
            self.merge(me, h)

    # -- legalization -----------------------------------------------------------------------------
    def legalize(self, grp: _Group) -> list[_Group]:
        """Peel members off the end of ``grp`` until the lowering can write its outputs."""
        peeled: list[_Group] = []
        while len(grp.nodes) > 1 and not self.writable(grp):
            last = grp.nodes[-1]
            if grp.kind == "kernel" and kernel_caps(last.op) is not None:  # only a prologue left: dissolve
                peeled += [self.new_group("plain", [m]) for m in grp.nodes[:-1]]
                grp.nodes = [last]
                break
            grp.nodes.pop()
            peeled.append(self.new_group("loop" if self.is_elementwise(last) else "plain", [last]))
        return peeled

    def writable(self, grp: _Group) -> bool:
        outs = self.outputs(grp)
        if grp.kind == "kernel":
            return len(outs) == 1
        if grp.kind == "loop":
            return len({(tuple(v.shape), v.dtype) for v in outs}) == 1
        if grp.kind == "rows":
            return any(row_reduce_axes(n) is not None for n in grp.nodes)
        return True

    def run(self) -> tuple[Graph, dict]:
        for n in self.g.nodes:
            self.visit(n)
        groups: dict[int, _Group] = {}
        for n in self.g.nodes:
            groups.setdefault(id(self.group[id(n)]), self.group[id(n)])
        todo = list(groups.values())
        final: list[_Group] = []
        while todo:
            grp = todo.pop()
            todo.extend(self.legalize(grp))
            final.append(grp)
        nodes = []
        for grp in final:
            if len(grp.nodes) == 1 or grp.kind == "plain":
                nodes.extend(grp.nodes)
            else:
                nodes.append(self.fused_node(grp))
        nodes = toposort(sorted(nodes, key=lambda n: min(self.order.get(id(m), 0) for m in _members(n))))
        before = sum(1 for n in self.g.nodes if n.op not in VIEW_RULES)
        after = sum(1 for n in nodes if n.op not in VIEW_RULES)
        return self.g.with_nodes(nodes), {"kernels": Change(before, after)}

    def fused_node(self, grp: _Group) -> Node:
        inside = {v.id for n in grp.nodes for v in n.outputs}
        ins: dict[int, Value] = {}
        for n in grp.nodes:
            for v in n.inputs:
                if v is not None and not v.is_const and v.id not in inside:
                    ins.setdefault(v.id, v)
        names = [n.name or n.outputs[0].name for n in grp.nodes]
        name = "+".join(names) if len(names) <= 3 else f"{names[0]}+{names[1]}+...+{names[-1]}"
        return Node(FUSED, tuple(ins.values()), tuple(self.outputs(grp)),
                    {"kind": grp.kind, "body": tuple(grp.nodes)}, name)  # fmt: skip


def _members(n: Node) -> tuple[Node, ...]:
    return n.attrs.get("body") or (n,)


@register_pass("fuse", requires=("dce",))
def fuse(g: Graph, options: dict) -> tuple[Graph, dict]:
    """Group nodes into kernels: elementwise chains, GEMM/conv epilogues, row reductions."""
    return _Fuser(g).run()
