"""`make bench-gpu`: tensorforge on an NVIDIA GPU against PyTorch CUDA (eager and torch.compile).

Models (written with torch.nn, random weights, exported to ONNX for tensorforge): an MLP (784-1024-1024-10,
batch 256), ResNet-50 (batch 8, 224x224) and a BERT-base-like encoder (12 layers, d=768, seq 128, batch 8).
Per model: the median latency of one inference with the inputs already on the device (tensorforge:
``CudaModel.benchmark``, every kernel launched on one stream; PyTorch: the module called and
synchronized), and the largest difference of tensorforge's outputs from PyTorch's. Then square fp32 GEMMs
(1024..4096): TFLOP/s of tensorforge's SIMT schedule and of ``torch.matmul`` (TF32 off, the same
arithmetic), against the device's fp32 peak (SMs x FP32 lanes x 2 x clock), and both on tf32 tensor cores.

Needs a GPU, its driver and a CUDA build of PyTorch; without a GPU it says what is missing and exits 1.
``--quick``: fewer repetitions and smaller models; ``--json PATH``: the rows as JSON too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

FP32_LANES = {70: 64, 75: 64, 80: 64}  # FP32 lanes per SM (sm_86 and later: 128)


def _peak_tflops(info: dict) -> float:
    lanes = FP32_LANES.get(info["sm"], 128)
    return info["sms"] * lanes * 2 * info["clock_khz"] * 1e3 / 1e12


def _models(quick: bool):
    import torch
    from torch import nn

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10),
                        nn.Softmax(-1))  # fmt: skip
    layers, seq, batch = (2, 64, 2) if quick else (12, 128, 8)
    layer = nn.TransformerEncoderLayer(768, 12, 3072, dropout=0.0, activation="gelu", batch_first=True)
    enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
    out = [("mlp", mlp, (torch.randn(256, 784),)), ("bert", enc, (torch.randn(batch, seq, 768),))]
    out.insert(1, ("resnet50", _resnet50(), (torch.randn(2 if quick else 8, 3, 224, 224),)))
    return out


def _resnet50():
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = width * 4
            self.f = nn.Sequential(nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                   nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))  # fmt: skip
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            return nn.functional.relu(self.f(x) + (x if self.down is None else self.down(x)))

    blocks, cin = [], 64
    for width, n, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for i in range(n):
            blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * 4
    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000))  # fmt: skip


def _export(module, args):
    import io

    import onnx
    import torch

    buf = io.BytesIO()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused inference path has no ONNX export
    with torch.no_grad():
        torch.onnx.export(module.eval(), args, buf, opset_version=17, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def _torch_time(fn, args, repeat: int) -> float:
    import torch

    with torch.no_grad():
        for _ in range(3):
            fn(*args)
        torch.cuda.synchronize()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(*args)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, smaller models")
    ap.add_argument("--json", help="also write the rows as JSON to this path")
    ap.add_argument("--models", default="mlp,resnet50,bert", help="comma-separated subset of mlp,resnet50,bert")
    args = ap.parse_args(argv)
    import tensorforge as tfg
    from tensorforge.runtime import cuda

    try:
        info = cuda.device_info()
    except cuda.CudaError as e:
        print(f"bench-gpu: needs an NVIDIA GPU: {e}")
        return 1
    import torch

    if not torch.cuda.is_available():
        print(f"bench-gpu: PyTorch {torch.__version__} has no CUDA (install a CUDA build of torch==2.13.0)")
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    repeat = 10 if args.quick else 50
    peak = _peak_tflops(info)
    print(f"# {info['name']} ({info['arch']}, {info['sms']} SMs, {info['clock_khz'] / 1e6:.2f} GHz), fp32 peak "
          f"{peak:.1f} TFLOP/s; torch {torch.__version__}")  # fmt: skip
    rows = []
    wanted = set(args.models.split(","))
    for name, module, example in _models(args.quick):
        if name not in wanted:
            continue
        model = _export(module, example)
        t0 = time.perf_counter()
        tf = tfg.compile(model, target="cuda")
        compile_s = time.perf_counter() - t0
        xs = [x.numpy() for x in example]
        got = tf.call(*xs)[0]
        dev = module.cuda().eval()
        dargs = tuple(x.cuda() for x in example)
        with torch.no_grad():
            want = dev(*dargs).float().cpu().numpy()
        row = {"model": name, "tensorforge_ms": tf.benchmark(*xs, repeat=repeat) * 1e3,
               "max_abs_diff": float(np.abs(got - want).max()), "compile_s": compile_s,
               "eager_ms": _torch_time(dev, dargs, repeat) * 1e3}  # fmt: skip
        try:
            row["torch_compile_ms"] = _torch_time(torch.compile(dev), dargs, repeat) * 1e3
        except Exception as e:  # torch.compile needs a working Triton; report, do not stop
            row["torch_compile_ms"] = float("nan")
            row["torch_compile_error"] = f"{type(e).__name__}: {str(e)[:200]}"
        rows.append(row)
        print(f"{name:9s} tensorforge {row['tensorforge_ms']:8.3f} ms | eager {row['eager_ms']:8.3f} ms | "
              f"torch.compile {row['torch_compile_ms']:8.3f} ms | max |diff| {row['max_abs_diff']:.2e}",
              flush=True)  # fmt: skip
    from onnx import TensorProto, helper

    from tensorforge.compiler.gpu import compile_cuda

    for n in (1024,) if args.quick else (1024, 2048, 4096):
        g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "gemm",
                              [helper.make_tensor_value_info(v, TensorProto.FLOAT, [n, n]) for v in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])])  # fmt: skip
        tf = tfg.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), target="cuda")
        a, b = (np.random.default_rng(i).standard_normal((n, n)).astype(np.float32) for i in range(2))
        t_tf = tf.benchmark(a, b, repeat=repeat)
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        t_torch = _torch_time(torch.matmul, (ta, tb), repeat)
        err = float(np.abs(tf.call(a, b)[0] - (ta @ tb).cpu().numpy()).max())
        flops = 2 * n**3
        row = {"gemm": n, "tensorforge_tflops": flops / t_tf / 1e12, "torch_tflops": flops / t_torch / 1e12,
               "peak_tflops": peak, "max_abs_diff": err}  # fmt: skip
        # tf32 tensor cores on both sides (tensorforge: precision="tf32"; torch: allow_tf32)
        tf32 = compile_cuda(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), precision="tf32")
        torch.backends.cuda.matmul.allow_tf32 = True
        row["tensorforge_tf32_tflops"] = flops / tf32.benchmark(a, b, repeat=repeat) / 1e12
        row["torch_tf32_tflops"] = flops / _torch_time(torch.matmul, (ta, tb), repeat) / 1e12
        torch.backends.cuda.matmul.allow_tf32 = False
        # fp16 / bf16 tensor cores (m16n8k16, float32 accumulation; operands converted while staging tiles)
        # against torch.matmul on half-precision tensors (its cuBLAS also accumulates in float32)
        for prec, tdt in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
            half = compile_cuda(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), precision=prec)
            row[f"tensorforge_{prec}_tflops"] = flops / half.benchmark(a, b, repeat=repeat) / 1e12
            row[f"torch_{prec}_tflops"] = flops / _torch_time(torch.matmul, (ta.to(tdt), tb.to(tdt)), repeat) / 1e12
            ref = (ta.to(tdt).double() @ tb.to(tdt).double()).cpu().numpy()
            row[f"{prec}_max_abs_diff"] = float(np.abs(half.call(a, b)[0] - ref).max())
        rows.append(row)
        share = row["tensorforge_tflops"] / peak
        print(f"gemm {n:5d}  tensorforge {row['tensorforge_tflops']:6.2f} TFLOP/s ({share:5.1%} of peak) | "
              f"torch {row['torch_tflops']:6.2f} TFLOP/s | max |diff| {err:.2e} | tf32: tensorforge "
              f"{row['tensorforge_tf32_tflops']:6.2f}, torch {row['torch_tf32_tflops']:6.2f} TFLOP/s | fp16: "
              f"{row['tensorforge_fp16_tflops']:6.2f} vs {row['torch_fp16_tflops']:6.2f} | bf16: "
              f"{row['tensorforge_bf16_tflops']:6.2f} vs {row['torch_bf16_tflops']:6.2f} TFLOP/s",
              flush=True)  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": info, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
