"""What every command shares: the command registry, the common flags, and reading models and inputs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np

from ..errors import TensorforgeError

COMMANDS: dict[str, tuple[Callable, str]] = {}
ARGS: dict[str, Callable] = {}  # command name -> function adding its flags to an argparse parser


def command(name: str, help: str, args: Callable | None = None):
    """Register a subcommand; ``args(parser)`` declares its flags."""

    def deco(fn):
        COMMANDS[name] = (fn, help)
        if args is not None:
            ARGS[name] = args
        return fn

    return deco


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="path to an .onnx file, or 'mlp' / 'cnn' for a built-in example")


def add_shapes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="fix the shape of an input with symbolic dims (repeatable), e.g. x=1,784")  # fmt: skip


def add_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument("-O", dest="opt_level", type=int, default=2, choices=[0, 1, 2, 3],
                   help="optimization level: 0 runs no graph passes, 3 runs all (default 2)")  # fmt: skip
    p.add_argument("--passes", default=None, metavar="EDITS",
                   help="edit the pass list by name: '-fuse,-fold' switches passes off, '+cse' adds one")  # fmt: skip


def add_target(p: argparse.ArgumentParser, what: str = "non-host targets emit assembly only") -> None:
    p.add_argument("--target", default="host",
                   help=f"host (default), x86_64, x86_64-avx512, aarch64, nvptx-sm90; {what}")  # fmt: skip


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="worker threads (default: TENSORFORGE_NUM_THREADS or all cores)")  # fmt: skip


def load_model(model: str):
    """The model a command names: a path, or a built-in example."""
    from ..examples import mlp, small_cnn

    if model == "mlp":
        return mlp(batch=1)
    if model == "cnn":
        return small_cnn(batch=1)
    return model


def parse_shapes(items: list[str]) -> dict[str, list[int]] | None:
    if not items:
        return None
    out = {}
    for it in items:
        if "=" not in it:
            raise TensorforgeError(f"--input-shape expects NAME=D0,D1,..., got {it!r}")
        name, dims = it.split("=", 1)
        try:
            out[name] = [int(d) for d in dims.split(",") if d.strip()]
        except ValueError:
            raise TensorforgeError(f"--input-shape {it!r}: dims must be integers") from None
    return out


def read_inputs(items: list[str]) -> dict[str, np.ndarray]:
    """``--input NAME=FILE.npy`` arguments as arrays (never unpickled)."""
    feeds = {}
    for it in items:
        if "=" not in it:
            raise TensorforgeError(f"--input expects NAME=FILE.npy, got {it!r}")
        name, path = it.split("=", 1)
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise TensorforgeError(f"--input {name}: cannot read {path!r}: {e}") from None
    return feeds


def random_inputs(specs, seed: int = 0, feeds: dict | None = None) -> dict[str, np.ndarray]:
    """Seeded random arrays for the inputs not in ``feeds`` (floats: standard normal; integers: 0..2)."""
    rng = np.random.default_rng(seed)
    out = dict(feeds or {})
    for name, dt, shape in specs:
        if name not in out:
            out[name] = (rng.standard_normal(shape).astype(dt.np) if dt.is_float
                         else rng.integers(0, 3, shape).astype(dt.np))  # fmt: skip
    return out


def static_model(m, what: str):
    """``m`` (from ``tfg.compile``) if it is compiled for fixed shapes; a clear error otherwise."""
    from ..runtime.dynamic import DynamicModel

    if isinstance(m, DynamicModel):
        raise TensorforgeError(f"model '{m.name}' has symbolic input dims or data-dependent shapes; {what} needs "
                               "fixed shapes: give them with --input-shape")  # fmt: skip
    return m


def note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)
