"""Shared by the export tests: C compilers, qemu, building and running an export's example program."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CC = shutil.which("cc") or shutil.which("gcc")
CROSS_CC = shutil.which("aarch64-linux-gnu-gcc")
QEMU = shutil.which("qemu-aarch64")
SYSROOT = Path("/usr/aarch64-linux-gnu")

needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc) on PATH")
needs_cross = pytest.mark.skipif(
    CROSS_CC is None or QEMU is None or not (SYSROOT / "lib").exists(),
    reason="AArch64 tools absent: `make cross-tools` (as root) installs qemu-user, gcc-aarch64-linux-gnu and "
    "libc6-dev-arm64-cross",
)


def build_example(out: Path, target: str = "example") -> Path:
    r = subprocess.run(["make", "-s", target], cwd=out, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out / target


def run_example(out: Path, inputs: list[np.ndarray], *args: str, qemu: bool = False, program: str = "example"
                ) -> list[np.ndarray]:  # fmt: skip
    """Runs the example on ``inputs`` (written as .npy) and returns the outputs it saved."""
    files = []
    for i, x in enumerate(inputs):
        np.save(out / f"in{i}.npy", x)
        files.append(f"in{i}.npy")
    res = out / "res"
    res.mkdir(exist_ok=True)
    for f in res.glob("*.npy"):
        f.unlink()
    cmd = [f"./{program}", *args, "-o", "res", *files]
    if qemu:
        cmd = [QEMU, "-L", str(SYSROOT), *cmd]
    r = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return [np.load(f) for f in sorted(res.glob("output*.npy"), key=lambda p: int(p.stem[6:]))]
