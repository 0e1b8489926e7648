#!/usr/bin/env bash
# The one command for a GPU session: build the extension in place with the CUDA kernels, run
# the CUDA tests, then the CUDA benchmark. Logs and the results file are also copied to $OUT
# when it is set (the device runner brings $OUT back).
#
#   benchmarks/gpu_all.sh                 # build + tests + full benchmark grid
#   STAGES="build test" benchmarks/gpu_all.sh
#   STAGES="bench" benchmarks/gpu_all.sh --quick      # extra arguments go to bench_cuda.py
#   STAGES="build sanitize" benchmarks/gpu_all.sh     # compute-sanitizer memcheck on a subset
#   STAGES="step" benchmarks/gpu_all.sh               # fused vs composed recurrent step
#   STAGES="rnn" benchmarks/gpu_all.sh                # LSTM training step table (bench_rnn.py)
#   STAGES="topology" benchmarks/gpu_all.sh           # 100M-nnz prune + regrow (bench_topology.py)
#   STAGES="largest" benchmarks/gpu_all.sh            # largest SparseLSTM hidden at 32 nonzeros/row
#   BENCH_DTYPES=bfloat16 STAGES=bench benchmarks/gpu_all.sh   # only the bf16 grid
# The bench stage runs the kernel grid once per dtype in BENCH_DTYPES (default "float32 bfloat16":
# bf16 storage with float32 accumulation, against cuSPARSE in bf16 and our float32).
# The default runs every stage. Where one command may run at most 10 minutes, run them as
# separate commands: "build test", "bench" once per dtype (BENCH_DTYPES=float32, then bfloat16),
# "step topology", "rnn", "largest" (each benchmark stops starting new cells after its budget and
# rewrites its results file after every cell, into $OUT too, so a cut-off run still leaves results).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAGES=${STAGES:-build test bench step topology rnn largest}
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
  $PY -m pytest -q -ra tests/test_cuda_*.py tests/test_training_topology_torch.py 2>&1 \
    | tee "$LOGS/tests.log" | tail -25
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
  compute-sanitizer --tool memcheck --error-exitcode 9 $PY -m pytest -q -x tests/test_cuda_rnn.py \
    -k "skewed or zero or empty or misaligned" >"$LOGS/sanitize_rnn.log" 2>&1
  rc=$?
  tail -5 "$LOGS/sanitize_rnn.log"
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

if has step; then
  echo "== fused vs composed recurrent step"
  $PY benchmarks/bench_rnn_step.py --device cuda 2>&1 | tee "$LOGS/bench_rnn_step.log" | tail -20
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
  [[ -n "${OUT:-}" ]] && cp benchmarks/results/rnn_step_gpu.md "$OUT/" 2>/dev/null
fi

if has rnn; then
  echo "== LSTM training step (SparseLSTM fused and composed vs masked-dense cuDNN vs torch.sparse)"
  $PY benchmarks/bench_rnn.py --device cuda --timeout 300 2>&1 | tee "$LOGS/bench_rnn.log" | tail -20
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
  [[ -n "${OUT:-}" ]] && cp benchmarks/results/rnn_gpu.md "$OUT/" 2>/dev/null
fi

if has largest; then
  echo "== largest trainable SparseLSTM hidden size (32 nonzeros per row)"
  $PY benchmarks/bench_rnn.py --device cuda --largest --sizes 4096:0.01 --methods sparse_engine --timeout 240 \
    --out benchmarks/results/rnn_gpu_largest.md 2>&1 | tee "$LOGS/bench_rnn_largest.log" | tail -12
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
  [[ -n "${OUT:-}" ]] && cp benchmarks/results/rnn_gpu_largest.md "$OUT/" 2>/dev/null
fi

if has topology; then
  echo "== topology-update benchmark (100M nnz prune + regrow)"
  copy=(); [[ -n "${OUT:-}" ]] && copy=(--copy-to "$OUT")
  $PY benchmarks/bench_topology.py --device cuda "${copy[@]}" 2>&1 | tee "$LOGS/bench_topology.log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
fi
exit $status
