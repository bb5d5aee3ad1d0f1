"""PyTorch and Keras models through tensorforge vs their own runtimes (issue 14).

For an MLP, a ResNet-18-shaped CNN, an nn.TransformerEncoder and a GPT-style causal block (random weights,
defined here): inference latency and training-step time (forward, loss, backward, SGD step) of eager PyTorch,
tensorforge (``tfg.from_torch`` for inference, ``torch.compile(backend="tensorforge")`` for both) and
``torch.compile`` with inductor, measured as medians of alternating blocks in one process; compile time is
the first call's wall time. Then a Keras MLP and CNN: ``tfg.from_tensorflow`` vs TensorFlow's own call, and
``tfg.training_step`` vs ``model.train_on_batch`` (only when TensorFlow is installed).

``python benchmarks/bench_torch.py [name...]``; TENSORFORGE_BENCH_QUICK=1 for fewer, shorter blocks.
"""

from __future__ import annotations

import copy
import os
import sys
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import tensorforge as tfg  # noqa: E402
from harness import compare, fmt_time, markdown_table  # noqa: E402


# -------------------------------------------------------------------------------------------------
# the models
# -------------------------------------------------------------------------------------------------
def torch_models():
    """(name, module, example input, note) per model; seeded, random weights."""
    import torch
    from torch import nn

    F = nn.functional

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            return F.relu(y + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        def __init__(self, classes=100):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))  # fmt: skip
            layers, cin = [], 64
            for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
                layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(512, classes)

        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))

    class Encoder(nn.Module):
        def __init__(self, d=128, heads=4, layers=2):
            super().__init__()
            layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.1, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = nn.Linear(d, 10)

        def forward(self, x):
            return self.head(self.enc(x).mean(1))

    class GPTBlock(nn.Module):
        def __init__(self, d=128, heads=4):
            super().__init__()
            self.heads = heads
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
            self.drop = nn.Dropout(0.1)

        def forward(self, x):
            b, s, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(d, 2)
            q, k, v = (t.view(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, d)
            x = x + self.drop(self.proj(a))
            return x + self.drop(self.mlp(self.ln2(x)))

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    return [
        ("MLP 784-256-256-10", mlp, torch.randn(64, 784), "batch 64"),
        ("ResNet-18 shape", ResNet18(), torch.randn(4, 3, 64, 64), "batch 4, 3x64x64"),
        ("TransformerEncoder", Encoder(), torch.randn(8, 64, 128), "2 layers, d 128, seq 64, batch 8, dropout 0.1"),
        ("GPT block", GPTBlock(), torch.randn(8, 64, 128), "causal, d 128, seq 64, batch 8, dropout 0.1"),
    ]


# -------------------------------------------------------------------------------------------------
# PyTorch
# -------------------------------------------------------------------------------------------------
def _first_call(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _train_step(model, fn, x):
    import torch

    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        fn(x).square().mean().backward()
        opt.step()

    return step


def measure_torch(name, module, x, use_inductor: bool) -> dict:
    import torch

    torch._dynamo.reset()
    r: dict = {"name": name}
    net = copy.deepcopy(module).eval()
    with torch.no_grad():
        r["compile from_torch"] = _first_call(lambda: r.setdefault("cm", tfg.from_torch(net, (x,))))
        cm = r.pop("cm")
        xn = x.numpy()
        tfc = torch.compile(net, backend="tensorforge")
        r["compile tf infer"] = _first_call(lambda: tfc(x))
        fns = {"eager": lambda: net(x), "from_torch": lambda: cm(xn), "tf compile": lambda: tfc(x)}
        if use_inductor:
            ind = torch.compile(copy.deepcopy(net), backend="inductor")
            r["compile inductor infer"] = _first_call(lambda: ind(x))
            fns["inductor"] = lambda: ind(x)
        r["infer"] = compare(fns)
    steps = {}
    for kind in ["eager", "tf compile"] + (["inductor"] if use_inductor else []):
        m = copy.deepcopy(module).train()
        fn = m if kind == "eager" else torch.compile(m, backend="tensorforge" if kind == "tf compile" else "inductor")
        steps[kind] = _train_step(m, fn, x)
        if kind != "eager":
            r[f"compile {kind} train"] = _first_call(steps[kind])
    r["train"] = compare(steps)
    return r


def torch_section(names: list[str] | None = None) -> tuple[str, list[dict]]:
    try:
        import torch  # noqa: F401
    except ImportError:
        return "PyTorch is not installed: section skipped.", []
    use_inductor, why = True, ""
    quick = bool(os.environ.get("TENSORFORGE_BENCH_QUICK"))
    records, irows, trows, crows = [], [], [], []
    tfg.torch_report(clear=True)
    for name, module, x, note in torch_models():
        if names and not any(n.lower() in name.lower() for n in names):
            continue
        if quick and name.startswith("ResNet"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = measure_torch(name, module, x, use_inductor)
        except Exception as e:  # inductor needs a working C++ toolchain: measure without it
            if not use_inductor:
                raise
            use_inductor, why = False, f"inductor failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
            r = measure_torch(name, module, x, use_inductor)
        records.append(r)
        inf, tr = r["infer"], r["train"]
        ind = inf.get("inductor")
        speed = f"{ind / inf['tf compile']:.2f}x" if ind else "-"
        irows.append([f"{name} ({note})", fmt_time(inf["eager"]), fmt_time(inf["from_torch"]),
                      fmt_time(inf["tf compile"]), fmt_time(ind) if ind else "-",
                      f"{inf['eager'] / inf['tf compile']:.2f}x", speed])  # fmt: skip
        tind = tr.get("inductor")
        speed = f"{tind / tr['tf compile']:.2f}x" if tind else "-"
        trows.append([name, fmt_time(tr["eager"]), fmt_time(tr["tf compile"]), fmt_time(tind) if tind else "-",
                      f"{tr['eager'] / tr['tf compile']:.2f}x", speed])  # fmt: skip
        crows.append([name, f"{r['compile from_torch']:.2f} s", f"{r['compile tf infer']:.2f} s",
                      f"{r['compile tf compile train']:.2f} s",
                      f"{r['compile inductor infer']:.2f} s" if use_inductor else "-",
                      f"{r['compile inductor train']:.2f} s" if use_inductor else "-"])  # fmt: skip
    eager_ops = tfg.torch_report().eager_ops()
    md = (
        "Inference (eval mode, no_grad), median per call; ratios > 1 mean tensorforge's torch.compile backend is "
        "faster than the other.\n\n"
        + markdown_table(["model", "eager", "tfg.from_torch", "compile(tensorforge)", "compile(inductor)",
                          "eager / tf", "inductor / tf"], irows)  # fmt: skip
        + "\n\nTraining step (forward, mean-square loss, backward, SGD momentum), median per step:\n\n"
        + markdown_table(["model", "eager", "compile(tensorforge)", "compile(inductor)", "eager / tf",
                          "inductor / tf"], trows)  # fmt: skip
        + "\n\nCompile time: the first call's wall time (tensorforge's compile cache as found: a cached model "
        "skips import, passes and LLVM; inductor's own caches likewise).\n\n"
        + markdown_table(["model", "from_torch", "tensorforge infer", "tensorforge train (fw+bw)", "inductor infer",
                          "inductor train"], crows)  # fmt: skip
        + ("\n\nOps that ran eagerly inside tensorforge graphs: " + ", ".join(f"{k} x{v}" for k, v in
           sorted(eager_ops.items())) if eager_ops else "\n\nEvery graph ran in tensorforge (no eager fallback).")
        + (f"\n\n{why}." if why else "")
    )  # fmt: skip
    return md, records


# -------------------------------------------------------------------------------------------------
# Keras
# -------------------------------------------------------------------------------------------------
def keras_models():
    import keras

    keras.utils.set_random_seed(0)
    mlp = keras.Sequential([keras.Input((784,)), keras.layers.Dense(256, activation="relu"),
                            keras.layers.Dense(10)], name="mlp")  # fmt: skip
    cnn = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                            keras.layers.MaxPooling2D(), keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)], name="cnn")  # fmt: skip
    rng = np.random.default_rng(0)
    return [("Keras MLP 784-256-10", mlp, rng.standard_normal((64, 784), np.float32), 64),
            ("Keras CNN 32x32x3", cnn, rng.standard_normal((16, 32, 32, 3), np.float32), 16)]  # fmt: skip


