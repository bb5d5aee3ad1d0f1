"""``tensorforge prune``: magnitude, 2:4 or channel pruning of an ONNX model, optionally fine-tuned, written
as ONNX (``compress/prune.py``)."""

from __future__ import annotations

import argparse

from .common import check_input, check_output, command, load_model, positive_int, seed, write_file


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text!r}") from None


def _prune_args(p):
    p.add_argument("model", help="path to an .onnx file, or 'mlp' / 'cnn' for a built-in example")
    p.add_argument("--sparsity", type=_fraction, default=None, metavar="S",
                   help="fraction of weights (or, with --structured channels, of each layer's output channels) to "
                        "remove, between 0 and 1 exclusive; 2:4 always removes 0.5")  # fmt: skip
    p.add_argument("--structured", choices=["channels", "2:4"], default=None,
                   help="channels: remove whole output channels (smallest L1 norm) and rewrite the graph to "
                        "smaller shapes; 2:4: keep the 2 largest of every 4 weights along K (default: "
                        "unstructured magnitude pruning)")  # fmt: skip
    p.add_argument("--scope", choices=["global", "layer"], default="global",
                   help="unstructured pruning: one magnitude threshold over all layers (global, default) or the "
                        "same sparsity in every layer (layer)")  # fmt: skip
    p.add_argument("--skip-first", action="store_true", help="leave the first prunable layer dense")
    p.add_argument("--skip-last", action="store_true", help="leave the last prunable layer dense")
    p.add_argument("--exclude", action="append", default=[], metavar="NAME",
                   help="a node or weight name to leave dense (repeatable)")  # fmt: skip
    p.add_argument("--finetune", default=None, metavar="DATA",
                   help="after pruning, train on DATA with the pruned weights held at zero: a built-in dataset "
                        "(digits) or an .npz file with arrays 'x' and 'y' (class indices)")  # fmt: skip
    p.add_argument("--test-data", default=None, metavar="FILE.npz",
                   help="held-out data for --finetune FILE.npz (a built-in dataset uses its own split)")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, default=3, help="fine-tuning epochs (default 3)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="fine-tuning batch size (default 32)")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd",
                   help="fine-tuning optimizer (default sgd)")  # fmt: skip
    p.add_argument("--lr", type=float, default=None,
                   help="fine-tuning learning rate (default 0.05 for sgd, 0.001 for adam / adamw)")  # fmt: skip
    p.add_argument("--seed", type=seed, default=0, help="seed of the fine-tuning shuffle and dataset split (default 0)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.onnx", help="where to write the pruned model")


@command("prune", "prune a model's Conv/MatMul/Gemm weights (magnitude, 2:4 or whole channels), optionally "
         "fine-tune it, and write it as ONNX", _prune_args)  # fmt: skip
def cmd_prune(args) -> int:
    from ..train import datasets
    from ..train.prune_finetune import prune_report

    check_output(args.output, "-o")
    if args.model not in ("mlp", "cnn"):
        check_input(args.model, "model")
    finetune = None
    if args.finetune is not None:
        if args.finetune not in datasets.DATASETS:
            check_input(args.finetune, "--finetune")
        if args.test_data is not None:
            check_input(args.test_data, "--test-data")
        finetune = {"data": args.finetune, "epochs": args.epochs, "batch_size": args.batch_size,
                    "optimizer": args.optimizer, "lr": args.lr, "seed": args.seed}  # fmt: skip
        if args.test_data is not None:
            from ..train.trainer import load_npz

            finetune["test_data"] = load_npz(args.test_data)
    report = prune_report(load_model(args.model), args.sparsity, args.structured, scope=args.scope,
                          skip_first=args.skip_first, skip_last=args.skip_last, exclude=args.exclude,
                          finetune=finetune, log=print)  # fmt: skip
    print(report)
    write_file(args.output, report.model.SerializeToString(), "-o")
    print(f"pruned model written to {args.output}")
    return 0
