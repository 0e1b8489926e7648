"""train's allocator setting (sparse_engine/runtime/cuda_allocator.py): expandable segments unless
the user configured the allocator or CUDA already read its settings. Each case in a fresh process,
so that no test's CUDA state or environment leaks into another (no GPU needed: nothing touches one)."""
import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import json, os, sys
import sparse_engine
import torch
from sparse_engine.runtime import cuda_allocator
if sys.argv[1] == "initialised":
    torch.cuda.is_initialized = lambda: True  # as after a first CUDA call
print(json.dumps([cuda_allocator.prefer_expandable_segments(), os.environ.get("PYTORCH_CUDA_ALLOC_CONF")]))
"""


def run(case: str, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")}
    out = subprocess.run([sys.executable, "-c", SCRIPT, case], env={**base, **env}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sets_expandable_segments_when_nothing_is_configured():
    assert run("fresh") == [True, "expandable_segments:True"]


@pytest.mark.parametrize("var", ["PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"])
def test_the_users_own_setting_stands(var):
    got = run("fresh", **{var: "max_split_size_mb:64"})
    assert got[0] is False
    assert got[1] == ("max_split_size_mb:64" if var == "PYTORCH_CUDA_ALLOC_CONF" else None)


def test_nothing_changes_once_cuda_has_read_its_settings():
    assert run("initialised") == [False, None]
