"""Convolution layers of ResNet-50 and MobileNet-v2 (batch 1, NCHW, bias, no activation), and the two
whole networks: tensorforge vs PyTorch (``conv2d``) and ONNX Runtime, 1 and 2 threads.

Every layer is its own one-node ONNX model (ONNX Runtime applies its NCHWc layout transformation to it,
so it pays the reorders a single layer needs; inside a whole network it does not). tensorforge's
GFLOP/s and % of the fp32 peak on that many threads, and its speed against ONNX Runtime and against the
best of the others (> 1: tensorforge is faster).
"""

from __future__ import annotations

import os

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import tensorforge as tfg
from harness import compare, fmt_time, markdown_table, ort_session, pyplot, save_figure
from tensorforge.examples import mobilenet_v2, resnet50
from tensorforge.runtime.peak import machine_peak

# (name, in channels, out channels, input size, kernel, stride, groups)
RESNET50 = [
    ("conv1 7x7/2", 3, 64, 224, 7, 2, 1),
    ("l1 1x1 64-64", 64, 64, 56, 1, 1, 1),
    ("l1 3x3 64", 64, 64, 56, 3, 1, 1),
    ("l1 1x1 64-256", 64, 256, 56, 1, 1, 1),
    ("l1 1x1 256-64", 256, 64, 56, 1, 1, 1),
    ("l2 1x1 256-128", 256, 128, 56, 1, 1, 1),
    ("l2 3x3/2 128", 128, 128, 56, 3, 2, 1),
    ("l2 down 1x1/2 256-512", 256, 512, 56, 1, 2, 1),
    ("l2 3x3 128", 128, 128, 28, 3, 1, 1),
    ("l2 1x1 128-512", 128, 512, 28, 1, 1, 1),
    ("l2 1x1 512-128", 512, 128, 28, 1, 1, 1),
    ("l3 3x3/2 256", 256, 256, 28, 3, 2, 1),
    ("l3 3x3 256", 256, 256, 14, 3, 1, 1),
    ("l3 1x1 256-1024", 256, 1024, 14, 1, 1, 1),
    ("l3 1x1 1024-256", 1024, 256, 14, 1, 1, 1),
    ("l4 3x3/2 512", 512, 512, 14, 3, 2, 1),
    ("l4 3x3 512", 512, 512, 7, 3, 1, 1),
    ("l4 1x1 512-2048", 512, 2048, 7, 1, 1, 1),
    ("l4 1x1 2048-512", 2048, 512, 7, 1, 1, 1),
]
MOBILENET_V2 = [
    ("stem 3x3/2 3-32", 3, 32, 224, 3, 2, 1),
    ("dw 3x3 32", 32, 32, 112, 3, 1, 32),
    ("1x1 32-16", 32, 16, 112, 1, 1, 1),
    ("1x1 16-96", 16, 96, 112, 1, 1, 1),
    ("dw 3x3/2 96", 96, 96, 112, 3, 2, 96),
    ("1x1 96-24", 96, 24, 56, 1, 1, 1),
    ("1x1 24-144", 24, 144, 56, 1, 1, 1),
    ("dw 3x3 144", 144, 144, 56, 3, 1, 144),
    ("dw 3x3/2 192", 192, 192, 28, 3, 2, 192),
    ("1x1 192-64", 192, 64, 14, 1, 1, 1),
    ("dw 3x3 384", 384, 384, 14, 3, 1, 384),
    ("1x1 384-96", 384, 96, 14, 1, 1, 1),
    ("dw 3x3 576", 576, 576, 14, 3, 1, 576),
    ("1x1 576-160", 576, 160, 7, 1, 1, 1),
    ("dw 3x3 960", 960, 960, 7, 3, 1, 960),
    ("1x1 960-320", 960, 320, 7, 1, 1, 1),
    ("1x1 320-1280", 320, 1280, 7, 1, 1, 1),
]


def conv_model(c: int, m: int, hw: int, k: int, s: int, groups: int):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((m, c // groups, k, k)) * np.sqrt(2.0 / (c // groups * k * k))).astype(np.float32)
    b = (rng.standard_normal(m) * 0.1).astype(np.float32)
    oh = (hw + 2 * (k // 2) - k) // s + 1
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], pads=[k // 2] * 4, strides=[s, s],
                            group=groups)  # fmt: skip
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, oh, oh])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), w, b


