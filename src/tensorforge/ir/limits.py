"""Memory limits of compile-time work, checked from types before any memory is taken.

A few bytes of ONNX can declare a tensor of terabytes (ConstantOfShape of [2^20, 2^20]). Two limits keep
such a model from ending in a MemoryError or an OOM kill:

- a tensor larger than this machine's memory (physical memory, or the cgroup's limit when lower) can
  never be allocated: its type rule's result is rejected with a ``MemoryLimitError`` naming the node;
- constant folding materializes no result above ``TENSORFORGE_MAX_FOLD_BYTES`` (256 MiB by default,
  ``max_fold_bytes``) beyond the data it reads: such a node stays a computation that runs at run time.
"""

from __future__ import annotations

import functools
import os

from ..errors import MemoryLimitError, TensorforgeError
from .graph import TensorType

DEFAULT_MAX_FOLD_BYTES = 256 << 20
_CGROUP_LIMIT = "/sys/fs/cgroup/memory.max"


def max_fold_bytes() -> int:
    """The largest constant folding may create, in bytes (``TENSORFORGE_MAX_FOLD_BYTES``; read at each
    use, so tests and users can change it in a running process)."""
    text = os.environ.get("TENSORFORGE_MAX_FOLD_BYTES")
    if text is None:
        return DEFAULT_MAX_FOLD_BYTES
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise TensorforgeError(f"TENSORFORGE_MAX_FOLD_BYTES must be a number of bytes >= 0, got {text!r}")
    return n


@functools.cache
def memory_bytes() -> int:
    """The most memory this process can ever have: physical memory, or the cgroup limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open(_CGROUP_LIMIT) as f:
            text = f.read().strip()
        if text.isdigit():
            total = min(total, int(text))
    except OSError:
        pass
    return total


def format_bytes(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def type_bytes(t: TensorType) -> int | None:
    """Bytes of a tensor of type ``t``; None while its shape is symbolic."""
    return t.nbytes if t.is_static else None


def check_fits(nbytes: int | None, what: str) -> None:
    """Raise a MemoryLimitError when ``nbytes`` (of ``what``) exceeds this machine's memory."""
    if nbytes is not None and nbytes > memory_bytes():
        raise MemoryLimitError(f"{what} needs {format_bytes(nbytes)}, more than this machine's memory "
                               f"({format_bytes(memory_bytes())})")  # fmt: skip


def stored_bytes(a) -> int:
    """Bytes an array's data spans: a broadcast view (zero strides, ConstantOfShape's fold) holds far
    fewer than its size says."""
    if a.size == 0:
        return 0
    return a.itemsize + sum((n - 1) * abs(s) for n, s in zip(a.shape, a.strides))
