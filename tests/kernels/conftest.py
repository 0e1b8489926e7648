"""Fixtures of the kernel tests (tests/kernels): the compiler helpers of tests/cuda_emu/build_util.py
(``host_cxx()``, ``cuda_home()``, ``run_all(commands)``, each the function itself) and the emulator's
driver runs (built and run once per session, shared with tests/ops: tests/cuda_emu/emu_testing.py)."""
from __future__ import annotations

import pytest

from cuda_emu import build_util, emu_testing


@pytest.fixture(scope="session")
def host_cxx():
    """``host_cxx()``: the host C++ compiler ($CXX, else g++, else c++), or None."""
    return build_util.host_cxx


@pytest.fixture(scope="session")
def cuda_home():
    """``cuda_home()``: the CUDA toolkit's root (a Path whose include/ has cuda_runtime.h), or None."""
    return build_util.cuda_home


@pytest.fixture(scope="session")
def run_all():
    """``run_all({key: command}, timeout=600)``: independent compiles run at once, {key: (returncode, output)}."""
    return build_util.run_all


@pytest.fixture(scope="session")
def driver_runs(tmp_path_factory) -> dict:
    """{seed: CompletedProcess} of tests/cuda_emu/driver.cpp (spmm, sddmm and transpose_index kernels)."""
    return emu_testing.driver_runs(tmp_path_factory, "driver")
