"""Where tensorforge keeps what it computes once per machine: compiled artifacts (``compiler/cache.py``)
and the measured machine model (``runtime/peak.py``).

``$TENSORFORGE_CACHE_DIR`` (default ``~/.cache/tensorforge``); ``TENSORFORGE_CACHE=0`` turns caching off.
"""

from __future__ import annotations

import os


def cache_dir() -> str | None:
    """The cache directory (created), or None when caching is off or the directory cannot be made."""
    if os.environ.get("TENSORFORGE_CACHE", "1").strip().lower() in ("0", "off", "false", "no"):
        return None
    d = os.environ.get("TENSORFORGE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tensorforge")
    try:
        os.makedirs(d, exist_ok=True)
    except OSError:
        return None
    return d
