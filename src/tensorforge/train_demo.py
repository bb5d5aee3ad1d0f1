"""Training end to end: ``tensorforge train`` and the training part of ``make demo``.

The demo trains the seed MLP (64 -> 256 ReLU -> 10 softmax, cross-entropy) on scikit-learn's handwritten
digits with SGD + momentum for 20 epochs — every batch one native call running forward, loss, backward
and the update — and reports the held-out accuracy.
"""

from __future__ import annotations

import time

import numpy as np

from .errors import TensorforgeError

DEMO_TARGET = 0.96  # held-out accuracy the demo must reach


def train_command(args) -> int:
    import tensorforge as tfg

    from . import datasets, trainer

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
        labels = y if y_test is None else np.concatenate([y, y_test])
        classes = int(labels.max()) + 1 if labels.dtype.kind in "iu" else int(np.prod(y.shape[1:]))
        model = trainer.builtin_model(args.builtin, x, classes, args.seed, softmax=args.loss == "cross_entropy")
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
    if args.save_state:
        step.save(args.save_state)
        print(f"state written to {args.save_state}")
    if args.output:
        step.export_onnx(args.output)
        print(f"trained model written to {args.output}")
    return 0


def train_demo() -> int:
    """Train the seed MLP on digits for 20 epochs; returns 1 if it misses the accuracy target."""
    import tensorforge as tfg

    from . import datasets, trainer
    from .examples import mlp

    try:
        ds = datasets.digits()
    except TensorforgeError as e:
        print(f"\n(skipping the training demo: {e})")
        return 0
    print(f"\n== training the MLP {ds.features} -> 256 (ReLU) -> {ds.classes} -> softmax on scikit-learn's digits "
          f"({len(ds.x_train)} training / {len(ds.x_test)} held-out images) ==")  # fmt: skip
    step = tfg.training_step(mlp(batch="N", sizes=(ds.features, 256, ds.classes)), loss="cross_entropy",
                             optimizer=tfg.optim.SGD(lr=0.05, momentum=0.9))  # fmt: skip
    g = step.training_graph(32)
    print(f"the training step is one graph of {len(g.nodes)} nodes (forward, cross-entropy, backward, SGD update), "
          "compiled into one native function; parameters and momenta are updated in place")  # fmt: skip
    t0 = time.perf_counter()
    h = trainer.fit(step, ds.x_train, ds.y_train, 20, 32, ds.x_test, ds.y_test)
    total = time.perf_counter() - t0
    acc = h.metrics[-1]
    per_step = h.step_seconds / max(h.steps - 1, 1)
    print(f"{h.steps} steps in {total:.2f} s including compilation ({h.compile_seconds:.2f} s); "
          f"{per_step * 1e6:.0f} us per step")  # fmt: skip
    print(f"held-out accuracy: {100 * acc:.2f}% ({int(round(acc * len(ds.y_test)))}/{len(ds.y_test)})")
    if acc < DEMO_TARGET:
        print(f"FAILED: below the {100 * DEMO_TARGET:.0f}% target")
        return 1
    return 0
