PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sparse-engine-installed
# TORCH_INDEX=https://download.pytorch.org/whl/cpu picks torch's CPU build from PyTorch's own index
# (PyPI's Linux torch is the CUDA build, several GB); empty: whatever your pip index gives.
TORCH_INDEX ?=
SHELL := /bin/bash

.PHONY: demo test bench install clean

# The environment, PyTorch 2.13.0 and this package, its compiled extension built against that
# torch (no build isolation). Each step says what it does; the compile shows one line per file.
$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/* csrc/cuda/*)
	@echo "== 1/3 Python environment in $(VENV): pip, setuptools, wheel, numpy, ninja"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip setuptools wheel numpy ninja
	@echo "== 2/3 torch 2.13.0$(if $(TORCH_INDEX), from $(TORCH_INDEX)) (about 1 minute from a local wheel; a download of 0.2-3 GB otherwise)"
	@$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	@echo "== 3/3 compiling the kernels (C++/OpenMP, and CUDA when torch has it and nvcc is found: about 4 minutes"
	@echo "       on 2 cores without CUDA) and installing sparse-engine with its test extras; full log: $(VENV)/build.log"
	@set -o pipefail; start=$$(date +%s); \
	if ! $(PY) -m pip install -v --no-build-isolation -e ".[test]" 2>&1 | tee $(VENV)/build.log | \
	    awk '/^ *\[[0-9]+\/[0-9]+\]/ { for (i = 1; i < NF; i++) if ($$i == "-c" && $$(i + 1) ~ /\.(cpp|cu)$$/) { n = split($$(i + 1), p, "/"); \
	         print "       " $$1 " " p[n - 1] "/" p[n]; fflush() } }'; then \
	  tail -n 40 $(VENV)/build.log; echo "the build failed: the whole log is $(VENV)/build.log"; exit 1; fi; \
	echo "       done in $$(( $$(date +%s) - start )) s"
	@touch $@

install: $(STAMP)

# The main job: a short sparse training run on embedded default data.
demo: install
	$(VENV)/bin/sparse-engine train

# The whole suite; about 10 minutes on 2 cores (the slowest part compiles the CUDA kernels for
# the CPU emulator and runs them).
test: install
	$(PY) -m pytest -q tests

# The CPU tables (benchmarks/results/cpu_ops.md, rnn_cpu.md), each written row by row; run it on
# a quiet machine. BENCH_ARGS=--quick checks the scripts on a small subset.
bench: install
	$(PY) benchmarks/bench_ops.py $(BENCH_ARGS)
	$(PY) benchmarks/bench_rnn.py --device cpu $(BENCH_ARGS)

clean:
	rm -rf build $(VENV) sparse_engine/_C*.so *.egg-info
