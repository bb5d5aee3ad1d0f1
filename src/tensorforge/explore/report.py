"""The explorer's report model: what one compiled build is, measured, gathered from its artifact and profile.

``build_report`` ties each kernel of the program to the graph nodes it implements (by the node labels the
lowering records on every kernel), to its kernel IR, LLVM IR and assembly (each kernel is one LLVM function,
cut out of the listings by symbol; outlined parallel bodies ``<kernel>.par`` go with their kernel), to the
loop analysis of its assembly (``asm.py``) and to its measured time against the machine's measured peak and
bandwidth (``runtime/peak.py``). Rendering (``html.py``) reads only this model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..codegen.emit import split_assembly
from ..ir.graph import Graph, Node
from ..runtime.artifact import Artifact
from ..runtime.peak import MachinePeak
from ..runtime.profile import KernelTime
from .asm import AsmAnalysis, analyze, arch_of, instruction_family
from .gather import Listings, gather


@dataclass
class MemberNode:
    """A graph node inside a kernel's group: where it came from and what it computes."""

    name: str
    op: str
    outputs: list[str]  # 'name: f32[1,64,56,56]'
    source: str = ""  # where the user wrote it (torch.export's stack trace; '' for ONNX: its name says it)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.op})"


@dataclass
class KernelInfo:
    index: int
    name: str
    labels: list[str]
    flops: int
    bytes: int
    seconds: float
    share: float  # of the run's total time
    gflops: float
    gbs: float
    pct_peak: float  # of the fp32 peak on the threads used
    pct_bw: float  # of the measured memory bandwidth (above 100: the data stayed in cache)
    node: int  # index of the top-level graph node it implements (-1: none found)
    members: list[MemberNode]
    kernel_ir: str
    llvm_ir: str
    asm: str
    analysis: AsmAnalysis
    alias_of: str | None = None  # structurally identical to this earlier kernel: runs its function
    family: str = "fp32"  # the instruction family whose peak pct_peak is of (runtime/peak.py FAMILIES)
    family_peak: float = 0.0  # that peak, GOP/s on the threads used
    family_note: str = ""  # why the fp32 peak stands in (the family's peak was not measured)

    @property
    def intensity(self) -> float | None:
        """Arithmetic intensity, flop per byte moved (None: no flops or no bytes)."""
        return self.flops / self.bytes if self.flops and self.bytes else None


@dataclass
class GraphNode:
    """A top-level node of the optimized graph: one box in the drawing (a fused group lists its members)."""

    index: int
    title: str
    op: str  # 'Fused' for a group
    kind: str  # the group's kind (loop / kernel / rows) or ''
    members: list[MemberNode]
    inputs: list[int]  # indexes of producer nodes (graph inputs: -1 - input number)
    kernels: list[str] = field(default_factory=list)


@dataclass
class PassStep:
    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    stats: dict
    graph_text: str | None = None  # the graph after the pass (None: not recorded for this build)


@dataclass
class ArenaBuffer:
    value: str
    offset: int
    nbytes: int
    first: int
    last: int


@dataclass
class Report:
    title: str
    model: str
    target: str
    arch: str
    threads: int
    peak: MachinePeak
    total_seconds: float
    repeat: int
    kernels: list[KernelInfo]
    nodes: list[GraphNode]
    graph_inputs: list[str]
    graph_outputs: list[str]
    passes: list[PassStep]
    arena_bytes: int
    arena: list[ArenaBuffer]
    metadata: dict
    graph_text: str
    notes: list[str] = field(default_factory=list)
    source_text: str | None = None  # the graph before the passes (None: not recorded for this build)

    @property
    def flops(self) -> int:
        return sum(k.flops for k in self.kernels)

    @property
    def peak_gflops(self) -> float:
        return self.peak.gflops(self.threads)

    @property
    def bandwidth(self) -> float:
        return self.peak.bandwidth(self.threads)

    @property
    def families(self) -> dict[str, float]:
        """The int8/bf16 peaks (GOP/s on the threads used) of the families the kernels run on."""
        return {k.family: k.family_peak for k in self.kernels if k.family != "fp32"}

    def kernel(self, name: str) -> KernelInfo:
        for k in self.kernels:
            if k.name == name:
                return k
        raise KeyError(f"no kernel {name!r} in report of {self.model}")


_DEFINE = re.compile(r'^define\b[^@]*@"?([\w.$-]+)"?\(')


def split_llvm(ir: str, names: list[str]) -> dict[str, str]:
    """Each kernel's LLVM IR function (with its outlined parallel bodies), cut out of the module by symbol."""
    wanted = set(names)
    out: dict[str, list[str]] = {}
    current = None
    for line in ir.splitlines():
        m = _DEFINE.match(line)
        if m:
            sym = m.group(1)
            base = sym.split(".")[0]
            current = sym if sym in wanted else base if base in wanted else None
        if current is not None:
            out.setdefault(current, []).append(line)
            if line == "}":
                current = None
    return {k: "\n".join(v) for k, v in out.items()}


def _member(n: Node) -> MemberNode:
    outs = [f"{v.name}: {v.type}" if v.type is not None else v.name for v in n.outputs]
    return MemberNode(n.name or n.outputs[0].name, n.op, outs, n.source)


