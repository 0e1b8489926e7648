#!/usr/bin/env bash
# The one command for a GPU session: build the extension in place with the CUDA kernels, run
# the CUDA tests, then the CUDA benchmark. Logs and the results file are also copied to $OUT
# when it is set (the device runner brings $OUT back).
#
#   benchmarks/gpu_all.sh                 # build + tests + full benchmark grid
#   STAGES="build test" benchmarks/gpu_all.sh
#   STAGES="bench" benchmarks/gpu_all.sh --quick      # extra arguments go to bench_cuda.py
#   STAGES="build sanitize" benchmarks/gpu_all.sh     # compute-sanitizer memcheck on a subset
#   BENCH_DTYPES=bfloat16 STAGES=bench benchmarks/gpu_all.sh   # only the bf16 grid
# The bench stage runs the grid once per dtype in BENCH_DTYPES (default "float32 bfloat16":
# bf16 storage with float32 accumulation, against cuSPARSE in bf16 and our float32).
# Where one command may run at most 10 minutes, run "build test" and "bench" as separate commands,
# one per dtype (BENCH_DTYPES=float32 ..., then BENCH_DTYPES=bfloat16 ...)
# (the benchmark stops starting new cells after --budget-s, 450 s by default, and rewrites
# its results file after every cell, into $OUT too, so a cut-off run still leaves results).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAGES=${STAGES:-build test bench}
BENCH_DTYPES=${BENCH_DTYPES:-float32 bfloat16}
LOGS=${OUT:-benchmarks/results}/gpu_logs
mkdir -p "$LOGS"
status=0

has() { [[ " $STAGES " == *" $1 "* ]]; }

if has build; then
  echo "== build ($(nvcc --version | tail -1))"
  export SPARSE_ENGINE_CUDA=1
  if ! MAX_JOBS=${MAX_JOBS:-16} $PY -m pip install --no-build-isolation --no-deps -e . >"$LOGS/build.log" 2>&1; then
    echo "pip install -e . failed (see $LOGS/build.log); trying setup.py build_ext --inplace"
    MAX_JOBS=${MAX_JOBS:-16} $PY setup.py build_ext --inplace >>"$LOGS/build.log" 2>&1 || { tail -40 "$LOGS/build.log"; exit 1; }
  fi
  tail -2 "$LOGS/build.log"
  $PY -c "import torch, sparse_engine; from sparse_engine._ext import HAS_CUDA_KERNELS as h; \
print('torch', torch.__version__, 'cuda available', torch.cuda.is_available(), 'CUDA kernels', h); \
assert h and torch.cuda.is_available(), 'built without CUDA kernels or no device'" || exit 1
fi

if has test; then
  echo "== tests"
  $PY -m pytest -q -ra tests/test_cuda_build.py tests/test_cuda_ops.py 2>&1 | tee "$LOGS/tests.log" | tail -25
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
fi

if has sanitize; then
  echo "== compute-sanitizer memcheck (subset)"
  compute-sanitizer --tool memcheck --error-exitcode 9 $PY -m pytest -q -x tests/test_cuda_ops.py \
    -k "power_rows or power_cols or long_kernel_grid or zero or no_rows or no_cols or misaligned" \
    >"$LOGS/sanitize.log" 2>&1
  rc=$?
  tail -15 "$LOGS/sanitize.log"
  [[ $rc -eq 0 ]] || status=1
fi

if has bench; then
  copy=(); [[ -n "${OUT:-}" ]] && copy=(--copy-to "$OUT")
  for dt in $BENCH_DTYPES; do
    echo "== benchmark ($dt)"
    $PY benchmarks/bench_cuda.py --dtype "$dt" "${copy[@]}" "$@" 2>&1 | tee "$LOGS/bench_$dt.log"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
  done
fi
exit $status
