"""Turn ``VECTOR`` loops into explicit lane code, and ``UNROLL`` loops into straight-line code.

A vector loop ``vector(W) for v in a..b { body }`` becomes

    for vb in a..a+n*W step W { body with v = <vb, vb+1, ..., vb+W-1> }   # main part, W lanes
    for v in a+n*W..b { body }                                            # scalar remainder

Loads and stores whose index is ``v + (invariant)`` become contiguous vector accesses; invariant
loads stay scalar and are broadcast; anything else becomes a gather/scatter. A local declared outside
the loop and updated as ``acc = acc op f(v)`` (``op`` reducible in the scalar-op table) becomes a vector
accumulator reduced across lanes after the main part. Loops that do not fit these rules stay scalar (correct, just
slower) — never an error.
"""

from __future__ import annotations

from .kir import (
    I64,
    SCALAR_OPS,
    Assign,
    Bin,
    Broadcast,
    Cast,
    Cmp,
    Const,
    Decl,
    Expr,
    Fma,
    For,
    HReduce,
    If,
    Kernel,
    Load,
    LoopKind,
    Prefetch,
    Ramp,
    Select,
    Seq,
    Stmt,
    Store,
    Un,
    Var,
    binop,
    const,
    linear_in,
    reaching,
    seq,
    stmt_exprs,
    substitute_stmt,
    transform,
    uses_var,
    walk_expr,
    walk_stmt,
)

MAX_UNROLL = 64


class _Cannot(Exception):
    pass


def identity(op: str, dtype) -> Expr:
    """The start value of a reduction with ``op`` (a reducible op of the scalar-op table)."""
    sop = SCALAR_OPS.get(op)
    if sop is None or not sop.reducible:
        raise ValueError(op)
    return const(sop.identity(dtype), dtype)


def _bcast(e: Expr, lanes: int) -> Expr:
    if e.lanes == lanes:
        return e
    if isinstance(e, Const):
        return Const(e.value, e.dtype, lanes)
    return Broadcast(e, lanes)


