"""Persistent compile cache: object code keyed by (LLVM IR, target, LLVM version).

Lives in ``$TENSORFORGE_CACHE_DIR`` (default ``~/.cache/tensorforge``); ``TENSORFORGE_CACHE=0`` turns it
off. Writes are atomic (temp file + rename), so concurrent compiles never see half-written entries.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

import llvmlite

from .. import __version__ as _tf_version


def cache_dir() -> str | None:
    if os.environ.get("TENSORFORGE_CACHE", "1") in ("0", "off", "false"):
        return None
    d = os.environ.get("TENSORFORGE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tensorforge")
    try:
        os.makedirs(d, exist_ok=True)
    except OSError:
        return None
    return d


def key_for(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    h.update(f"tensorforge {_tf_version} llvmlite {llvmlite.__version__}".encode())
    for p in parts:
        h.update(b"\0")
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()[:40]


def load(key: str, suffix: str = ".o") -> bytes | None:
    d = cache_dir()
    if d is None:
        return None
    path = os.path.join(d, key + suffix)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def store(key: str, data: bytes, suffix: str = ".o") -> None:
    d = cache_dir()
    if d is None:
        return
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(d, key + suffix))
    except OSError:
        pass
