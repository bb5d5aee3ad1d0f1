"""Pass manager: named graph-to-graph passes, run in order, timed, optionally verified and printed.

    pm = PassManager(["dce", "fold", "fuse"], verify=True, print_after={"fuse"})
    graph = pm.run(graph)

``-O`` levels map to pass lists in ``pipeline.py``; ``--passes=-fuse`` removes a pass by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..errors import TensorforgeError
from ..ir.graph import Graph

PassFn = Callable[[Graph, dict], Graph]


@dataclass(frozen=True)
class Pass:
    name: str
    fn: PassFn
    doc: str = ""
    requires: tuple[str, ...] = ()


PASSES: dict[str, Pass] = {}


def register_pass(name: str, requires: Iterable[str] = ()):
    """Register ``fn(graph, options) -> graph`` as a pass named ``name``."""

    def deco(fn: PassFn) -> PassFn:
        PASSES[name] = Pass(name, fn, (fn.__doc__ or "").strip().split("\n")[0], tuple(requires))
        return fn

    return deco


@dataclass
class PassRecord:
    name: str
    seconds: float
    nodes_before: int
    nodes_after: int


@dataclass
class PassManager:
    passes: list[str]
    verify: bool = False
    print_after: set[str] | str | None = None  # "all" or names
    printer: Callable[[str], None] = print
    options: dict = field(default_factory=dict)
    log: list[PassRecord] = field(default_factory=list)

    def run(self, g: Graph) -> Graph:
        from ..ir.verify import verify

        for name in self.passes:
            if name not in PASSES:
                known = ", ".join(sorted(PASSES))
                raise TensorforgeError(f"unknown pass {name!r}; passes are: {known}")
            p = PASSES[name]
            before = len(g.nodes)
            t0 = time.perf_counter()
            g = p.fn(g, self.options)
            dt = time.perf_counter() - t0
            self.log.append(PassRecord(name, dt, before, len(g.nodes)))
            if self.verify:
                verify(g, where=f"pass {name}")
            if self.print_after == "all" or (isinstance(self.print_after, set) and name in self.print_after):
                self.printer(f"// ----- IR after {name} ({dt * 1e3:.2f} ms, {before} -> {len(g.nodes)} nodes)\n{g}\n")
        return g