class _VecBody:
    def __init__(self, v: Var, vb: Var, lanes: int, outer_locals: set[Var], mask: Expr | None = None,
                 reductions: dict | None = None):  # fmt: skip
        self.v = v
        self.vb = vb
        self.W = lanes
        self.vmap: dict[Var, Var] = {}  # scalar local -> vector local
        self.outer_locals = outer_locals
        self.reductions: dict[Var, tuple[str, Var]] = {} if reductions is None else reductions
        self.mask = mask  # the lanes of a masked tail iteration
        self.memo: dict[int, Expr] = {}  # id of a scalar node of the body -> its vector form

    # -- expressions ------------------------------------------------------------------------------
    def expr(self, e: Expr) -> Expr:
        # each scalar node is vectorized once, bottom-up without recursion, and the same scalar subexpression
        # gives the same vector expression object, so the code generator can emit it once (e.g. softmax's
        # exp(x - m), both stored and summed); loads vectorize their index themselves
        return transform(e, self._lane, self.memo, _descends)

    def _lane(self, e: Expr, kids: tuple[Expr, ...]) -> Expr:
        """The vector form of ``e`` given those of its operands (``kids``, none for loads and leaves)."""
        W = self.W
        if isinstance(e, Var):
            if e is self.v:
                return Ramp(self.vb, 1, W)
            if e in self.vmap:
                return self.vmap[e]
            if e in self.reductions:
                raise _Cannot("accumulator read inside the loop")
            return e
        if isinstance(e, Const | Ramp | Broadcast):
            return e
        if isinstance(e, Load):
            return self._load(e)
        if isinstance(e, Bin):
            a, b = kids
            if a.lanes == 1 and b.lanes == 1:
                return binop(e.op, a, b) if (a is not e.a or b is not e.b) else e
            return Bin(e.op, _bcast(a, W), _bcast(b, W))
        if isinstance(e, Cmp):
            a, b = kids
            if a.lanes == 1 and b.lanes == 1:
                return Cmp(e.op, a, b)
            return Cmp(e.op, _bcast(a, W), _bcast(b, W))
        if isinstance(e, Un):
            return Un(e.op, kids[0])
        if isinstance(e, Cast):
            return type(e)(kids[0], e.dtype)
        if isinstance(e, Select):
            if all(x.lanes == 1 for x in kids):
                return Select(*kids)
            return Select(*(_bcast(x, W) for x in kids))
        if isinstance(e, Fma):
            if all(x.lanes == 1 for x in kids):
                return Fma(*kids)
            return Fma(*(_bcast(x, W) for x in kids))
        if isinstance(e, HReduce):
            raise _Cannot("horizontal reduction inside vector loop")
        raise _Cannot(f"expression {type(e).__name__}")

    def _load(self, e: Load) -> Expr:
        W = self.W
        if e.lanes > 1:
            raise _Cannot("vector load inside vector loop")
        idx = self.expr(e.index)
        if idx.lanes == 1:
            return Load(e.buf, idx)
        lin = linear_in(e.index, self.v)
        if lin is not None and lin[0] == 1 and not self._uses_vector_locals(lin[1]):
            return Load(e.buf, binop("add", lin[1], self.vb), W, self.mask)
        if lin is not None and lin[0] > 1 and not self._uses_vector_locals(lin[1]):
            # constant stride: a Ramp index (code generation may load contiguously and shuffle)
            base = binop("add", lin[1], binop("mul", self.vb, lin[0]))
            return Load(e.buf, Ramp(base, lin[0], W), W, self.mask)
        return Load(e.buf, idx, W, self.mask)  # gather

    def _uses_vector_locals(self, e: Expr) -> bool:
        return any(isinstance(x, Var) and x in self.vmap for x in walk_expr(e))

    # -- statements -------------------------------------------------------------------------------
    def stmt(self, s: Stmt) -> Stmt:
        W = self.W
        if isinstance(s, Seq):
            return Seq(tuple(self.stmt(x) for x in s.body))
        if isinstance(s, Store):
            val = self.expr(s.value)
            idx = self.expr(s.index)
            if idx.lanes == 1:
                if val.lanes == 1:
                    return Store(s.buf, idx, val)
                raise _Cannot("store of a varying value to a fixed address")
            lin = linear_in(s.index, self.v)
            if lin is not None and lin[0] == 1 and not self._uses_vector_locals(lin[1]):
                return Store(s.buf, binop("add", lin[1], self.vb), _bcast(val, W), self.mask)
            return Store(s.buf, idx, _bcast(val, W), self.mask)  # scatter
        if isinstance(s, Decl):
            vv = Var(s.var.name, s.var.dtype, W)
            self.vmap[s.var] = vv
            return Decl(vv, _bcast(self.expr(s.init), W))
        if isinstance(s, Assign):
            if s.var in self.vmap:
                return Assign(self.vmap[s.var], _bcast(self.expr(s.value), W))
            return self._reduction(s)
        if isinstance(s, For):
            start, stop = self.expr(s.start), self.expr(s.stop)
            if start.lanes > 1 or stop.lanes > 1:
                raise _Cannot("inner loop bounds vary across lanes")
            kind = s.kind if s.kind in (LoopKind.SERIAL, LoopKind.UNROLL) else LoopKind.SERIAL
            return For(s.var, start, stop, self.stmt(s.body), kind, s.step, 1)
        if isinstance(s, If):
            c = self.expr(s.cond)
            if c.lanes > 1:
                raise _Cannot("branch condition varies across lanes")
            return If(c, self.stmt(s.then), None if s.orelse is None else self.stmt(s.orelse))
        if isinstance(s, Prefetch):
            idx = self.expr(s.index)
            if idx.lanes > 1:
                lin = linear_in(s.index, self.v)
                if lin is None:
                    return Seq(())
                idx = binop("add", lin[1], self.vb)
            return Prefetch(s.buf, idx)
        raise _Cannot(f"statement {type(s).__name__}")

    def _reduction(self, s: Assign) -> Stmt:
        acc = s.var
        val = s.value
        op = None
        other = None
        if isinstance(val, Bin) and SCALAR_OPS[val.op].reducible:
            if val.a is acc and not uses_var(val.b, acc):
                op, other = val.op, val.b
            elif val.b is acc and not uses_var(val.a, acc):
                op, other = val.op, val.a
        elif isinstance(val, Fma) and val.c is acc and not uses_var(val.a, acc) and not uses_var(val.b, acc):
            op, other = "add", None
        if op is None:
            raise _Cannot(f"assignment to outer local {acc.name} is not a reduction")
        if acc in self.reductions:
            prev_op, vacc = self.reductions[acc]
            if prev_op != op:
                raise _Cannot("mixed reductions")
        else:
            vacc = Var(acc.name + "_v", acc.dtype, self.W)
            self.reductions[acc] = (op, vacc)
        W = self.W
        if other is None:
            a, b = self.expr(val.a), self.expr(val.b)
            new: Expr = Fma(_bcast(a, W), _bcast(b, W), vacc)
        else:
            new = Bin(op, vacc, _bcast(self.expr(other), W))
        return Assign(vacc, new if self.mask is None else Select(self.mask, new, vacc))


