#!/usr/bin/env bash
# The one command for a GPU session: build the extension in place with the CUDA kernels, run
# the CUDA tests, then the CUDA benchmarks. Logs and results files are also written to $OUT
# when it is set (the device runner brings $OUT back; the checkout there is thrown away).
#
# ---------------------------------------------------------------- GPU session plan (30 minutes)
# One command may run at most 10 minutes, so run the stages as separate commands, in this
# order (correctness first), each right after the previous one. Times are estimates for an
# H100 with 16 host cores; every benchmark stops starting new cells after its budget and
# rewrites its results file (into $OUT too) after every cell, so a cut-off run still leaves
# results.
#   1. STAGES="build test" benchmarks/gpu_all.sh                          ~5 min
#        build ~2 min (nvcc for sm_90 only: TORCH_CUDA_ARCH_LIST = the detected GPU; the five
#        .cu files compile in parallel, ~1 min each), tests ~2-3 min (incl. torch.compile).
#        If this fails, read $OUT/gpu_logs/{build,tests}.log and fix before anything else.
#        The built module is also copied to $OUT/build/ (stripped; split into .partNN files
#        when over 15 MB): a machine idle for ~30 s is released and the next command gets a
#        fresh one without the build. Here: `cat files_at/build/_C*.so* > sparse_engine/_C.cpython-
#        312-x86_64-linux-gnu.so` (the name as it came back, without .partNN) and pass that path
#        as `carry` to every later command; without it each later command first rebuilds
#        (~2 min, automatic).
#   2. BENCH_DTYPES=float32 BENCH_BUDGET_S=300 STAGES=bench benchmarks/gpu_all.sh   ~6-7 min
#        the kernel grid, the issue's three reference cells first (N=131,072 at 20% density:
#        3.4e9 nnz, is skipped by its memory estimate)
#   3. STAGES=rnn benchmarks/gpu_all.sh                                   ~7 min (budget 360 s)
#   4. STAGES="step topology" benchmarks/gpu_all.sh                       ~3-5 min
#   5. STAGES=largest benchmarks/gpu_all.sh                               ~4 min (budget 240 s)
#   6. BENCH_DTYPES=bfloat16 STAGES=bench benchmarks/gpu_all.sh --quick   ~2 min
#        (the full bf16 grid, BENCH_BUDGET_S=420 without --quick, only with time to spare;
#        likewise the rest of the float32 grid: STAGES=bench BENCH_DTYPES=float32 ... --n 131072)
#   Optional, 5+ min: STAGES=sanitize (compute-sanitizer memcheck on a subset of the tests).
# Afterwards commit, from $OUT (files_at) into benchmarks/results/: cuda_ops_<gpu>.md (float32
# grid), cuda_ops_<gpu>_bf16_quick.md, rnn_step_gpu.md, topology_<gpu>.md, rnn_gpu.md,
# rnn_gpu_largest.md (<gpu> = nvidia_h100_80gb_hbm3 or the like), and gpu_logs/tests.log as
# benchmarks/results/gpu_tests_<gpu>.log; quote the numbers in docs/cuda.md / README.md.
# -------------------------------------------------------------------------------------------
#
#   benchmarks/gpu_all.sh                 # every stage (more than 10 minutes: see the plan)
#   STAGES="build test" benchmarks/gpu_all.sh
#   STAGES="bench" benchmarks/gpu_all.sh --quick      # extra arguments go to bench_cuda.py
#   STAGES="build sanitize" benchmarks/gpu_all.sh     # compute-sanitizer memcheck on a subset
#   STAGES="step" benchmarks/gpu_all.sh               # fused vs composed recurrent step
#   STAGES="topology" benchmarks/gpu_all.sh           # 100M-nnz prune + regrow (bench_topology.py)
#   STAGES="rnn" benchmarks/gpu_all.sh                # LSTM training step table (bench_rnn.py)
#   STAGES="largest" benchmarks/gpu_all.sh            # largest SparseLSTM hidden at 32 nonzeros/row
#   BENCH_DTYPES=bfloat16 STAGES=bench benchmarks/gpu_all.sh   # only the bf16 grid
# The bench stage runs the kernel grid once per dtype in BENCH_DTYPES (default "float32 bfloat16":
# bf16 storage with float32 accumulation, against cuSPARSE in bf16 and our float32), each for at
# most BENCH_BUDGET_S seconds (default 420) of new cells.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAGES=${STAGES:-build test bench step topology rnn largest}
BENCH_DTYPES=${BENCH_DTYPES:-float32 bfloat16}
BENCH_BUDGET_S=${BENCH_BUDGET_S:-420}
LOGS=${OUT:-benchmarks/results}/gpu_logs
mkdir -p "$LOGS"
# the checkout's package whether or not `pip install -e .` worked (the fallback builds in place)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1  # progress reaches the log even when a command is killed at its limit
copy=(); [[ -n "${OUT:-}" ]] && copy=(--copy-to "$OUT")
status=0

has() { [[ " $STAGES " == *" $1 "* ]]; }
took() { echo "== $1 took $(( SECONDS - $2 )) s"; }
# logged LOG LINES CMD...: CMD's output goes to $LOGS/LOG and its last LINES lines ("+1": all) to
# the terminal; a failing CMD marks the whole run failed
logged() {
  local log=$1 lines=$2
  shift 2
  "$@" 2>&1 | tee "$LOGS/$log" | tail -n "$lines"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
}

cuda_ready() {  # this checkout's sparse_engine._C holds the CUDA kernels and a GPU is visible
  $PY -c "import torch, sparse_engine; from sparse_engine._ext import HAS_CUDA_KERNELS as h; \
print('torch', torch.__version__, 'cuda available', torch.cuda.is_available(), 'CUDA kernels', h, \
'from', sparse_engine.__file__); \
assert h and torch.cuda.is_available(), 'built without CUDA kernels or no device'"
}

