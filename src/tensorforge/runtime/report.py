"""The compile report: what the compiler did to a model, in numbers (from the artifact's metadata, so a
model loaded from the compile cache or a file reports the compile that made it)."""

from __future__ import annotations


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"


def _fusion_note(passes: list[dict]) -> str:
    for r in passes:
        change = r["stats"].get("kernels")  # "before -> after"
        if r["name"] == "fuse" and change is not None:
            return f" (before fusion: {change.split(' -> ')[0]})"
    return " (not fused)"


def format_report(art, threads: int | None = None, cache_hit: bool = False, load_seconds: float = 0.0) -> str:
    """The report of an artifact (a ``CompiledModel``'s, with its thread count and where it came from)."""
    p, meta = art.program, art.metadata
    passes = meta.get("passes", [])
    compiled = meta.get("compile_seconds", 0.0)
    origin = (f"loaded in {load_seconds:.3f} s (compile cache or file; compiled in {compiled:.3f} s)" if cache_hit
              else f"{compiled:.3f} s (cache miss)")  # fmt: skip
    planned = p.status_offset if p.status_offset >= 0 else p.arena_bytes  # the status word sits after the plan
    lines = [
        f"model: {art.name}",
        f"target: {p.target.describe()}",
        f"compile time: {origin}",
        f"graph nodes: {meta.get('source_nodes', '?')} imported -> {meta.get('graph_nodes', '?')} after passes",
        f"kernels: {len(p.kernels)}{_fusion_note(passes)}",
        f"flops per run: {p.flops:,}",
        f"parameters: {meta.get('parameters', 0):,}",
        f"constants (incl. packed weights): {_fmt_bytes(sum(c.nbytes for c in p.consts))}",
        f"arena: {_fmt_bytes(planned)} for {_fmt_bytes(p.intermediate_bytes)} of intermediates"
        + (f" ({100.0 * planned / p.intermediate_bytes:.0f}%)" if p.intermediate_bytes else "")
        + f"; peak live {_fmt_bytes(p.peak_bytes)}; {p.in_place} computed in place",
        f"run-time index checks: {len(p.checks)}"
        + (f" ({', '.join(sorted({c.op for c in p.checks}))}; status word after the arena)" if p.checks else ""),
        f"resident during a run: {_fmt_bytes(p.resident_bytes)} (constants + arena + inputs and outputs)",
    ]
    lines += [f"note: {text}" for text in meta.get("notes", [])]  # what a stage decided (e.g. which ops run in bf16)
    lines += [f"threads: {threads}", ""] if threads is not None else [""]
    if passes:
        lines.append("passes:")
        for r in passes:
            stats = "".join(f", {k} {v}" for k, v in r["stats"].items())
            lines.append(f"  {r['name']:<14} {r['seconds'] * 1e3:8.2f} ms   nodes {r['nodes_before']} -> "
                         f"{r['nodes_after']}{stats}")  # fmt: skip
        lines.append("")
    lines.append("kernels (in execution order):")
    for k in p.kernels:
        lines.append(f"  {k.name:<40} {k.flops:>14,} flop   {'; '.join(k.labels)}")
    return "\n".join(lines) + "\n"
