"""pytest fixtures only; tests import nothing from this file.

Where shared test code lives:

* ``sparse_engine.testing`` (public): seeded random SparseWeights and scipy matrices, the
  awkward shapes (``AWKWARD_SHAPES``), non-contiguous layouts and float64 references of the ops;
* ``tests/_paths.py``: ``DATA``, the shared data folder;
* ``tests/_build_util.py``: ``host_cxx`` and ``run_all``, the compiler helpers of the build tests;
* ``tests/_training_util.py``, ``tests/_distributed_util.py``: helpers of those test groups.

Each is a plain module, imported as ``from _paths import DATA`` (pytest puts tests/ on the path).

Besides fixtures, this file loads the hypothesis profile of the property tests
(``tests/test_properties.py``), chosen by ``HYPOTHESIS_PROFILE``: ``dev`` (default; the property
file runs in well under a minute on two cores), ``ci`` (the same budget, without the health
check that fails slow data generation on a loaded runner) or ``thorough`` (ten times the
examples, for a bug hunt). Every profile leaves the seed to hypothesis, prints the
``@reproduce_failure`` blob of a failure (replay it by pasting that decorator on the test) and
keeps no example database, so no ``.hypothesis/`` folder appears in the tree.
"""
import os

import numpy as np
import pytest
import torch

try:  # the test extra installs hypothesis; without it only tests/test_properties.py fails
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover
    settings = None

if settings is not None:
    _PROFILE = dict(max_examples=150, deadline=None, print_blob=True, derandomize=False, database=None)
    settings.register_profile("dev", **_PROFILE)
    settings.register_profile("ci", **_PROFILE, suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("thorough", **{**_PROFILE, "max_examples": 1500})
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


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


# Tests run the modules on the sparse kernels unless they ask for another compute path (``compute=``
# or ``default_compute``): at test sizes ``compute='auto'`` would otherwise pick torch's dense
# modules and the kernels would go untested (see sparse_engine/nn/compute.py). The variable pins the
# subprocesses that tests start (CLI runs, resumed runs compared bit for bit with in-process ones).
os.environ["SPARSE_ENGINE_COMPUTE"] = "sparse"


@pytest.fixture(autouse=True)
def _sparse_compute_by_default():
    """The sparse path for every test, whatever an earlier test set as the global default."""
    from sparse_engine.nn.compute import default_compute

    with default_compute("sparse"):
        yield