def graph_nodes(g: Graph) -> list[GraphNode]:
    """The top-level nodes of ``g`` with their producers (edges through graph inputs and constants dropped)."""
    producer: dict[int, int] = {}
    inputs = {v.id: i for i, v in enumerate(g.inputs)}
    out = []
    for i, n in enumerate(g.nodes):
        body = n.attrs.get("body") or ()
        members = [_member(m) for m in body] if body else [_member(n)]
        srcs: list[int] = []
        for v in n.inputs:
            if v is None or v.is_const:
                continue
            j = producer.get(v.id, -1 - inputs[v.id] if v.id in inputs else None)
            if j is not None and j not in srcs:
                srcs.append(j)
        title = n.name or n.outputs[0].name
        out.append(GraphNode(i, title, n.op, str(n.attrs.get("kind", "")) if body else "", members, srcs))
        for v in n.outputs:
            producer[v.id] = i
    return out


def build_report(
    art: Artifact,
    rows: list[KernelTime],
    total: float,
    threads: int,
    peak: MachinePeak,
    repeat: int = 0,
    title: str | None = None,
    pass_graphs: list[str] | None = None,
    notes: list[str] | None = None,
    listings: Listings | None = None,
) -> Report:
    """The report of one build: ``rows``/``total`` from ``profile_kernels`` on ``threads`` threads.
    ``pass_graphs``: the graph's text before the passes, then after each pass of the artifact's pass log.
    ``listings``: the build's assembly and kernel IR (``gather.py``; made here when not given)."""
    prog = art.program
    names = [k.name for k in prog.kernels]
    listings = listings or gather(art)
    if pass_graphs is None:
        pass_graphs = listings.pass_graphs
    asm_parts = split_assembly(listings.assembly, names)
    llvm_parts: dict[str, str] = {}
    for part in art.llvm_parts:  # each module on its own: no linking into one module
        llvm_parts.update(split_llvm(part, names))
    # kernel IR of the kernels with their own code (an alias's panel links to its twin)
    kir = listings.kernel_ir
    arch = arch_of(art.target.triple)
    g = art.graph
    nodes = graph_nodes(g)
    by_label: dict[str, int] = {}
    for gn in nodes:
        for m in gn.members:
            by_label.setdefault(m.label, gn.index)
    pk, bw = peak.gflops(threads), peak.bandwidth(threads)
    times = {r.name: r for r in rows}
    analyses: dict[str, AsmAnalysis] = {}
    kernels = []
    for i, k in enumerate(prog.kernels):
        r = times.get(k.name)
        secs = r.seconds if r is not None else 0.0
        alias = art.aliases.get(k.name)
        code = alias or k.name
        asm = asm_parts.get(code, "")
        if code not in analyses:
            analyses[code] = analyze(asm, arch)
        idx = next((by_label[lab] for lab in k.labels if lab in by_label), -1)
        members = [
            m for lab in k.labels for m in (nodes[by_label[lab]].members if lab in by_label else []) if m.label == lab
        ]
        if idx >= 0:
            nodes[idx].kernels.append(k.name)
        gf = k.flops / secs / 1e9 if secs > 0 else 0.0
        gb = k.bytes / secs / 1e9 if secs > 0 else 0.0
        fam = instruction_family(asm)
        fpk = peak.family_gops(fam, threads)
        fnote = ""
        if fpk is None:  # a family the measuring host lacks (a cross build): against the fp32 peak
            fnote, fam, fpk = f"{fam} peak not measured on this machine: % of the fp32 peak", "fp32", pk
        kernels.append(
            KernelInfo(
                i,
                k.name,
                list(k.labels),
                int(k.flops),
                int(k.bytes),
                secs,
                secs / total if total > 0 else 0.0,
                gf,
                gb,
                100 * gf / fpk if fpk else 0.0,
                100 * gb / bw if bw else 0.0,
                idx,
                members,
                kir[i],
                llvm_parts.get(code, ""),
                asm,
                analyses[code],
                alias,
                fam,
                fpk,
                fnote,
            )
        )
    meta = art.metadata
    passes = []
    for j, p in enumerate(meta.get("passes", [])):
        text = pass_graphs[j + 1] if pass_graphs is not None and j + 1 < len(pass_graphs) else None
        passes.append(PassStep(p["name"], p["seconds"], p["nodes_before"], p["nodes_after"], dict(p["stats"]), text))
    arena = [
        ArenaBuffer(b.value, b.index, b.nbytes, b.first, b.last)
        for b in prog.buffers.values()
        if b.kind.value == "arena" and b.first >= 0
    ]
    arena.sort(key=lambda b: (b.first, b.offset))
    all_notes = list(meta.get("notes", [])) + list(notes or [])
    return Report(
        title or art.name,
        art.name,
        art.target.describe(),
        arch,
        threads,
        peak,
        total,
        repeat,
        kernels,
        nodes,
        [v.name for v in g.inputs],
        [v.name for v in g.outputs],
        passes,
        prog.arena_bytes,
        arena,
        dict(meta),
        art.graph_text,
        all_notes,
        pass_graphs[0] if pass_graphs else None,
    )


__all__ = [
    "ArenaBuffer",
    "GraphNode",
    "KernelInfo",
    "MemberNode",
    "PassStep",
    "Report",
    "build_report",
    "graph_nodes",
    "split_llvm",
]
