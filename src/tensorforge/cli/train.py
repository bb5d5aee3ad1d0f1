"""``tensorforge train``: a model's training step compiled into one native call per batch, run over a
dataset for some epochs; the trained model, its state and a per-kernel profile on request."""

from __future__ import annotations

import io
import os
import time

import numpy as np

from ..errors import TensorforgeError
from .common import StagedDir, add_library_args, add_opt, check_input, check_output, command, positive_int, seed


def _train_args(p):
    p.add_argument("model", nargs="?", default=None,
                   help="an .onnx model whose float initializers are the parameters (or use --model)")  # fmt: skip
    p.add_argument("--model", dest="builtin", choices=["mlp", "cnn"], default=None,
                   help="a built-in model sized to the data: mlp (hidden 256, ReLU, softmax; linear output for "
                        "mse) or cnn (conv-batchnorm-relu-maxpool-linear, image datasets)")  # fmt: skip
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", choices=["digits"], default=None,
                     help="a built-in dataset: digits (scikit-learn's 8x8 images, 80/20 train/test split)")  # fmt: skip
    src.add_argument("--data", default=None, metavar="FILE.npz",
                     help="training data: arrays 'x' (inputs) and 'y' (class indices or targets)")  # fmt: skip
    p.add_argument("--test-data", default=None, metavar="FILE.npz", help="held-out data (arrays 'x' and 'y')")
    p.add_argument("--epochs", type=positive_int, default=20, help="passes over the training data (default 20)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="rows per step (default 32); the last partial "
                   "batch of each epoch is dropped")  # fmt: skip
    p.add_argument("--loss", choices=["cross_entropy", "mse"], default="cross_entropy",
                   help="cross_entropy (logits, or a Softmax output) or mse (default cross_entropy)")  # fmt: skip
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd", help="default sgd")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 0.05 for sgd, 0.001 for adam / adamw)")  # fmt: skip
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--nesterov", action="store_true", help="SGD with Nesterov momentum")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="L2 weight decay (sgd, adam; default 0) or decoupled decay (adamw; default 0.01)")  # fmt: skip
    p.add_argument("--seed", type=seed, default=0, help="seed for the shuffling and the built-in model (default 0)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="worker threads (default: TENSORFORGE_NUM_THREADS or all cores)")  # fmt: skip
    p.add_argument("-o", "--output", default=None, metavar="FILE.onnx", help="write the trained model as ONNX")
    p.add_argument("--save-state", default=None, metavar="FILE.npz",
                   help="write parameters, optimizer state and step count (to resume with --resume)")  # fmt: skip
    p.add_argument("--resume", default=None, metavar="FILE.npz", help="start from a state written by --save-state")
    p.add_argument("--print-graph", action="store_true",
                   help="print the training step's graph (forward, loss, backward, update) first")  # fmt: skip
    p.add_argument("--profile", action="store_true", help="after training, print the time of every kernel of the step")
    add_opt(p)


def _builtin_model(args, x, y, y_test):
    """The built-in model (--model mlp|cnn) sized to the data: its features, and its classes (all labels)."""
    from ..train import trainer

    labels = y if y_test is None else np.concatenate([y, y_test])
    classes = int(labels.max()) + 1 if labels.dtype.kind in "iu" else int(np.prod(y.shape[1:]))
    return trainer.builtin_model(args.builtin, x, classes, args.seed, softmax=args.loss == "cross_entropy")


@command("train", "train a model: forward, loss, backward and optimizer compiled into one native call per batch",
         _train_args)  # fmt: skip
def cmd_train(args) -> int:
    import tensorforge as tfg

    from ..train import datasets, trainer

    for path, flag in ((args.output, "-o"), (args.save_state, "--save-state")):
        if path:
            check_output(path, flag)  # now, not after the whole training run
    if args.resume:
        check_input(args.resume, "--resume")
    if args.dataset:
        ds = datasets.load(args.dataset, seed=args.seed)
        if args.builtin == "cnn":
            ds = ds.as_images()
        x, y, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
        what = f"{ds.name} ({len(x)} training / {len(x_test)} held-out rows)"
    elif args.data:
        x, y = trainer.load_npz(args.data)
        x_test, y_test = trainer.load_npz(args.test_data) if args.test_data else (None, None)
        what = f"{args.data} ({len(x)} rows)"
    else:
        raise TensorforgeError("give training data: --dataset NAME or --data FILE.npz")
    if (args.model is None) == (args.builtin is None):
        raise TensorforgeError("give a model: an .onnx file or --model mlp|cnn (not both)")
    if args.builtin:
        model = _builtin_model(args, x, y, y_test)
    else:
        model = args.model
    opt = trainer.make_optimizer(args.optimizer, args.lr, args.momentum, args.nesterov, args.weight_decay)
    step = tfg.training_step(model, loss=args.loss, optimizer=opt, num_threads=args.threads,
                             opt_level=args.opt_level)  # fmt: skip
    if args.resume:
        step.load(args.resume)
    batch = min(args.batch_size, len(x))
    if args.print_graph:
        print(step.training_graph(batch, y.dtype, (batch, *y.shape[1:])))
    print(f"training {step.name} on {what}: {args.loss}, {opt}, batch {args.batch_size}, {args.epochs} epochs")
    t0 = time.perf_counter()
    h = trainer.fit(step, x, y, args.epochs, args.batch_size, x_test, y_test, args.seed)
    total = time.perf_counter() - t0
    per_step = h.step_seconds / max(h.steps - 1, 1)
    print(f"{h.steps} steps in {total:.2f} s (first step, which compiles: {h.compile_seconds:.2f} s; then "
          f"{per_step * 1e3:.3f} ms per step)")  # fmt: skip
    if h.metrics:
        kind = "accuracy" if y.dtype.kind in "iu" else "mse"
        value = f"{100 * h.metrics[-1]:.2f}%" if kind == "accuracy" else f"{h.metrics[-1]:.4g}"
        print(f"held-out {kind}: {value}")
    if args.profile:
        print(step.profile(x[:batch], y[:batch]))
    for path, flag, write, what in ((args.save_state, "--save-state", step.save, "state"),
                                    (args.output, "-o", step.export_onnx, "trained model")):  # fmt: skip
        if path:
            try:
                write(path)
            except OSError as e:  # a disk filled during training
                raise TensorforgeError(f"{flag} {path!r}: cannot write: {e.strerror or e}") from None
            print(f"{what} written to {path}")
    return 0


def _export_train_args(p):
    p.add_argument("model", nargs="?", default=None,
                   help="an .onnx model whose float initializers are the parameters (or use --model)")  # fmt: skip
    p.add_argument("--model", "--builtin", dest="builtin", choices=["mlp", "cnn"], default=None,
                   help="a built-in model sized to --dataset/--data, as `tensorforge train` builds it: mlp or cnn")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", choices=["digits"], default=None,
                     help="a built-in dataset (sizes a built-in model; its train/test split is written next to the "
                          "library as train_x.npy, train_y.npy, test_x.npy, test_y.npy for `make run`)")  # fmt: skip
    src.add_argument("--data", default=None, metavar="FILE.npz",
                     help="data with arrays 'x' and 'y' (sizes a built-in model)")  # fmt: skip
    p.add_argument("-o", "--output", default="out", help="output directory (default: out/)")
    add_library_args(p)
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="rows per training step; the library is compiled for exactly this batch (default 32)")
    p.add_argument("--loss", choices=["cross_entropy", "mse"], default="cross_entropy",
                   help="cross_entropy (int64 class indices; logits or a Softmax output) or mse (float targets "
                        "shaped like the output); default cross_entropy")  # fmt: skip
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd", help="default sgd")
    p.add_argument("--lr", type=float, default=None,
                   help="initial learning rate (default 0.05 for sgd, 0.001 for adam / adamw); "
                        "<NAME>_set_learning_rate changes it")  # fmt: skip
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--nesterov", action="store_true", help="SGD with Nesterov momentum")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="L2 weight decay (sgd, adam; default 0) or decoupled decay (adamw; default 0.01)")  # fmt: skip
    p.add_argument("--seed", type=seed, default=0,
                   help="seed of the built-in model's initial weights and the dataset split (default 0)")
    p.add_argument("--resume", default=None, metavar="FILE.npz",
                   help="start from a state written by `tensorforge train --save-state` (embedded as the initial "
                        "state)")  # fmt: skip
    add_opt(p)


