"""The CUDA kernels, run on the CPU by a strict emulator: indexing, lane layouts, shuffles, barriers, the
long-row kernels (and that they are launched only when a row can be long), the index scan, launch
limits and bounds, checked against float64 references on a machine without a GPU.

csrc/cuda/spmm_cuda.cu, sddmm_cuda.cu, transpose_cuda.cu and rnn_step_cuda.cu, with their launchers,
are compiled as host C++ with tests/cuda_emu/emu.h (tests/cuda_emu/emu_build.py says what is
rewritten): every CUDA thread is a fiber, the blocks of a grid run several at a time in a seeded
random order and the next thread to run is drawn at random at every shuffle, barrier and atomic.
Every launch is checked against a GPU's limits (grid.y lowered to 2, so that the loops over tiles run
more than once), shuffles against their masks, barriers against divergence, vector loads and stores
against their alignment, and every launch, memset and sort must be on the caller's stream. Three
seeds run in CI; their outputs must be bitwise equal (fixed summation orders). What this cannot
show: speed, coalescing, the hardware's own scheduling and memory model beyond what the random
orders reach, int32 overflow at sizes beyond 2^31 (tests/test_cuda_limits.py, on a GPU), cub itself.
The same drivers, on the same inputs, run under AddressSanitizer+UBSan and ThreadSanitizer in
tests/test_cuda_sanitizers.py;
tests/cuda_planted_bugs.py shows the suite failing for typical planted GPU bugs.
"""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cuda_emu import emu_build
from cuda_emu.emu_testing import SUITE, assert_every_kernel_ran, assert_passed, build, objects_dir
from sparse_engine.kernels.constants import MODE_IDS

SEEDS = os.environ.get("SPARSE_ENGINE_EMU_SEEDS", "1,2,3").split(",")
STATS = re.compile(r"^emu seed=\d+ launches=(\d+) blocks=(\d+) threads=(\d+) block_switches=(\d+) "
                   r"max_live_blocks=(\d+) order=(\w+) outputs=(\w+)$", re.M)


def run_seeds(exe: Path, suite: str, seeds) -> dict:
    """{seed: CompletedProcess}, two at a time."""
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(seeds, pool.map(lambda s: emu_build.run(exe, suite, s, timeout=1200), seeds)))


def stats(proc) -> dict:
    m = STATS.search(proc.stdout)
    assert m, proc.stdout[-2000:]
    keys = ("launches", "blocks", "threads", "block_switches", "max_live_blocks", "order", "outputs")
    return {k: (int(v) if k not in ("order", "outputs") else v) for k, v in zip(keys, m.groups())}


def assert_orders_vary_and_outputs_do_not(runs: dict) -> None:
    """Blocks ran interleaved, several at a time, in an order that changes with the seed, and every
    output is bitwise the same whatever the order (the kernels' sums have a fixed order)."""
    st = {seed: stats(proc) for seed, proc in runs.items()}
    for s in st.values():
        assert s["block_switches"] > 0 and s["max_live_blocks"] >= 2, s
    if len(st) > 1:
        assert len({s["order"] for s in st.values()}) == len(st), st
        assert len({s["outputs"] for s in st.values()}) == 1, st


# ------------------------------------------------------------------ spmm, spmm_t, sddmm, transpose_index
@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Path:
    return build(tmp_path_factory, ["spmm_cuda", "sddmm_cuda", "transpose_cuda"], "driver")


@pytest.fixture(scope="module")
def driver_runs(emulator) -> dict:
    return run_seeds(emulator, SUITE, SEEDS)


@pytest.mark.slow
def test_kernels_match_float64_references_on_the_emulator(driver_runs):
    for seed, proc in driver_runs.items():
        lines = assert_passed(proc)
        # the long-row kernels really ran, for rows (spmm, sddmm) and for columns (spmm_t)
        assert any("power " in line and "long rows=5" in line for line in lines)
        assert any("powerT" in line and "long cols=5" in line for line in lines)
        # with the longest row known (a checked index), a pattern without long rows launches only the
        # row kernels (spmm/spmm_t/sddmm), where sizing by nnz alone launched the long-row kernels too;
        # with long rows, those still run
        flat = [line for line in lines if line.split()[1:2] == ["flat"]]
        assert flat and all("launches=2/2/2" in line for line in flat if "known=0" in line)
        assert any("known=1" in line for line in flat) and all("launches=1/1/1" in line for line in flat if "known=1" in line)
        assert any("power " in line and "known=1 launches=2/1/2" in line for line in lines)
        # the index scan (launch_index_scan) found every planted problem (its FAIL lines fail the run above)
        scans = [line for line in lines if line.startswith("scan ")]
        assert len(scans) >= 15 and all(line.endswith(" ok") for line in scans), seed
        assert_every_kernel_ran(proc, ["spmm_cuda", "sddmm_cuda", "transpose_cuda"])


