"""A dependency-free progress bar for long operations (compiles, training, benchmarks).

Draws on stderr only when it is a terminal (or when ``TENSORFORGE_PROGRESS=1``), so logs and tests stay
clean; ``TENSORFORGE_PROGRESS=0`` turns it off everywhere.
"""

from __future__ import annotations

import os
import sys
import time


def enabled(stream=None) -> bool:
    flag = os.environ.get("TENSORFORGE_PROGRESS")
    if flag is not None:
        return flag not in ("0", "", "false", "off")
    stream = stream or sys.stderr
    return hasattr(stream, "isatty") and stream.isatty()


class Progress:
    """``with Progress(total, "training") as p: ... p.update(1, loss=0.3)``."""

    def __init__(self, total: int | None, desc: str = "", stream=None, width: int = 28, min_interval: float = 0.1):
        self.total = total
        self.desc = desc
        self.stream = stream or sys.stderr
        self.width = width
        self.n = 0
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.min_interval = min_interval
        self.postfix = ""
        self.on = enabled(self.stream)

    def __enter__(self) -> Progress:
        self._draw(force=True)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        if postfix:
            self.postfix = "  ".join(f"{k}={_fmt(v)}" for k, v in postfix.items())
        self._draw()

    def set_description(self, desc: str) -> None:
        self.desc = desc
        self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        if not self.on:
            return
        now = time.perf_counter()
        if not force and now - self.last < self.min_interval and (self.total is None or self.n < self.total):
            return
        self.last = now
        el = now - self.t0
        if self.total:
            frac = min(1.0, self.n / self.total)
            fill = int(frac * self.width)
            bar = "█" * fill + "░" * (self.width - fill)
            eta = el / frac - el if frac > 0 else 0.0
            line = f"{self.desc} {bar} {self.n}/{self.total} [{el:.1f}s<{eta:.1f}s] {self.postfix}"
        else:
            line = f"{self.desc} {self.n} [{el:.1f}s] {self.postfix}"
        self.stream.write("\r\x1b[2K" + line)
        self.stream.flush()

    def close(self) -> None:
        if self.on:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
            self.on = False


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
