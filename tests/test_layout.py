"""The shape of the code, kept: dependencies between stage folders go one way, the runtime never reaches
back into the compiler, and no source file grows past a size a reader can hold."""

from __future__ import annotations

import ast
import os
import sys
from collections import defaultdict

import pytest

SRC = os.path.join(os.path.dirname(__file__), "..", "src")
PKG = os.path.join(SRC, "tensorforge")
# stages the runtime must not import: it executes artifacts; whoever recompiles hands it a function
ABOVE_RUNTIME = {"compiler", "frontends", "passes", "autodiff", "train", "cli"}
MAX_LINES = 700


def _modules() -> dict[str, str]:
    out = {}
    for d, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                mod = os.path.relpath(path, SRC)[:-3].replace(os.sep, ".")
                out[mod[: -len(".__init__")] if mod.endswith(".__init__") else mod] = path
    return out


def _imports(mods: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the tensorforge modules it imports (anywhere in the file, lazy imports included)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for mod, path in mods.items():
        pkg = mod if path.endswith("__init__.py") else mod.rsplit(".", 1)[0]
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
                target = ".".join([*base, node.module] if node.module else base)
                names = [target, *(f"{target}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                if name and name != mod:
                    edges[mod].add(name)
    return edges


def _stage(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _sccs(nodes, edges) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(nodes)))
    try:
        for v in nodes:
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return out


MODS = _modules()
EDGES = _imports(MODS)


def test_no_import_cycle_spans_two_folders():
    cross = [sorted(c) for c in _sccs(list(MODS), EDGES) if len({_stage(m) for m in c} - {"__init__"}) > 1]
    assert not cross, f"import cycles across stage folders: {cross}"


@pytest.mark.parametrize("mod", sorted(m for m in MODS if _stage(m) == "runtime"))
def test_runtime_imports_nothing_above_codegen(mod):
    bad = sorted(t for t in EDGES[mod] if _stage(t) in ABOVE_RUNTIME or _stage(t) == "__init__")
    assert not bad, f"{mod} imports {bad}"


def test_source_files_stay_small():
    big = {}
    for path in MODS.values():
        with open(path) as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            big[os.path.relpath(path, SRC)] = n
    assert not big, f"files over {MAX_LINES} lines: {big}"
