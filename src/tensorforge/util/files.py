"""Writing files so that no reader ever sees half of one."""

from __future__ import annotations

import os
import tempfile


def atomic_write(path: str, data: bytes | bytearray | memoryview | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename: a failure
    (or a concurrent reader) never sees a partial file, and the old file stays until the new one is whole."""
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w" if isinstance(data, str) else "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
