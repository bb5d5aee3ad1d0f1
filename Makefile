# tensorforge — developer entry points. `make demo` and `make test` work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
PYTEST_ARGS ?=
JOBS ?= auto
FUZZ_MINUTES ?= 10

.PHONY: setup cross-tools browser demo test test-all lint bench bench-gpu conformance fuzz clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# qemu-user and Debian's AArch64 cross gcc for the export tests (as root with apt; otherwise those tests skip)
cross-tools:
	@tools/install_cross.sh

# chromium and chromium-driver for the explorer's browser tests (as root with apt; otherwise those tests skip)
browser:
	@tools/install_browser.sh

demo: setup
	$(BIN)/tensorforge demo

test: setup cross-tools browser
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/python -m pytest -n $(JOBS) -m "not slow" $(PYTEST_ARGS)

test-all: setup cross-tools browser
	$(BIN)/python -m pytest -n $(JOBS) $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks tools

bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	OMP_WAIT_POLICY=PASSIVE env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/run_all.py $(BENCH)

# tensorforge vs PyTorch CUDA (eager, torch.compile) on MLP, ResNet-50, BERT and fp32 GEMMs: needs an NVIDIA GPU
# (says so and fails without one). tools/gpu_check.sh runs the GPU tests and this, with a summary table.
bench-gpu: setup
	$(BIN)/python benchmarks/bench_gpu.py $(BENCH_GPU_ARGS)

fuzz: setup
	$(BIN)/python tools/fuzz.py --minutes $(FUZZ_MINUTES)

conformance: setup
	$(BIN)/python tools/conformance.py $(CONFORMANCE_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