def keras_section() -> tuple[str, list[dict]]:
    try:
        import tensorflow as tf
    except ImportError:
        return "TensorFlow is not installed (`pip install tensorforge[tensorflow]`): section skipped.", []
    import keras

    rows, records = [], []
    for name, model, x, batch in keras_models():
        fn = tf.function(lambda v, model=model: model(v, training=False))
        t0 = time.perf_counter()
        cm = tfg.from_tensorflow(model)
        cm(x)
        compile_s = time.perf_counter() - t0
        fn(x)
        inf = compare({"tensorflow": lambda: fn(x), "tensorforge": lambda: cm(x)})
        y = np.random.default_rng(1).integers(0, 10, len(x)).astype(np.int64)
        theirs = keras.models.clone_model(model)
        theirs.set_weights(model.get_weights())
        theirs.compile(optimizer=keras.optimizers.SGD(0.01),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
        theirs.train_on_batch(x, y)
        sgd = tfg.optim.SGD(lr=0.01)
        step = tfg.training_step(keras.models.clone_model(model), loss="cross_entropy", optimizer=sgd)
        step(x, y)
        tr = compare({"tensorflow": lambda: theirs.train_on_batch(x, y), "tensorforge": lambda: step(x, y)})
        records.append({"name": name, "infer": inf, "train": tr, "compile": compile_s})
        rows.append([f"{name} (batch {batch})", fmt_time(inf["tensorflow"]), fmt_time(inf["tensorforge"]),
                     f"{inf['tensorflow'] / inf['tensorforge']:.2f}x", fmt_time(tr["tensorflow"]),
                     fmt_time(tr["tensorforge"]), f"{tr['tensorflow'] / tr['tensorforge']:.2f}x",
                     f"{compile_s:.2f} s"])  # fmt: skip
    md = ("Keras 3 models: inference through `tfg.from_tensorflow` vs the model called in a `tf.function`; a "
          "training step (softmax cross-entropy, SGD) through `tfg.training_step` vs `model.train_on_batch`.\n\n"
          + markdown_table(["model", "TF infer", "tf infer", "TF / tf", "TF train step", "tf train step",
                            "TF / tf", "from_tensorflow compile"], rows))  # fmt: skip
    return md, records


def section(names: list[str] | None = None):
    tmd, trec = torch_section(names)
    kmd, krec = keras_section() if not names or "keras" in names else ("", [])
    md = "PyTorch models (random weights):\n\n" + tmd + ("\n\n" + kmd if kmd else "")
    return "PyTorch and Keras", md, trec + krec


if __name__ == "__main__":
    print(section(sys.argv[1:] or None)[1])