@pytest.mark.slow
def test_block_orders_vary_with_the_seed_and_results_do_not(driver_runs):
    assert_orders_vary_and_outputs_do_not(driver_runs)


# ------------------------------------------------- fused recurrent step (rnn_step_cuda.cu)
@pytest.fixture(scope="module")
def rnn_runs(tmp_path_factory) -> dict:
    """rnn_step_cuda.cu (+ spmm_cuda.cu, whose gather its backward calls) with tests/cuda_emu/rnn_driver.cpp,
    a separate executable from the one above."""
    exe = build(tmp_path_factory, ["rnn_step_cuda", "spmm_cuda"], "rnn_driver")
    return run_seeds(exe, SUITE, SEEDS)


@pytest.mark.slow
def test_fused_rnn_step_kernels_match_float64_references_on_the_emulator(rnn_runs):
    for proc in rnn_runs.values():
        lines = assert_passed(proc)
        for mode in MODE_IDS:  # every mode ran, in both dtypes (the driver prints constants.h's mode names)
            assert any(line.startswith(f"f32 {mode} ") for line in lines), mode
            assert any(line.startswith(f"f64 {mode} ") for line in lines), mode
        # the backward's W_hh^T dG really took spmm_cuda.cu's long-row kernel (5 long columns)
        assert any("longcols" in line and "long cols=5" in line for line in lines)
        # three batch tiles: more than the emulated grid.y (2), so the forward's tile loop ran twice
        assert any(" B=67 " in line for line in lines)
        assert_every_kernel_ran(proc, ["rnn_step_cuda", "spmm_cuda"])
    assert_orders_vary_and_outputs_do_not(rnn_runs)


# ------------------------------------------------------------------ the emulator's own checks
@pytest.fixture(scope="module")
def selftest(tmp_path_factory) -> Path:
    return build(tmp_path_factory, ["selftest"], None, cuda_dir=emu_build.EMU_DIR)


# case of tests/cuda_emu/selftest.cu -> what the emulator must say
BROKEN_RULES = {
    "mask-excludes-caller": "which does not name it",
    "source-outside-mask": "which mask 0x0000ffff does not name",
    "divergent-shuffle": "divergent shuffle",
    "shuffle-after-return": "return",
    "shuffle-vs-barrier": "__syncthreads",
    "partial-barrier": "every thread of the block",
    "two-barriers": "divergent code",
    "misaligned-load": "not 16-byte aligned",
    "misaligned-store": "misaligned address",  # UBSan's alignment check, on in every emulator build
    "shared-too-big": "shared memory per block",
    "dynamic-shared": "dynamic shared memory",
    "block-too-big": "threads per block",
    "grid-y": "grid.y and grid.z at most 2",
    "launch-bounds": "__launch_bounds__(64)",
    "default-stream": "not the caller's stream",
}


def test_emulator_runs_a_correct_kernel(selftest):
    for seed in ("1", "2"):
        proc = emu_build.run(selftest, "ok", seed, timeout=120)
        assert proc.returncode == 0 and "ALL OK ok" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", sorted(BROKEN_RULES))
def test_emulator_reports_a_broken_cuda_rule(selftest, case):
    proc = emu_build.run(selftest, case, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "ALL OK" not in proc.stdout, out
    assert BROKEN_RULES[case] in out, out
    if case != "misaligned-store":
        assert proc.returncode == 86 and "EMU-ERROR" in out and "kernel" in out, out


# ------------------------------------------------------------------ planted bugs (a few, in CI)
PLANTED_IN_CI = ["grid-y-overflow", "shuffle-mask", "sync-divergent", "misaligned-vector-load"]


@pytest.mark.slow
def test_planted_bugs_fail_the_emulator(tmp_path_factory):
    """A few of tests/cuda_planted_bugs.py's bugs, one per kind of check, each caught by the plain
    emulator (the script, run by hand, plants all of them and runs the sanitizer builds too:
    docs/cuda_planted_bugs.md)."""
    import cuda_planted_bugs as planted

    bugs = [b for b in planted.BUGS if b.id in PLANTED_IN_CI]
    assert len(bugs) == len(PLANTED_IN_CI)
    work = tmp_path_factory.mktemp("planted")
    (work / "objects").symlink_to(objects_dir(tmp_path_factory), target_is_directory=True)
    try:
        results = planted.check(bugs, work, first=True, stages=planted.STAGES[:1], baseline=False, log=lambda *_: None)
    except emu_build.Unavailable as e:
        pytest.skip(str(e))
    for bug, verdicts in results:
        assert verdicts["emulator"], f"{bug.id} was not caught"
