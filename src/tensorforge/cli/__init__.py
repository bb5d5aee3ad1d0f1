"""The ``tensorforge`` command line.

    tensorforge compile model.onnx -o out/        # out/model.s, out/graph.txt, out/report.txt, ...
    tensorforge run model.onnx --input x=x.npy    # run it, print / save outputs
    tensorforge asm model.onnx --target aarch64   # assembly of every kernel, labelled by graph node
    tensorforge info model.onnx                   # inputs, outputs, ops, parameters, FLOPs
    tensorforge graph model.onnx -o g.svg         # the optimized graph drawn (Graphviz), fused groups boxed
    tensorforge demo                              # the built-in example, end to end
    tensorforge quantize model.onnx --calibration calib.npz   # int8 QDQ ONNX (compress.py: quantize, compare)

Each command lives in the module of its kind (``build.py``: compile, asm, info, graph, export; ``run.py``:
run, bench, profile; ``train.py``; ``demo.py``) and registers itself with ``common.command``.

Every error, of any kind, is one line on stderr and exit status 1: the user gets what went wrong, not a
traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import sys
import traceback

from .. import __version__
from ..errors import TensorforgeError
from . import build, compress, run, train  # noqa: F401  (register their commands)
from . import explore as _explore  # noqa: F401  (registers tensorforge explore)
from . import prune as _prune  # noqa: F401  (registers tensorforge prune)
from .common import ARGS, COMMANDS, command

ORDER = ["compile", "run", "asm", "info", "graph", "demo", "export", "bench", "train", "export-train", "profile",
         "quantize", "compare"]  # fmt: skip


def _demo_args(p):
    p.add_argument("--no-train", action="store_true", help="skip the training part")


@command("demo", "the built-in example: build, compile, run and check the MLP; train it on digits", _demo_args)
def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors as a TensorforgeError, so that they read like every other error (one line,
    status 1) instead of a usage block and status 2."""

    def error(self, message: str):
        raise TensorforgeError(f"{self.prog}: {message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tensorforge",
        description="A deep-learning compiler: ONNX models to native code through LLVM.",
        epilog="Environment: TENSORFORGE_NUM_THREADS (worker threads), TENSORFORGE_CACHE_DIR / "
        "TENSORFORGE_CACHE=0 (compile cache), TENSORFORGE_COMPILE_JOBS (processes that generate code, "
        "default all cores), TENSORFORGE_MAX_FOLD_BYTES (the largest constant folding "
        "creates, 256 MiB by default). Run 'tensorforge COMMAND --help' for a command's flags.",
    )
    p.add_argument("--version", action="version", version=f"tensorforge {__version__}")
    p.add_argument("--debug", action="store_true",
                   help="on an error, print the Python traceback too (errors are one line otherwise)")  # fmt: skip
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in sorted(COMMANDS, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        fn, help_ = COMMANDS[name]
        sp = sub.add_parser(name, help=help_.replace("%", "%%"), description=help_)  # help is %-formatted
        if name in ARGS:
            ARGS[name](sp)
        # accepted after the command too ('tensorforge compile m.onnx --debug'), documented once above
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sp.set_defaults(func=fn)
    return p


def describe(e: BaseException) -> str:
    """An exception as one line: what went wrong, for whoever ran the command."""
    if isinstance(e, TensorforgeError):
        lines = [ln.strip().removeprefix("- ") for ln in str(e).splitlines() if ln.strip()]
        return lines[0] + (": " + "; ".join(lines[1:]) if len(lines) > 1 else "") if lines else type(e).__name__
    if isinstance(e, KeyError) and e.args:  # a lookup by name (``--kernel``) says what there is
        return str(e.args[0])
    if isinstance(e, OSError):
        return f"{e.filename!r}: {e.strerror}" if e.filename and e.strerror else str(e)
    if isinstance(e, MemoryError):
        return "out of memory (a tensor or constant larger than this machine can hold)"
    text = " ".join(str(e).split())
    return f"internal error: {type(e).__name__}: {text} (rerun with --debug for the traceback, and please report it)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # every error, ours or not, is one line (with --debug, after its traceback)
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"error: {describe(e)}", file=sys.stderr)
        return 1


__all__ = ["COMMANDS", "build_parser", "main"]
