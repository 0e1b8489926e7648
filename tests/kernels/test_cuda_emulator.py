"""The CUDA emulator's own tests: it runs a correct kernel, reports every broken CUDA rule, interleaves
blocks in an order that changes with the seed (and the kernels' outputs do not), and catches typical
planted GPU bugs.

The CUDA kernels, run on the CPU by a strict emulator: indexing, lane layouts, shuffles, barriers, the
long-row kernels (and that they are launched only when a row can be long), the index scan, launch
limits and bounds, checked against float64 references on a machine without a GPU (each op family's
test file asserts on its kernels' lines of the drivers' runs: tests/ops/test_spmm.py, test_sddmm.py,
test_transpose.py, test_index_check.py, test_rnn_step.py).

csrc/cuda/spmm_cuda.cu, sddmm_cuda.cu, transpose_cuda.cu and rnn_step_cuda.cu, with their launchers,
are compiled as host C++ with tests/cuda_emu/emu.h (tests/cuda_emu/emu_build.py says what is
rewritten): every CUDA thread is a fiber, the blocks of a grid run several at a time in a seeded
random order and the next thread to run is drawn at random at every shuffle, barrier and atomic.
Every launch is checked against a GPU's limits (grid.y lowered to 2, so that the loops over tiles run
more than once), shuffles against their masks, barriers against divergence, vector loads and stores
against their alignment, and every launch, memset and sort must be on the caller's stream. Three
seeds run in CI; their outputs must be bitwise equal (fixed summation orders). What this cannot
show: speed, coalescing, the hardware's own scheduling and memory model beyond what the random
orders reach, int32 overflow at sizes beyond 2^31 (tests/kernels/test_cuda_limits.py, on a GPU), cub
itself. The same drivers, on the same inputs, run under AddressSanitizer+UBSan and ThreadSanitizer in
tests/kernels/test_cuda_sanitizers.py; tests/cuda_emu/planted_bugs.py shows the suite failing for
typical planted GPU bugs.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from cuda_emu import emu_build
from cuda_emu.emu_testing import assert_orders_vary_and_outputs_do_not, build, objects_dir



# ------------------------------------------------ block orders (driver.cpp, run once per session)
@pytest.mark.slow
def test_block_orders_vary_with_the_seed_and_results_do_not(driver_runs):
    assert_orders_vary_and_outputs_do_not(driver_runs)


# ---------------------------------------------------------------------- the emulator's own checks
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


# -------------------------------------------------------------------- planted bugs (a few, in CI)
PLANTED_IN_CI = ["grid-y-overflow", "shuffle-mask", "sync-divergent", "misaligned-vector-load", "grid-sync-removed-forward",
                "stage-barrier-removed"]


@pytest.mark.slow
def test_planted_bugs_fail_the_emulator(tmp_path_factory):
    """A few of tests/cuda_emu/planted_bugs.py's bugs, one per kind of check, each caught by the plain
    emulator (the script, run by hand, plants all of them and runs the sanitizer builds too:
    docs/cuda_planted_bugs.md)."""
    from cuda_emu import planted_bugs as planted

    bugs = [b for b in planted.BUGS if b.id in PLANTED_IN_CI]
    assert len(bugs) == len(PLANTED_IN_CI)
    work = tmp_path_factory.mktemp("planted")
    shared = objects_dir(tmp_path_factory)
    shared.mkdir(parents=True, exist_ok=True)  # a dangling link fails the build's mkdir (this test alone)
    (work / "objects").symlink_to(shared, target_is_directory=True)
    try:
        results = planted.check(bugs, work, first=True, stages=planted.STAGES[:1], baseline=False, log=lambda *_: None)
    except emu_build.Unavailable as e:
        pytest.skip(str(e))
    for bug, verdicts in results:
        assert verdicts["emulator"], f"{bug.id} was not caught"
