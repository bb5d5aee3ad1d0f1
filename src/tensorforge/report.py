"""The compile report: what the compiler did to a model, in numbers."""

from __future__ import annotations


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"


def _fusion_note(log) -> str:
    for r in log:
        change = r.stats.get("kernels")
        if r.name == "fuse" and change is not None:
            return f" (before fusion: {change.before})"
    return " (not fused)"


def format_report(m) -> str:
    p = m.program
    g = m.graph
    lines = [
        f"model: {m.name}",
        f"target: {p.target.describe()}",
        f"compile time: {m.compile_seconds:.3f} s (cache {'hit' if m.jit.cache_hit else 'miss'})",
        f"graph nodes: {len(m.source_graph.nodes)} imported -> {len(g.nodes)} after passes",
        f"kernels: {len(p.kernels)}{_fusion_note(m.pass_log)}",
        f"flops per run: {p.flops:,}",
        f"parameters: {m.source_graph.parameter_count():,}",
        f"constants (incl. packed weights): {_fmt_bytes(sum(c.nbytes for c in p.consts))}",
        f"arena: {_fmt_bytes(p.arena_bytes)} for {_fmt_bytes(p.intermediate_bytes)} of intermediates"
        + (f" ({100.0 * p.arena_bytes / p.intermediate_bytes:.0f}%)" if p.intermediate_bytes else "")
        + f"; peak live {_fmt_bytes(p.peak_bytes)}; {p.in_place} computed in place",
        f"resident during a run: {_fmt_bytes(p.resident_bytes)} (constants + arena + inputs and outputs)",
        f"threads: {m.num_threads}",
        "",
    ]
    if m.pass_log:
        lines.append("passes:")
        for r in m.pass_log:
            stats = "".join(f", {k} {v}" for k, v in r.stats.items())
            lines.append(f"  {r.name:<14} {r.seconds * 1e3:8.2f} ms   nodes {r.nodes_before} -> {r.nodes_after}{stats}")
        lines.append("")
    lines.append("kernels (in execution order):")
    for k in p.kernels:
        lines.append(f"  {k.name:<40} {k.flops:>14,} flop   {'; '.join(k.labels)}")
    return "\n".join(lines) + "\n"
