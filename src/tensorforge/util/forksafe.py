"""Locks a forked child gets back unlocked.

``fork()`` copies the process with only the forking thread: a lock another thread held at that moment stays
held in the child, and nobody there will ever release it — the child's first model call (or compile) would
block forever. Objects and modules that keep a lock register it here; the child replaces each registered
lock with a new one (``os.register_at_fork``). Only the state those locks guard matters: the call that was
running in the parent is not running in the child, so the child may use it at once. (The native thread
pool resets itself in the child the same way, ``codegen/threadpool.py``.)
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable

_OWNERS: dict[tuple[str, Callable], weakref.WeakSet] = {}


def renew_in_child(owner: object, attr: str, factory: Callable = threading.Lock) -> None:
    """After a fork, the child sets ``owner.<attr>`` to ``factory()`` (while ``owner`` is alive; a module
    works as an owner of a module-level lock)."""
    _OWNERS.setdefault((attr, factory), weakref.WeakSet()).add(owner)


def _after_fork_in_child() -> None:
    for (attr, factory), owners in _OWNERS.items():
        for owner in list(owners):
            setattr(owner, attr, factory())


os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = ["renew_in_child"]
