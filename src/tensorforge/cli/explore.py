"""The ``explore`` command: compile, profile and write the explorer's HTML report (``explore/``)."""

from __future__ import annotations

import argparse

from ..errors import TensorforgeError
from .common import (
    add_model,
    add_shapes,
    add_threads,
    check_output,
    command,
    load_model,
    parse_shapes,
    positive_int,
    read_inputs,
)


def _explore_args(p: argparse.ArgumentParser) -> None:
    add_model(p)
    p.add_argument("-o", "--output", default="report.html", help="the HTML file to write (default report.html)")
    p.add_argument(
        "-O",
        dest="opt_level",
        type=int,
        action="append",
        choices=[0, 1, 2, 3],
        default=None,
        help="optimization level (default 2); with --compare give it twice: -O0 -O2",
    )
    p.add_argument(
        "--passes",
        default=None,
        metavar="EDITS",
        help="edit the pass list by name: '-fuse,-fold' switches passes off, '+cse' adds one",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="two builds side by side, one per -O level given (kernels matched by graph nodes, times "
        "and assembly diffs)",
    )
    p.add_argument(
        "--compare-model",
        default=None,
        metavar="MODEL2",
        help="a second model (e.g. the int8 version of MODEL) built with the same options and shown side by "
        "side, kernels matched by graph node names",
    )
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="input array to profile on, from a .npy file (repeatable); missing inputs are random (seeded)",
    )
    p.add_argument(
        "--repeat",
        type=positive_int,
        default=10,
        help="profiled runs to take the per-kernel medians over (default 10; fewer, at least 3, when they would "
        "take over 1.5 s)",
    )
    add_threads(p)
    add_shapes(p)


@command(
    "explore",
    "one self-contained HTML report: graph, fused kernels, their kernel IR, LLVM IR and assembly "
    "(hot loop marked), measured times and a roofline",
    _explore_args,
)
def cmd_explore(args) -> int:
    from ..explore import explore

    check_output(args.output, "-o")
    levels = args.opt_level or [2]
    if args.compare and len(levels) != 2:
        raise TensorforgeError(f"--compare needs two -O levels (e.g. -O0 -O2), got {len(levels)}")
    if not args.compare and len(levels) > 1:
        raise TensorforgeError("-O given more than once; add --compare to compare two builds")
    if args.compare and args.compare_model:
        raise TensorforgeError("--compare (two -O levels) and --compare-model (two models) do not go together")
    compare = [{"opt_level": o, "passes": args.passes} for o in levels] if args.compare else None
    path = explore(
        load_model(args.model),
        args.output,
        feeds=read_inputs(args.input),
        repeat=args.repeat,
        opt_level=levels[0],
        passes=args.passes,
        input_shapes=parse_shapes(args.input_shape),
        num_threads=args.threads,
        compare=compare,
        compare_model=load_model(args.compare_model) if args.compare_model else None,
        model_hint=args.model,
    )
    print(f"wrote {path}")
    return 0
