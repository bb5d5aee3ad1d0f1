"""Control flow (If, Loop, Scan), imported by specializing it away.

Native code here is straight-line, so control flow is resolved when shapes are: an If whose condition is
known selects its branch; a Scan runs for its (static) sequence length and a Loop for its trip count,
both unrolled, one copy of the body per iteration (bodies are imported per iteration with their own
names, outer-scope values visible). When the condition or the trip count is a value known only at run
time — a graph input, or computed from one — the node is kept as a *deferred* If / Loop whose body is
imported once that value has been compiled in, by the dynamic-shape runtime (``dynamic.py``,
``EXPANDERS``). Loops whose continuation is computed from tensor data, and bodies too long to unroll, are
reported as unsupported.
"""

from __future__ import annotations

import numpy as np

from ..errors import NotConstantError, UnsupportedError, node_context
from ..ir.graph import Value
from ..ops.registry import InferCtx, OpDef, Pattern, register
from .onnx import Importer, converter

MAX_UNROLL = 4096  # iterations


def _c(imp: Importer, arr, name: str = "c") -> Value:
    return imp.const(np.asarray(arr), name)


def _stack(imp: Importer, parts: list[Value], axis: int, name: str) -> Value:
    """Concatenate values along a new axis (the scan outputs of every iteration)."""
    ups = [imp.emit("Unsqueeze", [p, _c(imp, np.array([axis], np.int64))], {}, f"{name}_u{k}")[0]
           for k, p in enumerate(parts)]  # fmt: skip
    if len(ups) == 1:
        return ups[0]
    return imp.emit("Concat", ups, {"axis": axis}, name)[0]


def _outputs(imp: Importer, name: str, n, values: list[Value | None]) -> list[Value | None]:
    outs = []
    for k, (oname, v) in enumerate(zip(n.output, values)):
        if not oname:
            outs.append(None)
            continue
        outs += imp.emit("Identity", [v], {}, f"{name}/out{k}", [oname])
    return outs


def _fail(imp: Importer, name: str, op: str, msg: str):
    raise UnsupportedError(f"{node_context(imp.name, name, op)}: {msg}")


# -- If --------------------------------------------------------------------------------------------
@converter("If")
def _if(imp: Importer, name, n, inputs, attrs):
    cond = inputs[0]
    if cond.is_const:
        which = "then_branch" if bool(np.asarray(cond.const).reshape(-1)[0]) else "else_branch"
        return _outputs(imp, name, n, imp.import_subgraph(attrs[which], [], f"{name}/{which}"))
    return _deferred(imp, name, n, inputs, attrs)


# -- Loop ------------------------------------------------------------------------------------------
@converter("Loop")
def _loop(imp: Importer, name, n, inputs, attrs):
    trip, cond = (inputs[i] if len(inputs) > i else None for i in (0, 1))
    if (trip is not None and not trip.is_const) or (cond is not None and not cond.is_const):
        return _deferred(imp, name, n, inputs, attrs)
    return unroll_loop(imp, name, n, inputs, attrs)


def unroll_loop(imp: Importer, name, n, inputs, attrs) -> list[Value | None]:
    trip, cond = (inputs[i] if len(inputs) > i else None for i in (0, 1))
    carried = list(inputs[2:])
    body = attrs["body"]
    trips = int(np.asarray(trip.const).reshape(-1)[0]) if trip is not None else None
    go = bool(np.asarray(cond.const).reshape(-1)[0]) if cond is not None else True
    if trips is None and cond is None:
        _fail(imp, name, "Loop", "a loop with neither a trip count nor a condition never ends")
    scans: list[list[Value]] = []
    i = 0
    while go and (trips is None or i < trips):
        if i >= MAX_UNROLL:
            _fail(imp, name, "Loop", f"more than {MAX_UNROLL} iterations to unroll")
        it = _c(imp, np.array(i, np.int64), f"{name}_iter")
        cin = _c(imp, np.array(go, np.bool_), f"{name}_cond")
        outs = imp.import_subgraph(body, [it, cin, *carried], f"{name}/iter{i}")
        c_out = outs[0]
        if not c_out.is_const:
            _fail(imp, name, "Loop", "the loop condition is computed from tensor data (only loops whose iteration "
                                     "count is known when shapes are can be compiled)")  # fmt: skip
        go = bool(np.asarray(c_out.const).reshape(-1)[0])
        carried = outs[1 : 1 + len(carried)]
        for k, v in enumerate(outs[1 + len(carried) :]):
            if len(scans) <= k:
                scans.append([])
            scans[k].append(v)
        i += 1
    n_scan = len(body.output) - 1 - len(carried)
    if n_scan and not scans:
        _fail(imp, name, "Loop", "zero iterations with scan outputs (their shape is unknown)")
    stacked = [_stack(imp, s, 0, f"{name}_scan{k}") for k, s in enumerate(scans)]
    return _outputs(imp, name, n, [*carried, *stacked])


