"""The GPU tests' own logic, run on the CPU in every test run: the CUDA step tests of
``tests/ops/test_rnn_step.py`` (those marked ``cuda``) with SPARSE_ENGINE_RNN_TEST_DEVICE=cpu (the fused
CPU ops in place of CUDA's) and ``tests/kernels/test_cuda_limits.py`` with
SPARSE_ENGINE_LIMITS_TEST_DEVICE=cpu (the size tests at small sizes). Otherwise they run only where a
GPU is, which is rare: the first GPU run (an H200) found the CUDA step tests' gradcheck still passing
Recurrence.apply an input layout the recurrence had dropped. Each file runs in its own process, since
the device is read when the file is imported."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name,variable", [("ops/test_rnn_step.py", "SPARSE_ENGINE_RNN_TEST_DEVICE"),
                                           ("kernels/test_cuda_limits.py", "SPARSE_ENGINE_LIMITS_TEST_DEVICE")])
def test_gpu_test_file_passes_on_the_cpu(name, variable):
    env = {**os.environ, variable: "cpu"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", str(TESTS / name)],
                         cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900)
    tail = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0, f"{name} on the CPU:\n{tail}"
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed and int(passed.group(1)) >= 10, f"{name} on the CPU ran too few tests:\n{tail}"
