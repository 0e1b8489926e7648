"""Shared fixtures: random sparse weights with the awkward cases built in."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from sparse_engine import SparseWeight

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


# (rows, cols, density, empty_rows, full_rows): 1x1, one column, one row, empty matrices,
# nnz 0, rows with no entries, rows holding every column, larger sizes.
SHAPES = [
    (1, 1, 1.0, 0, 0),
    (1, 1, 0.0, 0, 0),
    (7, 1, 0.5, 2, 1),
    (1, 9, 0.5, 0, 1),
    (0, 5, 0.5, 0, 0),
    (5, 0, 0.5, 0, 0),
    (0, 0, 0.5, 0, 0),
    (6, 8, 0.0, 0, 0),
    (37, 53, 0.2, 5, 2),
    (200, 150, 0.05, 20, 1),
    (513, 1031, 0.01, 30, 3),
]


def random_weight(rows, cols, density, dtype=torch.float64, *, generator=None, empty_rows=0, full_rows=0):
    """A SparseWeight from a random mask (dense, so small sizes only), with ``empty_rows`` rows
    holding nothing and ``full_rows`` rows holding every column."""
    g = generator or torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()).item()))
    mask = torch.rand(rows, cols, generator=g) < density
    if rows:
        perm = torch.randperm(rows, generator=g)
        mask[perm[:empty_rows]] = False
        mask[perm[empty_rows:empty_rows + full_rows]] = True
    dense = torch.randn(rows, cols, generator=g, dtype=dtype)
    return SparseWeight.from_dense(dense, mask)


@pytest.fixture
def rng():
    """A fresh, randomly seeded generator; the seed is printed so a failure can be replayed."""
    seed = int(torch.randint(0, 2**31, ()).item())
    print(f"generator seed {seed}")
    return torch.Generator().manual_seed(seed)


def host_cxx() -> str | None:
    """The host C++ compiler ($CXX, else g++, else c++), or None."""
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


def run_all(commands: dict, timeout: float = 600) -> dict:
    """Runs the commands (independent compiles) at once, both cores busy, and returns
    {key: (returncode, stdout and stderr)}."""
    procs = {key: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for key, cmd in commands.items()}
    results = {}
    for key, proc in procs.items():
        text, _ = proc.communicate(timeout=timeout)
        results[key] = (proc.returncode, text)
    return results
