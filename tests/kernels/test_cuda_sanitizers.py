"""The emulated CUDA kernels (tests/ops/test_<family>.py) under AddressSanitizer + UndefinedBehaviorSanitizer
and under ThreadSanitizer, on the same inputs as the emulator tests (the drivers' "small" suite, seed 1;
SPARSE_ENGINE_EMU_SUITE picks another): every kernel, dtype and mode. About 20 s of CPU per driver and
sanitizer on top of the builds. ASan+UBSan reports an access outside any array (a global or a shared
one: each __shared__ variable is its own allocation) and undefined behaviour; TSan sees each CUDA
thread as a thread and only barriers and launch boundaries as synchronisation, so a data race between
threads of a block is a missing __syncthreads and one between blocks (which run interleaved, several
at a time) a wrong stride or a missing atomic. Each finding is fatal. The TSan test also plants a race
to show it is seen here. (tests/cuda_emu/planted_bugs.py runs the sanitizers on the drivers' "sanitize"
subset, which still reaches every kernel, to keep its 19 rebuilds short.)
"""
from __future__ import annotations

import re

import pytest

from cuda_emu import emu_build
from cuda_emu.emu_testing import DRIVERS, SUITE, assert_every_kernel_ran, assert_passed, build, objects_dir


def _run_sanitized(tmp_path_factory, variant: str) -> None:
    for driver, kernels in DRIVERS.items():
        exe = build(tmp_path_factory, kernels, driver, variant)
        proc = emu_build.run(exe, SUITE, "1", timeout=1800)
        assert_passed(proc)
        assert_every_kernel_ran(proc, kernels)
        assert not re.search(r"ERROR: AddressSanitizer|runtime error:|WARNING: ThreadSanitizer", proc.stderr), \
            proc.stderr[-6000:]


@pytest.mark.slow
def test_kernels_pass_address_and_undefined_behaviour_sanitizers(tmp_path_factory):
    _run_sanitized(tmp_path_factory, "asan")


@pytest.mark.slow
def test_kernels_pass_thread_sanitizer(tmp_path_factory):
    _run_sanitized(tmp_path_factory, "tsan")


@pytest.mark.slow
def test_thread_sanitizer_sees_a_planted_race(tmp_path_factory):
    """The index scan's atomicMin replaced by a plain compare-and-store: the plain emulator cannot see it
    (its threads switch only at shuffles, barriers and atomics, so the store is never lost), TSan must."""
    from cuda_emu import planted_bugs as planted

    bug = next(b for b in planted.BUGS if b.id == "global-accumulator-race")
    work = tmp_path_factory.mktemp("planted_tsan")
    (work / "objects").symlink_to(objects_dir(tmp_path_factory), target_is_directory=True)
    try:
        [(_, verdicts)] = planted.check([bug], work, first=False, stages=[planted.STAGES[2]], baseline=False,
                                        log=lambda *_: None)
    except emu_build.Unavailable as e:
        pytest.skip(str(e))
    assert "ThreadSanitizer: data race" in verdicts["tsan"], verdicts
