"""Graph -> Program: kernels in execution order, and where every buffer lives.

The builder walks the (static-shaped) graph once. For each node it applies the op's lowering rule:
view rules cost nothing, index rules are materialized in a loop nest (or inlined into consumers when
the fusion plan says so), kernel rules emit their own loops and write through ``Sink``s that carry fused
epilogues. Every buffer is then bound to an input, output, constant, or an offset in one arena whose
layout comes from liveness (buffers whose lifetimes do not overlap share memory).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..codegen.targets import Target
from ..errors import CompileError, ShapeError, TensorforgeError, UnsupportedError, node_context
from ..ir.dtype import DType
from ..ir.graph import Graph, Node, Value
from ..ops.registry import Pattern, get_op
from . import rules as R
from .checks import STATUS_WORDS, RangeCheck, check_kernel, dedupe_key
from .fusion import lower_fused
from .kir import Buffer, Kernel, Stmt, buffers_of, cast
from .memplan import ArenaPlan, align, plan_offsets, reuse_in_place
from .schedule import pointwise_nest
from .tensor import TExpr, View


class BufKind(enum.Enum):
    INPUT = "in"
    OUTPUT = "out"
    CONST = "const"
    ARENA = "arena"
    STATUS = "status"  # the status word of run-time checks: its own slot at the end of the arena


@dataclass
class BufInfo:
    kind: BufKind
    index: int  # input/output/const table index; arena byte offset after planning
    nbytes: int
    first: int = -1  # first kernel using it
    last: int = -1  # last kernel using it
    value: str = ""  # the graph value it holds (for reports)


@dataclass
class Program:
    name: str
    target: Target
    kernels: list[Kernel]
    kernel_args: list[list[tuple[str, int]]]
    consts: list[np.ndarray]
    arena_bytes: int
    intermediate_bytes: int
    inputs: list[tuple[str, DType, tuple[int, ...]]]
    outputs: list[tuple[str, DType, tuple[int, ...]]]
    buffers: dict[int, BufInfo] = field(default_factory=dict)
    # Graph outputs that are compile-time constants (returned without running code).
    const_outputs: dict[int, np.ndarray] = field(default_factory=dict)
    # output index -> input index: outputs written into their input's buffer (see ProgramBuilder)
    state: dict[int, int] = field(default_factory=dict)
    peak_bytes: int = 0  # most arena bytes live at once (a lower bound for arena_bytes)
    in_place: int = 0  # intermediates written into the buffer of an input they were computed from
    # run-time checks (lower/checks.py): the table of checks, the kernels after which the entry tests the
    # status word, and the word's byte offset in the arena (-1: the program checks nothing at run time)
    checks: list[RangeCheck] = field(default_factory=list)
    check_kernels: list[int] = field(default_factory=list)
    status_offset: int = -1

    @property
    def resident_bytes(self) -> int:
        """Memory a run keeps resident: constants (packed weights), the arena, inputs and outputs."""
        io = sum(dt.itemsize * int(np.prod(s)) for _, dt, s in self.inputs + self.outputs)
        return sum(c.nbytes for c in self.consts) + self.arena_bytes + io

    @property
    def flops(self) -> int:
        return sum(k.flops for k in self.kernels)


def _sanitize(s: str, limit: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", s)
    return s[:limit]


class ProgramBuilder:
    """Lowers one graph. ``state`` maps output indices to input indices: each such output is the next
    value of that input and is written into the input's own buffer (a training step's parameters and
    optimizer state, updated in place). The producing kernel writes it directly when that is safe — an
    elementwise node reading the old value only at the element it writes, after every other reader of the
    old value; otherwise it is computed aside and copied in after everything else has run."""

    def __init__(self, graph: Graph, target: Target, options: dict | None = None, state: dict[int, int] | None = None):
        self.g = graph
        self.state = dict(state or {})
        self.in_place: dict[int, Buffer] = {}  # value id -> the input buffer it is written into
        self.in_place_outputs: set[int] = set()
        self.target = target
        self.options = dict(options or {})
        self.buffers: dict[int, tuple[Buffer, BufInfo]] = {}
        self.consts: list[np.ndarray] = []
        self.kernels: list[Kernel] = []
        self.env: dict[int, TExpr] = {}
        self.current_ws: list[Buffer] = []
        self._names: set[str] = set()
        self.const_cache: dict[int, TExpr] = {}
        self.const_data: dict[int, np.ndarray] = {}
        self.single_store: set[int] = set()  # ids of kernels that store each output element once (loop nests)
        self.checks: list[RangeCheck] = []
        self.check_kernels: list[int] = []
        self.checked: set[tuple] = set()  # dedupe keys of the checks made
        self.status: Buffer | None = None
        # Concat elimination: value id -> the slice of a concatenation's output it is computed into
        self.slots: dict[int, View] = {}
        self.concat_parts: dict[int, list[Buffer | None]] = {}  # planned Concat output id -> its slices
        self.aliases: dict[int, tuple[Buffer, int]] = {}  # buffer id -> (the buffer it lies in, byte offset)
        self.no_merge: set[int] = set()  # buffers several kernels write parts of: never merged in place

    # -- buffers ------------------------------------------------------------------------------------
    def _buf_name(self, base: str) -> str:
        base = _sanitize(base, 32) or "buf"
        name, k = base, 1
        while name in self._names:
            name = f"{base}_{k}"
            k += 1
        self._names.add(name)
        return name

    def new_buffer(self, dtype: DType, numel: int, name: str, kind: BufKind, index: int = 0) -> Buffer:
        buf = Buffer(self._buf_name(name), dtype, numel)
        nbytes = max(numel, 1) * dtype.itemsize
        self.buffers[id(buf)] = (buf, BufInfo(kind, index, nbytes, value=name))
        return buf

    def add_const(self, data: np.ndarray, name: str) -> View:
        """A compile-time constant; it gets a slot in the constant table only if a kernel reads it."""
        data = np.ascontiguousarray(data)
        buf = self.new_buffer(DType.from_numpy(data.dtype), data.size, name, BufKind.CONST, -1)
        self.const_data[id(buf)] = data
        return View.of(buf, data.shape)

    def add_workspace(self, dtype: DType, numel: int, name: str) -> Buffer:
        buf = self.new_buffer(dtype, numel, name, BufKind.ARENA)
        self.current_ws.append(buf)
        return buf

    # -- values -------------------------------------------------------------------------------------
    def const_texpr(self, v: Value) -> TExpr:
        t = self.const_cache.get(v.id)
        if t is None:
            data = v.const
            # a broadcast constant (a folded ConstantOfShape: zero strides) keeps only the elements it
            # stores, read through zero strides; add_const would copy out all of them
            stored = data[tuple(slice(0, 1) if st == 0 else slice(None) for st in data.strides)]
            if data.size == 1:
                t = TExpr.scalar(data.reshape(-1)[0], v.dtype, data.shape)
            elif stored.size < data.size:
                t = TExpr.from_view(self.add_const(stored, v.name).broadcast_to(data.shape), data)
            else:
                view = self.add_const(data, v.name)
                t = TExpr.from_view(view, data)
            self.const_cache[v.id] = t
        return t

    def lookup(self, v: Value) -> TExpr:
        if v.is_const:
            return self.const_texpr(v)
        t = self.env.get(v.id)
        if t is None:
            raise CompileError(f"model '{self.g.name}': value %{v.name} used before it is computed")
        return t

    # -- kernels ------------------------------------------------------------------------------------
    def add_kernel(
        self, node_labels: Sequence[str], op: str, body: Stmt, flops: int = 0, name_hint: str = ""
    ) -> Kernel:
        name = f"k{len(self.kernels)}_{_sanitize(op, 16)}"
        if name_hint:
            name += "_" + _sanitize(name_hint, 24)
        params = [b for b in buffers_of(body) if id(b) in self.buffers]
        nbytes = sum(self.buffers[id(b)][1].nbytes for b in params if b not in self.current_ws)
        k = Kernel(name, params, body, list(node_labels), flops, nbytes, list(self.current_ws))
        self.current_ws = []
        self.kernels.append(k)
        return k

    def add_check(self, node: Node, values: TExpr, tensor: str, what: str, ranges) -> None:
        """A kernel checking ``values`` at run time, before the kernel being lowered (``LowerCtx.check_range``)."""
        check = RangeCheck(node.name, node.op, tensor, tuple(values.shape), what, tuple(ranges))
        if values.const is not None:
            pos = check.first_bad(values.const)
            if pos is not None:
                raise ShapeError(check.message(self.g.name, int(values.const.reshape(-1)[pos]), pos))
            return
        key = dedupe_key(values, check)
        if not values.numel or key in self.checked:
            return
        if key is not None:
            self.checked.add(key)
        if self.status is None:
            self.status = self.new_buffer(DType.I64, STATUS_WORDS, "tf_status", BufKind.STATUS)
        body = check_kernel(values, check, len(self.checks), self.status, self.target.lanes(values.dtype))
        self.checks.append(check)
        pending, self.current_ws = self.current_ws, []  # scratch asked for by the kernel being lowered stays its own
        self.add_kernel([f"{node.name} ({node.op}): check {tensor}"], "check", body, 0, node.name)
        self.current_ws = pending
        self.check_kernels.append(len(self.kernels) - 1)

    def materialize(self, t: TExpr, buf: Buffer | View, labels: Sequence[str], op: str, hint: str,
                    flops: int = 0) -> View:  # fmt: skip
        view = buf if isinstance(buf, View) else View.of(buf, t.shape)
        buf = view.buf
        lanes = self.target.lanes(t.dtype)

        def body(idx):
            return view.store(idx, cast(t(idx), buf.dtype))

        stmt = pointwise_nest(t.shape, body, lanes, self.threshold)
        self.single_store.add(id(self.add_kernel(labels, op, stmt, flops, hint)))
        return view

    @property
    def threshold(self) -> int:
        return int(self.options.get("parallel_threshold", 1 << 17))

    def output_view(self, v: Value) -> View:
        """Where a kernel computes ``v``: its slice of a concatenation (``_plan_concats``), or a buffer of
        its own."""
        slot = self.slots.get(v.id)
        return slot if slot is not None else View.of(self.output_buffer(v), v.shape)

    def output_buffer(self, v: Value) -> Buffer:
        if v.id in self.in_place:
            return self.in_place[v.id]
        if v.id in self.direct_outputs:
            return self.new_buffer(v.dtype, v.type.numel, v.name, BufKind.OUTPUT, self.direct_outputs[v.id])
        return self.new_buffer(v.dtype, v.type.numel, v.name, BufKind.ARENA)

    # -- main ---------------------------------------------------------------------------------------
    def build(self) -> Program:
        g = self.g
        for v in g.inputs:
            if not v.type.is_static:
                raise CompileError(f"model '{g.name}': input '{v.name}' has symbolic shape {v.type}; fix its dims "
                                   "(input_shapes=..., --input-shape NAME=D0,D1,...)")  # fmt: skip
        # outputs that can be written directly by their producing kernel
        producers = g.producers()
        self.direct_outputs: dict[int, int] = {}
        seen: set[int] = set()
        for i, v in enumerate(g.outputs):
            if v.id in seen or v.is_const or v not in producers or i in self.state:
                continue
            if producers[v].op in R.VIEW_RULES:
                continue
            seen.add(v.id)
            self.direct_outputs[v.id] = i
        inputs = []
        for i, v in enumerate(g.inputs):
            buf = self.new_buffer(v.dtype, v.type.numel, v.name, BufKind.INPUT, i)
            self.env[v.id] = TExpr.from_view(View.of(buf, v.shape))
            inputs.append((v.name, v.dtype, tuple(v.shape)))
        self.in_place = self._plan_state()
        if self.options.get("concat_in_place", True):
            self._plan_concats()
        for node in g.nodes:
            self.lower_node(node)
        # graph outputs not written in place: copy
        const_outputs = {}
        outputs = []
        for i, (v, oname) in enumerate(zip(g.outputs, g.output_names)):
            outputs.append((oname, v.dtype, tuple(int(d) for d in v.shape)))
            if (v.id in self.direct_outputs and self.direct_outputs[v.id] == i) or i in self.state:
                continue
            if v.is_const:
                const_outputs[i] = v.const
                continue
            t = self.lookup(v)
            buf = self.new_buffer(v.dtype, v.type.numel, oname, BufKind.OUTPUT, i)
            self.materialize(t, buf, [f"output {oname}"], "copy", oname)
        self._commit_state()
        plan = self.plan_arena()
        infos = {id(b): info for b, info in self.buffers.values()}
        status_offset = -1
        if self.status is not None:  # after everything else: never shared, still readable after a failed run
            status_offset = plan.size = align(plan.size)
            infos[id(self.status)].index = status_offset
            plan.size += align(STATUS_WORDS * 8)
        for k in self.kernels:
            for b in k.params:
                info = infos[id(b)]
                if info.kind is BufKind.CONST and info.index < 0:
                    info.index = len(self.consts)
                    self.consts.append(self.const_data[id(b)])
        kernel_args = []
        for k in self.kernels:
            args = []
            for b in k.params:
                info = infos[id(b)]
                args.append(("arena" if info.kind is BufKind.STATUS else info.kind.value, info.index))
            kernel_args.append(args)
        return Program(g.name, self.target, self.kernels, kernel_args, self.consts, plan.size, plan.total, inputs,
                       outputs, infos, const_outputs, dict(self.state), plan.peak, plan.in_place, self.checks,
                       self.check_kernels, status_offset)  # fmt: skip

    # -- state (outputs that update inputs in place) -----------------------------------------------
    def _plan_state(self) -> dict[int, Buffer]:
        """The state outputs whose producing kernel may write the input's buffer directly."""
        g = self.g
        if not self.state:
            return {}
        # the inputs whose buffers a value reads when it is used (views and inlined values read through)
        alias: dict[int, frozenset[int]] = {v.id: frozenset((v.id,)) for v in g.inputs}
        last_read: dict[int, int] = {}
        order: dict[int, int] = {}
        for i, n in enumerate(g.nodes):
            order[id(n)] = i
            reads = frozenset().union(*(alias.get(v.id, frozenset()) for v in n.inputs if v is not None))
            for a in reads:
                last_read[a] = i
            if n.op in R.VIEW_RULES:
                for o in n.outputs:
                    alias[o.id] = reads
        for v in g.outputs:  # output copies and state commits read after every node
            for a in alias.get(v.id, ()):
                last_read[a] = len(g.nodes)
        producers = g.producers()
        out: dict[int, Buffer] = {}
        for oi, ii in self.state.items():
            v, x = g.outputs[oi], g.inputs[ii]
            p = producers.get(v)
            if p is None or v.id in out or v.type != x.type or not _elementwise_producer(p, v):
                continue
            if any(u is not x and x.id in alias.get(u.id, ()) for u in p.inputs if u is not None):
                continue  # the old value also reaches the node another way (a view, a broadcast)
            if last_read.get(x.id, -1) > order[id(p)]:
                continue
            out[v.id] = self.env[x.id].view.buf
            self.in_place_outputs.add(oi)
        return out

    def _commit_state(self) -> None:
        """Copy the state outputs that were not written in place into their inputs' buffers."""
        for oi, ii in self.state.items():
            v, x = self.g.outputs[oi], self.g.inputs[ii]
            if v is x or oi in self.in_place_outputs:
                continue
            buf = self.env[x.id].view.buf
            self.materialize(self.lookup(v), buf, [f"state {self.g.output_names[oi]}"], "copy", x.name)

    def lower_node(self, node: Node) -> None:
        if node.attrs.get("body") is not None:  # a fused group: one kernel for all its nodes
            lower_fused(self, node)
            return
        ctx = R.LowerCtx(self.target, self.g.name, node, self, self.options)
        op = node.op
        ins = [None if v is None else self.lookup(v) for v in node.inputs]
        label = f"{node.name or node.outputs[0].name} ({op})"
        try:
            if op in R.VIEW_RULES:
                views = R.VIEW_RULES[op](ctx, node, ins)
                if views is not None:
                    for v, view in zip(node.outputs, views):
                        self.env[v.id] = TExpr.from_view(view)
                    return
            if op in R.INDEX_RULES:
                outs = R.INDEX_RULES[op](ctx, node, ins)
                for v, t in zip(node.outputs, outs):
                    flops = get_op(op).flops(node) if get_op(op).flops else 0
                    view = self.output_view(v)
                    self.env[v.id] = TExpr.from_view(self.materialize(t, view, [label], op, node.name, flops))
                return
            if op == "Concat" and node.outputs[0].id in self.concat_parts:
                self._lower_planned_concat(node, ins, label)
                return
            rule = R.KERNEL_RULES.get(op)
            if rule is not None:
                sinks = []
                for v in node.outputs:
                    view = self.output_view(v)
                    sinks.append(R.Sink(view, v.dtype))
                    self.env[v.id] = TExpr.from_view(view)
                stmt = R.kernel_fn(op, self.target)(ctx, node, ins, sinks)
                opdef = get_op(op)
                flops = opdef.flops(node) if opdef.flops else 0
                k = self.add_kernel([label], op, stmt, flops, node.name)
                if ctx.stores_once:  # the rule guarantees each output element is stored exactly once
                    self.single_store.add(id(k))
                return
        except TensorforgeError:  # the model's own errors (a constant index out of range) pass unwrapped
            raise
        except Exception as e:
            raise CompileError(f"{node_context(self.g.name, node.name, op)}: lowering failed: "
                               f"{type(e).__name__}: {e}") from e  # fmt: skip
        raise UnsupportedError(f"{node_context(self.g.name, node.name, op)}: no lowering for op {op}")

    # -- Concat elimination -------------------------------------------------------------------------
    def _plan_concats(self) -> None:
        """Producers write straight into their slice of a concatenation's output, and the Concat copies
        only what could not be placed so (a graph input, a constant, a view of another tensor). Planned from
        the last Concat back, so a concatenation that is itself an input of a later one lies in that one's
        output too (DenseNet's chain of growing concatenations becomes one buffer). Only where the slices are
        contiguous: every dim before the axis has extent 1 (batch 1, channels axis).

        Each slice is a buffer of its own that *aliases* its concatenation's buffer at a fixed offset
        (``self.aliases``, resolved by ``plan_arena``): kernels address it from 0, so the same layer writing
        into different concatenations stays one function (``vectorize_program``'s dedupe)."""
        g = self.g
        producers = g.producers()
        outputs = {v.id for v in g.outputs}
        inputs = {v.id for v in g.inputs}
        for node in reversed(g.nodes):
            if node.op != "Concat" or node.attrs.get("body") is not None or len(node.outputs) != 1:
                continue
            out = node.outputs[0]
            if not out.type.is_static or out.id in self.in_place or out.dtype != node.inputs[0].dtype:
                continue
            rank = len(out.shape)
            axis = int(node.attrs["axis"]) % rank
            if int(np.prod(out.shape[:axis])) != 1:
                continue
            view = self.slots.get(out.id)
            if view is None:
                if out.id in outputs:  # the caller's array: kernels get no offset into it
                    continue
                view = View.of(self.output_buffer(out), out.shape)
                self.slots[out.id] = view
            self.no_merge.add(id(view.buf))
            inner = int(np.prod(out.shape[axis + 1 :]))
            offset, parts = 0, []
            ids = [v.id for v in node.inputs if v is not None]
            for v in node.inputs:
                n = v.shape[axis]
                sub = None
                if n > 0:
                    sub = self.new_buffer(v.dtype, n * inner, f"{out.name}.{v.name}", BufKind.ARENA)
                    self.aliases[id(sub)] = (view.buf, offset * v.dtype.itemsize)
                    self.no_merge.add(id(sub))
                p = producers.get(v)
                if (sub is not None and not v.is_const and v.id not in inputs and v.id not in outputs
                        and p is not None and (p.op not in R.VIEW_RULES or p.attrs.get("body") is not None)
                        and v.id not in self.slots and v.id not in self.in_place and ids.count(v.id) == 1):  # fmt: skip
                    self.slots[v.id] = View.of(sub, v.shape)
                parts.append(sub)
                offset += n * inner
            self.concat_parts[out.id] = parts

    def _lower_planned_concat(self, node: Node, ins: list[TExpr], label: str) -> None:
        """A planned Concat: its inputs were computed in their slices; copy the others in."""
        out = node.outputs[0]
        for v, t, sub in zip(node.inputs, ins, self.concat_parts[out.id]):
            if sub is not None and not (t.view is not None and t.view.buf is sub):
                self.materialize(t, View.of(sub, v.shape), [label], "Concat", node.name)
        self.env[out.id] = TExpr.from_view(self.slots[out.id])

    # -- memory planning ----------------------------------------------------------------------------
    def plan_arena(self) -> ArenaPlan:
        """Lay out every arena buffer (see ``memplan``): first merge buffers computed in place, then assign
        offsets by liveness. The plan's ``total`` is the sum of all intermediates before any sharing."""
        arena = {bid: info for bid, (_, info) in self.buffers.items() if info.kind is BufKind.ARENA}
        used = {id(b) for k in self.kernels for b in k.params}
        total = sum(align(info.nbytes) for bid, info in arena.items() if bid in used)  # before any sharing
        workspace = {id(b) for k in self.kernels for b in k.workspace}
        merged = 0
        if self.options.get("in_place", True):
            eligible = {bid: info for bid, info in arena.items() if bid not in workspace and bid not in self.no_merge}
            before = set(eligible)
            merged = reuse_in_place(self.kernels, eligible, self.single_store)
            for bid in before - set(eligible):
                del self.buffers[bid]
                del arena[bid]
        roots = {}  # alias id -> (root buffer id, byte offset): slices of slices resolve to the outermost
        for bid in self.aliases:
            root, off = bid, 0
            while root in self.aliases:
                parent, o = self.aliases[root]
                root, off = id(parent), off + o
            roots[bid] = (root, off)
        plan = plan_offsets(self.kernels, [(b, i) for b, i in arena.items() if b not in roots],
                            {a: r for a, (r, _) in roots.items()})  # fmt: skip
        for bid, (root, off) in roots.items():
            info, rinfo = self.buffers[bid][1], self.buffers[root][1]
            info.index, info.first, info.last = rinfo.index + off, rinfo.first, rinfo.last
        plan.in_place, plan.total = merged, total - sum(align(arena[b].nbytes) for b in roots if b in used)
        return plan


def _elementwise_producer(p: Node, v: Value) -> bool:
    """Whether ``p`` computes ``v`` element by element, each element reading its inputs at its own index
    only (one elementwise node, or a fused loop of elementwise nodes all of ``v``'s shape)."""
    body = p.attrs.get("body")
    if body is None:
        body = (p,)
        if len(p.outputs) != 1:
            return False
    elif p.attrs.get("kind") != "loop":
        return False
    for n in body:
        if n.op not in R.INDEX_RULES or n.op in R.VIEW_RULES or get_op(n.op).pattern > Pattern.BROADCAST:
            return False
        if any(tuple(o.shape) != tuple(v.shape) for o in n.outputs):
            return False
    return True


def lower_graph(graph: Graph, target: Target, options: dict | None = None,
                state: dict[int, int] | None = None) -> Program:  # fmt: skip
    return ProgramBuilder(graph, target, options, state=state).build()
