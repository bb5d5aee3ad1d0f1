"""Commands that compress and compare: quantize, compare; and the --quantize flags of compile.

tensorforge quantize model.onnx --calibration calib.npz -o model.int8.onnx
tensorforge compare model.onnx model.int8.onnx --data val.npz
"""

from __future__ import annotations

import argparse
import os

from ..errors import TensorforgeError
from .common import add_model, add_threads, check_input, check_output, command, load_model, note, positive_int, seed

CALIBRATION_HELP = ("calibration samples: an .npz with one array per model input, named after it, samples stacked "
                    "along the first (batch) axis; or a directory of such .npz files")  # fmt: skip


def _method(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="minmax", choices=["minmax", "percentile", "entropy"],
                   help="activation range observer: minmax (extremes seen; default), percentile (see --percentile) "
                        "or entropy (TensorRT-style KL-divergence threshold)")  # fmt: skip
    p.add_argument(
        "--percentile",
        type=float,
        default=99.99,
        metavar="P",
        help="with --method percentile: clip activations to the P-th percentile (default 99.99)",
    )
    p.add_argument("--activations", default="uint8", choices=["uint8", "int8"],
                   help="activation type: uint8 asymmetric (default) or int8 symmetric")  # fmt: skip
    p.add_argument(
        "--per-tensor", action="store_true", help="one scale per weight tensor instead of one per output channel"
    )
    p.add_argument("--keep-first", action="store_true", help="keep the first quantizable layer in float")
    p.add_argument("--keep-last", action="store_true", help="keep the last quantizable layer in float")
    p.add_argument(
        "--exclude",
        default="",
        metavar="NAME_OR_OP,...",
        help="keep these nodes in float: node names or op types (e.g. Gemm), comma-separated",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        metavar="N",
        help="calibration samples per run of the model when its batch axis is symbolic (default 32)",
    )


def _options(args) -> dict:
    return {"method": args.method, "percentile": args.percentile, "activations": args.activations,
            "per_channel": not args.per_tensor, "keep_first": args.keep_first, "keep_last": args.keep_last,
            "exclude": args.exclude, "batch_size": args.batch_size}  # fmt: skip


def _quantize_args(p):
    add_model(p)
    p.add_argument("--calibration", default=None, metavar="FILE_OR_DIR", help=CALIBRATION_HELP)
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic quantization (MatMul/Gemm weights int8, activations quantized at run time; for "
                        "transformers): needs no --calibration")  # fmt: skip
    p.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="FILE",
        help="the quantized ONNX model (default: MODEL.int8.onnx next to the model)",
    )
    _method(p)
    add_threads(p)


@command("quantize", "quantize a float ONNX model to int8 (QDQ ONNX that any runtime runs)", _quantize_args)
def cmd_quantize(args) -> int:
    import tensorforge as tfg

    if args.calibration is None and not args.dynamic:
        raise TensorforgeError("quantize needs --calibration FILE (or --dynamic, which needs none)")
    if args.calibration is not None and not os.path.exists(args.calibration):
        raise TensorforgeError(f"--calibration {args.calibration!r}: no such file or directory")
    model = load_model(args.model)
    out = args.output or (os.path.splitext(args.model)[0] + ".int8.onnx" if isinstance(model, str) else
                          f"{args.model}.int8.onnx")  # fmt: skip
    check_output(out, "-o")
    opts = _options(args)
    if args.dynamic:
        opts = {k: opts[k] for k in ("per_channel", "keep_first", "keep_last", "exclude")}
    _, report = tfg.quantize(model, args.calibration, dynamic=args.dynamic, num_threads=args.threads, output=out,
                             report=True, **opts)  # fmt: skip
    print(report)
    print(f"wrote {out} ({os.path.getsize(out):,} bytes)")
    return 0


def add_compile_quantize_args(p: argparse.ArgumentParser) -> None:
    """--quantize and --calibration of compile (with the quantize command's options)."""
    p.add_argument(
        "--quantize",
        default=None,
        choices=["int8", "int8-dynamic"],
        help="compile the model quantized: int8 (static, needs --calibration) or int8-dynamic",
    )
    p.add_argument("--calibration", default=None, metavar="FILE_OR_DIR",
                   help="with --quantize int8: " + CALIBRATION_HELP)  # fmt: skip
    _method(p)


def quantized_model(args, model):
    """``model`` quantized as compile's --quantize flags ask (unchanged without them)."""
    import tensorforge as tfg

    mode = getattr(args, "quantize", None)
    if mode is None:
        if getattr(args, "calibration", None) is not None:
            raise TensorforgeError("--calibration needs --quantize int8")
        return model
    if mode == "int8" and args.calibration is None:
        raise TensorforgeError("--quantize int8 needs --calibration FILE (or use --quantize int8-dynamic)")
    if mode == "int8-dynamic" and args.calibration is not None:
        raise TensorforgeError("--quantize int8-dynamic takes no --calibration (activations are quantized at run time)")
    if args.calibration is not None and not os.path.exists(args.calibration):
        raise TensorforgeError(f"--calibration {args.calibration!r}: no such file or directory")
    opts = _options(args)
    if mode == "int8-dynamic":
        opts = {k: opts[k] for k in ("per_channel", "keep_first", "keep_last", "exclude")}
    q, report = tfg.quantize(model, args.calibration, dynamic=mode == "int8-dynamic", report=True, **opts)
    for line in str(report).splitlines():
        note(line.strip().removeprefix("note: "))
    return q


def _compare_args(p):
    p.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="ONNX files: the reference (float) model first, then the models to compare with it",
    )
    p.add_argument("--data", default=None, metavar="FILE_OR_DIR",
                   help="inputs to compare on: an .npz with one array per input, samples along the first axis (or "
                        "a directory of them); default: random inputs of the reference's shapes (see --seed)",
                   )  # fmt: skip
    p.add_argument("--runtime", default="tfg", metavar="RUNTIMES",
                   help="who runs the models: tfg (compiled by tensorforge; default), ort (ONNX Runtime), or both "
                        "('tfg,ort'); the reference row is the first model on the first runtime")  # fmt: skip
    p.add_argument("--samples", type=positive_int, default=64, help="random samples without --data (default 64)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random inputs (default 0)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        metavar="N",
        help="samples per run when the batch axis is symbolic; latency is of one such batch (default 32)",
    )
    p.add_argument(
        "--blocks",
        type=positive_int,
        default=5,
        help="timing blocks per model, alternating between models; the median is reported (default 5)",
    )
    p.add_argument("--json", default=None, metavar="FILE", help="also write the table as JSON to FILE")
    add_threads(p)


@command("compare", "compare models on the same data: top-1 agreement, max error, size on disk, latency",
         _compare_args)  # fmt: skip
def cmd_compare(args) -> int:
    import json

    import tensorforge as tfg

    for m in args.models:
        check_input(m, "model")
    if args.data is not None and not os.path.exists(args.data):
        raise TensorforgeError(f"--data {args.data!r}: no such file or directory")
    if args.json:
        check_output(args.json, "--json")
    result = tfg.compare(args.models[0], *args.models[1:], data=args.data, runtime=args.runtime,
                         batch_size=args.batch_size, samples=args.samples, seed=args.seed, blocks=args.blocks,
                         num_threads=args.threads)  # fmt: skip
    print(result)
    if args.json:
        from .common import write_file

        write_file(args.json, json.dumps(result.to_dict(), indent=1) + "\n", "--json")
    return 0