@command("export-train", "write a model's training step (forward, loss, backward, optimizer update) as a standalone C "
         "library with a training example", _export_train_args)  # fmt: skip
def cmd_export_train(args) -> int:
    import tensorforge as tfg

    from ..train import datasets, trainer

    if args.resume:
        check_input(args.resume, "--resume")
    x = y = x_test = y_test = None
    if args.dataset:
        ds = datasets.load(args.dataset, seed=args.seed)
        if args.builtin == "cnn":
            ds = ds.as_images()
        x, y, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    elif args.data:
        x, y = trainer.load_npz(args.data)
    if (args.model is None) == (args.builtin is None):
        raise TensorforgeError("give a model: an .onnx file or --model mlp|cnn (not both)")
    if args.builtin:
        if x is None:
            raise TensorforgeError("a built-in model is sized to its data: give --dataset NAME or --data FILE.npz")
        model = _builtin_model(args, x, y, y_test)
    else:
        model = args.model
    opt = trainer.make_optimizer(args.optimizer, args.lr, args.momentum, args.nesterov, args.weight_decay)
    step = tfg.training_step(model, loss=args.loss, optimizer=opt, opt_level=args.opt_level, tiered=False)
    if args.resume:
        step.load(args.resume)
    with StagedDir(args.output) as out:
        files = step.export_c(out.tmp, args.name, args.batch_size, args.target)
        if x_test is not None:
            for name, a in (("train_x", x), ("train_y", y), ("test_x", x_test), ("test_y", y_test)):
                buf = io.BytesIO()
                np.save(buf, a, allow_pickle=False)
                out.write(f"{name}.npy", buf.getvalue())
    names = ", ".join(os.path.basename(f) for f in files["files"])
    print(f"exported the training step of {step.name} ({args.loss}, {opt}, batch {args.batch_size}) for "
          f"{args.target} to {args.output}/: {names}" + (" and the data as .npy" if x_test is not None else ""))
    data = "" if x_test is not None else " train_x.npy train_y.npy [test_x.npy test_y.npy]"
    print(f"build and train: cd {args.output} && make && " + ("make run" if not data else f"./train_example{data}"))
    return 0
