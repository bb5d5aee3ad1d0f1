"""Text form of kernel IR, e.g.

kernel k1_Gemm(f32 %x[784], f32 %W[200704], f32 %out[256])  # fc1 (Gemm)
  parallel for j0 in 0..32 {
    vector(8) for j in 0..8 { out[j0*8 + j] = ... }
  }

Expressions are DAGs: a subexpression used twice is one node (Relu reads its input twice, so a fused chain
of n Relus has 2^n paths, and printed as a tree its text would be that long). A node other than a constant
or variable that a statement uses more than once is printed once, as ``let t0 = ...`` before the
statement, and named at its uses (only within that statement: across statements the same node may have
another value, e.g. after a store); so is a node whose text would be longer than ``LONG``. Everything here
is linear in the number of distinct nodes and walks expressions without recursion.
"""

from __future__ import annotations

from collections.abc import Sequence

from .kir import (
    SCALAR_OPS,
    Assign,
    Bin,
    Broadcast,
    Cast,
    Cmp,
    Const,
    Decl,
    Dot,
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
    TileDot,
    Un,
    Var,
    children,
    transform,
)

LONG = 500  # a longer text is named too: a character is then copied into a bounded number of parent texts


class _Names:
    def __init__(self, canonical: bool = False):
        self.names: dict[int, str] = {}
        self.used: set[str] = set()
        self.last: dict[str, int] = {}  # the last number given to a name: numbering goes on from there
        self.canonical = canonical  # name variables and buffers by first appearance (structural keys)
        self.bufs: dict[int, str] = {}

    def buf(self, b) -> str:
        if not self.canonical:
            return b.name
        n = self.bufs.get(id(b))
        if n is None:
            n = self.bufs[id(b)] = f"b{len(self.bufs)}:{b.dtype.short}:{b.numel}"
        return n

    def __call__(self, v: Var) -> str:
        n = self.names.get(v.uid)
        if n is None and self.canonical:
            n = self.names[v.uid] = f"v{len(self.names)}:{v.dtype.short}x{v.lanes}"
        if n is None:
            n = self.names[v.uid] = self.fresh(v.name)
        return n

    def fresh(self, base: str) -> str:
        """A name not used yet in this kernel: ``base``, else ``base`` with the next free number."""
        n = base
        k = self.last.get(base, 0)
        while n in self.used:
            k += 1
            n = f"{base}{k}"
        self.last[base] = k
        self.used.add(n)
        return n


def format_node(e: Expr, ops: Sequence[str], names: _Names) -> str:
    """The text of node ``e`` whose operands (``children(e)``, in order) have the texts ``ops``."""
    if isinstance(e, Bin | Cmp | Un):
        return SCALAR_OPS[e.op].format(*ops)
    if isinstance(e, Load):
        suffix = f"<{e.lanes}>" if e.lanes > 1 else ""
        if e.mask is not None:
            suffix += f" if {ops[1]}"
        return f"{names.buf(e.buf)}[{ops[0]}]{suffix}"
    if isinstance(e, Const):
        s = repr(e.value) if not isinstance(e.value, bool) else str(e.value).lower()
        if names.canonical:  # the text of a key must determine the node: 1 may be an i32 or an i64
            s += f":{e.dtype.short}"
        return s if e.lanes == 1 else f"{s}x{e.lanes}"
    if isinstance(e, Var):
        return names(e)
    if isinstance(e, Select):
        return f"select({ops[0]}, {ops[1]}, {ops[2]})"
    if isinstance(e, Cast):
        return f"{'bitcast ' if type(e).__name__ == 'Bitcast' else ''}{e.dtype.short}({ops[0]})"
    if isinstance(e, Fma):
        return f"fma({ops[0]}, {ops[1]}, {ops[2]})"
    if isinstance(e, Dot):
        return f"dot{e.group}({ops[0]}, {ops[1]}, {ops[2]})"
    if isinstance(e, TileDot):
        return f"tile_dot({ops[0]}, &{ops[1]} rows {e.a_stride}, &{ops[2]} rows {e.b_stride})"
    if isinstance(e, Broadcast):
        return f"bcast<{e.lanes}>({ops[0]})"
    if isinstance(e, Ramp):
        return f"ramp<{e.lanes}>({ops[0]}, {e.stride})"
    if isinstance(e, HReduce):
        return f"hreduce_{e.op}({ops[0]})"
    if hasattr(e, "format"):  # an extension node (e.g. lower/gpu_kir.py's Shfl)
        return e.format(ops)
    return f"<{type(e).__name__}>"


class _Texts:
    """The texts of one statement's expressions, with ``let`` lines for the nodes they share."""

    def __init__(self, names: _Names):
        self.names = names

    def __call__(self, roots: list[Expr]) -> tuple[list[str], list[str]]:
        """(let lines, the text of each root). One walk with an explicit stack lists the distinct nodes
        operands first and counts their uses; then each node's text is written from its operands'.
        Constants and variables (never named) are written where they are used."""
        names = self.names
        order: list[tuple[Expr, tuple[Expr, ...]]] = []
        uses: dict[int, int] = {}
        stack: list[tuple[Expr, tuple[Expr, ...] | None]] = [(r, None) for r in reversed(roots)]
        while stack:
            x, kids = stack.pop()
            k = id(x)
            if kids is not None:
                order.append((x, kids))
            elif k in uses:
                uses[k] += 1
            else:
                uses[k] = 1
                kids = children(x)
                stack.append((x, kids))
                stack += [(c, None) for c in reversed(kids) if not isinstance(c, Const | Var)]
        lets: list[str] = []
        texts: dict[int, str] = {}
        for x, kids in order:
            t = format_node(x, [texts.get(id(c)) or format_node(c, (), names) for c in kids], names)
            if (uses[id(x)] > 1 or len(t) > LONG) and not isinstance(x, Const | Var):
                name = names.fresh("t")
                lets.append(f"let {name} = {t}")
                t = name
            texts[id(x)] = t
        return lets, [texts[id(r)] for r in roots]