def _layers():
    quick = os.environ.get("TENSORFORGE_BENCH_QUICK")
    out = [("ResNet-50", spec) for spec in (RESNET50[::4] if quick else RESNET50)]
    return out + [("MobileNet-v2", spec) for spec in (MOBILENET_V2[::4] if quick else MOBILENET_V2)]


def run(threads: int) -> tuple[str, list[dict]]:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    peak = machine_peak()
    rows, records = [], []
    for net, (name, c, m, hw, k, s, groups) in _layers():
        model, w, b = conv_model(c, m, hw, k, s, groups)
        x = np.random.default_rng(1).standard_normal((1, c, hw, hw)).astype(np.float32)
        tf = tfg.compile(model, num_threads=threads)
        sess = ort_session(model.SerializeToString(), threads)
        tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)

        def torch_conv():
            with torch.no_grad():
                return F.conv2d(tx, tw, tb, stride=s, padding=k // 2, groups=groups)

        want = torch_conv().numpy()
        assert np.allclose(tf(x), want, rtol=1e-3, atol=1e-3), f"tensorforge wrong at {net} {name}"
        t = compare({"tensorforge": lambda: tf(x), "pytorch": torch_conv,
                     "onnxruntime": lambda: sess.run(None, {"x": x})})  # fmt: skip
        gf = tf.program.flops / t["tensorforge"] / 1e9
        best = min(("pytorch", "onnxruntime"), key=lambda o: t[o])
        rows.append([net, name, str(threads), fmt_time(t["tensorforge"]), fmt_time(t["pytorch"]),
                     fmt_time(t["onnxruntime"]), f"{gf:.1f}", f"{peak.percent(gf, threads):.0f}%",
                     f"{t['onnxruntime'] / t['tensorforge']:.2f}x", f"{t[best] / t['tensorforge']:.2f}x"])  # fmt: skip
        records.append({"net": net, "layer": name, "threads": threads, **t})
    for net, build in [("ResNet-50", resnet50), ("MobileNet-v2", mobilenet_v2)]:
        size = 64 if os.environ.get("TENSORFORGE_BENCH_QUICK") else 224
        model = build(batch=1, size=size)
        x = np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)
        tf = tfg.compile(model, num_threads=threads)
        sess = ort_session(model.SerializeToString(), threads)
        ref = sess.run(None, {"x": x})[0]
        assert np.allclose(tf(x), ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max()), f"tensorforge wrong on {net}"
        t = compare({"tensorforge": lambda: tf(x), "onnxruntime": lambda: sess.run(None, {"x": x})},
                    block_s=0.3)  # fmt: skip
        gf = tf.program.flops / t["tensorforge"] / 1e9
        r = t["onnxruntime"] / t["tensorforge"]
        rows.append([net, f"whole network {size}x{size}", str(threads), fmt_time(t["tensorforge"]), "-",
                     fmt_time(t["onnxruntime"]), f"{gf:.1f}", f"{peak.percent(gf, threads):.0f}%", f"{r:.2f}x",
                     f"{r:.2f}x"])  # fmt: skip
    head = ["network", "layer", "threads", "tensorforge", "PyTorch", "ONNX Runtime", "tf GFLOP/s", "tf % of peak",
            "vs ONNX Runtime", "vs best other"]  # fmt: skip
    return markdown_table(head, rows), records


def section():
    tables, records = [], []
    for th in (1, 2):
        table, recs = run(th)
        tables.append(table)
        records += recs
    md = ("Convolution layers (batch 1, NCHW, with bias) and whole networks. Times are medians of alternating "
          "blocks; ratios > 1 mean tensorforge is faster.\n\n" + tables[0] + "\n\n"
          + "\n".join(tables[1].splitlines()[2:]))  # fmt: skip
    return "Convolution", md, records


def plot(records, outdir):
    plt = pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(13, 7), sharey=True)
    for ax, th in zip(axes, (1, 2)):
        recs = [r for r in records if r["threads"] == th]
        xs = range(len(recs))
        for name, marker in [("onnxruntime", "o"), ("pytorch", "s")]:
            ax.plot(xs, [r[name] / r["tensorforge"] for r in recs], marker, label=f"{name} time / tensorforge time")
        ax.axhline(1.0, color="k", lw=1)
        ax.set_xticks(list(xs), [f"{r['net'][:3]} {r['layer']}" for r in recs], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("speed-up of tensorforge")
        ax.set_title(f"{th} thread{'s' if th > 1 else ''} (above 1: tensorforge faster)")
        ax.legend(fontsize=8)
    return save_figure(fig, outdir, "conv_speedup.png")


if __name__ == "__main__":
    title, md, recs = section()
    print(md)
