"""The ``Artifact``: everything compiling a model produced, in one object the runtime executes.

The compiler's stages (``compiler/pipeline.py``) end in an ``Artifact``: the optimized graph, the lowered
program (kernels in execution order, the buffer tables, constants, arena size), the LLVM IR, the native
object code, the target and the compile metadata (pass log, timings, counts). An ``Executable``
(``runtime/executable.py``) is built from it; the compile cache stores it; ``save``/``load`` write and read
it as one file.

File format (little endian): ``MAGIC``, a u64 header length, the sha256 of the header, the header (JSON),
then the blobs, each 64-byte aligned, with their offset, size and CRC-32 listed in the header. Nothing in
the file is executed by Python (no pickle): a damaged or foreign file is detected (magic, format,
checksums, sizes) and raises ``ArtifactError`` before any of its code is loaded. (Checksums detect damage —
a truncated write, a flipped bit, another model's file in the slot — not tampering: whoever can write the
cache directory can write a matching checksum, as with any compiler cache. CRC-32 checks the ~100 MB of a
ResNet-50's weights several times faster than a cryptographic hash.) The object code, the
constants and the constant outputs are read and verified at load; the texts (LLVM IR, kernel IR) and the
graph's constants only when they are asked for, through the file handle opened at load (a file replaced
in the cache meanwhile is not read).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import mmap
import os
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..codegen.targets import Target
from ..errors import TensorforgeError
from ..ir.dtype import DType
from ..ir.graph import Graph
from ..lower.checks import RangeCheck
from ..lower.kir import Buffer, Kernel, Seq
from ..lower.program import BufInfo, BufKind, Program
from ..util.files import atomic_write
from ..util.forksafe import renew_in_child

MAGIC = b"TENSORFORGE\x00"
FORMAT = 3  # 2: the entry returns a status, the program carries its run-time checks; 3: kernel parameters
ALIGN = 64


class ArtifactError(TensorforgeError):
    """A saved artifact is damaged, truncated, of another format, or not the one asked for."""


@dataclass(eq=False)
class KernelSummary(Kernel):
    """A kernel of a loaded artifact: name, parameters, labels and counts without the loop body, printing as
    the kernel IR it was compiled from (the body is not stored: the code runs from the object)."""

    text_of: Callable[[], str] | None = None

    def __str__(self) -> str:
        return self.text_of() if self.text_of is not None else super().__str__()


class Artifact:
    """A compiled model (see the module docstring). ``object`` is None when compilation stopped at LLVM IR
    (cross targets, assembly listings). ``graph`` and ``llvm_ir`` of a loaded artifact are read from its
    file on first use."""

    def __init__(self, name: str, target: Target, program: Program, llvm_ir: str | list[str] | None,
                 object: bytes | None,
                 aliases: dict[str, str] | None = None, metadata: dict | None = None, graph: Graph | None = None,
                 graph_text: str | None = None):  # fmt: skip
        self.name = name
        self.target = target
        self.program = program
        self.object = object
        self.aliases = dict(aliases or {})  # kernel -> the identical kernel whose code it runs
        self.metadata = dict(metadata or {})
        self.graph_text = graph_text if graph_text is not None else (str(graph) if graph is not None else "")
        self._graph = graph
        self._llvm_parts = [llvm_ir] if isinstance(llvm_ir, str) else llvm_ir  # see codegen/parallel.py
        self._llvm_ir: str | None = None
        self._reader: _Reader | None = None
        self._asm: str | None = None

    @property
    def graph(self) -> Graph:
        """The optimized graph (rebuilt from its text and constants for a loaded artifact)."""
        if self._graph is None:
            if self._reader is None:
                raise ArtifactError(f"artifact '{self.name}' holds no graph")
            self._graph = self._reader.graph(self.graph_text)
        return self._graph

    @property
    def llvm_parts(self) -> list[str]:
        """The LLVM IR before optimization, as the modules it was built in (one, or an entry module and parts
        built side by side: ``codegen/parallel.py``)."""
        if self._llvm_parts is None:
            self._llvm_parts = self._reader.text("llvm_ir").split("\0") if self._reader is not None else [""]
        return self._llvm_parts

    @property
    def llvm_ir(self) -> str:
        """The module's LLVM IR before optimization (its parts linked into one module on first use)."""
        if self._llvm_ir is None:
            from ..codegen.emit import link_parts

            self._llvm_ir = link_parts(self.llvm_parts)
        return self._llvm_ir

    def assembly(self) -> str:
        """The module's assembly for its target (emitted once, on first use)."""
        if self._asm is None:
            from ..codegen.emit import assembly_of

            self._asm = assembly_of(self.llvm_ir, self.target)
        return self._asm

    def kernel_ir(self) -> str:
        return "\n\n".join(str(k) for k in self.program.kernels)

    # -- files -----------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, key: str = "") -> None:
        """Write the artifact to ``path`` atomically (a reader never sees half a file)."""
        blobs: list[tuple[str, bytes | memoryview]] = []
        consts = []
        for i, c in enumerate(self.program.consts):
            c = _contiguous(c)
            blobs.append((f"const/{i}", _bytes_of(c)))
            consts.append({"dtype": c.dtype.name, "shape": list(c.shape)})
        const_outputs = {}
        for i, c in self.program.const_outputs.items():
            c = _contiguous(c)
            blobs.append((f"const_output/{i}", _bytes_of(c)))
            const_outputs[str(i)] = {"dtype": c.dtype.name, "shape": list(c.shape)}
        if self.object is not None:
            blobs.append(("object", self.object))
        texts = {"llvm_ir": "\0".join(self.llvm_parts), "kernel_ir": "\0".join(str(k) for k in self.program.kernels),
                 "graph": self.graph_text}  # fmt: skip
        for name, text in texts.items():
            blobs.append((f"text/{name}", zlib.compress(text.encode(), 1)))
        gconsts = []
        if self._graph is not None or self._reader is not None:
            for i, v in enumerate(_graph_constants(self.graph)):
                c = _contiguous(v.const)
                blobs.append((f"graph_const/{i}", _bytes_of(c)))
                gconsts.append({"name": v.name, "dtype": c.dtype.name, "shape": list(c.shape)})
        table, offset = {}, 0
        for name, data in blobs:
            offset = _aligned(offset)
            table[name] = [offset, len(data), zlib.crc32(data)]
            offset += len(data)
        header = {
            "format": FORMAT, "key": key, "name": self.name, "target": dataclasses.asdict(self.target),
            "program": _program_header(self.program, consts, const_outputs), "aliases": self.aliases,
            "metadata": self.metadata, "graph_consts": gconsts, "has_object": self.object is not None,
            "blobs": table,
        }  # fmt: skip
        head = json.dumps(header, separators=(",", ":")).encode()
        out = io.BytesIO()
        out.write(MAGIC + struct.pack("<Q", len(head)) + hashlib.sha256(head).digest() + head)
        start = _aligned(out.tell())
        for name, data in blobs:
            out.write(b"\0" * (start + table[name][0] - out.tell()))
            out.write(data)
        atomic_write(os.fspath(path), out.getbuffer())

    @staticmethod
    def load(path: str | os.PathLike, key: str | None = None) -> Artifact:
        """Read and verify an artifact; ``key``: the cache key it must have been saved under."""
        return _Reader(os.fspath(path)).artifact(key)


