"""GPU schedules of loop kernels: every kernel of a program becomes a launch nest (``lower/gpu_kir.py``).

Kernel rules with a GPU schedule of their own (``lower/gpu_gemm.py``: GEMM, convolution) emit launch nests
while lowering; the others emit loop nests, mapped here, after memory planning, in this order:

1. **row reductions** (softmax, layer norm, ``rows`` groups, reductions, global pooling): the outer loops
   over independent rows collapse into the grid, one block per row; each reduction loop of the row body
   is shared by the block's threads (iteration ``r`` on thread ``r % B``), each thread's partial result
   combined by warp shuffles and shared memory (``block_reduce``); per-row values are computed by every
   thread, per-row stores made by thread 0. Chosen when a row has at least a warp of work.
2. **grid loops** (elementwise and everything else): the outer loops whose iterations are independent
   collapse into one index over the whole grid, one iteration per thread.
3. otherwise the kernel runs on one thread (correct, slow: reported in the mapping notes).

Independence is proved, not assumed: every buffer written under the collapsed loops is stored at an
affine index whose footprints per iteration cannot overlap (strides against the interval of the rest of
the index over the inner loops), and read back only within its own iteration's footprint; no local
declared outside is assigned. Buffers that are no kernel parameter (scratch tiles) are private per thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..codegen.targets import Target
from . import kir as K
from .gpu_kir import WARP, Barrier, GpuSpec, SharedBuffer, block_reduce, global_index, gpu_spec, is_launch, launch
from .kir import Assign, Bin, Const, Decl, Expr, Fma, For, If, Kernel, Load, Seq, Stmt, Store, Var
from .printer import format_expr
from .vectorize import identity, vectorize_kernel

THREADS = 256  # threads per block of grid loops
ROW_MIN = WARP  # a row reduction shorter than this runs one row per thread


# -- intervals and affine indices ----------------------------------------------------------------------
def _interval(e: Expr, env: dict[int, tuple[int, int]]) -> tuple[int, int] | None:
    """Bounds of integer expression ``e`` given the bounds of its variables (None: unknown)."""

    def fn(x: Expr, kids: tuple) -> tuple[int, int] | None:
        if isinstance(x, Const):
            return (int(x.value), int(x.value)) if not isinstance(x.value, float) else None
        if isinstance(x, Var):
            return env.get(x.uid)
        if any(k is None for k in kids):
            return None
        if isinstance(x, Bin) and x.dtype.is_int:
            (a0, a1), (b0, b1) = kids
            if x.op == "add":
                return a0 + b0, a1 + b1
            if x.op == "sub":
                return a0 - b1, a1 - b0
            if x.op == "mul":
                c = [a0 * b0, a0 * b1, a1 * b0, a1 * b1]
                return min(c), max(c)
            if x.op in ("floordiv", "div") and b0 == b1 and b0 > 0 and a0 >= 0:
                return a0 // b0, a1 // b0
            if x.op == "mod" and b0 == b1 and b0 > 0:
                return (a0, a1) if a0 >= 0 and a0 // b0 == a1 // b0 else (0, b0 - 1)
            if x.op == "min":
                return min(a0, b0), min(a1, b1)
            if x.op == "max":
                return max(a0, b0), max(a1, b1)
            return None
        if isinstance(x, K.Select):
            return min(kids[1][0], kids[2][0]), max(kids[1][1], kids[2][1])
        if isinstance(x, K.Cast) and x.dtype.is_int and x.a.dtype.is_int:
            return kids[0]
        return None

    return K.transform(e, fn)


def _trip(f: For) -> int | None:
    if not (isinstance(f.start, Const) and isinstance(f.stop, Const)):
        return None
    return max(0, -(-(int(f.stop.value) - int(f.start.value)) // f.step))


def _perfect_nest(s: Stmt) -> tuple[list[For], Stmt]:
    """The outer loops of ``s`` with constant bounds, each the whole body of the one before, and the body."""
    loops: list[For] = []
    while isinstance(s, For) and _trip(s) is not None:
        loops.append(s)
        s = s.body
        while isinstance(s, Seq) and len(s.body) == 1:
            s = s.body[0]
    return loops, s


def _locals_env(body: Stmt) -> tuple[dict[Var, Expr], dict[int, tuple[int, int]], set[int], set[int]]:
    """Integer locals declared once and never assigned (name -> init, to inline into indices), the bounds of
    inner loop variables, the uids of locals declared in ``body`` and those assigned in it."""
    inits: dict[Var, Expr] = {}
    env: dict[int, tuple[int, int]] = {}
    declared: set[int] = set()
    assigned: set[int] = set()
    for s in K.walk_stmt(body):
        if isinstance(s, Decl):
            declared.add(s.var.uid)
            if s.var.dtype.is_int:
                inits[s.var] = s.init
        elif isinstance(s, Assign):
            assigned.add(s.var.uid)
        elif isinstance(s, For):
            declared.add(s.var.uid)
    for v in [v for v in inits if v.uid in assigned]:
        del inits[v]
    # bounds of inner loops, outermost first (their bounds may use enclosing loop variables)
    for s in K.walk_stmt(body):
        if isinstance(s, For):
            lo, hi = _interval(_inline(s.start, inits), env), _interval(_inline(s.stop, inits), env)
            if lo is not None and hi is not None:
                env[s.var.uid] = (lo[0], max(lo[0], hi[1] - 1))
    return inits, env, declared, assigned


def _inline(e: Expr, inits: dict[Var, Expr]) -> Expr:
    for _ in range(8):  # locals defined from locals
        e2 = K.substitute(e, inits)
        if e2 is e:
            return e
        e = e2
    return e


def _affine(e: Expr, vs: Sequence[Var]) -> tuple[list[int], Expr] | None:
    coefs = []
    for v in vs:
        lin = K.linear_in(e, v)
        if lin is None:
            return None
        coefs.append(lin[0])
        e = lin[1]
    if any(K.uses_var(e, v) for v in vs):
        return None
    return coefs, e


def independent(loops: Sequence[For], body: Stmt, private: set[int]) -> bool:
    """Whether the iterations of ``loops`` (a perfect nest around ``body``) may run in any order, at once.
    ``private``: ids of buffers each thread has its own copy of."""
    vs = [f.var for f in loops]
    trips = [_trip(f) or 0 for f in loops]
    inits, env, declared, assigned = _locals_env(body)
    if not assigned <= declared:
        return False
    accesses: dict[int, list[tuple[bool, Expr]]] = {}
    for s in K.walk_stmt(body):
        if isinstance(s, Store) and id(s.buf) not in private:
            accesses.setdefault(id(s.buf), []).append((True, s.index))
    if not accesses:
        return True
    seen: set[int] = set()
    for s in K.walk_stmt(body):
        for e in K.stmt_exprs(s):
            for x in K.walk_expr(e, seen):
                if isinstance(x, Load) and id(x.buf) in accesses:
                    accesses[id(x.buf)].append((False, x.index))
    for acc in accesses.values():
        regions = []
        for is_store, idx in acc:
            aff = _affine(_inline(idx, inits), vs)
            if aff is None:
                return False
            iv = _interval(aff[1], env)
            if iv is None:
                return False
            regions.append((is_store, aff[0], iv))
        coefs = {tuple(c) for st, c, _ in regions if st}
        if len(coefs) != 1:
            return False
        (c,) = coefs
        lo = min(iv[0] for st, _, iv in regions if st)
        hi = max(iv[1] for st, _, iv in regions if st)
        for st, cc, iv in regions:
            if not st and (tuple(cc) != c or iv[0] < lo or iv[1] > hi):
                return False
        dims = sorted((abs(ci * f.step), n) for ci, f, n in zip(c, loops, trips) if n > 1)
        span = hi - lo + 1
        for stride, n in dims:
            if stride < span:
                return False
            span = stride * (n - 1) + span
    return True


def _private_buffers(k: Kernel) -> set[int]:
    params = {id(b) for b in k.params}
    return {id(b) for b in K.buffers_of(k.body) if id(b) not in params}


def _unflatten_decls(g: Expr, loops: Sequence[For]) -> list[Stmt]:
    out: list[Stmt] = []
    trips = [_trip(f) for f in loops]
    stride = 1
    for f, n in reversed(list(zip(loops, trips))):
        digit = g if stride == 1 else K.binop("floordiv", g, stride)
        if f is not loops[0]:
            digit = K.binop("mod", digit, n)
        out.append(Decl(f.var, K.binop("add", f.start, K.binop("mul", digit, f.step))))
        stride *= n
    return out[::-1]


def grid_loops(loops: Sequence[For], body: Stmt, threads: int = THREADS) -> Stmt:
    """The iterations of ``loops`` one per thread over a grid."""
    total = 1
    for f in loops:
        total *= _trip(f)
    threads = min(threads, max(WARP, -(-total // WARP) * WARP))
    blocks = max(1, -(-total // threads))

    def per_thread(b, t):
        g = Var("g")
        inner = K.seq(*_unflatten_decls(g, loops), body)
        guard = inner if blocks * threads == total else If(K.cmp("lt", g, Const(total)), inner)
        return K.seq(Decl(g, global_index(b, t, threads)), guard)

    return launch(blocks, threads, per_thread)


# -- row reductions ------------------------------------------------------------------------------------
def _update(s: Assign) -> tuple[str, Expr] | None:
    """``acc = op(acc, v)`` -> (op, v) for a reducible op (``fma(a, b, acc)`` is an add of a*b)."""
    v, acc = s.value, s.var
    if isinstance(v, Fma) and v.c is acc and v.dtype.is_float:
        return "add", K.binop("mul", v.a, v.b)
    if isinstance(v, Bin) and K.SCALAR_OPS[v.op].reducible:
        if v.a is acc and not K.uses_var(v.b, acc):
            return v.op, v.b
        if v.b is acc and not K.uses_var(v.a, acc):
            return v.op, v.a
    return None


def _coop_loop(f: For, outside: set[int], threads: int, t: Var, canon: Var, keys: dict[int, set[str]],
               written: set[int]) -> Stmt | None:  # fmt: skip
    """Loop ``f`` of a row body shared by the block's threads, with its reductions combined over the block."""
    loops, inner = _perfect_nest(f)
    total = 1
    for x in loops:
        total *= _trip(x)
    parts: dict[int, tuple[str, Var, Var]] = {}  # acc uid -> (op, partial, acc)

    def rewrite(s: Stmt) -> Stmt | None:
        if isinstance(s, Assign) and s.var.uid in outside:
            up = _update(s)
            if up is None or s.var.uid in parts:
                return None
            part = Var(f"{s.var.name}_part", s.var.dtype)
            parts[s.var.uid] = (up[0], part, s.var)
            return Assign(part, K.binop(up[0], part, up[1]))
        if isinstance(s, Seq):
            xs = [rewrite(x) for x in s.body]
            return None if any(x is None for x in xs) else Seq(tuple(xs))
        if isinstance(s, For):
            b = rewrite(s.body)
            return None if b is None else For(s.var, s.start, s.stop, b, s.kind, s.step, s.lanes)
        if isinstance(s, If):
            a = rewrite(s.then)
            o = None if s.orelse is None else rewrite(s.orelse)
            return None if a is None or (s.orelse is not None and o is None) else If(s.cond, a, o)
        return s

    body = rewrite(inner)
    if body is None:
        return None
    # an accumulator is read only by its own update
    for s in K.walk_stmt(body):
        for e in K.stmt_exprs(s):
            if any(isinstance(x, Var) and x.uid in parts for x in K.walk_expr(e)):
                return None
    # every access to a buffer this row body writes: one index function of the row position, kept per buffer
    digits = _unflatten_decls(canon, loops)
    mapping = {d.var: d.init for d in digits}
    for s in K.walk_stmt(body):
        if isinstance(s, Store):
            written.add(id(s.buf))
    for s in K.walk_stmt(body):
        exprs = [(s.buf, s.index)] if isinstance(s, Store) else []
        for e in K.stmt_exprs(s):
            exprs += [(x.buf, x.index) for x in K.walk_expr(e) if isinstance(x, Load)]
        for buf, idx in exprs:
            if id(buf) in written:
                keys.setdefault(id(buf), set()).add(format_expr(K.substitute(idx, mapping)))
    j, r = Var("j"), Var("r")
    per = -(-total // threads)
    it = K.seq(*_unflatten_decls(r, loops), body)
    if per * threads != total:
        it = If(K.cmp("lt", r, Const(total)), it)
    loop = For(j, Const(0), Const(per), K.seq(Decl(r, K.binop("add", K.binop("mul", j, threads), t)), it))
    stmts: list[Stmt] = [Decl(part, identity(op, part.dtype)) for op, part, _ in parts.values()]
    stmts.append(loop)
    for op, part, acc in parts.values():
        scratch = SharedBuffer(f"red_{acc.name}", part.dtype, -(-threads // WARP))
        stmts += [block_reduce(op, part, part, t, threads, scratch), Assign(acc, K.binop(op, acc, part))]
    return K.seq(stmts)


class _NoSchedule(Exception):
    pass


def row_schedule(loops: Sequence[For], body: Stmt, spec: GpuSpec) -> Stmt | None:
    """One block per row (iteration of ``loops``), its loops shared by the block's threads."""
    stmts = list(body.body) if isinstance(body, Seq) else [body]
    longest = 0
    for s in stmts:
        if isinstance(s, For):
            nest, _ = _perfect_nest(s)
            if not nest:
                return None
            n = 1
            for f in nest:
                n *= _trip(f)
            longest = max(longest, n)
    if longest < ROW_MIN:
        return None
    threads = min(THREADS, spec.max_threads, 1 << (longest - 1).bit_length())
    blocks = 1
    for f in loops:
        blocks *= _trip(f)
    written = {id(s.buf) for s in K.walk_stmt(K.seq(stmts)) if isinstance(s, Store)}

    def per_block(b: Var, t: Var) -> Stmt:
        out: list[Stmt] = list(_unflatten_decls(b, loops))
        canon = Var("rr")
        keys: dict[int, set[str]] = {}
        outside: set[int] = set()
        done: set[int] = set()  # buffers written by the loops so far
        for s in stmts:
            if isinstance(s, For):
                c = _coop_loop(s, outside, threads, t, canon, keys, written)
                if c is None:
                    raise _NoSchedule
                out.append(c)
                done |= {id(x.buf) for x in K.walk_stmt(s) if isinstance(x, Store)}
            elif isinstance(s, Decl | Assign):
                if isinstance(s, Decl):
                    outside.add(s.var.uid)
                if _reads(s, done):  # a per-row value read from what other threads wrote
                    out.append(Barrier())
                out.append(s)
            elif isinstance(s, Store):
                if _reads(s, written) or any(id(s.buf) == w for w in keys):
                    raise _NoSchedule
                out.append(If(K.cmp("eq", t, Const(0)), s))
            else:
                raise _NoSchedule
        if any(len(v) > 1 for v in keys.values()):
            raise _NoSchedule
        return K.seq(out)

    try:
        return launch(blocks, threads, per_block)
    except _NoSchedule:
        return None


def _reads(s: Stmt, bufs: set[int]) -> bool:
    return any(isinstance(x, Load) and id(x.buf) in bufs for e in K.stmt_exprs(s) for x in K.walk_expr(e))


# -- kernels and programs -------------------------------------------------------------------------------
def map_kernel(k: Kernel, spec: GpuSpec) -> tuple[Kernel, str]:
    """``k`` as a launch nest, and which schedule made it (``launch``, ``rows``, ``grid`` or ``single``)."""
    if is_launch(k.body):
        return k, "launch"
    body = vectorize_kernel(k, 1).body  # scalar loops, unrolled loops made explicit
    private = _private_buffers(k)
    loops, inner = _perfect_nest(body)
    for depth in range(len(loops), 0, -1):
        outer = loops[:depth]
        rest = loops[depth] if depth < len(loops) else inner
        if not independent(outer, rest, private):
            continue
        if depth == len(loops):
            rows = row_schedule(outer, inner, spec)
            if rows is not None:
                return _with_body(k, rows), "rows"
        return _with_body(k, grid_loops(outer, rest)), "grid"
    return _with_body(k, launch(1, 1, lambda b, t: body)), "single"


def _with_body(k: Kernel, body: Stmt) -> Kernel:
    return Kernel(k.name, k.params, body, k.labels, k.flops, k.bytes, k.workspace)


def map_program(program, target: Target):
    """The program with every kernel a launch nest; returns (program, notes naming one-thread kernels)."""
    spec = gpu_spec(target)
    kernels, notes = [], []
    for k in program.kernels:
        mk, how = map_kernel(k, spec)
        kernels.append(mk)
        if how == "single":
            notes.append(f"GPU: kernel {k.name} ({'; '.join(k.labels)}) runs on one thread (no parallel schedule)")
    return dataclasses.replace(program, kernels=kernels), notes


def launches(program) -> dict[str, list[int]]:
    """Kernel name -> [blocks, threads] of a mapped program."""
    from .gpu_kir import launch_dims

    return {k.name: list(launch_dims(k.body)) for k in program.kernels}


__all__ = ["grid_loops", "independent", "launches", "map_kernel", "map_program", "row_schedule"]
