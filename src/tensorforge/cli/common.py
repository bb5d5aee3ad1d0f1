"""What every command shares: the command registry, the common flags, reading models and inputs, and
writing outputs (checked before any long work starts; a directory's files replaced all at once)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable

import numpy as np

from ..errors import TensorforgeError
from ..util.files import atomic_write

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


def add_tuning(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tuning-db", default=None, metavar="FILE",
                   help="use the plans 'tensorforge tune' recorded in FILE for this CPU (default: the database "
                        "in the compile-cache directory, if there is one)")  # fmt: skip


def add_target(p: argparse.ArgumentParser, what: str = "non-host targets emit assembly only") -> None:
    p.add_argument("--target", default="host",
                   help=f"host (default), x86_64, x86_64-avx512, aarch64, nvptx-sm90, nvptx-sm80, cuda (the "
                        f"visible NVIDIA GPU's sm_XY); {what}")  # fmt: skip


def positive_int(text: str) -> int:
    """An argparse type: counts (threads, repeats, epochs, batch sizes) below 1 are mistakes, not defaults."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return n


def seed(text: str) -> int:
    """An argparse type: numpy's generators take seeds >= 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return int(text)


def file_stem(text: str) -> str:
    """An argparse type: a name that becomes part of file names (no directories, not hidden)."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", text):
        raise argparse.ArgumentTypeError(f"must be letters, digits, '_', '.' or '-' (no '/'), got {text!r}")
    return text


def c_name(text: str) -> str:
    """An argparse type: a C identifier (it prefixes every symbol of an exported library)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", text):
        raise argparse.ArgumentTypeError(f"must be a C identifier (letters, digits, '_'; not starting with a digit), "
                                         f"got {text!r}")  # fmt: skip
    return text


def add_library_args(p: argparse.ArgumentParser) -> None:
    """--name and --target of the commands that write a C library (export, export-train)."""
    p.add_argument("--name", default="model", type=c_name,
                   help="library name, a C identifier: writes lib<NAME>.so/.a and <NAME>.h, and every exported "
                        "symbol starts with <NAME>_ (default: model)")  # fmt: skip
    p.add_argument("--target", default="host",
                   choices=["host", "x86_64", "x86_64-avx512", "x86_64-avx512vnni", "x86_64-avxvnni", "x86_64-amx",
                            "aarch64", "cuda", "nvptx-sm80", "nvptx-sm90"],
                   help="host (default: this CPU's ISA); x86_64 (AVX2) / x86_64-avx512 for a portable x86 build, "
                        "x86_64-avx512vnni / x86_64-avxvnni / x86_64-amx for the int8 (and bf16) instructions of "
                        "newer x86 CPUs; or aarch64 (NEON; needs Debian's gcc-aarch64-linux-gnu: `make "
                        "cross-tools`); export only: cuda (PTX for the visible GPU, else sm_80; the library loads "
                        "it through the CUDA driver at run time) or nvptx-sm80 / nvptx-sm90")  # fmt: skip


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=positive_int, default=None,
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


def _existing_dir(path: str, flag: str, shown: str) -> str:
    """The nearest existing ancestor of ``path`` (itself included), which must be a writable directory."""
    d = path
    while not os.path.exists(d):
        d = os.path.dirname(d)
    if not os.path.isdir(d):
        raise TensorforgeError(f"{flag} {shown!r}: {d!r} is a file, not a directory")
    if not os.access(d, os.W_OK | os.X_OK):
        raise TensorforgeError(f"{flag} {shown!r}: directory {d!r} is not writable")
    return d


def check_output(path: str, flag: str, directory: bool = False) -> None:
    """Fail now, before a compile or a training run, when ``path`` (a file, or a directory to write files
    into) could not be written: it is a directory where a file belongs or the reverse, sits under a file,
    or under a directory that is not writable. A full disk can only show when writing (``write_file``)."""
    full = os.path.abspath(path)
    if directory and os.path.exists(full) and not os.path.isdir(full):
        raise TensorforgeError(f"{flag} {path!r} exists and is not a directory")
    if not directory and os.path.isdir(full):
        raise TensorforgeError(f"{flag} {path!r} is a directory; give a file name")
    _existing_dir(full if directory else os.path.dirname(full), flag, path)


def check_input(path: str, flag: str) -> None:
    """Fail now, not after a training run, when a file to read later does not exist."""
    if not os.path.isfile(path):
        raise TensorforgeError(f"{flag} {path!r}: {'is a directory' if os.path.isdir(path) else 'no such file'}")


def write_file(path: str, data: bytes | str, flag: str) -> None:
    """``atomic_write`` with an OSError (a full disk, a permission) as one line naming the output."""
    try:
        atomic_write(path, data)
    except OSError as e:
        raise TensorforgeError(f"{flag} {path!r}: cannot write: {e.strerror or e}") from None


class StagedDir:
    """Files for directory ``path``, written into a temporary directory next to it and moved into place
    only when the ``with`` block completes: a failure half-way (an error, a full disk) leaves ``path`` as
    it was, instead of half new and half old files."""

    def __init__(self, path: str, flag: str = "-o"):
        check_output(path, flag, directory=True)
        self.path, self.flag = path, flag
        self.full = os.path.abspath(path)
        base = _existing_dir(self.full, flag, path)
        try:
            self.tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(self.full)}.tmp-", dir=base)
        except OSError as e:
            raise TensorforgeError(f"{flag} {path!r}: cannot write: {e.strerror or e}") from None

    def __enter__(self) -> StagedDir:
        return self

    def write(self, name: str, data: bytes | str) -> None:
        try:
            with open(os.path.join(self.tmp, name), "w" if isinstance(data, str) else "wb") as f:
                f.write(data)
        except OSError as e:
            raise TensorforgeError(f"{self.flag} {os.path.join(self.path, name)!r}: cannot write: "
                                   f"{e.strerror or e}") from None  # fmt: skip

    def __exit__(self, exc_type, *_) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _commit(self) -> None:
        try:
            if not os.path.exists(self.full):
                os.makedirs(os.path.dirname(self.full), exist_ok=True)
                os.rename(self.tmp, self.full)
                return
            for name in sorted(os.listdir(self.tmp)):
                os.replace(os.path.join(self.tmp, name), os.path.join(self.full, name))
        except OSError as e:
            raise TensorforgeError(f"{self.flag} {self.path!r}: cannot write: {e.strerror or e}") from None
