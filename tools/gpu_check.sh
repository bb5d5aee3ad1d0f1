#!/usr/bin/env bash
# One script for a machine with an NVIDIA GPU: the GPU tests (tests/test_gpu_*.py, the real-GPU ones
# included), then the GPU benchmark (benchmarks/bench_gpu.py), and one summary table.
#
#   tools/gpu_check.sh            # full run (a few minutes on an H100)
#   QUICK=1 tools/gpu_check.sh    # smaller models, fewer repetitions
#   OUT=dir tools/gpu_check.sh    # where the logs and bench_gpu.json go (default: gpu_check_out/)
#
# Needs: the NVIDIA driver (libcuda.so.1), the project's venv with a CUDA build of torch==2.13.0 for the
# PyTorch columns; ptxas (CUDA toolkit, or `pip install nvidia-cuda-nvcc-cu12`) for the PTX tests.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
export TENSORFORGE_CACHE_DIR=${TENSORFORGE_CACHE_DIR:-$OUT/cache}

echo "== device"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader
if ! $PY -c "
import sys
from tensorforge.runtime import cuda
try:
    print(cuda.device_info())
except cuda.CudaError as e:
    sys.exit(f'gpu_check: no usable NVIDIA GPU: {e}')
"; then
    echo "gpu_check: nothing to run"
    exit 1
fi

echo "== GPU tests"
$PY -m pytest -q -p no:cacheprovider -rs tests/test_gpu_cuda.py tests/test_gpu_kernels.py tests/test_gpu_interp.py \
    tests/test_gpu_ptx.py tests/test_gpu_mma.py tests/test_gpu_device_io.py tests/test_gpu_train.py \
    tests/test_gpu_export.py --junitxml="$OUT/gpu_tests.xml" 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
tests_rc=${PIPESTATUS[0]}

echo "== GPU benchmark"
$PY benchmarks/bench_gpu.py ${QUICK:+--quick} --json "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.log"
bench_rc=${PIPESTATUS[0]}

echo "== summary"
$PY - "$OUT" <<'PYEOF'
import json, os, sys
import xml.etree.ElementTree as ET
out = sys.argv[1]
try:
    suite = ET.parse(os.path.join(out, "gpu_tests.xml")).getroot().iter("testsuite").__next__()
    a = suite.attrib
    print(f"tests: {a.get('tests')} run, {a.get('failures')} failed, {a.get('errors')} errors, {a.get('skipped')} skipped")
    for case in suite.iter("testcase"):
        bad = case.find("failure") or case.find("error")
        if bad is not None:
            print(f"  FAILED {case.get('classname')}::{case.get('name')}")
except (OSError, ET.ParseError, StopIteration) as e:
    print(f"tests: no report ({e})")
try:
    data = json.load(open(os.path.join(out, "bench_gpu.json")))
except OSError:
    sys.exit(0)
d = data["device"]
print(f"device: {d['name']} {d['arch']} ({d['sms']} SMs)")
print(f"{'model':10s} {'tensorforge ms':>15s} {'eager ms':>10s} {'compile ms':>11s} {'max |diff|':>11s}")
for r in data["rows"]:
    if "model" in r:
        print(f"{r['model']:10s} {r['tensorforge_ms']:15.3f} {r['eager_ms']:10.3f} {r['torch_compile_ms']:11.3f} "
              f"{r['max_abs_diff']:11.2e}")
print(f"{'gemm n':10s} {'tf TFLOP/s':>15s} {'torch':>10s} {'% of peak':>11s} {'tf tf32':>9s} {'torch tf32':>11s}")
for r in data["rows"]:
    if "gemm" in r:
        print(f"{r['gemm']:<10d} {r['tensorforge_tflops']:15.2f} {r['torch_tflops']:10.2f} "
              f"{r['tensorforge_tflops'] / r['peak_tflops']:11.1%} {r['tensorforge_tf32_tflops']:9.2f} "
              f"{r['torch_tf32_tflops']:11.2f}")
print(f"{'gemm n':10s} {'tf fp16':>15s} {'torch fp16':>10s} {'tf bf16':>11s} {'torch bf16':>11s}  (tensor cores, TFLOP/s)")
for r in data["rows"]:
    if "tensorforge_fp16_tflops" in r:
        print(f"{r['gemm']:<10d} {r['tensorforge_fp16_tflops']:15.2f} {r['torch_fp16_tflops']:10.2f} "
              f"{r['tensorforge_bf16_tflops']:11.2f} {r['torch_bf16_tflops']:11.2f}")
PYEOF
echo "tests exit $tests_rc, bench exit $bench_rc"
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ]
