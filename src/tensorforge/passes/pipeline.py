"""Optimization levels as lists of pass names: the table of contents of the optimizer.

-O0  nothing: every node becomes its own kernel (the reference point for the other levels)
-O1  clean-up: constant folding, algebraic simplification, CSE, dead-code elimination
-O2  + BatchNorm / affine folding into Conv and Gemm, operator fusion (the default)
-O3  + fast math (divisions as multiplications by reciprocals: within about an ulp, not exact)
"""

from __future__ import annotations

from . import cse, dce, fastmath, fold, fold_bn, fuse, simplify, specialize  # noqa: F401  (registers passes)
from .manager import check_pipeline

_CLEANUP = ["fold", "simplify", "cse", "dce"]
PIPELINES: dict[int, list[str]] = {
    0: [],
    1: [*_CLEANUP],
    2: [*_CLEANUP, "fold_bn", "simplify", "dce", "fuse"],
    3: [*_CLEANUP, "fold_bn", "fastmath", "simplify", "cse", "dce", "fuse"],
}


def pipeline_for(level: int, edits: str | None = None) -> list[str]:
    """The pass list for ``-O<level>``, edited by ``--passes`` ("-fuse,+cse" removes fuse, adds cse).

    A removed name drops every occurrence; an added one is appended unless already present, before
    ``fuse`` (graph passes do not run on fused groups).
    """
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
                    at = passes.index("fuse") if "fuse" in passes and name != "fuse" else len(passes)
                    passes.insert(at, name)
    check_pipeline(passes)
    return passes
