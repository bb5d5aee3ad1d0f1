"""Quantized models: ResNet-50 (torchvision's architecture, random weights) quantized by
onnxruntime.quantization.quantize_static (QDQ, per-channel int8 weights, uint8 activations, calibrated on random
images), and the BERT-style encoder quantized by quantize_dynamic (int8 weights, activations quantized at run
time). Each model runs on ONNX Runtime and on tensorforge, the quantized file next to its float original, at 1 and
2 threads, alternating in one run. Agreement: top-1 of tensorforge's int8 model against its fp32 model and against
ONNX Runtime's int8 run of the same file, on fresh random inputs.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import onnx

import tensorforge as tfg
from harness import compare, fmt_time, markdown_table, ort_session

CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tensorforge-bench")
VERSION = "1"  # bump when the models or the quantizer settings change


def _cached(name: str, make) -> onnx.ModelProto:
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"{name}-v{VERSION}.onnx")
    if not os.path.exists(path):
        m = make()
        tmp = path + ".tmp"
        onnx.save(m, tmp)
        os.replace(tmp, path)
    return onnx.load(path)


def _resnet50_qdq() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from torch_models import resnet50

    f32 = _cached("resnet50", resnet50)

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.it = iter([{"input": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.it, None)

    def make():
        with tempfile.TemporaryDirectory() as d:
            src, dst = os.path.join(d, "f32.onnx"), os.path.join(d, "int8.onnx")
            onnx.save(f32, src)
            quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
            return onnx.load(dst)

    return f32, _cached("resnet50-qdq-u8s8", make)


def _bert_dynamic() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from tensorforge.examples import bert_encoder

    f32 = bert_encoder(batch=1, seq=128, hidden=384, heads=12, layers=6)

    def make():
        with tempfile.TemporaryDirectory() as d:
            src, dst = os.path.join(d, "f32.onnx"), os.path.join(d, "int8.onnx")
            onnx.save(f32, src)
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
            return onnx.load(dst)

    return f32, _cached("bert6x384-dynamic", make)


def _feeds(model: onnx.ModelProto, rng) -> dict[str, np.ndarray]:
    out = {}
    for vi in model.graph.input:
        tt = vi.type.tensor_type
        shape = [d.dim_value or 1 for d in tt.shape.dim]
        if tt.elem_type == onnx.TensorProto.INT64:
            out[vi.name] = rng.integers(0, 100, shape).astype(np.int64)
        else:
            out[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def measure(name: str, f32: onnx.ModelProto, q: onnx.ModelProto, threads: int, agree_n: int) -> dict:
    rng = np.random.default_rng(0)
    feeds = _feeds(f32, rng)
    tf_f, tf_q = tfg.compile(f32, num_threads=threads), tfg.compile(q, num_threads=threads)
    ort_f, ort_q = ort_session(f32.SerializeToString(), threads), ort_session(q.SerializeToString(), threads)
    times = compare({"ort_fp32": lambda: ort_f.run(None, feeds), "ort_int8": lambda: ort_q.run(None, feeds),
                     "tf_fp32": lambda: tf_f.run(feeds), "tf_int8": lambda: tf_q.run(feeds)})  # fmt: skip
    top_f = top_o = 0
    err = 0.0
    for _ in range(agree_n):
        x = _feeds(f32, rng)
        yq = next(iter(tf_q.run(x).values()))
        yf = next(iter(tf_f.run(x).values()))
        yo = ort_q.run(None, x)[0]
        top_f += int(np.argmax(yq.reshape(-1)) == np.argmax(yf.reshape(-1)))
        top_o += int(np.argmax(yq.reshape(-1)) == np.argmax(yo.reshape(-1)))
        err = max(err, float(np.max(np.abs(yq - yo)) / (np.max(np.abs(yo)) + 1e-12)))
    return {"name": name, "threads": threads, **times, "agree_fp32": top_f / agree_n, "agree_ort": top_o / agree_n,
            "rel_err_vs_ort": err}  # fmt: skip


def run(threads_list=(1, 2), names: list[str] | None = None) -> tuple[str, list[dict]]:
    quick = bool(os.environ.get("TENSORFORGE_BENCH_QUICK"))
    models = {"resnet50 (QDQ static, u8/s8 per-channel)": _resnet50_qdq,
              "bert 6x384 seq128 (dynamic int8)": _bert_dynamic}  # fmt: skip
    records, rows = [], []
    for name, make in models.items():
        if names and not any(n in name for n in names):
            continue
        f32, q = make()
        for t in threads_list:
            r = measure(name, f32, q, t, 4 if quick else 16)
            records.append(r)
            rows.append([name, t, fmt_time(r["ort_fp32"]), fmt_time(r["ort_int8"]), fmt_time(r["tf_fp32"]),
                         fmt_time(r["tf_int8"]), f"{r['ort_int8'] / r['tf_int8']:.2f}x",
                         f"{r['tf_fp32'] / r['tf_int8']:.2f}x", f"{r['agree_fp32']:.0%}", f"{r['agree_ort']:.0%}",
                         f"{r['rel_err_vs_ort']:.3g}"])  # fmt: skip
            print(rows[-1], flush=True)
    headers = ["model", "threads", "ORT fp32", "ORT int8", "tf fp32", "tf int8", "tf int8 vs ORT int8",
               "tf int8 vs tf fp32", "top-1 = tf fp32", "top-1 = ORT int8", "max rel. diff vs ORT int8"]  # fmt: skip
    return markdown_table(headers, rows), records


def section():
    table, records = run()
    md = ("Batch 1. The same quantized ONNX file on both runtimes; ratios > 1: tensorforge is faster. Top-1 agreement "
          "on fresh random inputs (random weights: agreement with fp32 measures the quantization error, with ONNX "
          "Runtime the kernels' rounding).\n\n" + table)  # fmt: skip
    return "Quantized models (int8) vs ONNX Runtime", md, records


if __name__ == "__main__":
    t, _ = run(names=sys.argv[1:] or None)
    print(t)
