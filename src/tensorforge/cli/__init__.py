"""The ``tensorforge`` command line.

    tensorforge compile model.onnx -o out/        # out/model.s, out/graph.txt, out/report.txt, ...
    tensorforge run model.onnx --input x=x.npy    # run it, print / save outputs
    tensorforge asm model.onnx --target aarch64   # assembly of every kernel, labelled by graph node
    tensorforge info model.onnx                   # inputs, outputs, ops, parameters, FLOPs
    tensorforge graph model.onnx -o g.svg         # the optimized graph drawn (Graphviz), fused groups boxed
    tensorforge demo                              # the built-in example, end to end

Each command lives in the module of its kind (``build.py``: compile, asm, info, graph, export; ``run.py``:
run, bench, profile; ``train.py``; ``demo.py``) and registers itself with ``common.command``.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import TensorforgeError
from . import build, run, train  # noqa: F401  (register their commands)
from .common import ARGS, COMMANDS, command

ORDER = ["compile", "run", "asm", "info", "graph", "demo", "export", "bench", "train", "profile"]


def _demo_args(p):
    p.add_argument("--no-train", action="store_true", help="skip the training part")


@command("demo", "the built-in example: build, compile, run and check the MLP; train it on digits", _demo_args)
def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tensorforge",
        description="A deep-learning compiler: ONNX models to native code through LLVM.",
        epilog="Environment: TENSORFORGE_NUM_THREADS (worker threads), TENSORFORGE_CACHE_DIR / "
        "TENSORFORGE_CACHE=0 (compile cache). Run 'tensorforge COMMAND --help' for a command's flags.",
    )
    p.add_argument("--version", action="version", version=f"tensorforge {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in sorted(COMMANDS, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        fn, help_ = COMMANDS[name]
        sp = sub.add_parser(name, help=help_.replace("%", "%%"), description=help_)  # help is %-formatted
        if name in ARGS:
            ARGS[name](sp)
        sp.set_defaults(func=fn)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TensorforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyError as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


__all__ = ["COMMANDS", "build_parser", "main"]
