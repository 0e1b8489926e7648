"""Helpers of the emulator tests: the family tests (tests/ops/test_<family>.py, which assert on their
family's lines of the drivers' runs), tests/kernels/test_cuda_emulator.py (the emulator's own checks)
and tests/kernels/test_cuda_sanitizers.py. Each driver is built and run once per session
(:func:`driver_runs`), for every test that reads its output."""
from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cuda_emu import emu_build

SUITE = os.environ.get("SPARSE_ENGINE_EMU_SUITE", "small")  # the drivers' inputs; "full": bigger cases
SEEDS = os.environ.get("SPARSE_ENGINE_EMU_SEEDS", "1,2,3").split(",")
# Each driver (tests/cuda_emu/<driver>.cpp) and the kernel files (csrc/cuda/<file>.cu) it runs.
DRIVERS = {"driver": ["spmm_cuda", "sddmm_cuda", "transpose_cuda"],
           "rnn_driver": ["rnn_step_cuda", "spmm_cuda", "sddmm_cuda"], "seq_driver": ["rnn_sequence_cuda"]}
STATS = re.compile(r"^emu seed=\d+ launches=(\d+) blocks=(\d+) threads=(\d+) block_switches=(\d+) "
                   r"max_live_blocks=(\d+) order=(\w+) outputs=(\w+)$", re.M)


def objects_dir(tmp_path_factory) -> Path:
    """Object files shared by this session's emulator builds (emu_build caches them by content)."""
    return tmp_path_factory.getbasetemp() / "cuda_emu_objects"


def build(tmp_path_factory, kernels, driver, variant="plain", cuda_dir=emu_build.CUDA_DIR) -> Path:
    """An emulator executable; skips where the toolchain is missing."""
    try:
        return emu_build.build(tmp_path_factory.mktemp(f"emu_{driver or kernels[0]}_{variant}"), kernels, driver,
                               variant, cuda_dir=cuda_dir, obj_dir=objects_dir(tmp_path_factory))
    except emu_build.Unavailable as e:
        pytest.skip(str(e))


def run_seeds(exe: Path, suite: str, seeds) -> dict:
    """{seed: CompletedProcess}, two at a time."""
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(seeds, pool.map(lambda s: emu_build.run(exe, suite, s, timeout=1200), seeds)))


_RUNS: dict = {}


def driver_run_with(tmp_path_factory, driver: str, *args: str) -> subprocess.CompletedProcess:
    """One run of ``driver``'s plain emulator build with the given arguments (suite, seed and the
    driver's own), on the build :func:`driver_runs` runs."""
    return emu_build.run(_plain_build(tmp_path_factory, driver), *args, timeout=1200)


def driver_runs(tmp_path_factory, driver: str) -> dict:
    """{seed: CompletedProcess} of ``driver``'s plain emulator build on SUITE for every seed of SEEDS,
    built and run at the first call of the session (the fixtures driver_runs and rnn_driver_runs of
    tests/ops/conftest.py and tests/kernels/conftest.py), then remembered."""
    if driver not in _RUNS:
        _RUNS[driver] = run_seeds(_plain_build(tmp_path_factory, driver), SUITE, SEEDS)
    return _RUNS[driver]


def _plain_build(tmp_path_factory, driver: str) -> Path:
    """``driver``'s plain emulator build, made once per session."""
    key = ("exe", driver)
    if key not in _RUNS:
        _RUNS[key] = build(tmp_path_factory, DRIVERS[driver], driver)
    return _RUNS[key]


def assert_passed(proc: subprocess.CompletedProcess) -> list[str]:
    """The driver's lines, after checking it reported no failure."""
    lines = proc.stdout.splitlines()
    bad = [line for line in lines if "FAIL" in line or line.startswith("EMU-ERROR")]
    assert proc.returncode == 0 and lines and lines[-1].startswith("ALL OK"), \
        "\n".join(bad or lines[-20:]) + proc.stderr[-4000:]
    return lines


def kernels_in(files) -> set[str]:
    """Names of the __global__ functions defined in the given csrc/cuda files."""
    return {m[1] for f in files for m in re.finditer(r"__global__\s+void\s+(?:__launch_bounds__\((?:[^()]|\([^()]*\))*\)\s*)?(\w+)\s*\(",
                                                     (emu_build.CUDA_DIR / f"{f}.cu").read_text())}


def assert_every_kernel_ran(proc: subprocess.CompletedProcess, files) -> None:
    """The driver's run launched every kernel defined in the given .cu files."""
    m = re.search(r"^emu kernels=(.*)$", proc.stdout, re.M)
    assert m, proc.stdout[-2000:]
    missing = kernels_in(files) - set(m[1].split(","))
    assert not missing, f"kernels never launched: {sorted(missing)}"


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
