PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sparse-engine-installed

.PHONY: demo test bench install clean

# Installs PyTorch (the CPU build, 2.13.0) and this package, building the compiled
# extension against it without build isolation.
$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/* csrc/cuda/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	touch $@

install: $(STAMP)

# The main job: a short sparse training run on embedded default data.
demo: install
	$(VENV)/bin/sparse-engine train

test: install
	$(PY) -m pytest -q tests

# The CPU tables (benchmarks/results/cpu_ops.md, rnn_cpu.md), each written row by row; run it on
# a quiet machine. BENCH_ARGS=--quick checks the scripts on a small subset.
bench: install
	$(PY) benchmarks/bench_ops.py $(BENCH_ARGS)
	$(PY) benchmarks/bench_rnn.py --device cpu $(BENCH_ARGS)

clean:
	rm -rf build $(VENV) sparse_engine/_C*.so *.egg-info
