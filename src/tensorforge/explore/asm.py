"""Reading a kernel's assembly: its loops (from back edges), the hot loop and what the hot loop does.

A loop is a backward branch: a jump at line ``j`` to a label defined at line ``i < j`` spans lines ``i..j``.
Loops nest by containment; an innermost loop contains no other. The **hot loop** is the innermost loop with
the most vector FMAs (with none anywhere: the innermost loop with the most vector instructions, else the
longest), which in a GEMM or convolution is the micro-kernel. Its summary says what a reader checks first:
the vector width, the FMAs per iteration, the loads and stores per FMA (a register-blocked micro-kernel loads
a fraction of a vector per FMA), and spills (stack slots written or read back inside the loop).

x86-64 (AT&T syntax, as LLVM prints it) and AArch64 listings are understood; other targets (PTX) get no
loop summary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LABEL = re.compile(r"^([.$\w][\w.$]*):")
# a branch to a label: x86 j<cc> / jmp, AArch64 b / b.<cc> / cbz / cbnz / tbz / tbnz
_X86_JUMP = re.compile(r"^\s+(j[a-z]+)\s+([.$\w][\w.$]*)\s*$")
_A64_JUMP = re.compile(r"^\s+(b(?:\.[a-z]+)?|cbn?z|tbn?z)\s+(?:[^,]+,\s*)*([.$\w][\w.$]*)\s*$")
_X86_VREG = re.compile(r"%([xyz])mm\d+")
_X86_FMA = re.compile(r"^v?f(?:n?madd|n?msub|maddsub|msubadd)(?:132|213|231)?[ps][sdh]|^vdpbf16ps|^vpdpbu?s?ds?")
_A64_FMA = re.compile(r"^(?:fmla|fmls|bfmmla|bfdot|sdot|udot|smmla|ummla)$")
_STACK_X86 = re.compile(r"\(%(?:rsp|rbp)\)|\(%(?:rsp|rbp),")
_X86_NO_MEMORY = {
    "lea",
    "leaq",
    "leal",
    "nop",
    "nopw",
    "nopl",
    "prefetcht0",
    "prefetcht1",
    "prefetcht2",
    "prefetchnta",
    "prefetchw",
}
_X86_COMPARE = re.compile(r"^(?:cmp|test|vcomis|vucomis|comis|ucomis|bt)")
_X86_RMW = re.compile(r"^(?:add|sub|and|or|xor|inc|dec|neg|not|shl|shr|sar|adc|sbb)[bwlq]?$")  # memory read too
WIDTH_OF = {"x": 128, "y": 256, "z": 512}


@dataclass
class Loop:
    start: int  # line index of the loop's label
    end: int  # line index of the backward branch
    label: str
    depth: int = 1  # 1: outermost
    inner: bool = True  # contains no other loop

    def contains(self, other: Loop) -> bool:
        return (
            self.start <= other.start and other.end <= self.end and (self.start, self.end) != (other.start, other.end)
        )


@dataclass
class LoopSummary:
    """What one loop's body does per iteration (counted on the listing, branches inside ignored)."""

    label: str
    start: int
    end: int
    depth: int
    instructions: int = 0
    fmas: int = 0  # vector FMA (and dot-product) instructions
    vector_bits: int = 0  # the widest vector register the FMAs (else any vector op) use
    vector_ops: int = 0
    loads: int = 0  # instructions that read memory (a folded memory operand counts)
    stores: int = 0
    spill_stores: int = 0  # stack slots written inside the loop
    spill_loads: int = 0  # stack slots read back inside the loop
    kinds: dict[str, int] = field(default_factory=dict)  # mnemonic -> count, most frequent first

    @property
    def loads_per_fma(self) -> float | None:
        return self.loads / self.fmas if self.fmas else None

    @property
    def stores_per_fma(self) -> float | None:
        return self.stores / self.fmas if self.fmas else None

    def describe(self) -> str:
        parts = [
            f"loop {self.label} (lines {self.start + 1}-{self.end + 1}, depth {self.depth}): "
            f"{self.instructions} instructions"
        ]
        if self.fmas:
            parts.append(f"{self.fmas} vector FMAs of {self.vector_bits} bits")
            parts.append(f"{self.loads / self.fmas:.2f} loads and {self.stores / self.fmas:.2f} stores per FMA")
        else:
            width = f" ({self.vector_bits}-bit)" if self.vector_bits else ""
            parts.append(f"{self.vector_ops} vector instructions{width}, {self.loads} loads, {self.stores} stores")
        spills = self.spill_stores + self.spill_loads
        parts.append(
            f"{spills} spill instructions ({self.spill_stores} stores, {self.spill_loads} reloads)"
            if spills
            else "no spills"
        )
        return "; ".join(parts)


@dataclass
class AsmAnalysis:
    lines: list[str]
    loops: list[Loop]
    hot: LoopSummary | None
    whole: LoopSummary  # the same counts over the whole listing


def _mnemonic(line: str) -> str | None:
    s = line.strip()
    if not s or s.startswith((".", "#", "//", ";")) or _LABEL.match(s):
        return None
    return s.split(None, 1)[0]


