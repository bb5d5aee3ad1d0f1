"""The listings of a report, made once and side by side: each kernel's kernel IR, the assembly of every LLVM
module the build made, and the graph after each pass.

A compiled program's LLVM IR is kept as the modules the build made side by side (``codegen/parallel.py``);
their assembly is emitted module by module in forked worker processes (llvmlite lets one thread into LLVM at a
time), together with the kernel IR texts (the printer is pure Python) and, for a model given as a file or proto,
one more import and pass run that prints the graph after each pass. A module's assembly is what its object
was made from (the same optimization and code generation, without the JIT's code model).

The results are kept in the compile cache directory (``explore-<digest>.json.gz``, the newest ``KEEP``), keyed by
the compiler's sources, the target, the LLVM IR, the optimized graph and (for pass graphs) the model and its
options: a second report of the same build reads them instead of emitting them again.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
from dataclasses import dataclass

import onnx

from ..codegen.emit import emit_assembly, llvm_lock, parse_and_optimize, target_machine
from ..codegen.parallel import fork_map
from ..codegen.targets import get_target
from ..compiler import cache
from ..compiler.pipeline import Build, Options
from ..runtime.artifact import Artifact
from ..util.files import atomic_write

KEEP = 16  # listings files kept in the cache directory (the oldest go first)
_PREFIX, _SUFFIX = "explore-", ".json.gz"


@dataclass
class Listings:
    assembly: str  # every module's assembly, one after another
    kernel_ir: list[str]  # per kernel of the program ('' for an alias: it runs its twin's code)
    pass_graphs: list[str] | None  # the graph before the passes, then after each pass (None: not asked)
    cached: bool = False  # read from the cache directory


def pass_snapshots(model, options: Options) -> list[str]:
    """The graph's text before the passes, then after each pass (the import and passes run once more)."""
    texts: list[str] = []
    opts = Options(
        opt_level=options.opt_level,
        passes=options.passes,
        input_shapes=options.input_shapes,
        lowering=options.lowering,
        print_ir_after="all",
        printer=lambda s: texts.append(s.split("\n", 1)[1].rstrip("\n")),
    )
    b = Build(model, get_target(None), opts)
    b.run("specialize")
    source = str(b.graph)
    b.run("optimize")
    return [source, *texts]


def _key(art: Artifact, model, options: Options | None) -> str | None:
    h = hashlib.sha256(f"{cache.compiler_fingerprint()}\0{art.target.describe()}\0".encode())
    for part in art.llvm_parts:
        h.update(part.encode())
        h.update(b"\0")
    h.update(art.graph_text.encode())
    h.update(repr(sorted(art.aliases.items())).encode())
    if model is not None:
        digest = _model_digest(model)
        if digest is None:
            return None
        h.update(f"\0{digest}\0{options.opt_level}\0{options.passes}\0{options.input_shapes}".encode())
        h.update(repr(options.lowering).encode())
    return h.hexdigest()[:40]


def _model_digest(model) -> str | None:
    """What the pass graphs depend on: an ONNX proto's nodes, inputs, outputs and initializer names and
    types with the values of the small ones (shapes, axes; hashing every weight of a big model takes a
    second), else the compile cache's digest."""
    if not isinstance(model, onnx.ModelProto):
        return cache.model_digest(model)
    g = model.graph
    h = hashlib.sha256(b"onnx-structure")
    for op in model.opset_import:
        h.update(op.SerializeToString())
    for seq in (g.node, g.input, g.output, g.value_info):
        for item in seq:
            h.update(item.SerializeToString())
    for t in g.initializer:
        small = t.raw_data if len(t.raw_data) <= 256 else b""
        h.update(f"{t.name} {t.data_type} {list(t.dims)} {len(t.raw_data)}".encode() + small)
        if not t.raw_data and math.prod(t.dims) <= 64:  # values in typed fields
            h.update(t.SerializeToString())
    return h.hexdigest()


def _load(path: str) -> Listings | None:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            d = json.load(f)
        os.utime(path)  # recently used
        return Listings(d["assembly"], d["kernel_ir"], d["pass_graphs"], cached=True)
    except (OSError, ValueError, KeyError, EOFError):
        return None


def _store(d: str, path: str, lst: Listings) -> None:
    data = {"assembly": lst.assembly, "kernel_ir": lst.kernel_ir, "pass_graphs": lst.pass_graphs}
    try:
        atomic_write(path, gzip.compress(json.dumps(data).encode(), compresslevel=3))
        old = sorted(
            (os.stat(os.path.join(d, n)).st_mtime, os.path.join(d, n))
            for n in os.listdir(d)
            if n.startswith(_PREFIX) and n.endswith(_SUFFIX)
        )
        for _, p in old[: max(0, len(old) - KEEP)]:
            os.unlink(p)
    except OSError:  # a cache that cannot be written is no error: the report is made all the same
        pass


def gather(art: Artifact, model=None, options: Options | None = None) -> Listings:
    """The listings of ``art``; with ``model`` (and its ``options``), also the graph after each pass."""
    d = cache.cache_dir()
    key = _key(art, model, options) if d is not None else None
    path = os.path.join(d, f"{_PREFIX}{key}{_SUFFIX}") if key is not None else None
    if path is not None and os.path.exists(path):
        got = _load(path)
        if got is not None:
            return got
    parts = art.llvm_parts
    kernels = art.program.kernels
    target = art.target
    # the longest tasks first: the pass run, the modules (the biggest first), then the kernels' IR
    tasks: list[tuple[str, int]] = [("passes", 0)] if model is not None else []
    tasks += [("asm", i) for i in sorted(range(len(parts)), key=lambda i: -len(parts[i]))]
    tasks += [("kir", i) for i, k in enumerate(kernels) if k.name not in art.aliases]

    def run(t: int):
        what, i = tasks[t]
        if what == "passes":
            return pass_snapshots(model, options)
        if what == "asm":
            tm = target_machine(target, jit=False)
            return emit_assembly(parse_and_optimize(parts[i], tm), tm)
        return str(kernels[i])

    results = dict(zip(tasks, fork_map(run, len(tasks), llvm_lock())))
    asm = "\n".join(results[("asm", i)] for i in range(len(parts)))
    kir = [results.get(("kir", i), "") for i in range(len(kernels))]
    lst = Listings(asm, kir, results.get(("passes", 0)))
    if path is not None:
        _store(d, path, lst)
    return lst


__all__ = ["Listings", "gather", "pass_snapshots"]