def _const_int(e: Expr) -> int | None:
    return e.value if isinstance(e, Const) and e.lanes == 1 else None


def _maskable(body: Stmt, v: Var) -> bool:
    """Whether the tail of a vector loop may run as one masked vector iteration: masked-off lanes must
    have no effect, so no integer division (a garbage divisor could trap) and no nested vector loops."""
    stmts = list(walk_stmt(body))
    if any(isinstance(st, For) and st.kind is LoopKind.VECTOR for st in stmts):
        return False
    exprs = [e for st in stmts for e in stmt_exprs(st)]
    lane_dependent = reaching(exprs, lambda x: x is v or isinstance(x, Load))
    seen: set[int] = set()
    return not any(isinstance(x, Bin) and SCALAR_OPS[x.op].int_division and not x.dtype.is_float
                   and id(x.b) in lane_dependent for e in exprs for x in walk_expr(e, seen))  # fmt: skip


def _descends(e: Expr) -> bool:
    """Whether ``_VecBody.expr`` vectorizes the operands of ``e`` before ``e`` (a load's index is its own
    business; constants, ramps and broadcasts are kept as they are)."""
    return not isinstance(e, Load | Const | Ramp | Broadcast | HReduce)


def vectorize_loop(loop: For, outer_locals: set[Var], masked: bool = False) -> Stmt:
    W = loop.lanes
    body = lower_loops(loop.body, outer_locals, masked)
    scalar = For(loop.var, loop.start, loop.stop, body, LoopKind.SERIAL, loop.step)
    if W <= 1 or loop.step != 1:
        return scalar
    lo, hi = _const_int(loop.start), _const_int(loop.stop)
    masked = masked and _maskable(body, loop.var)
    if lo is not None and hi is not None and hi - lo < W and not (masked and hi > lo):
        return scalar
    vb = Var(loop.var.name + "v", I64)
    vec = _VecBody(loop.var, vb, W, outer_locals)
    try:
        vbody = vec.stmt(body)
    except _Cannot:
        return scalar
    # main part bounds
    if lo is not None and hi is not None:
        main_end: Expr = Const(lo + (hi - lo) // W * W)
    else:
        n = binop("sub", loop.stop, loop.start)
        main_end = binop("add", loop.start, binop("mul", binop("floordiv", n, W), W))
    pre: list[Stmt] = []
    post: list[Stmt] = []
    for acc, (op, vacc) in vec.reductions.items():
        pre.append(Decl(vacc, _bcast(identity(op, acc.dtype), W)))
        post.append(Assign(acc, Bin(op, acc, HReduce(op, vacc))))
    parts: list[Stmt] = [*pre]
    if not (lo is not None and hi is not None and hi - lo < W):
        parts.append(For(vb, loop.start, main_end, vbody, LoopKind.SERIAL, W))
    if lo is not None and hi is not None and (hi - lo) % W == 0:
        return seq([*parts, *post])
    tail = _masked_tail(loop, body, vec, main_end, outer_locals) if masked else None
    if tail is not None:
        return seq([*parts, tail, *post])
    return seq([*parts, *post, For(loop.var, main_end, loop.stop, body, LoopKind.SERIAL, 1)])


def _masked_tail(loop: For, body: Stmt, vec: _VecBody, start: Expr, outer_locals: set[Var]) -> Stmt | None:
    """The last ``stop - start < W`` iterations as one vector iteration whose loads and stores are masked."""
    W = loop.lanes
    vt = Var(loop.var.name + "t", I64)
    mask = Cmp("lt", Ramp(vt, 1, W), _bcast(loop.stop, W))
    tail = _VecBody(loop.var, vt, W, outer_locals, mask, vec.reductions)
    try:
        tbody = tail.stmt(body)
    except _Cannot:
        return None
    lo, hi = _const_int(start), _const_int(loop.stop)
    stmt = seq(Decl(vt, start), tbody)
    if lo is not None and hi is not None:
        return stmt if lo < hi else None
    return If(Cmp("lt", start, loop.stop), stmt)


def unroll_loop(loop: For, outer_locals: set[Var], masked: bool = False) -> Stmt:
    body = lower_loops(loop.body, outer_locals, masked)
    lo, hi = _const_int(loop.start), _const_int(loop.stop)
    if lo is None or hi is None or (hi - lo) // max(loop.step, 1) > MAX_UNROLL or _declares(body):
        return For(loop.var, loop.start, loop.stop, body, LoopKind.SERIAL, loop.step)
    return seq(substitute_stmt(body, {loop.var: Const(i)}) for i in range(lo, hi, loop.step))


def _declares(s: Stmt) -> bool:
    return any(isinstance(x, Decl) for x in walk_stmt(s))


def lower_loops(s: Stmt, outer_locals: set[Var] | None = None, masked: bool = False) -> Stmt:
    """Rewrite every VECTOR and UNROLL loop in ``s`` (``masked``: tails as masked vector iterations)."""
    outer_locals = set() if outer_locals is None else outer_locals
    if isinstance(s, Seq):
        out = []
        for x in s.body:
            if isinstance(x, Decl):
                outer_locals.add(x.var)
            out.append(lower_loops(x, outer_locals, masked))
        return Seq(tuple(out))
    if isinstance(s, For):
        if s.kind is LoopKind.VECTOR:
            return vectorize_loop(s, outer_locals, masked)
        if s.kind is LoopKind.UNROLL:
            return unroll_loop(s, outer_locals, masked)
        return For(s.var, s.start, s.stop, lower_loops(s.body, outer_locals, masked), s.kind, s.step, s.lanes)
    if isinstance(s, If):
        orelse = None if s.orelse is None else lower_loops(s.orelse, outer_locals, masked)
        return If(s.cond, lower_loops(s.then, outer_locals, masked), orelse)
    if isinstance(s, Decl):
        outer_locals.add(s.var)
    return s


def vectorize_kernel(k: Kernel, lanes_limit: int | None = None, masked: bool = False) -> Kernel:
    """Return a copy of ``k`` with vector/unroll loops made explicit (``lanes_limit=1``: scalar only).

    ``masked``: the target has cheap masked loads and stores (AVX-512), so the tail of a vector loop runs
    as one masked vector iteration instead of a scalar loop."""
    body = k.body
    if lanes_limit == 1:
        body = _strip_vector(body)
    return Kernel(k.name, k.params, lower_loops(body, None, masked), k.labels, k.flops, k.bytes, k.workspace)


def _strip_vector(s: Stmt) -> Stmt:
    if isinstance(s, Seq):
        return Seq(tuple(_strip_vector(x) for x in s.body))
    if isinstance(s, For):
        kind = LoopKind.SERIAL if s.kind is LoopKind.VECTOR else s.kind
        return For(s.var, s.start, s.stop, _strip_vector(s.body), kind, s.step, 1)
    if isinstance(s, If):
        return If(s.cond, _strip_vector(s.then), None if s.orelse is None else _strip_vector(s.orelse))
    return s