def _contiguous(a) -> np.ndarray:
    """``a`` as a C-contiguous array of the same shape (``np.ascontiguousarray`` makes 0-d arrays 1-d)."""
    a = np.asarray(a)
    return a if a.flags.c_contiguous else a.copy(order="C")


def _buffer(n: int) -> np.ndarray:
    """``n`` writable bytes, 64-byte aligned, to read blobs into. Large buffers are anonymous memory with
    transparent huge pages asked for: a few hundred 2 MB page faults instead of tens of thousands of 4 KB
    ones make reading 100 MB of weights fast and, above all, steady (measured 45 ms every time, against
    30-150 ms)."""
    if n >= 1 << 22 and hasattr(mmap, "MADV_HUGEPAGE"):
        mm = mmap.mmap(-1, n)
        try:
            mm.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
        return np.frombuffer(mm, np.uint8)
    raw = np.empty(n + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + n]


def _bytes_of(a: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array without copying them (empty arrays included)."""
    return memoryview(a.reshape(-1).view(np.uint8))


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _graph_constants(g: Graph) -> list:
    """Every constant of the graph, fused groups' members included, each once (by value identity)."""
    seen: dict[int, object] = {}
    for n in g.nodes:
        for m in n.attrs.get("body") or (n,):
            for v in m.inputs:
                if v is not None and v.is_const:
                    seen.setdefault(v.id, v)
    return list(seen.values())


def _program_header(p: Program, consts: list, const_outputs: dict) -> dict:
    return {
        "name": p.name,
        "kernels": [{"name": k.name, "labels": list(k.labels), "flops": int(k.flops), "bytes": int(k.bytes),
                     "params": [[b.name, b.dtype.short, b.numel] for b in k.params]}
                    for k in p.kernels],  # fmt: skip
        "kernel_args": [[list(a) for a in args] for args in p.kernel_args],
        "consts": consts,
        "const_outputs": const_outputs,
        "arena_bytes": p.arena_bytes,
        "intermediate_bytes": p.intermediate_bytes,
        "inputs": [[n, dt.short, list(s)] for n, dt, s in p.inputs],
        "outputs": [[n, dt.short, list(s)] for n, dt, s in p.outputs],
        "buffers": [[b.kind.value, b.index, b.nbytes, b.first, b.last, b.value] for b in p.buffers.values()],
        "state": [[o, i] for o, i in p.state.items()],
        "peak_bytes": p.peak_bytes,
        "in_place": p.in_place,
        "checks": [c.to_json() for c in p.checks],
        "check_kernels": p.check_kernels,
        "status_offset": p.status_offset,
    }


class _Reader:
    """Reads one artifact file: the header and the eager blobs at once, the rest on demand."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.f = open(path, "rb")  # noqa: SIM115  (kept open: lazy blobs are read from this inode)
        except OSError as e:
            raise ArtifactError(f"cannot open artifact {path!r}: {e}") from None
        self.lock = threading.Lock()
        renew_in_child(self, "lock")
        self.kernel_texts: list[str] | None = None
        size = os.fstat(self.f.fileno()).st_size
        fixed = len(MAGIC) + 8 + 32
        pre = self.f.read(fixed)
        if len(pre) < fixed or pre[: len(MAGIC)] != MAGIC:
            raise ArtifactError(f"{path!r} is not a tensorforge artifact (or is truncated)")
        (hlen,) = struct.unpack("<Q", pre[len(MAGIC) : len(MAGIC) + 8])
        if hlen > size - fixed:
            raise ArtifactError(f"artifact {path!r} is truncated (header of {hlen} bytes, file of {size})")
        head = self.f.read(hlen)
        if hashlib.sha256(head).digest() != pre[-32:]:
            raise ArtifactError(f"artifact {path!r} is damaged (header checksum mismatch)")
        try:
            self.header = json.loads(head)
        except ValueError as e:
            raise ArtifactError(f"artifact {path!r} has an unreadable header: {e}") from None
        if self.header.get("format") != FORMAT:
            raise ArtifactError(f"artifact {path!r} has format {self.header.get('format')}, this tensorforge "
                                f"reads format {FORMAT}")  # fmt: skip
        self.start = _aligned(fixed + hlen)
        table = self.header["blobs"]
        end = max((self.start + off + n for off, n, _ in table.values()), default=self.start)
        if end > size:
            raise ArtifactError(f"artifact {path!r} is truncated ({size} of {end} bytes)")

    def read(self, names: list[str]) -> dict[str, memoryview]:
        """Several blobs, verified, read with one read call (the eager blobs are stored side by side)."""
        table = self.header["blobs"]
        if not names:
            return {}
        lo = min(table[n][0] for n in names)
        hi = max(table[n][0] + table[n][1] for n in names)
        buf = _buffer(hi - lo)
        with self.lock:
            self.f.seek(self.start + lo)
            got = self.f.readinto(memoryview(buf))
        if got != hi - lo:
            raise ArtifactError(f"artifact {self.path!r} is truncated (a read came up short)")
        view = memoryview(buf)
        out = {}
        for n in names:
            off, size, crc = table[n]
            out[n] = view[off - lo : off - lo + size]
            if zlib.crc32(out[n]) != crc:
                raise ArtifactError(f"artifact {self.path!r} is damaged (blob {n} fails its checksum)")
        return out

    def blob(self, name: str) -> memoryview:
        return self.read([name])[name]

    def array(self, data: memoryview, spec: dict) -> np.ndarray:
        return np.frombuffer(data, dtype=np.dtype(spec["dtype"])).reshape(spec["shape"])

    def text(self, name: str) -> str:
        return zlib.decompress(self.blob(f"text/{name}")).decode()

    def artifact(self, key: str | None) -> Artifact:
        h = self.header
        if key is not None and h.get("key") != key:
            raise ArtifactError(f"artifact {self.path!r} was saved under another key (a foreign file in the cache)")
        try:
            target = Target(**h["target"])
            program = self.program(h["program"], target)
            obj = bytes(self.blob("object")) if h["has_object"] else None
            art = Artifact(h["name"], target, program, None, obj, h["aliases"], h["metadata"],
                           graph_text=self.text("graph"))  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"artifact {self.path!r} has a malformed header: {type(e).__name__}: {e}") from None
        art._reader = self
        return art

    def kernel_text(self, i: int) -> str:
        if self.kernel_texts is None:
            self.kernel_texts = self.text("kernel_ir").split("\0")
        return self.kernel_texts[i]

    def program(self, p: dict, target: Target) -> Program:
        kernels = [KernelSummary(k["name"], [Buffer(n, DType.parse(dt), numel) for n, dt, numel in k["params"]],
                                 Seq(()), list(k["labels"]), k["flops"], k["bytes"],
                                 text_of=lambda i=i: self.kernel_text(i))
                   for i, k in enumerate(p["kernels"])]  # fmt: skip
        names = [f"const/{i}" for i in range(len(p["consts"]))] + [f"const_output/{i}" for i in p["const_outputs"]]
        blobs = self.read(names)
        consts = [self.array(blobs[f"const/{i}"], spec) for i, spec in enumerate(p["consts"])]
        const_outputs = {int(i): self.array(blobs[f"const_output/{i}"], spec) for i, spec in p["const_outputs"].items()}
        buffers = {i: BufInfo(BufKind(kind), index, nbytes, first, last, value)
                   for i, (kind, index, nbytes, first, last, value) in enumerate(p["buffers"])}  # fmt: skip
        args = [[tuple(a) for a in k] for k in p["kernel_args"]]
        state = {int(o): int(i) for o, i in p["state"]}
        return Program(p["name"], target, kernels, args, consts, p["arena_bytes"], p["intermediate_bytes"],
                       _specs(p["inputs"]), _specs(p["outputs"]), buffers, const_outputs, state, p["peak_bytes"],
                       p["in_place"], [RangeCheck.from_json(c) for c in p["checks"]], list(p["check_kernels"]),
                       int(p["status_offset"]))  # fmt: skip

    def graph(self, text: str) -> Graph:
        from ..ir.parser import parse_graph

        specs = self.header["graph_consts"]
        blobs = self.read([f"graph_const/{i}" for i in range(len(specs))])
        consts = {spec["name"]: self.array(blobs[f"graph_const/{i}"], spec) for i, spec in enumerate(specs)}
        return parse_graph(text, consts=consts)


def _specs(items: list) -> list[tuple[str, DType, tuple[int, ...]]]:
    return [(n, DType.parse(dt), tuple(int(d) for d in s)) for n, dt, s in items]


__all__ = ["Artifact", "ArtifactError", "KernelSummary"]
