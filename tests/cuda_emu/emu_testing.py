"""Helpers of the emulator tests (tests/test_cuda_emulated.py, tests/test_cuda_sanitizers.py)."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from cuda_emu import emu_build

SUITE = os.environ.get("SPARSE_ENGINE_EMU_SUITE", "small")  # the drivers' inputs; "full": bigger cases


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
