"""What the tests share besides ``sparse_engine.testing``: fixtures, the hypothesis profiles and
the default compute path. Tests import nothing from this file; they ask for its fixtures by name.

Where shared test code lives:

* ``sparse_engine.testing`` (public, for any code built on sparse-engine): seeded random
  SparseWeights and scipy matrices, the awkward shapes (``AWKWARD_SHAPES``), non-contiguous
  layouts, float64 references of the ops and of the topology selections, a weight's invariants
  (``check_invariants``), bit-for-bit comparison of saved states (``assert_bit_equal``),
  ``num_threads``;
* this file: the fixtures ``rng``, ``np_rng`` (seeded generators that print their seed),
  ``shared_data`` (the data sets outside the repository; skips the test when one is missing)
  and ``load_script`` (a script of ``examples/`` or ``benchmarks/`` as a module);
* ``tests/_build_util.py``: ``host_cxx`` and ``run_all``, the compiler helpers of the build tests;
* a test group's own helpers stay in its test file (``test_distributed.py`` holds the scenarios
  its spawned processes run); a few are imported by the group's other files:
  ``test_rnn_modules`` (``build``, ``check_against_torch``, ...), ``test_rnn_cells``,
  ``test_training_controllers`` (``ALGOS``, ``make``) and ``test_resume`` (``interrupt_at``).

Besides fixtures, this file loads the hypothesis profile of the property tests
(``tests/test_properties.py``), chosen by ``HYPOTHESIS_PROFILE``: ``dev`` (default; the property
file runs in well under a minute on two cores), ``ci`` (the same budget, without the health
check that fails slow data generation on a loaded runner) or ``thorough`` (ten times the
examples, for a bug hunt). Every profile leaves the seed to hypothesis, prints the
``@reproduce_failure`` blob of a failure (replay it by pasting that decorator on the test) and
keeps no example database, so no ``.hypothesis/`` folder appears in the tree.
"""
import importlib.util
import os
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[1]
#: data sets and trained networks shared with the examples, kept outside the repository
SHARED_DATA = ROOT / ".." / "shared" / "data"


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


@pytest.fixture
def shared_data():
    """``shared_data(*parts)``: the path ``../shared/data/<parts>``; the test is skipped when it
    is missing (a checkout without the shared folder, or without that data set)."""
    def path(*parts: str) -> Path:
        p = SHARED_DATA.joinpath(*parts)
        if not p.exists():
            pytest.skip(f"shared data {p} is not present")
        return p
    return path


@pytest.fixture
def load_script():
    """``load_script("examples/train_digits.py")``: a script of this checkout (an example, a
    benchmark) loaded afresh as a module, for its functions (an example's ``main(argv)``)."""
    def load(path: str):
        spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


# Tests run the modules on the sparse kernels unless they ask for another compute path (``compute=``
# or ``default_compute``): at test sizes ``compute='auto'`` would otherwise pick torch's dense
# modules and the kernels would go untested (see sparse_engine/recurrent/compute_paths.py). The variable pins the
# subprocesses that tests start (CLI runs, resumed runs compared bit for bit with in-process ones).
os.environ["SPARSE_ENGINE_COMPUTE"] = "sparse"


@pytest.fixture(autouse=True)
def _sparse_compute_by_default():
    """The sparse path for every test, whatever an earlier test set as the global default."""
    from sparse_engine.recurrent.compute_paths import default_compute

    with default_compute("sparse"):
        yield
