"""Per-kernel profile of a compiled model: time, GFLOP/s and % of the machine's peak.

Every module has a second entry, ``tf_run_profile``, that runs the same kernels and stores a
CLOCK_MONOTONIC timestamp before each kernel and after the last (one native call, no Python between
kernels). ``Executable.profile_kernels`` runs it ``repeat`` times and keeps per kernel the median time
(``CompiledModel.profile(feeds)``, ``TrainingStep.profile(x, y)``); ``format_profile``'s table lists
kernels by time with their FLOP rate against the fp32 peak (``runtime/peak.py``) and their traffic
(bytes of their inputs and outputs) against the measured memory bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass

from .peak import MachinePeak, machine_peak


@dataclass
class KernelTime:
    name: str
    labels: list[str]
    seconds: float  # median over the runs
    flops: int
    bytes: int

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def gbs(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


def format_profile(rows: list[KernelTime], total: float, threads: int, peak: MachinePeak | None = None,
                   top: int | None = None) -> str:  # fmt: skip
    """The kernels sorted by time: share of the run, GFLOP/s and % of fp32 peak, GB/s and % of bandwidth."""
    peak = peak or machine_peak()
    pk, bw = peak.gflops(threads), peak.bandwidth(threads)
    flops = sum(r.flops for r in rows)
    rate = flops / total / 1e9 if total else 0.0
    head = (f"{len(rows)} kernels, {_fmt_t(total)} per run, {flops / 1e6:,.1f} MFLOP -> {rate:.1f} GFLOP/s = "
            f"{100 * rate / pk:.1f}% of the {pk:.0f} GFLOP/s fp32 peak on {threads} thread(s)\n"
            f"GB/s: bytes of a kernel's inputs and outputs per second; %dram: of the measured memory bandwidth "
            f"({bw:.1f} GB/s), above 100% when they stay in cache")  # fmt: skip
    cols = f"{'time':>10} {'%':>5} {'GFLOP/s':>8} {'%peak':>6} {'GB/s':>7} {'%dram':>6}  kernel: graph nodes"
    lines = [head, "", cols, "-" * 100]
    shown = sorted(rows, key=lambda r: -r.seconds)
    for r in shown[:top] if top else shown:
        share = 100 * r.seconds / total if total else 0
        gf = f"{r.gflops:8.1f} {100 * r.gflops / pk:5.1f}%" if r.flops else f"{'-':>8} {'-':>6}"
        gb = f"{r.gbs:7.1f} {100 * r.gbs / bw:5.0f}%" if r.bytes and bw else f"{'-':>7} {'-':>6}"
        lines.append(f"{_fmt_t(r.seconds):>10} {share:5.1f} {gf} {gb}  {r.name}: {'; '.join(r.labels)}")
    if top and len(shown) > top:
        rest = sum(r.seconds for r in shown[top:])
        lines.append(
            f"{_fmt_t(rest):>10} {100 * rest / total if total else 0:5.1f}  ... {len(shown) - top} more kernels"
        )
    return "\n".join(lines)


def _fmt_t(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    return f"{s * 1e3:.3f} ms"


__all__ = ["KernelTime", "format_profile"]