# -- Scan ------------------------------------------------------------------------------------------
def _scan_once(imp: Importer, name, attrs, states: list[Value], xs: list[Value], axes_offset: int = 0):
    body = attrs["body"]
    m = len(xs)
    in_axes = [int(a) for a in (attrs.get("scan_input_axes") or [0] * m)]
    in_dirs = [int(d) for d in (attrs.get("scan_input_directions") or [0] * m)]
    lens = set()
    for x, ax in zip(xs, in_axes):
        ax = ax % x.type.rank
        d = x.type.shape[ax]
        if not isinstance(d, int):
            _fail(imp, name, "Scan", f"needs a static sequence length, got {list(x.type.shape)}")
        lens.add(d)
    if len(lens) != 1:
        _fail(imp, name, "Scan", f"scan inputs have different lengths {sorted(lens)}")
    t_len = lens.pop()
    if t_len > MAX_UNROLL:
        _fail(imp, name, "Scan", f"{t_len} iterations to unroll (more than {MAX_UNROLL})")
    scans: list[list[Value]] = []
    for t in range(t_len):
        slices = []
        for k, (x, ax, rev) in enumerate(zip(xs, in_axes, in_dirs)):
            pos = t_len - 1 - t if rev else t
            slices += imp.emit("Gather", [x, _c(imp, np.array(pos, np.int64))], {"axis": ax % x.type.rank},
                               f"{name}_x{k}_{t}")  # fmt: skip
        outs = imp.import_subgraph(body, [*states, *slices], f"{name}/iter{t}")
        states = outs[: len(states)]
        for k, v in enumerate(outs[len(states) :]):
            if len(scans) <= k:
                scans.append([])
            scans[k].append(v)
    out_axes = [int(a) for a in (attrs.get("scan_output_axes") or [0] * len(scans))]
    out_dirs = [int(d) for d in (attrs.get("scan_output_directions") or [0] * len(scans))]
    stacked = []
    for k, parts in enumerate(scans):
        if out_dirs[k]:
            parts = parts[::-1]
        rank = parts[0].type.rank + 1
        stacked.append(_stack(imp, parts, out_axes[k] % rank, f"{name}_scan{k}"))
    return states, stacked


@converter("Scan")
def _scan(imp: Importer, name, n, inputs, attrs):
    m = int(attrs["num_scan_inputs"])
    states, xs = list(inputs[: len(inputs) - m]), list(inputs[len(inputs) - m :])
    st, sc = _scan_once(imp, name, attrs, states, xs)
    return _outputs(imp, name, n, [*st, *sc])


@converter("Scan", until=8)
def _scan8(imp: Importer, name, n, inputs, attrs):
    # opset 8: a leading batch dim on states and scan inputs, and optional sequence lengths (input 0)
    m = int(attrs["num_scan_inputs"])
    lens, rest = inputs[0], list(inputs[1:])
    states, xs = rest[: len(rest) - m], rest[len(rest) - m :]
    batch = xs[0].type.shape[0]
    seq = xs[0].type.shape[1]
    if lens is not None and not (lens.is_const and bool(np.all(np.asarray(lens.const) == seq))):
        _fail(imp, name, "Scan", "sequence_lens shorter than the sequence are not supported")
    a9 = dict(attrs)
    a9["scan_input_directions"] = attrs.get("directions")
    results = []
    for b in range(batch):
        pick = [imp.emit("Gather", [v, _c(imp, np.array(b, np.int64))], {"axis": 0}, f"{name}_b{b}")[0]
                for v in (*states, *xs)]  # fmt: skip
        st, sc = _scan_once(imp, f"{name}/batch{b}", a9, pick[: len(states)], pick[len(states) :])
        results.append([*st, *sc])
    return _outputs(imp, name, n, [_stack(imp, list(parts), 0, f"{name}_out{k}") for k, parts in
                                   enumerate(zip(*results))])  # fmt: skip


