"""pytest fixtures only; tests import nothing from this file.

Where shared test code lives:

* ``sparse_engine.testing`` (public): seeded random SparseWeights and scipy matrices, the
  awkward shapes (``AWKWARD_SHAPES``), non-contiguous layouts and float64 references of the ops;
* ``tests/_paths.py``: ``DATA``, the shared data folder;
* ``tests/_build_util.py``: ``host_cxx`` and ``run_all``, the compiler helpers of the build tests;
* ``tests/_training_util.py``, ``tests/_distributed_util.py``: helpers of those test groups.

Each is a plain module, imported as ``from _paths import DATA`` (pytest puts tests/ on the path).
"""
import numpy as np
import pytest
import torch


@pytest.fixture
def rng():
    """A fresh, randomly seeded torch.Generator; the seed is printed so a failure can be replayed."""
    seed = int(torch.randint(0, 2**31, ()).item())
    print(f"generator seed {seed}")
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def np_rng():
    """A fresh, randomly seeded numpy Generator; the seed is printed so a failure can be replayed."""
    seed = int(torch.randint(0, 2**31, ()).item())
    print(f"numpy generator seed {seed}")
    return np.random.default_rng(seed)
