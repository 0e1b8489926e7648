"""Helpers of the emulator tests (tests/test_cuda_emulated.py, tests/test_cuda_sanitizers.py)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cuda_emu import emu_build


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