def find_loops(lines: list[str], arch: str = "x86_64") -> list[Loop]:
    """Backward branches as loops, with depth and innermost flags."""
    labels: dict[str, int] = {}
    for i, line in enumerate(lines):
        m = _LABEL.match(line)
        if m:
            labels[m.group(1)] = i
    jump = _A64_JUMP if arch == "aarch64" else _X86_JUMP
    spans: dict[int, Loop] = {}
    for j, line in enumerate(lines):
        m = jump.match(line)
        if not m:
            continue
        i = labels.get(m.group(2))
        if i is not None and i < j:
            loop = spans.get(i)
            if loop is None or j > loop.end:  # several back edges to one header: the loop spans to the last
                spans[i] = Loop(i, j, m.group(2))
    loops = sorted(spans.values(), key=lambda lp: (lp.start, -lp.end))
    for lp in loops:
        lp.depth = 1 + sum(1 for o in loops if o.contains(lp))
        lp.inner = not any(lp.contains(o) for o in loops)
    return loops


def _x86_counts(s: LoopSummary, mn: str, operands: str) -> None:
    regs = _X86_VREG.findall(operands)
    if regs:
        s.vector_ops += 1
    fma = bool(_X86_FMA.match(mn))
    if fma:
        s.fmas += 1
    if regs and (fma or not s.fmas):
        s.vector_bits = max(s.vector_bits, max(WIDTH_OF[r] for r in regs))
    if mn in _X86_NO_MEMORY or "(" not in operands:
        return
    # AT&T order: sources first, the destination last
    ops = [o.strip() for o in re.split(r",(?![^(]*\))", operands)]
    stack = bool(_STACK_X86.search(operands))
    dest_mem = "(" in ops[-1] and not _X86_COMPARE.match(mn)
    if dest_mem:
        s.stores += 1
        s.spill_stores += stack
    if any("(" in o for o in ops[:-1]) or not dest_mem or _X86_RMW.match(mn):
        s.loads += 1
        s.spill_loads += stack


_A64_VREG = re.compile(r"\bv\d+\.(\d+)([bhsd])|\bq\d+\b|\bz\d+\.")


def _a64_counts(s: LoopSummary, mn: str, operands: str) -> None:
    regs = _A64_VREG.findall(operands)
    if regs:
        s.vector_ops += 1
        s.vector_bits = max(s.vector_bits, 128)
    if _A64_FMA.match(mn):
        s.fmas += 1
    stack = "[sp" in operands
    if mn.startswith(("ldr", "ldp", "ld1", "ld2", "ld3", "ld4", "ldur")):
        s.loads += 1
        s.spill_loads += stack
    elif mn.startswith(("str", "stp", "st1", "st2", "st3", "st4", "stur")):
        s.stores += 1
        s.spill_stores += stack


def summarize(
    lines: list[str], start: int, end: int, label: str = "", depth: int = 0, arch: str = "x86_64"
) -> LoopSummary:
    """Counts over ``lines[start..end]`` (inclusive)."""
    s = LoopSummary(label, start, end, depth)
    count = _a64_counts if arch == "aarch64" else _x86_counts
    kinds: dict[str, int] = {}
    for line in lines[start : end + 1]:
        mn = _mnemonic(line)
        if mn is None:
            continue
        s.instructions += 1
        kinds[mn] = kinds.get(mn, 0) + 1
        count(s, mn, line.strip()[len(mn) :])
    s.kinds = dict(sorted(kinds.items(), key=lambda kv: -kv[1]))
    return s


def analyze(listing: str, arch: str = "x86_64") -> AsmAnalysis:
    """Loops, the hot loop and whole-listing counts of one kernel's assembly."""
    lines = listing.splitlines()
    if arch not in ("x86_64", "aarch64"):
        return AsmAnalysis(lines, [], None, LoopSummary("", 0, max(0, len(lines) - 1), 0))
    loops = find_loops(lines, arch)
    inner = [summarize(lines, lp.start, lp.end, lp.label, lp.depth, arch) for lp in loops if lp.inner]
    hot = None
    if inner:
        hot = max(inner, key=lambda s: (s.fmas, s.vector_ops, s.instructions))
    return AsmAnalysis(lines, loops, hot, summarize(lines, 0, len(lines) - 1, "", 0, arch))


def arch_of(triple: str) -> str:
    """The listing dialect of a target triple."""
    if triple.startswith(("aarch64", "arm64")):
        return "aarch64"
    if triple.startswith(("x86_64", "i686", "i386")):
        return "x86_64"
    return "other"


# the int8/bf16 instruction families of ``runtime/peak.py`` (FAMILIES), the strongest first: a kernel that
# issues one of these instructions is measured against that family's peak instead of the fp32 FMA peak
_FAMILY_RULES = [
    ("int8-amx", re.compile(r"^\s*tdpb[su][su]d\b", re.M)),
    ("bf16-amx", re.compile(r"^\s*tdpbf16ps\b", re.M)),
    ("int8-vnni512", re.compile(r"^\s*(?:\{evex\}\s*)?vpdpbus?ds?\b.*%zmm", re.M)),
    ("int8-vnni256", re.compile(r"^\s*(?:\{vex\}\s*)?vpdpbus?ds?\b.*%[yx]mm", re.M)),
    ("bf16-avx512", re.compile(r"^\s*vdpbf16ps\b", re.M)),
]


def instruction_family(listing: str) -> str:
    """The peak family a kernel's assembly runs on: ``int8-amx``, ``bf16-amx``, ``int8-vnni512``,
    ``int8-vnni256``, ``bf16-avx512`` (the first whose instruction appears), else ``fp32``."""
    for name, rule in _FAMILY_RULES:
        if rule.search(listing):
            return name
    return "fp32"


__all__ = [
    "AsmAnalysis",
    "Loop",
    "LoopSummary",
    "analyze",
    "arch_of",
    "find_loops",
    "instruction_family",
    "summarize",
]
