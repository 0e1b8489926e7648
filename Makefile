PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sparse-engine-installed
# TORCH_INDEX=https://download.pytorch.org/whl/cpu picks torch's CPU build from PyTorch's own index
# (PyPI's Linux torch is the CUDA build, several GB); empty: whatever your pip index gives.
TORCH_INDEX ?=
SHELL := /bin/bash

.PHONY: demo test asan bench install clean

# The environment, PyTorch 2.13.0 and this package, its compiled extension built against that
# torch (no build isolation). Each step says what it does; the compile shows one line per file.
$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/* csrc/cuda/*)
	@echo "== 1/3 Python environment in $(VENV): pip, setuptools, wheel, numpy, ninja"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip setuptools wheel numpy ninja
	@echo "== 2/3 torch 2.13.0$(if $(TORCH_INDEX), from $(TORCH_INDEX)) (about 1 minute from a local wheel; a download of 0.2-3 GB otherwise)"
	@$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	@echo "== 3/3 compiling the kernels (C++/OpenMP, and CUDA when torch has it and nvcc is found: 2-6 minutes"
	@echo "       on a 2-core VM without CUDA) and installing sparse-engine with its test extras; full log: $(VENV)/build.log"
	@set -o pipefail; start=$$(date +%s); \
	if ! PYTHONUNBUFFERED=1 $(PY) -m pip install -v --no-build-isolation -e ".[test]" 2>&1 | tee $(VENV)/build.log | \
	    $(PY) -u tools/build_progress.py; then \
	  tail -n 40 $(VENV)/build.log; echo "the build failed: the whole log is $(VENV)/build.log"; exit 1; fi; \
	echo "       done in $$(( $$(date +%s) - start )) s"
	@touch $@

install: $(STAMP)

# The main job: a short sparse training run on embedded default data.
demo: install
	$(VENV)/bin/sparse-engine train

# The whole suite; 15-30 minutes on a 2-core VM (the slowest part compiles the CUDA kernels for
# the CPU emulator and runs them).
test: install
	$(PY) -m pytest -q tests

# The CPU kernels under AddressSanitizer + UndefinedBehaviorSanitizer (docs/architecture.md,
# "Malformed input"): built into build/asan (the normal extension is left as it is; about 20 minutes
# on 2 busy cores the first time, -O1), then the tests that reach every CPU kernel, the fuzz test of
# every operator with malformed input among them, run against that build from a copy of the package
# (the fuzz test alone: 1.5 minutes on 2 busy cores). Python and torch are not instrumented, so libasan is preloaded, with
# libstdc++ (else ASan cannot intercept the first C++ throw: the ValueErrors); --capture=sys leaves
# the sanitizers' reports (written to fd 2 just before the process exits) on the terminal. Left out: the
# test of glibc malloc's trimming (ASan's allocator replaces malloc) and the op families' tests on the
# CUDA emulator (*_on_the_emulator: host builds of the CUDA kernels, which
# tests/kernels/test_cuda_sanitizers.py runs under the sanitizers).
ASAN_TESTS := ops/test_malformed_input.py ops/test_index_check.py ops/test_spmm.py ops/test_sddmm.py \
	ops/test_transpose.py ops/test_rnn_step.py ops/test_topology.py ops/test_densify.py ops/test_dense_rnn.py \
	ops/test_analysis.py ops/test_mlp.py training/test_topology_updates.py sparse/test_weight_invariants.py \
	io/test_checkpoint_round_trips.py nn/test_module_properties.py nn/test_cells.py nn/test_blocks.py \
	analysis/test_census.py runtime/test_import_order.py
asan: install
	@echo "== building the CPU kernels with -fsanitize=address,undefined into build/asan"
	@mkdir -p build/asan && SPARSE_ENGINE_CUDA=0 SPARSE_ENGINE_SANITIZE=address $(PY) setup.py build_ext --build-lib build/asan/lib \
	  --build-temp build/asan/temp > build/asan/build.log 2>&1 || { tail -n 40 build/asan/build.log; exit 1; }
	@rm -rf build/asan/pkg && mkdir -p build/asan/pkg && cp -r sparse_engine build/asan/pkg/ && \
	  rm -f build/asan/pkg/sparse_engine/_C*.so && cp build/asan/lib/sparse_engine/_C*.so build/asan/pkg/sparse_engine/
	@echo "== the kernel tests under the sanitizers: $(ASAN_TESTS)"
	cd build/asan/pkg && export PYTHONPATH=$$PWD \
	  LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libstdc++.so)" \
	  ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 && \
	  $(abspath $(PY)) -c "import sparse_engine._C as c; assert '/build/asan/' in c.__file__, c.__file__" && \
	  $(abspath $(PY)) -m pytest -q -p no:cacheprovider --capture=sys -o pythonpath=$$PWD $(addprefix $(CURDIR)/tests/,$(ASAN_TESTS)) \
	    -k "not test_keep_freed_memory_serves_large_tensors_from_the_heap and not on_the_emulator"

# The CPU tables (benchmarks/results/cpu_ops.md, rnn_cpu.md), each written row by row; run it on
# a quiet machine. BENCH_ARGS=--quick checks the scripts on a small subset, into fresh files under
# benchmarks/results/local/ (the committed tables are rewritten only by a full run's --out). The op
# grid (row laws x sizes x densities x batch widths) stops starting cells after BENCH_OPS_S seconds
# (default 4 hours: the smallest N for every law first, so a cut run loses sizes, not laws).
BENCH_OPS_S ?= 14400
bench: install
	$(PY) benchmarks/bench_ops.py $(if $(findstring --quick,$(BENCH_ARGS)),,--out cpu_ops.md --budget-s $(BENCH_OPS_S)) $(BENCH_ARGS)
	$(PY) benchmarks/bench_rnn.py --device cpu $(if $(findstring --quick,$(BENCH_ARGS)),,--out rnn_cpu.md) $(BENCH_ARGS)

clean:
	rm -rf build $(VENV) sparse_engine/_C*.so *.egg-info
