"""What the tests share besides ``sparse_engine.testing``: fixtures, the hypothesis profiles and
the default compute path. Tests import nothing from this file; they ask for its fixtures by name.

The layout of tests/ follows the code (``tests/package/test_test_layout.py`` checks it): a folder
per package of sparse_engine (``tests/nn/``, ``tests/recurrent/``, ``tests/training/``, ...), one
file per op family or subject, named for what it checks without repeating its folder's name
(``tests/nn/test_rhn.py``, ``tests/io/test_export.py``); tests of the top-level modules at the
root (``tests/test_init.py``, ``tests/test_testing.py``); the
scripts' tests in ``tests/examples/`` and ``tests/benchmarks/``; the layout itself (import
layers, module sizes, old import paths, this layout) in ``tests/package/``. Every test file's
name is unique (pytest imports each by its basename) and no test file imports another.

Where shared test code lives:

* ``sparse_engine.testing`` (public, for any code built on sparse-engine): seeded random
  SparseWeights, scipy matrices and packed sequences, the awkward shapes (``AWKWARD_SHAPES``),
  non-contiguous layouts, float64 references of the ops and of the topology selections, a
  weight's invariants (``check_invariants``), bit-for-bit comparison of saved states
  (``assert_bit_equal``), a sparse RNN module against torch's (``check_against_torch``,
  ``param_grad_pairs``), ``num_threads``, and the memory probes (``TensorMemoryTrace``,
  ``peak_rss_growth``: the resident peak of a step in a fresh process);
* this file, whose fixtures every folder sees: ``rng``, ``np_rng`` (seeded generators that print
  their seed), ``shared_data`` (the data sets outside the repository; skips the test when one is
  missing), ``load_script`` (a script of ``examples/`` or ``benchmarks/`` as a module),
  ``build_rnn`` (a SparseLSTM/GRU/RNN by torch's mode name), ``gradcheck_recurrence`` (gradcheck
  of the recurrence's Function), ``interrupt_at`` (a run cut off inside a training step) and
  ``run_cli`` (``sparse-engine`` in a fresh process); a folder's conftest.py may add its own;
* ``tests/cuda_emu/``, the CUDA emulator's tool package (it also runs outside pytest): its
  compiler helpers (``build_util``) and planted bugs, which a folder's conftest.py (``tests/kernels/``,
  ``tests/ops/``) hands to its tests as fixtures;
* a test file's own helpers stay in it (``tests/distributed/test_data_parallel.py`` holds the
  scenarios its spawned processes run).

Besides fixtures, this file loads the hypothesis profile of the property tests (the ``@given``
tests of the op families, e.g. ``tests/ops/test_spmm.py``), chosen by ``HYPOTHESIS_PROFILE``:
``dev`` (default; the property tests run in well under a minute on two cores), ``ci`` (the same
budget, without the health check that fails slow data generation on a loaded runner) or
``thorough`` (ten times the examples, for a bug hunt). Every profile leaves the seed to
hypothesis, prints the ``@reproduce_failure`` blob of a failure (replay it by pasting that
decorator on the test) and keeps no example database, so no ``.hypothesis/`` folder appears in the
tree.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

try:  # the test extra installs hypothesis; without it only the property tests fail
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
#: the real data sets and trained networks some tests read, kept outside the repository: the folder
#: SPARSE_ENGINE_DATA names (laid out as ``python -m sparse_engine.data.fetch NAME --root FOLDER``
#: writes it: FOLDER/NAME/...), else the project's shared folder beside the checkout
SHARED_DATA = Path(os.environ.get("SPARSE_ENGINE_DATA") or ROOT / ".." / "shared" / "data")


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
    """``shared_data(*parts)``: the path ``<data folder>/<parts>`` (:data:`SHARED_DATA`); the test
    is skipped when it is missing, with the command that downloads that data set."""
    def path(*parts: str) -> Path:
        p = SHARED_DATA.joinpath(*parts)
        if not p.exists():
            pytest.skip(f"data set {parts[0] if parts else ''!r} is not here: download it with `python -m "
                        f"sparse_engine.data.fetch {parts[0] if parts else 'NAME'} --root DIR` and set "
                        f"SPARSE_ENGINE_DATA=DIR")
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


@pytest.fixture(scope="session")
def build_rnn():
    """``build_rnn(mode, input_size, hidden_size, dtype, sparse="both", density=0.4, **kw)``: a
    SparseLSTM, SparseGRU or SparseRNN by torch's mode name ("LSTM", "GRU", "RNN_TANH",
    "RNN_RELU"), the other options passed on (``num_layers``, ``compute``, ``fused``, ...)."""
    import sparse_engine as se

    classes = {"LSTM": se.nn.SparseLSTM, "GRU": se.nn.SparseGRU, "RNN_TANH": se.nn.SparseRNN,
               "RNN_RELU": se.nn.SparseRNN}

    def build(mode, I, H, dtype, sparse="both", density=0.4, **kw):
        if mode.startswith("RNN_"):
            kw["nonlinearity"] = mode[4:].lower()
        return classes[mode](I, H, density=density, sparse=sparse, dtype=dtype, **kw)
    return build


@pytest.fixture(scope="session")
def gradcheck_recurrence():
    """``gradcheck_recurrence(mode, reverse, kinds, fused, rng)``: gradcheck of the recurrence's
    Function (``Recurrence.apply``) on a small float64 case, every input needing grad and then
    only some; ``kinds`` "sparse-dense" etc. says which of W_ih, W_hh is a SparseWeight."""
    from sparse_engine.kernels.constants import GATES
    from sparse_engine.recurrent.sequence import Config, Recurrence
    from sparse_engine.testing import random_weight

    def check(mode, reverse, kinds, fused, rng):
        I, H, B, T = 3, 4, 2, 3
        G = GATES[mode] * H
        sp_ih, sp_hh = (k == "sparse" for k in kinds.split("-"))
        W_ih = random_weight(G, I, 0.6, empty_rows=1, generator=rng) if sp_ih else None
        W_hh = random_weight(G, H, 0.6, empty_rows=1, generator=rng) if sp_hh else None
        w_ih = W_ih.values.detach().clone() if sp_ih else torch.randn(G, I, generator=rng, dtype=torch.float64)
        w_hh = W_hh.values.detach().clone() if sp_hh else torch.randn(G, H, generator=rng, dtype=torch.float64)
        cfg = Config(mode, H, B, T, reverse, W_ih.index if sp_ih else None, W_hh.index if sp_hh else None,
                     dt=0.2, tau=0.6, unfolds=2, fused=fused)
        x = torch.randn(T, I, B, generator=rng, dtype=torch.float64)
        h0 = torch.randn(H, B, generator=rng, dtype=torch.float64)
        c0 = torch.randn(H, B, generator=rng, dtype=torch.float64) if mode == "LSTM" else None
        b_ih = torch.randn(G, generator=rng, dtype=torch.float64)
        b_hh = None if mode == "CTRNN" else torch.randn(G, generator=rng, dtype=torch.float64)
        if mode == "RNN_RELU":  # keep pre-activations away from the kink
            b_ih = b_ih.abs() + 3
        args = [x, h0, c0, w_ih, w_hh, b_ih, b_hh]
        for a in args:
            if a is not None:
                a.requires_grad_(True)

        def f(*a):
            y, h, c = Recurrence.apply(cfg, *a)
            return (y, h, c) if mode == "LSTM" else (y, h)

        assert torch.autograd.gradcheck(f, args)
        # only some inputs needing grad
        for a in args:
            if a is not None:
                a.requires_grad_(False)
        w_hh.requires_grad_(True)
        assert torch.autograd.gradcheck(f, args, fast_mode=True)
        w_hh.requires_grad_(False)
        x.requires_grad_(True)
        y = f(*args)[0]
        (gx,) = torch.autograd.grad(y.sum(), x)
        assert gx.shape == x.shape
    return check


@pytest.fixture(scope="session")
def interrupt_at():
    """``interrupt_at(monkeypatch, step, exc)``: the optimizer's (``torch.optim.Adam``) ``step``-th
    call, counted from now, raises ``exc`` instead of stepping, so a run is cut off inside a
    training step, after its forward and backward; returns a function that undoes it."""
    def interrupt(monkeypatch, step, exc):
        real, calls = torch.optim.Adam.step, [0]

        def step_or_raise(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] == step:
                raise exc
            return real(self, *args, **kwargs)

        monkeypatch.setattr(torch.optim.Adam, "step", step_or_raise)
        return lambda: monkeypatch.setattr(torch.optim.Adam, "step", real)
    return interrupt


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(*argv, cwd=...)``: ``sparse-engine ARGV`` in a fresh process (``python -m
    sparse_engine.cli``, this checkout first on its path): (exit code, stdout, stderr)."""
    def run(*argv, cwd):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, "-m", "sparse_engine.cli", *map(str, argv)], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=300)
        return proc.returncode, proc.stdout, proc.stderr
    return run


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
