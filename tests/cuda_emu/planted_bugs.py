#!/usr/bin/env python3
"""Plants typical GPU bugs, one at a time, in a copy of csrc/cuda and shows that the emulator suite
fails for each: the strict emulator (tests/cuda_emu, three seeds), then its AddressSanitizer+UBSan
build and its ThreadSanitizer build (tests/cuda_emu/emu_build.py). Writes the table of what caught
each bug to docs/cuda_planted_bugs.md.

    python tests/cuda_emu/planted_bugs.py                 # every bug, every stage: the committed table
    python tests/cuda_emu/planted_bugs.py --first         # stop at the first stage that catches a bug
    python tests/cuda_emu/planted_bugs.py --bugs grid-y-overflow,shuffle-mask --out -

The unchanged sources must pass every stage first (else the table would mean nothing). A bug that no
stage catches is a reason to make the emulator stricter, not to drop it from the list; the script
exits with status 1 when one is missed. tests/kernels/test_cuda_emulator.py runs a few of them in CI.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the package cuda_emu
from cuda_emu import emu_build  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "cuda_planted_bugs.md"

# Which emulator executables a file's kernels run in: (kernel files, driver).
DRIVER = ("driver", ["spmm_cuda", "sddmm_cuda", "transpose_cuda"])
RNN_DRIVER = ("rnn_driver", ["rnn_step_cuda", "spmm_cuda", "sddmm_cuda"])
SEQ_DRIVER = ("seq_driver", ["rnn_sequence_cuda"])
DRIVERS = {"spmm_cuda.cu": [DRIVER, RNN_DRIVER], "sddmm_cuda.cu": [DRIVER, RNN_DRIVER], "transpose_cuda.cu": [DRIVER],
           "rnn_step_cuda.cu": [RNN_DRIVER], "rnn_sequence_cuda.cu": [SEQ_DRIVER], "sequence_dot.cuh": [SEQ_DRIVER],
           "common.cuh": [DRIVER, RNN_DRIVER, SEQ_DRIVER]}
# (stage, variant, suite, seeds)
STAGES = [("emulator", "plain", "small", ["1", "2", "3"]), ("asan+ubsan", "asan", "sanitize", ["1"]),
          ("tsan", "tsan", "sanitize", ["1"])]


@dataclass(frozen=True)
class Bug:
    id: str
    file: str  # in csrc/cuda
    old: str   # occurs exactly once in the file
    new: str
    what: str


BUGS = [
    Bug("sync-removed-long-row", "spmm_cuda.cu",
        "    __syncthreads();\n    if (warp == 0 && s == 0 && active) {", "    if (warp == 0 && s == 0 && active) {",
        "gather_long_kernel: the __syncthreads between the warps' partial sums and warp 0's total removed"),
    Bug("sync-removed-reuse", "spmm_cuda.cu", "    __syncthreads();  // partial is reused by the next item\n", "",
        "gather_long_kernel: the __syncthreads before the next item reuses `partial` removed"),
    Bug("sync-removed-step", "rnn_step_cuda.cu", "    __syncthreads();\n    for (int i = threadIdx.x;",
        "    for (int i = threadIdx.x;",
        "step_forward_kernel: the __syncthreads between the gate rows' products and the gate math removed"),
    Bug("sync-divergent", "rnn_step_cuda.cu", "  int64_t start = 0, end = 0;",
        "  if (j0 + u >= a.H) return;  // warps of units past H leave early\n  int64_t start = 0, end = 0;",
        "step_forward_kernel: warps of units past H return before the barriers the others reach"),
    Bug("shuffle-lane", "common.cuh", "const int32_t col = __shfl_sync(kFullMask, my_idx, j);",
        "const int32_t col = __shfl_sync(kFullMask, my_idx, j + 1);",
        "gather_chunk: each slot broadcasts the column of the next entry (wrong source lane)"),
    Bug("shuffle-xor-lane", "common.cuh", "acc[e] += __shfl_xor_sync(kFullMask, acc[e], o);",
        "acc[e] += __shfl_xor_sync(kFullMask, acc[e], o / 2);",
        "gather_range: the slots' sums use the wrong butterfly partner"),
    Bug("shuffle-mask", "common.cuh", "p[i] = keep + __shfl_xor_sync(kFullMask, send, O * Stride);",
        "p[i] = keep + __shfl_xor_sync(0x0000ffffu, send, O * Stride);",
        "reduce_scatter (sddmm; the persistent kernels' split rows): a half-warp mask on a shuffle all 32 lanes "
        "execute"),
    Bug("shuffle-divergent", "sddmm_cuda.cu",
        "  const A r = __shfl_sync(kFullMask, p[0], (lane % S) * CW + lane / S);\n"
        "  if (FULL || k < end)  // the one rounding to storage (and the sum's, adding)\n"
        "    a.out[k] = a.add ? from_acc<T>(to_acc(a.out[k]) + to_acc(from_acc<T>(r))) : from_acc<T>(r);",
        "  if (FULL || k < end) {  // the shuffle inside the branch\n"
        "    const A r = __shfl_sync(kFullMask, p[0], (lane % S) * CW + lane / S);\n"
        "    a.out[k] = a.add ? from_acc<T>(to_acc(a.out[k]) + to_acc(from_acc<T>(r))) : from_acc<T>(r);\n"
        "  }",
        "sddmm_chunk: the result shuffle moved inside `if (k < end)` (divergent in a row's last chunk)"),
    Bug("tile-bound", "spmm_cuda.cu", "    const bool active = cv < a.C;\n    acc_t<T> acc[VEC];",
        "    const bool active = cv <= a.C;\n    acc_t<T> acc[VEC];",
        "gather_rows_kernel: off-by-one in the batch tile's bound (`cv <= C`)"),
    Bug("row-bound", "spmm_cuda.cu", "  if (row >= a.n) return;", "  if (row > a.n) return;",
        "gather_rows_kernel: off-by-one in the row bound (`row > n`)"),
    Bug("long-row-chunk", "sddmm_cuda.cu", "sddmm_range<T, VEC, CW>(a, row, start + static_cast<int64_t>(warp) * kWarp, end,",
        "sddmm_range<T, VEC, CW>(a, row, start + static_cast<int64_t>(warp), end,",
        "sddmm_long_kernel: warp w starts at entry w instead of 32 w (chunks overlap, entries skipped)"),
    Bug("sddmm-add-overwrites", "sddmm_cuda.cu",
        "a.out[k] = a.add ? from_acc<T>(to_acc(a.out[k]) + to_acc(from_acc<T>(r))) : from_acc<T>(r);",
        "a.out[k] = from_acc<T>(r);",
        "sddmm_chunk: launch_sddmm_add (the fused step's weight gradient) overwrites out instead of adding to it"),
    Bug("wgrad-overwrites", "rnn_step_cuda.cu",
        "a.dw_t[k] = from_acc<T>(to_acc(a.dw_t[k]) + to_acc(from_acc<T>(r)));", "a.dw_t[k] = from_acc<T>(r);",
        "wgrad_chunk: the fused step backward's one pass overwrites W_hh's gradient instead of adding to it"),
    Bug("wgrad-slots-unsummed", "rnn_step_cuda.cu",
        "  for (int o = CW; o < kWarp; o *= 2) {  // the slots' parts of dh_prev",
        "  for (int o = 2 * CW; o < kWarp; o *= 2) {  // the slots' parts of dh_prev",
        "wgrad_rows_kernel: dh_prev sums one slot pair less (the first xor shuffle skipped)"),
    Bug("misaligned-vector-load", "spmm_cuda.cu",
        "const bool wide = B % kWide == 0 && aligned16(src) && aligned16(out);", "const bool wide = B % kWide == 0;",
        "gather: 16-byte loads and stores without checking the pointers' alignment"),
    Bug("grid-y-overflow", "spmm_cuda.cu", "static_cast<unsigned>(std::min<int64_t>(a.tiles, kMaxGridY)));",
        "static_cast<unsigned>(a.tiles));", "gather_launch: grid.y = tiles, not capped at kMaxGridY"),
    Bug("launch-bounds", "sddmm_cuda.cu",
        "<<<static_cast<unsigned>(cdiv(a.rows, kRowWarps)), kRowWarps * kWarp, 0, stream>>>(a);",
        "<<<static_cast<unsigned>(cdiv(a.rows, 2 * kRowWarps)), 2 * kRowWarps * kWarp, 0, stream>>>(a);",
        "sddmm_launch: 512 threads per block for a kernel declared __launch_bounds__(256)"),
    Bug("shared-accumulator-race", "spmm_cuda.cu",
        "for (int e = 0; e < VEC; ++e) partial[warp][c * VEC + e] = acc[e];",
        "for (int e = 0; e < VEC; ++e) partial[0][c * VEC + e] = warp == 0 ? acc[e] : partial[0][c * VEC + e] + acc[e];",
        "gather_long_kernel: every warp adds its partial sum into one shared slot (a read-modify-write race)"),
    Bug("global-accumulator-race", "transpose_cuda.cu",
        "if (bad_idx != kNone) atomicMin(reinterpret_cast<u64*>(out + 3), bad_idx);",
        "if (bad_idx != kNone && bad_idx < static_cast<u64>(out[3])) out[3] = static_cast<int64_t>(bad_idx);",
        "index_scan_kernel: the first bad index kept with a plain compare-and-store instead of atomicMin"),
    Bug("block-stride", "spmm_cuda.cu",
        "for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {  // uniform per block",
        "for (int64_t item = blockIdx.x; item < items; item += 1) {  // uniform per block",
        "gather_long_kernel: grid-stride step 1 instead of gridDim.x (blocks redo each other's rows)"),
    Bug("segment-sum-short", "spmm_cuda.cu", "for (int64_t s = 1; s < segs; ++s) sum += p[s * a.B];",
        "for (int64_t s = 1; s + 1 < segs; ++s) sum += p[s * a.B];",
        "long_sum_kernel: a split long row's last segment left out of its sum"),
    Bug("segment-overlap", "spmm_cuda.cu", "    start += seg * seg_len;\n",
        "    start += seg * (seg_len - kWarp);\n",
        "gather_long_kernel: a long row's segments start 32 entries early (each overlaps the one before)"),
    Bug("wide-rows-workspace", "spmm_cuda.cu", "known_long_list_len(n_out, nnz, B * elem_bytes, max_len)",
        "known_long_list_len(n_out, nnz, 0, max_len)",
        "gather_workspace_len (longest row known): sized by the narrow rows' threshold, so a wide batch's rows "
        "of 129-1,024 entries find no long-row list"),
    Bug("wide-rows-launch", "spmm_cuda.cu", "  const int64_t row_bytes = B * static_cast<int64_t>(sizeof(T));",
        "  const int64_t row_bytes = 0;",
        "gather: the launch takes the narrow rows' threshold (1,024): a wide batch's rows under it stay with one warp"),
    Bug("missing-memset", "common.cuh", "  return cudaMemsetAsync(workspace, 0, sizeof(int32_t), stream);",
        "  return cudaSuccess;", "init_long_rows: the long-row list's count is not zeroed (garbage from cudaMalloc)"),
    Bug("split-count-not-zeroed", "common.cuh", "  return cudaMemsetAsync(rows.split, 0, sizeof(int32_t), stream);",
        "  return cudaSuccess;", "init_long_rows_split: the split list's count is not zeroed (garbage from cudaMalloc)"),
    Bug("split-sum-every-slot", "spmm_cuda.cu",
        "    if (row < 0) continue;  // a later segment's slot: its row's first slot sums it\n", "",
        "long_sum_kernel: every slot of the split list taken for a row's first (a later segment's -i read as a row)"),
    Bug("grid-sync-removed-forward", "rnn_sequence_cuda.cu",
        "    if (s + 1 < a.steps) SE_GRID_SYNC();  // every unit's h' of step t before any reads it\n", "",
        "seq_forward_kernel: the grid sync between one step's states and the next step's reads of them removed"),
    Bug("grid-sync-removed-backward", "rnn_sequence_cuda.cu",
        "    SE_GRID_SYNC();  // every gate gradient of step t before any unit's W_hh^T dG reads it\n", "",
        "seq_backward_kernel: the grid sync between the gate gradients and W_hh^T dG removed"),
    Bug("grid-not-resident", "rnn_sequence_cuda.cu",
        "  blocks = std::min<int64_t>(static_cast<int64_t>(per_sm) * num_sms(), cdiv(H, kSeqWarps));",
        "  blocks = cdiv(H, kSeqWarps);",
        "grid_for: a grid of one block per 8 units, not capped at what can be resident at once"),
    Bug("grid-sync-not-cooperative", "rnn_sequence_cuda.cu",
        "      return SE_LAUNCH_COOPERATIVE(seq_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kSeqThreads), shmem, stream,\n"
        "                                   a);",
        "      seq_kernel<<<dim3(static_cast<unsigned>(blocks)), dim3(kSeqThreads), shmem, stream>>>(a);\n"
        "      return cudaGetLastError();",
        "launch: the persistent kernels launched as plain launches: their grid syncs wait for blocks that need not "
        "be resident"),
    Bug("state-read-cached", "rnn_sequence_cuda.cu",
        "const T* h = s == 0 ? a.h0 : a.y + tp * HB;", "const T* h = a.h0;",
        "seq_forward_kernel: every step reads h_0 instead of the state the step before wrote"),
    Bug("stage-barrier-removed", "rnn_sequence_cuda.cu",
        "  __syncthreads();  // every thread's staged entries (and the shifts) before any thread's first step reads "
        "them\n", "",
        "seq_forward_kernel: no block barrier between staging W_hh in shared memory and the first step's reads"),
    Bug("stage-offset-one-gate", "rnn_sequence_cuda.cu",
        "p[q] = row_dot<ForwardRows>(a.split, st, k0 + shift[q],",
        "p[q] = row_dot<ForwardRows>(a.split, st, k0 + shift[0],",
        "seq_forward_kernel: every gate's staged position counted from the first gate's segment"),
    Bug("stage-past-shared", "rnn_sequence_cuda.cu",
        "  shmem = static_cast<size_t>(kStageHeader + stage_entries * entry);",
        "  shmem = static_cast<size_t>(kStageHeader + stage_entries * sizeof(T));",
        "grid_for: the launch's shared memory sized for the staged values only, not their index"),
    Bug("tail-last-entry-dropped", "sequence_dot.cuh",
        "  } else if (e < n) {", "  } else if (e + 1 < n) {",
        "dot_run: a row's predicated tail round skipped where one entry is left after the look-ahead rounds "
        "(the forward's rows of 8k + 1 entries lose their last)"),
    Bug("split-slot-start", "sequence_dot.cuh",
        "  int64_t e = lo + ((s - lo % S) % S + S) % S;", "  int64_t e = lo + s;",
        "split_run: a slot's first entry past the stage counted from the stage's end, not the row's start (entries "
        "summed twice or not at all where a row straddles the stage)"),
    Bug("split-reduce-stride", "sequence_dot.cuh",
        "  reduce_scatter<S / 2, C>(acc, s);", "  reduce_scatter<S / 2>(acc, s);",
        "split_dot: the slots' sums meet lanes 1 apart, not 32 / S (each lane adds another column's partial sums)"),
    Bug("split-shuffle-divergent", "rnn_sequence_cuda.cu",
        "        const T d = row_dot<BackwardRows>(a.split,",
        "        const T d = tile + lane >= a.B ? T(0) : row_dot<BackwardRows>(a.split,",
        "seq_backward_kernel: lanes past the batch skip the split row's shuffles that the others wait on"),
    Bug("one-column-stride", "common.cuh",
        "        const int64_t k = k0 + u * step + lane;", "        const int64_t k = k0 + u * kWarp + lane;",
        "gather_range: one vector column's chunks taken 32 entries apart, not `step` (the long-row kernel's "
        "warps read each other's chunks)"),
    Bug("default-stream", "spmm_cuda.cu", "gather_rows_kernel<T, VEC, CW><<<grid, kRowWarps * kWarp, 0, stream>>>(a);",
        "gather_rows_kernel<T, VEC, CW><<<grid, kRowWarps * kWarp>>>(a);",
        "gather_launch: the row kernel launched on the default stream, not the caller's"),
]


def _summary(variant: str, proc) -> str:
    """The first line that says what failed, or '' when the run passed."""
    text = proc.stdout + "\n" + proc.stderr
    if proc.returncode == 0 and "ALL OK" in proc.stdout:
        return ""
    for pattern in (r"EMU-ERROR [^\n]*", r"WARNING: ThreadSanitizer: [^\n]*", r"ERROR: AddressSanitizer: [^\n]*",
                    r"runtime error: [^\n]*", r"  FAIL [^\n]*"):
        m = re.search(pattern, text)
        if m:
            line = m.group(0).strip()
            if "ThreadSanitizer" in line:  # where: the first frame in a kernel file
                frame = re.search(r"#\d+ [^\n]*?(\w+_kernel)\b[^\n]*?(\w+_cuda\.cu:\d+|common\.cuh:\d+)", text)
                if frame:
                    line = re.sub(r" \(pid=\d+\)", "", line) + f" in {frame.group(1)} ({frame.group(2)})"
            return line[:220]
    if proc.returncode < 0:
        return f"crashed (signal {-proc.returncode})"
    return f"exit status {proc.returncode}"


def run_stage(cuda_dir: Path, work: Path, drivers, variant: str, suite: str, seeds) -> str:
    """'' when every driver passes every seed, else what failed."""
    for driver, kernels in drivers:
        exe = emu_build.build(work / f"{driver}_{cuda_dir.name}", kernels, driver, variant, cuda_dir=cuda_dir,
                              obj_dir=work / "objects")
        for seed in seeds:
            found = _summary(variant, emu_build.run(exe, suite, seed, timeout=1200))
            if found:
                return f"{driver}, seed {seed}: {found}" if len(seeds) > 1 else f"{driver}: {found}"
    return ""


def plant(bug: Bug, dest: Path) -> Path:
    """A copy of csrc/cuda (and csrc's headers) with the bug planted."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(emu_build.CUDA_DIR, dest / "cuda")
    for h in (emu_build.ROOT / "csrc").glob("*.h"):
        shutil.copy(h, dest / h.name)
    path = dest / "cuda" / bug.file
    text = path.read_text()
    if text.count(bug.old) != 1:
        raise ValueError(f"{bug.id}: the text to replace occurs {text.count(bug.old)} times in {bug.file}")
    path.write_text(text.replace(bug.old, bug.new))
    return dest / "cuda"


def check(bugs, work: Path, first: bool, stages=STAGES, baseline: bool = True, log=print) -> list[tuple[Bug, dict]]:
    """[(bug, {stage: '' (passed) or what failed})] for the given stages; with `baseline`, the
    unchanged sources must pass every stage first."""
    for stage, variant, suite, seeds in (stages if baseline else []):
        t0 = time.time()
        found = run_stage(emu_build.CUDA_DIR, work, [DRIVER, RNN_DRIVER], variant, suite, seeds)
        log(f"baseline {stage}: {found or 'passes'} ({time.time() - t0:.0f} s)")
        if found:
            raise SystemExit(f"the unchanged kernels fail the {stage} stage: {found}")
    results = []
    for bug in bugs:
        cuda_dir = plant(bug, work / "planted" / bug.id)
        verdicts = {}
        for stage, variant, suite, seeds in stages:
            t0 = time.time()
            try:
                verdicts[stage] = run_stage(cuda_dir, work, DRIVERS[bug.file], variant, suite, seeds)
            except RuntimeError as e:  # the planted source must still compile
                raise SystemExit(f"{bug.id}: {e}") from e
            log(f"{bug.id} {stage}: {verdicts[stage] or 'passes (missed)'} ({time.time() - t0:.0f} s)")
            if first and verdicts[stage]:
                break
        results.append((bug, verdicts))
    return results


def table(results, first: bool) -> str:
    lines = ["# Planted GPU bugs and what catches them", "",
             "Written by `python tests/cuda_emu/planted_bugs.py` (see its docstring): each bug below is planted alone in a",
             "copy of `csrc/cuda`, then the emulator suite runs: the strict emulator (`small` suite, seeds 1-3), its",
             "AddressSanitizer+UndefinedBehaviorSanitizer build and its ThreadSanitizer build (`sanitize` suite, seed 1).",
             "A cell gives the first failure a stage reports; *passes* means that stage alone misses the bug"
             + (" (stages after the first catch were not run: `--first`)." if first else "."), "",
             "| bug | planted in | " + " | ".join(s for s, *_ in STAGES) + " |",
             "| --- | --- | " + " | ".join("---" for _ in STAGES) + " |"]
    for bug, verdicts in results:
        cells = []
        for stage, *_ in STAGES:
            v = verdicts.get(stage)
            cells.append("not run" if v is None else (f"**caught**: {v}" if v else "passes"))
        cells = [c.replace("|", "\\|") for c in cells]
        lines.append(f"| `{bug.id}`: {bug.what} | `{bug.file}` | " + " | ".join(cells) + " |")
    caught = sum(any(v.values()) for _, v in results)
    lines += ["", f"{caught} of {len(results)} planted bugs caught."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bugs", help="comma-separated bug ids (default: all)")
    ap.add_argument("--first", action="store_true", help="stop at the first stage that catches a bug")
    ap.add_argument("--out", default=str(TABLE), help="the table's file ('-': print it)")
    ap.add_argument("--work", help="build directory (default: a temporary one)")
    args = ap.parse_args(argv)
    bugs = BUGS
    if args.bugs:
        wanted = args.bugs.split(",")
        unknown = set(wanted) - {b.id for b in BUGS}
        if unknown:
            ap.error(f"unknown bug ids: {sorted(unknown)}")
        bugs = [b for b in BUGS if b.id in wanted]
    with tempfile.TemporaryDirectory(prefix="planted_") as tmp:
        work = Path(args.work or tmp)
        try:
            results = check(bugs, work, args.first)
        except emu_build.Unavailable as e:
            print(f"cannot build the emulator here: {e}")
            return 2
    text = table(results, args.first)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    missed = [b.id for b, v in results if not any(v.values())]
    if missed:
        print("missed:", ", ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
