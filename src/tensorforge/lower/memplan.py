"""Memory planning: every intermediate tensor (and kernel workspace) gets an offset in one arena.

Two steps, both on the finished kernel list (so they see exactly which buffers each kernel touches):

1. **In place.** A loop nest that reads a buffer for the last time and writes a fresh buffer of the
   same size and dtype may write into the one it reads, when every read of the old buffer is part of
   the store of the same element (``out[i] = f(in[i], ...)``) and each element is stored once: then
   each element is read before it is overwritten and never read again. The two buffers become one,
   with the union of their lifetimes.
2. **Offsets.** Buffers are placed largest first at the lowest offset that does not overlap a buffer
   whose lifetime (first to last kernel using it) intersects theirs. The peak of simultaneously live
   bytes is a lower bound for any such placement and is reported next to the arena size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .kir import (
    Buffer,
    Expr,
    Kernel,
    Load,
    Stmt,
    Store,
    Var,
    map_stmt,
    rebuild,
    stmt_exprs,
    transform,
    walk_expr,
    walk_stmt,
)

ALIGN = 64


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class ArenaPlan:
    size: int  # arena bytes
    total: int  # sum of the (aligned) buffers placed in it
    peak: int  # most bytes live at once: no placement can use less
    in_place: int  # buffers merged into the buffer they were computed from


def same(a: Expr, b: Expr) -> bool:
    """Structural equality of kernel-IR expressions (variables and buffers by identity), each pair of nodes
    compared once and without recursion."""
    done: set[tuple[int, int]] = set()
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if x is y or (id(x), id(y)) in done:
            continue
        done.add((id(x), id(y)))
        if type(x) is not type(y) or isinstance(x, Var):
            return False
        fields = [getattr(x, f.name) for f in dataclasses.fields(x)]
        others = [getattr(y, f.name) for f in dataclasses.fields(y)]
        for p, q in zip(fields, others):
            if isinstance(p, Expr) and isinstance(q, Expr):
                stack.append((p, q))
            elif not (p is q or (not isinstance(p, Expr | Buffer) and not isinstance(q, Expr | Buffer) and p == q)):
                return False
    return True


def _loads(e: Expr | None) -> list[Load]:
    """The loads in ``e`` (each shared subexpression visited once)."""
    return [] if e is None else [x for x in walk_expr(e) if isinstance(x, Load)]


class _Access:
    """Where a kernel reads and writes each buffer: one walk, then any number of in-place questions."""

    def __init__(self, k: Kernel):
        self.stored: set[int] = set()
        self.in_store: dict[int, list[tuple[Load, Store]]] = {}  # reads inside the value of a store
        self.elsewhere: set[int] = set()  # buffers read anywhere else (indices, masks, locals, bounds)
        for s in walk_stmt(k.body):
            if isinstance(s, Store):
                self.stored.add(id(s.buf))
                for ld in _loads(s.value):
                    self.in_store.setdefault(id(ld.buf), []).append((ld, s))
                for e in (s.index, s.mask):
                    self.elsewhere.update(id(ld.buf) for ld in _loads(e))
            else:
                for e in stmt_exprs(s):
                    self.elsewhere.update(id(ld.buf) for ld in _loads(e))

    def in_place_ok(self, out: Buffer, src: Buffer) -> bool:
        """``src`` is read only inside stores to ``out``, at the element being stored; ``out`` is never
        read and ``src`` never written: each element of ``src`` is read just before it is overwritten."""
        if id(src) in self.stored or id(src) in self.elsewhere or id(out) in self.elsewhere:
            return False
        if id(out) in self.in_store:
            return False
        return all(st.buf is out and ld.lanes == 1 and ld.mask is None and same(ld.index, st.index)
                   for ld, st in self.in_store.get(id(src), ()))  # fmt: skip


def _replace_buffer(s: Stmt, old: Buffer, new: Buffer) -> Stmt:
    """``s`` with buffer ``old`` replaced by ``new`` everywhere (unchanged expressions shared)."""
    memo: dict[int, Expr] = {}

    def load(x: Expr, kids: tuple[Expr, ...]) -> Expr:
        if isinstance(x, Load) and x.buf is old:
            return Load(new, kids[0], x.lanes, kids[1] if len(kids) > 1 else None)
        return rebuild(x, kids)

    return map_stmt(s, lambda e: transform(e, load, memo), lambda b: new if b is old else b)


def buffer_uses(kernels: list[Kernel]) -> dict[int, list[int]]:
    uses: dict[int, list[int]] = {}
    for ki, k in enumerate(kernels):
        for b in k.params:
            uses.setdefault(id(b), []).append(ki)
    return uses


def reuse_in_place(kernels: list[Kernel], arena: dict[int, object], single_store: set[int]) -> int:
    """Merge each freshly written arena buffer into a same-sized buffer its kernel reads for the last time,
    where that is legal (see ``in_place_ok``). ``arena`` holds the ids of the arena buffers that may take
    part (not inputs, outputs, constants or kernel workspace); merged buffers are removed from it.

    Only kernels in ``single_store`` (ids) take part: those known to store each element exactly once. A
    kernel rule may legitimately store an element twice (a GEMM or conv whose last tile is shifted back to
    stay in bounds overlaps the one before it); done in place, the second store would read an input
    element the first one already overwrote."""
    uses = buffer_uses(kernels)
    merged = 0
    for ki, k in enumerate(kernels):
        if id(k) not in single_store:
            continue
        ws = {id(b) for b in k.workspace}
        cand = [b for b in k.params if id(b) in arena and id(b) not in ws]
        outs = [b for b in cand if uses[id(b)][0] == ki]
        srcs = [b for b in cand if uses[id(b)][-1] == ki and uses[id(b)][0] < ki]
        access = _Access(k) if outs and srcs else None
        for out in outs:
            for src in srcs:
                if src.dtype != out.dtype or src.numel != out.numel or id(out) not in access.stored or \
                        not access.in_place_ok(out, src):  # fmt: skip
                    continue
                for kj in uses[id(out)]:
                    kern = kernels[kj]
                    kern.body = _replace_buffer(kern.body, out, src)
                    params = [src if b is out else b for b in kern.params]
                    kern.params = list(dict.fromkeys(params))
                uses[id(src)] += uses.pop(id(out))[1:]  # src's uses end at ki, out's start there
                del arena[id(out)]
                srcs.remove(src)
                merged += 1
                break
    return merged


def plan_offsets(kernels: list[Kernel], buffers: list[tuple[int, object]],
                 alias: dict[int, int] | None = None) -> ArenaPlan:  # fmt: skip
    """Give each buffer (``(id(buffer), BufInfo)``) an arena offset in ``info.index``. A buffer in ``alias``
    (its id -> the id of the buffer it lies in) is not placed itself; its uses keep that buffer live."""
    uses = buffer_uses(kernels)
    for a, root in (alias or {}).items():
        if a in uses:
            uses[root] = sorted(set(uses.get(root, [])) | set(uses.pop(a)))
    live = []
    for bid, info in buffers:
        ks = uses.get(bid)
        if not ks:
            continue
        info.first, info.last = ks[0], ks[-1]
        live.append(info)
    total = sum(align(i.nbytes) for i in live)
    peak = 0
    for ki in range(len(kernels)):
        peak = max(peak, sum(align(i.nbytes) for i in live if i.first <= ki <= i.last))
    placed: list = []
    size = 0
    for info in sorted(live, key=lambda i: (-i.nbytes, i.first)):
        need = align(info.nbytes)
        conflicts = sorted((p.index, p.index + align(p.nbytes)) for p in placed
                           if not (p.last < info.first or info.last < p.first))  # fmt: skip
        off = 0
        for lo, hi in conflicts:
            if off + need <= lo:
                break
            off = max(off, hi)
        info.index = off
        placed.append(info)
        size = max(size, off + need)
    return ArenaPlan(size, total, peak, 0)
