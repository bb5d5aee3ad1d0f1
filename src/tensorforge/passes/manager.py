"""Pass manager: named graph-to-graph passes, run in order, timed, optionally verified and printed.

    pm = PassManager(["fold", "simplify", "fuse"], verify=True, print_after={"fuse"})
    graph = pm.run(graph)

A pass is ``fn(graph, options) -> graph`` (or ``-> (graph, stats)``, where ``stats`` is a small dict of
numbers the pass wants to report, such as how often each rewrite rule fired). It declares the passes it
``requires`` to have run before it; the manager refuses a pipeline that breaks that order. ``-O`` levels
map to pass lists in ``pipeline.py``; ``--passes=-fuse`` removes a pass by name. With ``verify`` (or the
environment variable ``TENSORFORGE_DEBUG=1``) the IR verifier runs after every pass and names the pass
that broke the graph.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..errors import TensorforgeError
from ..ir.graph import Graph

PassFn = Callable[[Graph, dict], "Graph | tuple[Graph, dict]"]


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


def check_pipeline(passes: list[str]) -> None:
    """Every pass must be known, and run after the passes it requires."""
    for i, name in enumerate(passes):
        if name not in PASSES:
            known = ", ".join(sorted(PASSES))
            raise TensorforgeError(f"unknown pass {name!r}; passes are: {known}")
        for req in PASSES[name].requires:
            if req not in passes[:i]:
                raise TensorforgeError(
                    f"pass {name!r} requires pass {req!r} to run before it; pipeline is {', '.join(passes)} "
                    f"(switch both off, e.g. --passes=-{req},-{name})"
                )


def debug_mode() -> bool:
    return os.environ.get("TENSORFORGE_DEBUG", "") not in ("", "0")


@dataclass(frozen=True)
class Change:
    """A before -> after count in a pass's stats (e.g. kernels 174 -> 56)."""

    before: int
    after: int

    def __str__(self) -> str:
        return f"{self.before} -> {self.after}"


@dataclass
class PassRecord:
    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    stats: dict = field(default_factory=dict)


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

        check_pipeline(self.passes)
        if isinstance(self.print_after, set):
            unknown = sorted(self.print_after - set(PASSES))
            if unknown:
                raise TensorforgeError(f"--print-ir-after: unknown pass(es) {', '.join(unknown)}; passes are: "
                                       f"{', '.join(sorted(PASSES))}")  # fmt: skip
        check = self.verify or debug_mode()
        for name in self.passes:
            p = PASSES[name]
            before = len(g.nodes)
            t0 = time.perf_counter()
            res = p.fn(g, self.options)
            dt = time.perf_counter() - t0
            g, stats = res if isinstance(res, tuple) else (res, {})
            self.log.append(PassRecord(name, dt, before, len(g.nodes), dict(stats)))
            if check:
                verify(g, where=f"pass {name}")
            if self.print_after == "all" or (isinstance(self.print_after, set) and name in self.print_after):
                extra = "".join(f", {k} {v}" for k, v in stats.items())
                self.printer(f"// ----- IR after {name} ({dt * 1e3:.2f} ms, {before} -> {len(g.nodes)} nodes"
                             f"{extra})\n{g}\n")  # fmt: skip
        return g
