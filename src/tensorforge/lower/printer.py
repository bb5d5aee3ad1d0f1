"""Text form of kernel IR, e.g.

kernel k1_Gemm(f32 %x[784], f32 %W[200704], f32 %out[256])  # fc1 (Gemm)
  parallel for j0 in 0..32 {
    vector(8) for j in 0..8 { out[j0*8 + j] = ... }
  }
"""

from __future__ import annotations

from .kir import (
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
)


class _Names:
    def __init__(self, canonical: bool = False):
        self.names: dict[int, str] = {}
        self.used: set[str] = set()
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
            base = v.name
            n = base
            k = 1
            while n in self.used:
                n = f"{base}{k}"
                k += 1
            self.used.add(n)
            self.names[v.uid] = n
        return n


def format_expr(e: Expr, names: _Names | None = None) -> str:
    names = names or _Names()
    f = lambda x: format_expr(x, names)  # noqa: E731
    if isinstance(e, Const):
        s = repr(e.value) if not isinstance(e.value, bool) else str(e.value).lower()
        return s if e.lanes == 1 else f"{s}x{e.lanes}"
    if isinstance(e, Var):
        return names(e)
    if isinstance(e, Load):
        suffix = f"<{e.lanes}>" if e.lanes > 1 else ""
        if e.mask is not None:
            suffix += f" if {f(e.mask)}"
        return f"{names.buf(e.buf)}[{f(e.index)}]{suffix}"
    if isinstance(e, Bin | Cmp):
        return SCALAR_OPS[e.op].format(f(e.a), f(e.b))
    if isinstance(e, Un):
        return SCALAR_OPS[e.op].format(f(e.a))
    if isinstance(e, Select):
        return f"select({f(e.cond)}, {f(e.a)}, {f(e.b)})"
    if isinstance(e, Cast):
        return f"{'bitcast ' if type(e).__name__ == 'Bitcast' else ''}{e.dtype.short}({f(e.a)})"
    if isinstance(e, Fma):
        return f"fma({f(e.a)}, {f(e.b)}, {f(e.c)})"
    if isinstance(e, Broadcast):
        return f"bcast<{e.lanes}>({f(e.a)})"
    if isinstance(e, Ramp):
        return f"ramp<{e.lanes}>({f(e.base)}, {e.stride})"
    if isinstance(e, HReduce):
        return f"hreduce_{e.op}({f(e.a)})"
    return f"<{type(e).__name__}>"


def format_stmt(s: Stmt, indent: int = 1, names: _Names | None = None) -> list[str]:
    names = names or _Names()
    pad = "  " * indent
    f = lambda x: format_expr(x, names)  # noqa: E731
    if isinstance(s, Seq):
        out: list[str] = []
        for x in s.body:
            out.extend(format_stmt(x, indent, names))
        return out
    if isinstance(s, For):
        kind = s.kind.value if s.kind is not LoopKind.VECTOR else f"vector({s.lanes}) for"
        step = f" step {s.step}" if s.step != 1 else ""
        head = f"{pad}{kind} {names(s.var)} in {f(s.start)}..{f(s.stop)}{step} {{"
        return [head, *format_stmt(s.body, indent + 1, names), pad + "}"]
    if isinstance(s, Store):
        suffix = f"<{s.value.lanes}>" if s.value.lanes > 1 and s.index.lanes == 1 else ""
        cond = "" if s.mask is None else f" if {f(s.mask)}"
        return [f"{pad}{names.buf(s.buf)}[{f(s.index)}]{suffix} = {f(s.value)}{cond}"]
    if isinstance(s, Decl):
        ty = s.var.dtype.short + (f"x{s.var.lanes}" if s.var.lanes > 1 else "")
        return [f"{pad}{ty} {names(s.var)} = {f(s.init)}"]
    if isinstance(s, Assign):
        return [f"{pad}{names(s.var)} = {f(s.value)}"]
    if isinstance(s, If):
        out = [f"{pad}if {f(s.cond)} {{", *format_stmt(s.then, indent + 1, names)]
        if s.orelse is not None:
            out += [f"{pad}}} else {{", *format_stmt(s.orelse, indent + 1, names)]
        return out + [pad + "}"]
    if isinstance(s, Prefetch):
        return [f"{pad}prefetch {names.buf(s.buf)}[{f(s.index)}]"]
    return [f"{pad}<{type(s).__name__}>"]


def format_kernel(k: Kernel) -> str:
    params = ", ".join(f"{b.dtype.short} %{b.name}[{b.numel}]" for b in k.params)
    label = f"  # {'; '.join(k.labels)}" if k.labels else ""
    lines = [f"kernel {k.name}({params}){label} {{", *format_stmt(k.body, 1), "}"]
    return "\n".join(lines)


def structural_key(k: Kernel) -> str:
    """Text that is equal for two kernels exactly when they compute the same thing on their parameters
    (names of buffers and variables do not matter), so one function can serve both."""
    names = _Names(canonical=True)
    params = ",".join(names.buf(b) for b in k.params)
    return params + "\n" + "\n".join(format_stmt(k.body, 0, names))
