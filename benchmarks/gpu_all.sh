#!/usr/bin/env bash
# The commands of a GPU session: build the extension in place with the CUDA kernels, run the CUDA
# tests and the sanitizer, then the CUDA benchmarks. Everything is written to $OUT as it goes
# (the device runner brings $OUT back; the checkout there is thrown away), so a command stopped
# at its limit still returns what it did.
#
# ---------------------------------------------------------------- GPU session plan (15 minutes)
# A device command may run 10 minutes and a session has 15 minutes of device time (it was 30), the
# machine's start (1-2 minutes) and its idle time included; at most 8 files come back from $OUT per
# command. So: one first command that does a little of everything (STAGES=first, the default), then
# the longer stages in priority order, each command right after the one before (a machine idle for
# ~30 s is given back, and the next one starts bare). Every stage takes its time from DEADLINE_S
# (default 540 s, counted from the command's start): a stage that cannot get its minimum is skipped
# and says so, a benchmark gets what is left as its budget (it stops starting cells, and rewrites its
# results file into $OUT after every cell), and each stage runs under `timeout`, so the command ends
# before the runner's 600 s. Times below: the first two runs, on an H200 (2026-11-26).
#   1. benchmarks/gpu_all.sh                                                  ~5 min
#        STAGES=first = build test bench_quick rnn_quick topology step:
#        build 63 s (nvcc for the detected GPU's arch only, 16 jobs; then one bad index must come back
#        as the whole ValueError, else the module is broken and the command ends), the GPU tests 150 s
#        (689: sizes past grid.y and 2^31, streams, a CUDA graph, NaN-filled outputs; ops, fused step,
#        topology ops, index checks; torch.compile included; every failure listed, and the benchmarks
#        still run: each checks its own results, and a GPU session is too rare to spend on a rerun),
#        then the targets' first numbers (75 s): the issue's three spmm/spmm_t/sddmm reference cells vs
#        cuSPARSE (bench_cuda.py --quick), the LSTM step at H=4,096 and 16,384 (bench_rnn.py; ours
#        first), SET prune + regrow at 100M nnz (bench_topology.py, its first case), fused vs composed step.
#        If the build or the tests fail, read $OUT/gpu_all.log and fix before anything else.
#        $OUT/build/ holds the built module (stripped; .partNN pieces when over 15 MB): join them
#        here, `cat files_at/build/_C*.so* > sparse_engine/_C.cpython-312-x86_64-linux-gnu.so` (the
#        name as it came back, without .partNN), and pass that path as `carry` to every later
#        command; a command on a fresh machine without it rebuilds first (~1 min, automatic).
#   2. STAGES=sanitize benchmarks/gpu_all.sh                                  ~1.5 min
#        compute-sanitizer memcheck on the op, index-check and step tests that reach the long-row,
#        zero-size and misaligned paths, initcheck on the long-row paths, and racecheck on the kernels
#        with shared memory.
#   3. STAGES=bench BENCH_DTYPES=float32 benchmarks/gpu_all.sh                ~9 min
#        the float32 kernel grid (the reference cells first; N=131,072 at 20% is skipped by its
#        memory estimate); what the deadline leaves out: ... STAGES=bench -- --n 131072 later.
#   4. STAGES="rnn largest" benchmarks/gpu_all.sh                             ~4-9 min
#        the LSTM/GRU training-step table (ours at every size first, then masked-dense cuDNN and
#        torch.sparse), then the largest trainable SparseLSTM at 32 nonzeros per row.
#   5. STAGES=persistent benchmarks/gpu_all.sh                                ~6-8 min
#        the persistent recurrent kernels (issue 44; rnn_sequence_cuda.cu, compute="persistent"): their
#        GPU tests (the ops against float64 references, every output written, the modules against the
#        per-step path, deterministic; and issue 47's sharded LSTM on NCCL, one rank per GPU),
#        memcheck and racecheck on them, then the LSTM/GRU table of the issue's cells with ours
#        per-step, ours persistent (a lane per batch column, and split rows: a row's entries across a
#        warp's lanes) and masked-dense cuDNN (rnn_gpu_persistent.md; STAGED=1 adds W_hh not staged), the
#        step's profile, the same at B = 1 (rnn_gpu_persistent_b1.md), and Nsight Compute inside the
#        kernels (ncu_persistent_split1.md). First run on an H200 (2026-11-26, third session): build 79 s,
#        the stage 345 s (tests 10 s, sanitizers 60 s, the table the rest).
#   Fourth run (H200, 2026-11-27; gpu_h200_2026-11-27/): DEADLINE_S=565 STAGES="build test bench_quick caps"
#   BENCH_DTYPES=float32: build 77 s, the GPU tests 189 s (971 passed, among them the in-place weight
#   gradient and CompactAdam on CUDA), the reference cells 24 s (the long-row split: spmm Zipf B=1 0.61 ->
#   0.78x cuSPARSE, B=128 0.92 -> 1.00x; spmm_t Zipf B=1 0.47 -> 1.62x), caps 260 s (4 LSTM rows), then two
#   short commands for 4 more rows (caps_cuda.md: the LSTM targets met, the model within 0.6%, both
#   capped GRU rows out of memory, most likely fragmentation; the estimate 1.5-2.6x the measured step).
#   Fifth run (H200, 2026-11-27, gpu_h200_2026-11-27_second/): DEADLINE_S=575 STAGES=caps (build 64 s, the
#   stage 363 s: both capped GRU rows train with expandable segments and fail with torch's default ones; the
#   80G LSTM row, 8,571,871 units, +0.6%; the step estimate 1.7-5.0x, its W^T G block wrote every column once
#   per block: fixed since, not re-measured), then DEADLINE_S=360 STAGES=bench BENCH_DTYPES=float32 on the warm
#   machine (300 s: the float32 grid, N 16,384 and 65,536 whole, 262,144 in part; cuda_ops_nvidia_h200.md).
#   Sixth run (H200, 2026-11-28, gpu_h200_2026-11-28/): DEADLINE_S=580 STAGES="build test persistent": build
#   71 s, the GPU tests 147 s (990 passed), the persistent stage 316 s (134 tests, memcheck and racecheck clean,
#   the 12-row table: split rows by row length 0.52-1.00x a lane per column; the profile; ncu found no time
#   left: 25 s by hand after), then DEADLINE_S=245 STAGES=bench --n 16384 65536 --density 0.0005 0.001 on the
#   warm machine (138 s with a rebuild: the carried module was not in place; spmm 1.20x faster on those cells).
#   Seventh run (H200, 2026-11-28, gpu_h200_2026-11-28_second/): DEADLINE_S=575 STAGES="build test persistent":
#   build 57 s, the GPU tests 125 s (995 of 996: the dense path's no-sync test, TF32 in its float32 gradients;
#   float64 since), the persistent stage 355 s (LSTM 4,096 @ 1% 2.7 ms, 3.09x masked cuDNN; the dense path at
#   1,500 @ 10% slower than the persistent kernels: auto's GPU rule is a row length since; ncu no time), then
#   DEADLINE_S=262 STAGES="profile_large ncu_gather caps" (249 s; the million-unit step 1.20 s; ncu_gather
#   profiled torch's kernels: its filter is fixed; caps one row).
#   Eighth run (H200, 2026-11-28, gpu_h200_2026-11-28_third/): DEADLINE_S=570 STAGES="build persistent" (no CUDA
#   source changed since the seventh: no test stage; the compute-path tests run in the persistent stage since):
#   build 75 s, the stage 462 s (135 tests, memcheck/racecheck clean, the table, the dense/persistent crossover,
#   B = 1; ncu no time), then DEADLINE_S=240 STAGES="panels ncu_gather" (28 s: panels do not pay, 0.12-0.81x), then
#   DEADLINE_S=235 STAGES=bench BENCH_DTYPES=float32 ... --n 16384 65536 --density 0.01 0.05 (187 s, 4 cells short).
#   Next GPU session: first DEADLINE_S=575 STAGES="build test persistent" (common.cuh changed since the eighth run:
#   the gather's long-row multiples are settable; the persistent table with auto's rule past the chip at 16,384
#   units; profile_rnn_step_cuda.md now gives the host's queue time and the device's busy time a step, for the
#   dense path's 1.3 ms over masked cuDNN at 1,500 @ 33%, outside cuDNN's kernels; and the dense path now
#   writes its weights into cuDNN's flat buffer, recurrent/cudnn_flat.py: no copy or warning at each call,
#   test_cudnn_flat.py's CUDA test checks the layout against nn.LSTM's). Then on the warm machine
#   DEADLINE_S=200 STAGES=gather_tuning (~2 min: which multiples win spmm's Zipf cells at B = 1 and B >= 128; a rule
#   from it lands in common.cuh), with STAGES="gather_tuning profile_large" if a minute more is left (the per-step
#   backward now gathers dG once for W_hh^T dG and W_hh's gradient: the million-unit step against the seventh
#   run's 1.20 s), then DEADLINE_S=260 STAGES=caps (the GRU rows past 8G) or STAGES=bench
#   BENCH_DTYPES=float32 benchmarks/gpu_all.sh --n 262144 (the rest of N = 262,144); later the bf16 grid.
#   Issue 44's item-5 table (ours by path, masked cuDNN, torch.sparse, the step's floor) is two commands of
#   their own: DEADLINE_S=575 STAGES=table (~8 min), then STAGES=table_large (~6 min, 10^6 units included).
#   (A later run without CUDA changes may drop "test": the persistent stage runs the compute-path tests too.)
#   With a minute or two on a warm machine: STAGES=steps (does the GPU rule, from T = 35, need the sequence
#   length as the CPU's does since 2026-11-29? and a sampler's step, T = B = 1 under no_grad, against cuDNN).
#   With time to spare, in this order: STAGES=topology (all cases), BENCH_DTYPES=bfloat16 STAGES=bench ...
#   -- --quick (then the full bf16 grid), STAGES=step.
# $OUT per command: gpu_all.log (every stage's output, appended as it goes), each benchmark's results
# file (cuda_ops_<gpu>[_bf16][_quick].md, rnn_gpu[_quick].md, rnn_gpu_largest.md, topology_<gpu>.md,
# rnn_step_gpu.md, rnn_gpu_table[_gru|_large].md, rnn_gpu_persistent[_b1].md, rnn_gpu_dense_crossover.md, rnn_gpu_steps_t{1,4}.md, rnn_gpu_sampler_step.md, profile_rnn_step[_1m]_cuda.md, ncu_persistent_split1.md, caps_cuda_*.md, gather_tuning_cuda.md,
# step_estimate_products_cuda.md) and, from the build stage, build/_C*.so[.partNN]: at most 8 files.
# Afterwards commit from $OUT (files_at) into benchmarks/results/: the results files, and each
# command's gpu_all.log as gpu_<stages>_<gpu>.log (<gpu> = nvidia_h100_80gb_hbm3 or the like);
# quote the numbers in docs/cuda.md / README.md.
# -------------------------------------------------------------------------------------------
#
#   benchmarks/gpu_all.sh                              # STAGES=first (the plan's first command)
#   STAGES="build test" benchmarks/gpu_all.sh
#   STAGES="bench" benchmarks/gpu_all.sh --quick       # extra arguments go to bench_cuda.py
#   STAGES="sanitize" benchmarks/gpu_all.sh            # memcheck + racecheck on a subset of the tests
#   STAGES="step" benchmarks/gpu_all.sh                # fused vs composed recurrent step
#   STAGES="topology" benchmarks/gpu_all.sh            # prune + regrow up to 100M nnz (bench_topology.py)
#   STAGES="rnn" benchmarks/gpu_all.sh                 # LSTM/GRU training step table (bench_rnn.py)
#   STAGES="table" benchmarks/gpu_all.sh               # issue 44's table: by path, baselines, the floor (~8 min)
#   STAGES="table_large" benchmarks/gpu_all.sh         # the same past masked cuDNN, 10^6 units included (~6 min)
#   STAGES="largest" benchmarks/gpu_all.sh             # largest SparseLSTM hidden at 32 nonzeros/row
#   STAGES="persistent" benchmarks/gpu_all.sh          # the persistent kernels: tests, sanitizers, table
#   STAGES="caps" benchmarks/gpu_all.sh                # the largest LSTM/GRU under memory caps (bench_caps.py)
#   STAGES="profile_large" benchmarks/gpu_all.sh       # where a 1,048,576-unit LSTM step's time goes (~1 min)
#   STAGES="ncu_gather" benchmarks/gpu_all.sh          # Nsight Compute on spmm, Zipf rows, B = 256 (~1 min)
#   STAGES="gather_tuning" benchmarks/gpu_all.sh       # the gather's long-row multiples swept (~2 min)
#   STAGES="panels" benchmarks/gpu_all.sh              # column panels of the state emulated, 262,144 and 10^6 units (~1-2 min)
#   STAGES="steps" benchmarks/gpu_all.sh               # auto's GPU rule at T = 1 and 4 (the CPU rule takes T), a sampler's step (~2 min)
#   BENCH_DTYPES=bfloat16 STAGES=bench benchmarks/gpu_all.sh   # only the bf16 grid
#   DEADLINE_S=100000 STAGES="build test sanitize bench step topology rnn largest persistent" benchmarks/gpu_all.sh
#                                                      # everything, on a machine without a time limit
# The bench stage runs the kernel grid once per dtype in BENCH_DTYPES (default "float32 bfloat16":
# bf16 storage with float32 accumulation, against cuSPARSE in bf16 and our float32).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAGES=${STAGES:-first}
STAGES=${STAGES//first/build test bench_quick rnn_quick topology step}
BENCH_DTYPES=${BENCH_DTYPES:-float32 bfloat16}
DEADLINE_S=${DEADLINE_S:-540}
RESERVE_S=15  # left at the end for writing files and the runner's copy back
# $OUT: the combined log and the results files (few files: the runner brings back at most 8);
# without $OUT everything stays under benchmarks/results/
DEST=${OUT:-benchmarks/results}
LOG=$DEST/gpu_all.log
LOCAL_LOGS=benchmarks/results/gpu_logs  # verbose logs (the build's) stay in the checkout
mkdir -p "$DEST" "$LOCAL_LOGS"
# the checkout's package whether or not `pip install -e .` worked (the fallback builds in place)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1  # progress reaches the log even when a command is killed at its limit
copy=(); [[ -n "${OUT:-}" ]] && copy=(--copy-to "$OUT")
status=0

has() { [[ " $STAGES " == *" $1 "* ]]; }
say() { echo "$*" | tee -a "$LOG"; }
left() { echo $(( DEADLINE_S - SECONDS - RESERVE_S )); }
# starts STAGE if at least MIN seconds are left before the deadline (else says it is skipped)
begin() {
  local stage=$1 min=$2
  if (( $(left) < min )); then
    say "== $stage: skipped, $(left) s left before the deadline (DEADLINE_S=$DEADLINE_S), needs $min"
    return 1
  fi
  say "== $stage ($(date -u +%H:%M:%S) UTC, $SECONDS s into the command, $(left) s left)"
}
took() { say "== $1 took $(( SECONDS - $2 )) s"; }
# logged LINES CMD...: CMD's output is appended to the log and its last LINES lines ("+1": all) go to
# the terminal; CMD runs under `timeout` until the deadline (or for $CAP seconds if that is sooner);
# a failing CMD marks the whole run failed
logged() {
  local lines=$1
  shift
  local start; start=$(wc -l <"$LOG")
  local t; t=$(left)
  [[ -n "${CAP:-}" ]] && (( CAP < t )) && t=$CAP
  (( t < 1 )) && t=1
  timeout --kill-after=10 "$t" "$@" >>"$LOG" 2>&1
  local rc=$?
  tail -n +"$((start + 1))" "$LOG" | tail -n "$lines"
  if (( rc == 124 || rc == 137 )); then say "   (stopped at the deadline)"; fi
  (( rc == 0 )) || status=1
  return $rc
}
# budget PERCENT MAX: seconds a benchmark may spend starting cells: PERCENT of the time left (the
# stages after it get the rest; a cell that is running when its budget ends still finishes), at most MAX
budget() { local b=$(( $(left) * $1 / 100 )); (( b > $2 )) && b=$2; (( b < 1 )) && b=1; echo $b; }

cuda_ready() {  # this checkout's sparse_engine._C holds the CUDA kernels, a GPU is visible, and a
  # bad index is one whole ValueError on both devices (a module with its own static libstdc++ crashed
  # there on the first H200 run: setup.py links the shared one; this catches any other such build)
  $PY -c "import sparse_engine, torch; from sparse_engine.kernels import HAS_CUDA_KERNELS as h; \
print('torch', torch.__version__, 'cuda available', torch.cuda.is_available(), 'CUDA kernels', h, \
'from', sparse_engine.__file__); \
assert h and torch.cuda.is_available(), 'built without CUDA kernels or no device'
for dev in ('cpu', 'cuda'):
    try:
        torch.ops.sparse_engine.transpose_index(torch.tensor([0, 2, 3], device=dev), torch.tensor([0, 5, 1], dtype=torch.int32, device=dev), 5)
        raise SystemExit('a bad index was accepted on ' + dev)
    except ValueError as e:
        assert 'col_idx entry 5 (position 1) out of range [0, 5)' in str(e), 'error message garbled on ' + dev + ': ' + repr(str(e))
print('errors: whole ValueErrors on cpu and cuda')" 2>&1 | tee -a "$LOG"
}

install() {  # pip install -e . (else setup.py build_ext --inplace), its log under $LOCAL_LOGS
  local blog=$LOCAL_LOGS/build.log
  if ! MAX_JOBS=${MAX_JOBS:-16} timeout "$(left)" $PY -m pip install --no-build-isolation --no-deps -e . >"$blog" 2>&1; then
    say "pip install -e . failed (see the tail below); trying setup.py build_ext --inplace"
    tail -5 "$blog" | tee -a "$LOG"
    if ! MAX_JOBS=${MAX_JOBS:-16} timeout "$(left)" $PY setup.py build_ext --inplace >>"$blog" 2>&1; then
      tail -60 "$blog" | tee -a "$LOG"
      exit 1
    fi
  fi
  grep -iE "warning|error|setup.py:" "$blog" | grep -v "Wmaybe-uninitialized\|avx512\|note:" | head -20 >>"$LOG"
  tail -2 "$blog" | tee -a "$LOG"
}

build() {
  local t0=$SECONDS
  say "== build ($(nvcc --version 2>&1 | tail -1); $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -1))"
  export SPARSE_ENGINE_CUDA=1
  # nvcc for the GPU present only (one arch keeps the build to ~2 minutes)
  if [[ -z "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
    TORCH_CUDA_ARCH_LIST=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))" 2>/dev/null) \
      && export TORCH_CUDA_ARCH_LIST && say "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
  fi
  install
  if ! cuda_ready; then
    # a module broken by its compiler (setup.py's probe should catch a static libstdc++, as on the
    # H200 image): one rebuild with the system's g++ before giving up, a GPU session being rare
    [[ -x /usr/bin/g++ && "${CXX:-}" != /usr/bin/g++ ]] || exit 1
    say "the module built with ${CXX:-the default compiler} is broken: rebuilding with CXX=/usr/bin/g++"
    rm -rf build sparse_engine/_C*.so
    CXX=/usr/bin/g++ install
    cuda_ready || exit 1
  fi
  # the built module, so that a later command on a fresh machine can carry it instead of rebuilding:
  # without host debug info, and in parts of < 16 MiB (the largest file $OUT brings back)
  if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT/build"
    for so in sparse_engine/_C*.so; do
      dst="$OUT/build/$(basename "$so")"
      strip --strip-debug -o "$dst" "$so" 2>/dev/null || cp "$so" "$dst"
      if [[ $(stat -c %s "$dst") -gt 15000000 ]]; then split -b 15000000 -d "$dst" "$dst.part" && rm "$dst"; fi
    done
    ls -l "$OUT/build" | tee -a "$LOG"
  fi
  took build $t0
}

say "== gpu_all.sh: STAGES=\"$STAGES\", deadline ${DEADLINE_S} s, $(date -u '+%Y-%m-%d %H:%M') UTC, $(git log -1 --format='%h %s' 2>/dev/null | cut -c1-100)"
if has build; then
  build
elif [[ -n "${STAGES// /}" ]]; then
  # a fresh machine (the previous one was released) has no build: make one instead of failing
  cuda_ready || { say "no CUDA build here: building first"; build; }
fi

# a hung kernel must not take the whole command: pytest-timeout (in the device image) ends the run
# with every thread's stack when one test runs past this
PYTEST_TIMEOUT=()
$PY -c "import pytest_timeout" 2>/dev/null && PYTEST_TIMEOUT=(--timeout=240 --timeout-method=thread)

if has test && begin tests 60; then
  t0=$SECONDS
  # only the tests that need the GPU, picked by -k (which matches marker names too): those marked
  # `cuda`, parametrized on "cuda" or in a class TestCUDA, and the three named below. The CPU cases of
  # the same files, tests/kernels/test_cuda_build.py (nvcc again) and the emulator tests (tests/ops'
  # *_on_the_emulator, tests/kernels/test_cuda_emulator.py and test_cuda_sanitizers.py: host emulation)
  # run on every CPU machine and would only spend device time here. tests/kernels/test_cuda_limits.py
  # (sizes past grid.y and 2^31, streams, a CUDA graph; ~30 GB) runs first: what the emulator cannot
  # show. Then every op family's GPU cases (tests/ops/test_<family>.py: the products, the transposed
  # index, the fused step, the topology ops, the index checks, NaN-filled outputs, autocast,
  # torch.compile), the modules and the controllers on CUDA, and the GPU cases of other files (the memory
  # model against the caching allocator, recomputation bit for bit, the CLI's device choice, CompactAdam),
  # which the first H200 run left out.
  # No -x: every failure is listed (the first H200 run stopped at its first, a test's tolerance, and
  # cost a second command to see the rest). The benchmarks run after a failure too (they check their
  # own results against cuSPARSE / the CPU), and the command's status says the tests failed.
  if ! CAP=330 logged 40 $PY -m pytest -q -ra --durations=10 ${PYTEST_TIMEOUT[@]+"${PYTEST_TIMEOUT[@]}"} \
      -k "(cuda or gpu or device_choice) and not emulator" \
      tests/kernels/test_cuda_limits.py tests/ops tests/nn/test_on_cuda.py tests/nn/test_autocast.py \
      tests/training/test_topology_updates.py tests/training/test_compact_adam.py \
      tests/memory/test_memory_model.py::test_prediction_on_a_gpu \
      tests/recurrent/test_recompute.py::test_cuda_bit_identical tests/cli/test_cli.py::test_train_device_choice \
      tests/recurrent/test_compute_paths.py tests/recurrent/test_cudnn_flat.py tests/recurrent/test_layout.py; then
    say "== tests FAILED (the list above; the log has each failure): the benchmarks below run on these kernels"
  fi
  took tests $t0
fi

if has sanitize && begin sanitize 120; then
  t0=$SECONDS
  # not always on PATH; and without torch's caching allocator, so that an access past the end of
  # a tensor is not hidden inside a larger cached block. Each run gets a share of the time left.
  # (On a gVisor machine compute-sanitizer says "Device not supported": the H100 kind, Firecracker, runs it.)
  SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
  export PYTORCH_NO_CUDA_MEMORY_CACHING=1
  san() {  # san TOOL SHARE_PERCENT PYTEST_ARGS...: one sanitizer run, at most SHARE% of the time left
    local tool=$1 share=$2
    shift 2
    say "-- $tool: $*"
    local cap=$(( $(left) * share / 100 ))
    (( cap > 30 )) || { say "   skipped: too little time left"; return; }
    CAP=$cap logged 8 "$SANITIZER" --tool "$tool" --error-exitcode 9 --print-limit 50 \
      $PY -m pytest -q -x -p no:cacheprovider "$@"
  }
  # the ops on the patterns with long rows/columns, zero sizes and one column at B = 3 (scalar
  # loads), 32 (vector loads, one tile) and 300 (several tiles), every dtype; misaligned inputs;
  # bad indices (the scan must not read out of bounds either). "cuda and": the GPU cases of each file
  san memcheck 35 tests/ops/test_spmm.py tests/ops/test_sddmm.py tests/ops/test_transpose.py -k "cuda and ((test_ops_match_dense_reference and \
(-3- or -32- or -300-) and (power or zero or no_ or one_col)) or long_kernel_grid or long_row_kernels or misaligned or \
zero_batch or out_of_range)"
  san memcheck 25 tests/ops/test_index_check.py -k cuda
  san memcheck 50 tests/ops/test_rnn_step.py -k "cuda and (skewed or zero or empty or misaligned)"
  # reads of memory no one wrote (a workspace or list count left uninitialised): initcheck
  san initcheck 30 tests/ops/test_spmm.py tests/ops/test_sddmm.py -k "cuda and ((test_ops_match_dense_reference and -32- and (power or zero)) or \
long_kernel_grid)"
  # shared memory: the long-row kernels' partial sums and the fused step's per-block products
  san racecheck 50 tests/ops/test_spmm.py tests/ops/test_sddmm.py -k "cuda and (long_kernel_grid or long_row_kernels)"
  san racecheck 100 tests/ops/test_rnn_step.py -k "cuda and skewed and (LSTM or GRU) and f32"
  unset PYTORCH_NO_CUDA_MEMORY_CACHING
  took sanitize $t0
fi

if has bench_quick && begin "benchmark, the issue's reference cells (float32)" 60; then
  t0=$SECONDS
  logged +1 $PY benchmarks/bench_cuda.py --quick --dtype float32 --budget-s "$(budget 30 150)" --out benchmarks/results/ ${copy[@]+"${copy[@]}"}
  took "reference cells" $t0
fi

if has bench; then
  for dt in $BENCH_DTYPES; do
    begin "benchmark ($dt)" 60 || continue
    t0=$SECONDS
    logged +1 $PY benchmarks/bench_cuda.py --dtype "$dt" --budget-s "$(budget 85 480)" --out benchmarks/results/ ${copy[@]+"${copy[@]}"} "$@"
    took "benchmark ($dt)" $t0
  done
fi

if has rnn_quick && begin "LSTM training step, H=4,096 and 16,384" 60; then
  t0=$SECONDS
  logged 14 $PY benchmarks/bench_rnn.py --device cuda --cells LSTM --sizes 4096:0.01 16384:0.01 --repeats 5 --no-floor \
    --budget-s "$(budget 45 150)" --timeout 90 --out benchmarks/results/rnn_gpu_quick.md ${copy[@]+"${copy[@]}"}
  took "LSTM step" $t0
fi

if has topology && begin "topology update (SET prune + regrow, 100M nnz first)" 45; then
  t0=$SECONDS
  logged +1 $PY benchmarks/bench_topology.py --device cuda --budget-s "$(budget 55 180)" --out benchmarks/results/ ${copy[@]+"${copy[@]}"}
  took topology $t0
fi

if has step && begin "fused vs composed recurrent step" 30; then
  t0=$SECONDS
  logged 20 $PY benchmarks/bench_rnn_step.py --device cuda --budget-s "$(budget 80 150)" --out rnn_step_gpu.md ${copy[@]+"${copy[@]}"}
  took step $t0
fi

if has rnn && begin "LSTM/GRU training step table (ours, masked-dense cuDNN, torch.sparse)" 90; then
  t0=$SECONDS
  logged 20 $PY benchmarks/bench_rnn.py --device cuda --budget-s "$(budget 60 420)" --timeout 180 --out rnn_gpu.md ${copy[@]+"${copy[@]}"}
  took rnn $t0
fi

if has table && begin "issue 44's table: LSTM and GRU by path, masked cuDNN, torch.sparse, the step's floor" 120; then
  t0=$SECONDS
  # item 5 where masked cuDNN fits: hidden 1,500 and 4,096 at 1, 5, 10 and 33%, ours auto and each path, the
  # baselines, and the floor (bench_rnn.py: the memory floor at the measured copy bandwidth, the latency floor
  # = ours at one nonzero a row). ~5.5 s a (method, size) on the H200 (a process each): the LSTM's 8 sizes x 7
  # runs ~5 min, then the GRU at the issue's four cells. Each table is rewritten after every cell.
  logged 24 $PY benchmarks/bench_rnn.py --device cuda --cells LSTM \
    --sizes 4096:0.01 1500:0.33 1500:0.1 4096:0.05 1500:0.01 1500:0.05 4096:0.1 4096:0.33 \
    --methods sparse_engine sparse_engine_per_step sparse_engine_persistent sparse_engine_dense masked_dense \
    torch_sparse --repeats 5 --timeout 90 --budget-s "$(budget 75 360)" --out benchmarks/results/rnn_gpu_table.md \
    ${copy[@]+"${copy[@]}"}
  if (( $(left) > 60 )); then
    logged 14 $PY benchmarks/bench_rnn.py --device cuda --cells GRU --sizes 4096:0.01 1500:0.33 1500:0.1 4096:0.05 \
      --methods sparse_engine sparse_engine_per_step sparse_engine_persistent sparse_engine_dense masked_dense \
      torch_sparse --repeats 5 --timeout 90 --budget-s "$(( $(left) - 20 ))" \
      --out benchmarks/results/rnn_gpu_table_gru.md ${copy[@]+"${copy[@]}"}
  fi
  took table $t0
fi

if has table_large && begin "issue 44's table past masked cuDNN: 16,384, 65,536 and 10^6 units, the floor" 120; then
  t0=$SECONDS
  # ours only (auto and per step; masked cuDNN fails or does not fit from 16,384 units) and the floor, the
  # million-unit LSTM at 32 nonzeros a row among them (its target: 0.6 s a step, >= 50% of the floor)
  logged 14 $PY benchmarks/bench_rnn.py --device cuda --cells LSTM GRU \
    --sizes 16384:0.01 1048576:0.000030517578125 65536:0.01 16384:0.05 16384:0.1 \
    --methods sparse_engine sparse_engine_per_step --repeats 3 --timeout 150 --budget-s "$(budget 95 480)" \
    --out benchmarks/results/rnn_gpu_table_large.md ${copy[@]+"${copy[@]}"}
  took table_large $t0
fi

if has largest && begin "largest trainable SparseLSTM hidden size (32 nonzeros per row)" 90; then
  t0=$SECONDS
  logged 14 $PY benchmarks/bench_rnn.py --device cuda --largest --sizes 4096:0.01 --cells LSTM --no-floor \
    --methods sparse_engine --budget-s "$(budget 80 300)" --timeout 150 --out benchmarks/results/rnn_gpu_largest.md \
    ${copy[@]+"${copy[@]}"}
  took largest $t0
fi
if has persistent && begin "persistent recurrent kernels: tests, sanitizers, table" 120; then
  t0=$SECONDS
  # correctness first: the ops against float64 references and the CPU, every output written; the
  # modules against the per-step path on the GPU; then memcheck and racecheck on the same ops
  CAP=150 logged 20 $PY -m pytest -q -ra ${PYTEST_TIMEOUT[@]+"${PYTEST_TIMEOUT[@]}"} -k cuda \
    tests/ops/test_rnn_sequence.py tests/recurrent/test_persistent.py tests/distributed/test_sharding.py \
    tests/recurrent/test_compute_paths.py tests/recurrent/test_cudnn_flat.py || say "== persistent tests FAILED (the list above): the table below runs on these kernels"
  SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
  for tool in memcheck racecheck; do
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 CAP=$(( $(left) / 5 )) logged 6 "$SANITIZER" --tool $tool --error-exitcode 9 \
      --print-limit 50 $PY -m pytest -q -x -p no:cacheprovider tests/ops/test_rnn_sequence.py \
      -k "cuda and test_matches_float64_reference and f32 and (H7 or H40)"
  done
  # the table: the issue's cells, ours per step, persistent (a lane per batch column, and a row's entries
  # split across the lanes by the rule), masked-dense cuDNN (ours first); staged against not staged was
  # measured in the third run (1.1-1.5x), set STAGED=1 to time it again
  logged 24 $PY benchmarks/bench_rnn.py --device cuda --cells LSTM GRU --no-floor \
    --sizes 4096:0.01 1500:0.33 1500:0.1 4096:0.05 4096:0.1 16384:0.01 \
    --methods sparse_engine sparse_engine_persistent sparse_engine_persistent_split \
    ${STAGED:+sparse_engine_persistent_l2} masked_dense --repeats 5 --timeout 90 \
    --budget-s "$(budget 90 330)" --out benchmarks/results/rnn_gpu_persistent.md ${copy[@]+"${copy[@]}"}
  # where the dense path's time goes against masked cuDNN (issue 44 item 2), and the persistent step's
  CAP=60 logged 8 $PY benchmarks/profile_rnn_step.py --device cuda --cells LSTM:1500:0.33 LSTM:4096:0.01 \
    --methods dense dense_copied masked_dense persistent --out benchmarks/results/profile_rnn_step_cuda.md ${copy[@]+"${copy[@]}"}
  # auto's GPU rule (dense from 220 nonzeros a recurrent row, AUTO_MIN_ROW_GPU): the dense path's own time
  # against the persistent kernels' either side of it, and below the seventh run's sizes (256 and 512 units,
  # where the rule never or barely goes dense: an extrapolation until this table); the LSTM, the
  # crossover's cells first, before the B = 1 table (the seventh run's)
  if (( $(left) > 40 )); then
    logged 10 $PY benchmarks/bench_rnn.py --device cuda --cells LSTM --no-floor --sizes 1500:0.15 4096:0.05 512:0.33 \
      256:0.5 --methods sparse_engine_persistent sparse_engine_dense masked_dense --repeats 5 \
      --timeout 60 --budget-s "$(( $(left) - 10 ))" --out benchmarks/results/rnn_gpu_dense_crossover.md \
      ${copy[@]+"${copy[@]}"}
  fi
  # one sequence at a time (B = 1: 31 of a warp's 32 lanes idle with a lane per batch column): the
  # split rows' rule (S * B <= 32) against a lane per column and masked cuDNN
  if (( $(left) > 40 )); then
    logged 10 $PY benchmarks/bench_rnn.py --device cuda --batch 1 --cells LSTM --no-floor \
      --sizes 4096:0.01 1500:0.33 1500:0.1 \
      --methods sparse_engine_persistent sparse_engine_persistent_split masked_dense --repeats 5 --timeout 60 \
      --budget-s "$(( $(left) - 10 ))" --out benchmarks/results/rnn_gpu_persistent_b1.md ${copy[@]+"${copy[@]}"}
  fi
  # inside the persistent kernels (issue 44: where a missed target's time goes): Nsight Compute on one
  # training step's forward and backward launches at LSTM 4,096 @ 1% (a lane per batch column: at B = 20
  # the split rule keeps S = 1; the sixth run's split rows by row length: ncu_persistent_split0.md there)
  NCU=$(command -v ncu || echo "${CUDA_HOME:-/usr/local/cuda}/bin/ncu")
  if [[ -x "$NCU" ]] && (( $(left) > 40 )); then
    CAP=$(( $(left) - 10 )) logged 4 "$NCU" --csv --page details \
      --target-processes all -k regex:seq_ --launch-skip 2 --launch-count 2 --section SpeedOfLight \
      --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section WarpStateStats \
      --section SchedulerStats --log-file "$DEST/ncu_persistent_split1.csv" $PY benchmarks/profile_rnn_step.py \
      --device cuda --cells LSTM:4096:0.01 --methods persistent --steps 1 --warmup 1 --plain \
      --sequence-split 1 --out /tmp/profile_plain.md
    $PY benchmarks/ncu_summary.py "$DEST/ncu_persistent_split1.csv" --md "$DEST/ncu_persistent_split1.md" \
      --title "Nsight Compute: the persistent LSTM kernels at 4,096 @ 1%, T=35, B=20 (a lane per column)" \
      && rm -f "$DEST/ncu_persistent_split1.csv"
  else
    say "== Nsight Compute (ncu) not found or no time left: no kernel profile"
  fi
  took persistent $t0
fi
if has profile_large && begin "where a million-unit LSTM step's time goes (issue 44: 1.34 s, target 0.6 s)" 60; then
  t0=$SECONDS
  # the per-step path at 1,048,576 units and 32 nonzeros per row (W_hh 128M entries, the state 80 MB:
  # out of L2), torch.profiler over two training steps: which kernels and how long, before any
  # scheme that orders the state's reads for L2
  CAP=$(( $(left) - 5 )) logged 10 $PY benchmarks/profile_rnn_step.py --device cuda --cells LSTM:1048576:3.0517578125e-05 \
    --methods sparse --steps 2 --warmup 1 --out benchmarks/results/profile_rnn_step_1m_cuda.md ${copy[@]+"${copy[@]}"}
  took profile_large $t0
fi
if has panels && begin "column panels of the state, emulated: would an L2-panel kernel pay at 10^6 units? (issue 44)" 60; then
  t0=$SECONDS
  # before any kernel is written: W (4H x H, 32 a row) split into P column panels, one CSR each, the
  # products panel by panel against the whole and cuSPARSE (spmm and sddmm at B = 20); ~1 min at 1M
  CAP=$(( $(left) - 5 )) logged 10 $PY benchmarks/bench_state_panels.py --hidden 262144 1048576 --batch 20 \
    --panels 1 2 4 8 16 --out state_panels_cuda.md ${copy[@]+"${copy[@]}"}
  took panels $t0
fi
if has steps && begin "auto's GPU rule over the sequence length (T = 1 and 4), and a sampler's step (issue 44)" 60; then
  t0=$SECONDS
  # the CPU rule takes T since 2026-11-29 (the dense path's per-forward costs lost up to 3.2x at T = 1 there);
  # the GPU rule (dense from 220 nonzeros a recurrent row) is from T = 35: the cells it takes dense (1,500 @
  # 33%: 495 a row; 4,096 @ 10%: 410) at one step and four, every path and masked cuDNN; ~1-2 min
  steps_cells=(--device cuda --cells LSTM GRU --no-floor --sizes 1500:0.33 4096:0.1 --repeats 5 --timeout 60
               --methods sparse_engine sparse_engine_persistent sparse_engine_dense masked_dense)
  logged 10 $PY benchmarks/bench_rnn.py "${steps_cells[@]}" --steps 1 --budget-s "$(( $(left) / 3 - 5 ))" \
    --out benchmarks/results/rnn_gpu_steps_t1.md ${copy[@]+"${copy[@]}"}
  logged 10 $PY benchmarks/bench_rnn.py "${steps_cells[@]}" --steps 4 --budget-s "$(( $(left) / 2 - 5 ))" \
    --out benchmarks/results/rnn_gpu_steps_t4.md ${copy[@]+"${copy[@]}"}
  # a sampler's step: one token of one sequence under torch.no_grad (the recurrence called outside autograd
  # since 2026-11-29), ours by path against masked cuDNN, where Python's fixed cost weighs most
  logged 10 $PY benchmarks/bench_rnn.py --device cuda --cells LSTM GRU --sizes 1500:0.33 4096:0.01 4096:0.1 \
    --methods sparse_engine sparse_engine_per_step sparse_engine_dense masked_dense --repeats 20 --timeout 60 \
    --inference --steps 1 --batch 1 --budget-s "$(( $(left) - 5 ))" \
    --out benchmarks/results/rnn_gpu_sampler_step.md ${copy[@]+"${copy[@]}"}
  took steps $t0
fi
if has gather_tuning && begin "the gather's long-row threshold and segment, swept on Zipf and uniform rows (issue 45)" 60; then
  t0=$SECONDS
  # the eighth run's spmm losses (Zipf rows at B = 1, and at B >= 128 on 16,384 units): ours at 7 settings
  # of the two multiples of the mean row (_set_gather_long_rows), cuSPARSE once, each result checked; ~2 min
  logged +1 $PY benchmarks/bench_gather_tuning.py --budget-s "$(budget 85 240)" --out gather_tuning_cuda.md \
    ${copy[@]+"${copy[@]}"}
  took gather_tuning $t0
fi
if has ncu_gather && begin "Nsight Compute on spmm's lost cells: Zipf rows at B = 256 (issue 45)" 60; then
  t0=$SECONDS
  # the sixth run's losses on Zipf rows at B >= 128 (0.52-0.91x cuSPARSE; 16,384 / 0.05%, Zipf 1.0,
  # B = 256: 0.64x; the seventh run's bench row: 1.05x): our row, long-row and segment-sum kernels of one
  # call (the first; the bench times ours before cuSPARSE, whose time the bench's row gives). The names
  # are whole: the seventh run's 'gather_' caught torch's _scatter_gather kernels instead
  NCU=$(command -v ncu || echo "${CUDA_HOME:-/usr/local/cuda}/bin/ncu")
  CAP=$(( $(left) - 10 )) logged 4 "$NCU" --csv --page details --target-processes all \
    -k "regex:(gather_rows|gather_long|long_sum)_kernel" --launch-count 3 --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --log-file "$DEST/ncu_spmm_zipf_b256.csv" $PY benchmarks/bench_cuda.py --n 16384 \
    --density 0.0005 --batch 256 --laws zipf1.0 --ops spmm --no-dense --budget-s 30 --out /tmp/ncu_spmm.md
  $PY benchmarks/ncu_summary.py "$DEST/ncu_spmm_zipf_b256.csv" --md "$DEST/ncu_spmm_zipf_b256.md" \
    --title "Nsight Compute: our spmm at N = 16,384, 0.05%, Zipf 1.0 rows, B = 256 (0.64x cuSPARSE)" \
    && rm -f "$DEST/ncu_spmm_zipf_b256.csv"
  took ncu_gather $t0
fi
if has caps && begin "the largest sparse LSTM/GRU under 8-80 GB caps (issue 46)" 120; then
  t0=$SECONDS
  # correctness first: recomputation gives the same gradients on the GPU, the memory model's GPU
  # check, CompactAdam (bfloat16 moments) and bfloat16 saved activations on the GPU as on the CPU
  CAP=90 logged 10 $PY -m pytest -q -ra ${PYTEST_TIMEOUT[@]+"${PYTEST_TIMEOUT[@]}"} \
    tests/recurrent/test_recompute.py::test_cuda_bit_identical tests/memory/test_memory_model.py::test_prediction_on_a_gpu \
    tests/training/test_compact_adam.py tests/recurrent/test_saved_dtype.py -k "cuda or gpu" \
    || say "== caps tests FAILED (the list above)"
  # the step estimate first (fixed 2026-11-27 after the fifth run found it 1.7-5.0x the measured step):
  # its products against the whole matrix's, then rows whose plan line's estimate meets a measured step.
  # Each row a process capped with set_per_process_memory_fraction; the memory model picks the largest
  # hidden and its options (expandable segments, as train sets them)
  logged 8 $PY benchmarks/bench_step_estimate.py --device cuda --hidden 256k,1M,4M \
    --out benchmarks/results/step_estimate_products_cuda.md ${copy[@]+"${copy[@]}"}
  logged 14 $PY benchmarks/bench_caps.py --device cuda --models lstm,gru --rows 8G,24G --steps 2 --timeout 200 \
    --budget-s "$(budget 60 300)" --out benchmarks/results/caps_cuda_estimate.md ${copy[@]+"${copy[@]}"}
  logged 6 $PY benchmarks/bench_caps.py --device cuda --models lstm --rows 80G --steps 2 --timeout 400 \
    --budget-s "$(budget 50 300)" --out benchmarks/results/caps_cuda_80g.md ${copy[@]+"${copy[@]}"}
  took caps $t0
fi
say "== done in $SECONDS s, status $status"
exit $status