build() {
  local t0=$SECONDS
  echo "== build ($(nvcc --version 2>&1 | tail -1))"
  export SPARSE_ENGINE_CUDA=1
  # nvcc for the GPU present only (one arch keeps the build to ~2 minutes)
  if [[ -z "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
    TORCH_CUDA_ARCH_LIST=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))" 2>/dev/null) \
      && export TORCH_CUDA_ARCH_LIST && echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
  fi
  if ! MAX_JOBS=${MAX_JOBS:-16} $PY -m pip install --no-build-isolation --no-deps -e . >"$LOGS/build.log" 2>&1; then
    echo "pip install -e . failed (see $LOGS/build.log); trying setup.py build_ext --inplace"
    tail -5 "$LOGS/build.log"
    MAX_JOBS=${MAX_JOBS:-16} $PY setup.py build_ext --inplace >>"$LOGS/build.log" 2>&1 || { tail -40 "$LOGS/build.log"; exit 1; }
  fi
  tail -2 "$LOGS/build.log"
  cuda_ready || exit 1
  # the built module, so that a later command on a fresh machine can carry it instead of rebuilding:
  # without host debug info, and in parts of < 16 MiB (the largest file $OUT brings back)
  if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT/build"
    for so in sparse_engine/_C*.so; do
      dst="$OUT/build/$(basename "$so")"
      strip --strip-debug -o "$dst" "$so" 2>/dev/null || cp "$so" "$dst"
      if [[ $(stat -c %s "$dst") -gt 15000000 ]]; then split -b 15000000 -d "$dst" "$dst.part" && rm "$dst"; fi
    done
    ls -l "$OUT/build"
  fi
  took build $t0
}

if has build; then
  build
elif [[ -n "${STAGES// /}" ]]; then
  # a fresh machine (the previous one was released) has no build: make one instead of failing
  cuda_ready || { echo "no CUDA build here: building first"; build; }
fi

if has test; then
  t0=$SECONDS
  echo "== tests"
  # only the tests that need the GPU: test_cuda_build.py (nvcc again) and test_cuda_emulated.py
  # (host emulation, minutes) run on every CPU machine and would only spend device time here
  logged tests.log 30 $PY -m pytest -q -ra --durations=10 tests/test_cuda_ops.py tests/test_cuda_rnn.py \
    tests/test_kernels_topology_cuda.py
  took tests $t0
fi

if has sanitize; then
  t0=$SECONDS
  echo "== compute-sanitizer memcheck (subset)"
  # not always on PATH; and without torch's caching allocator, so that an access past the end of
  # a tensor is not hidden inside a larger cached block
  SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
  export PYTORCH_NO_CUDA_MEMORY_CACHING=1
  "$SANITIZER" --tool memcheck --error-exitcode 9 $PY -m pytest -q -x tests/test_cuda_ops.py \
    -k "power_rows or power_cols or long_kernel_grid or zero or no_rows or no_cols or misaligned" \
    >"$LOGS/sanitize.log" 2>&1
  rc=$?
  tail -15 "$LOGS/sanitize.log"
  [[ $rc -eq 0 ]] || status=1
  "$SANITIZER" --tool memcheck --error-exitcode 9 $PY -m pytest -q -x tests/test_cuda_rnn.py \
    -k "skewed or zero or empty or misaligned" >"$LOGS/sanitize_rnn.log" 2>&1
  rc=$?
  tail -5 "$LOGS/sanitize_rnn.log"
  [[ $rc -eq 0 ]] || status=1
  unset PYTORCH_NO_CUDA_MEMORY_CACHING
  took sanitize $t0
fi

if has bench; then
  for dt in $BENCH_DTYPES; do
    t0=$SECONDS
    echo "== benchmark ($dt)"
    logged "bench_$dt.log" +1 $PY benchmarks/bench_cuda.py --dtype "$dt" --budget-s "$BENCH_BUDGET_S" \
      ${copy[@]+"${copy[@]}"} "$@"
    took "benchmark ($dt)" $t0
  done
fi

if has step; then
  t0=$SECONDS
  echo "== fused vs composed recurrent step"
  logged bench_rnn_step.log 20 $PY benchmarks/bench_rnn_step.py --device cuda --budget-s 150 ${copy[@]+"${copy[@]}"}
  took step $t0
fi

if has topology; then
  t0=$SECONDS
  echo "== topology-update benchmark (100M nnz prune + regrow)"
  logged bench_topology.log +1 $PY benchmarks/bench_topology.py --device cuda --budget-s 180 ${copy[@]+"${copy[@]}"}
  took topology $t0
fi

if has rnn; then
  t0=$SECONDS
  echo "== LSTM training step (SparseLSTM fused and composed vs masked-dense cuDNN vs torch.sparse)"
  logged bench_rnn.log 20 $PY benchmarks/bench_rnn.py --device cuda --budget-s 360 --timeout 180 ${copy[@]+"${copy[@]}"}
  took rnn $t0
fi

if has largest; then
  t0=$SECONDS
  echo "== largest trainable SparseLSTM hidden size (32 nonzeros per row)"
  logged bench_rnn_largest.log 14 $PY benchmarks/bench_rnn.py --device cuda --largest --sizes 4096:0.01 \
    --methods sparse_engine --budget-s 240 --timeout 120 --out benchmarks/results/rnn_gpu_largest.md \
    ${copy[@]+"${copy[@]}"}
  took largest $t0
fi
exit $status
