"""Code generation on every core: a model's kernels split into a fixed set of LLVM modules ("parts") that
forked worker processes build and optimize side by side (llvmlite lets one thread into LLVM at a time, and
building LLVM IR in Python holds the GIL, so threads would not help).

The split depends only on the program — never on the machine's core count — so the LLVM IR, the assembly
and the compile-cache key are the same on every host; ``TENSORFORGE_COMPILE_JOBS`` (default: the cores
this process may use) only says how many processes build the parts. Without ``fork`` (or with one job)
the parts are built one after another in this process, with the same result.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..errors import CompileError

_JOB: Callable[[int], object] | None = None  # what forked workers run (inherited, never pickled)


def compile_jobs() -> int:
    """How many processes build code: ``$TENSORFORGE_COMPILE_JOBS``, else the cores this process may use."""
    env = os.environ.get("TENSORFORGE_COMPILE_JOBS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise CompileError(f"TENSORFORGE_COMPILE_JOBS must be a whole number, got {env!r}") from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _run(i: int):
    try:
        return True, _JOB(i)
    except BaseException as e:  # noqa: BLE001 - reported to the parent with its traceback
        return False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"


def fork_map(fn: Callable[[int], object], n: int, lock) -> list:
    """``[fn(0), ..., fn(n - 1)]``, computed in forked worker processes when there are several jobs (``fn``
    and what it reads are inherited by the fork, only results are pickled). ``lock`` is held while forking, so
    that no thread of this process is inside LLVM at that moment (``codegen/emit.py``)."""
    global _JOB
    jobs = min(compile_jobs(), n)
    if jobs <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [fn(i) for i in range(n)]
    _JOB = fn
    try:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            with lock, warnings.catch_warnings():  # the workers fork while tasks are submitted
                warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads running
                futures = [pool.submit(_run, i) for i in range(n)]
            results = [f.result() for f in futures]
    except BrokenProcessPool as e:  # a worker died (a crash inside LLVM): say so, do not hang
        raise CompileError(f"code generation failed: a worker process died ({e})") from None
    except OSError as e:  # no processes to be had: build here
        warnings.warn(f"compiling in one process ({e})", RuntimeWarning, stacklevel=2)
        return [fn(i) for i in range(n)]
    finally:
        _JOB = None
    out = []
    for ok, value in results:
        if not ok:
            raise CompileError(f"code generation failed in a worker process: {value}")
        out.append(value)
    return out


def partition(costs: Sequence[int], parts: int) -> list[list[int]]:
    """Indices of ``costs`` in ``parts`` groups of about equal total cost (largest first into the lightest
    group; deterministic), each group in ascending index order."""
    groups: list[list[int]] = [[] for _ in range(parts)]
    load = [0] * parts
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        g = min(range(parts), key=lambda g: (load[g], g))
        groups[g].append(i)
        load[g] += costs[i]
    return [sorted(g) for g in groups if g]


__all__ = ["compile_jobs", "fork_map", "partition"]