class _KeyTexts:
    """The texts of expressions in a structural key: every distinct value, by structure rather than by object
    identity, is numbered once in the kernel (``%3 = (%1 + %2)``, defined on the line before its first use)
    and named by its number. Equal trees get the same number, so sharing (which of two equal subexpressions
    are one object) does not change the key, and the key stays linear in the size of the DAG."""

    def __init__(self, names: _Names):
        self.names = names
        self.numbers: dict[str, int] = {}  # a node's text over its operands' numbers -> number
        self.memo: dict[int, int] = {}  # id(node) -> number

    def __call__(self, roots: list[Expr]) -> tuple[list[str], list[str]]:
        defs: list[str] = []

        def number(x: Expr, kids: tuple[int, ...]) -> int:
            text = format_node(x, [f"%{k}" for k in kids], self.names)
            n = self.numbers.get(text)
            if n is None:
                n = self.numbers[text] = len(self.numbers)
                defs.append(f"%{n} = {text}")
            return n

        refs = [f"%{transform(r, number, self.memo)}" for r in roots]
        return defs, refs


def _stmt_roots(s: Stmt) -> list[Expr]:
    if isinstance(s, Store):
        return [s.index, s.value] + ([] if s.mask is None else [s.mask])
    if isinstance(s, For):
        return [s.start, s.stop]
    if isinstance(s, Decl):
        return [s.init]
    if isinstance(s, Assign):
        return [s.value]
    if isinstance(s, If):
        return [s.cond]
    if isinstance(s, Prefetch):
        return [s.index]
    return []


def format_stmt(s: Stmt, indent: int, names: _Names, texts: _Texts | _KeyTexts) -> list[str]:
    pad = "  " * indent
    if isinstance(s, Seq):
        out: list[str] = []
        for x in s.body:
            out.extend(format_stmt(x, indent, names, texts))
        return out
    lets, t = texts(_stmt_roots(s))
    lines = [pad + x for x in lets]
    if isinstance(s, For):
        kind = s.kind.value if s.kind is not LoopKind.VECTOR else f"vector({s.lanes}) for"
        step = f" step {s.step}" if s.step != 1 else ""
        head = f"{pad}{kind} {names(s.var)} in {t[0]}..{t[1]}{step} {{"
        return [*lines, head, *format_stmt(s.body, indent + 1, names, texts), pad + "}"]
    if isinstance(s, Store):
        suffix = f"<{s.value.lanes}>" if s.value.lanes > 1 and s.index.lanes == 1 else ""
        cond = "" if s.mask is None else f" if {t[2]}"
        return [*lines, f"{pad}{names.buf(s.buf)}[{t[0]}]{suffix} = {t[1]}{cond}"]
    if isinstance(s, Decl):
        ty = s.var.dtype.short + (f"x{s.var.lanes}" if s.var.lanes > 1 else "")
        return [*lines, f"{pad}{ty} {names(s.var)} = {t[0]}"]
    if isinstance(s, Assign):
        return [*lines, f"{pad}{names(s.var)} = {t[0]}"]
    if isinstance(s, If):
        lines += [f"{pad}if {t[0]} {{", *format_stmt(s.then, indent + 1, names, texts)]
        if s.orelse is not None:
            lines += [f"{pad}}} else {{", *format_stmt(s.orelse, indent + 1, names, texts)]
        return lines + [pad + "}"]
    if isinstance(s, Prefetch):
        return [*lines, f"{pad}prefetch {names.buf(s.buf)}[{t[0]}]"]
    if hasattr(s, "format"):  # an extension statement (e.g. lower/gpu_kir.py's Barrier)
        return [*lines, pad + s.format()]
    return [f"{pad}<{type(s).__name__}>"]


def format_expr(e: Expr) -> str:
    """The text of one expression (its shared subexpressions as ``let`` lines before it)."""
    lets, (text,) = _Texts(_Names())([e])
    return "\n".join([*lets, text])


def format_kernel(k: Kernel) -> str:
    params = ", ".join(f"{b.dtype.short} %{b.name}[{b.numel}]" for b in k.params)
    label = f"  # {'; '.join(k.labels)}" if k.labels else ""
    names = _Names()
    lines = [f"kernel {k.name}({params}){label} {{", *format_stmt(k.body, 1, names, _Texts(names)), "}"]
    return "\n".join(lines)


def structural_key(k: Kernel) -> str:
    """Text that is equal for two kernels exactly when they compute the same thing on their parameters
    (names of buffers and variables do not matter), so one function can serve both."""
    names = _Names(canonical=True)
    params = ",".join(names.buf(b) for b in k.params)
    return params + "\n" + "\n".join(format_stmt(k.body, 0, names, _KeyTexts(names)))