# -- deferred control flow: resolved once the condition / trip count is compiled in -------------------
def _deferred(imp: Importer, name, n, inputs, attrs):
    """An If or Loop whose condition or trip count is known only at run time: an IR node that carries the
    body (and the outer values it reads) until the dynamic-shape runtime knows the value."""
    bodies = [attrs[k] for k in ("then_branch", "else_branch", "body") if k in attrs]
    free = _free_names(bodies)
    captured = [nm for nm in free if nm in imp.env]
    ir_attrs = {"op_type": n.op_type, "bodies": {k: attrs[k] for k in ("then_branch", "else_branch", "body")
                                                  if k in attrs}, "captured": tuple(captured),
                "opsets": dict(imp.opsets), "onnx_node": n}  # fmt: skip
    ins = [*inputs, *(imp.env[c] for c in captured)]
    return imp.emit("ControlFlow", ins, ir_attrs, name, list(n.output))


def _free_names(bodies) -> list[str]:
    """Names a body reads but does not define (outer-scope values), in first-use order."""
    out: list[str] = []
    for g in bodies:
        defined = {vi.name for vi in g.input} | {t.name for t in g.initializer}
        for nd in g.node:
            for x in nd.input:
                if x and x not in defined and x not in out:
                    out.append(x)
            for a in nd.attribute:
                if a.type == a.GRAPH:
                    for x in _free_names([a.g]):
                        if x not in defined and x not in out:
                            out.append(x)
            defined.update(nd.output)
    return out


def _control_inputs(op_type: str, inputs) -> list[int]:
    """The inputs that must be known to expand: If's condition; Loop's trip count and condition."""
    return [0] if op_type == "If" else [i for i in (0, 1) if i < len(inputs) and inputs[i] is not None]


def _cf_infer(ctx: InferCtx):
    """Typed only by expansion (``expand_control_flow``), which needs the condition / trip count."""
    for i in _control_inputs(ctx.attr("op_type"), ctx.inputs):
        ctx.require_const(i, "the condition or trip count")
    ctx.fail("control flow is typed by expanding it", NotConstantError)


def expand_control_flow(node, model: str, taken: set[str]) -> tuple[list, list[Value]]:
    """Import a deferred If / Loop whose condition / trip count is now constant: (new nodes, outputs)."""
    import onnx

    attrs = node.attrs
    n = attrs["onnx_node"]
    control = list(node.inputs[: len(n.input)])
    for i in _control_inputs(attrs["op_type"], control):
        if not control[i].is_const:
            err = NotConstantError(f"{node_context(model, node.name, attrs['op_type'])}: the condition or trip "
                                   "count must be known")  # fmt: skip
            err.input_index = i
            raise err
    imp = Importer(onnx.ModelProto(), model)
    imp.opsets = dict(attrs["opsets"])
    imp.used_names = set(taken)
    imp.env.update(zip(attrs["captured"], node.inputs[len(n.input) :]))
    names = [f"__control{k}" for k in range(len(control))]
    for nm, v in zip(names, control):
        if v is not None:
            imp.env[nm] = v
    m = onnx.NodeProto()
    m.CopyFrom(n)
    del m.input[:]
    m.input.extend(nm if v is not None else "" for nm, v in zip(names, control))
    fn = _if if attrs["op_type"] == "If" else unroll_loop
    outs = fn(imp, node.name, m, control, dict(attrs["bodies"]))
    return imp.nodes, outs


register(OpDef("ControlFlow", Pattern.OPAQUE, _cf_infer, None, {}, (0, -1), expand=expand_control_flow))
