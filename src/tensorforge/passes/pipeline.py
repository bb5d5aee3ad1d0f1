"""Optimization levels as lists of pass names (the table of contents of the optimizer)."""

from __future__ import annotations

from . import dce  # noqa: F401  (registers passes)

PIPELINES: dict[int, list[str]] = {
    0: [],
    1: ["dce"],
    2: ["dce"],
    3: ["dce"],
}


def pipeline_for(level: int, edits: str | None = None) -> list[str]:
    """The pass list for ``-O<level>``, edited by ``--passes`` ("-fuse,+cse" removes fuse, adds cse)."""
    if level not in PIPELINES:
        raise ValueError(f"optimization level must be 0..3, got {level}")
    passes = list(PIPELINES[level])
    if edits:
        for item in (e.strip() for e in edits.split(",")):
            if not item:
                continue
            if item.startswith("-"):
                passes = [p for p in passes if p != item[1:]]
            else:
                name = item[1:] if item.startswith("+") else item
                if name not in passes:
                    passes.append(name)
    return passes
