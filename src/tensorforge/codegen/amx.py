"""AMX permission: Linux hands out the AMX tile state (XTILEDATA) only to processes that ask for it.

``request_amx()`` asks once per process (``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``), before
any AMX code is compiled for or run on this machine: ``targets.host()`` calls it when the CPU has
``amx-tile`` and, when it is refused, describes the host without the AMX features, so that the int8 and
bf16 kernels take their VNNI / AVX-512 paths instead (a tile instruction without the permission dies with
SIGILL). ``runtime/jit.py`` calls it again before loading code built for a target with AMX (a cached or
saved artifact). ``TENSORFORGE_NO_AMX=1`` refuses it (tests simulate a kernel that says no).
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18
SYS_ARCH_PRCTL = 158  # x86_64

_lock = threading.Lock()
_granted: bool | None = None


def _ask_kernel() -> bool:
    if os.environ.get("TENSORFORGE_NO_AMX"):
        return False
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


def request_amx() -> bool:
    """Whether this process may run AMX instructions (asked of the kernel once; granted for all threads)."""
    global _granted
    with _lock:
        if _granted is None:
            _granted = _ask_kernel()
        return _granted


def reset_for_tests() -> None:
    """Forget the answer (tests that simulate a refusal ask again)."""
    global _granted
    with _lock:
        _granted = None
