"""Which path a recurrent module computes with: the sparse kernels, or dense products over the
weights materialised for one forward.

At small sizes and high densities a dense BLAS product beats any CSR kernel (hidden 200 at
density 0.33 is a 53k-nonzero matrix that MKL/oneDNN multiplies faster than we can gather it),
and torch's fused LSTM/GRU/RNN runs the whole sequence in C++. ``compute="dense"`` uses that:
each forward scatters every sparse weight's values into a dense matrix (``scatter`` at the stored
positions, whose backward gathers the dense gradient back at those positions only: the values get
exactly the gradient of the sparse path) and runs torch's own module code on those matrices. The dense
matrices live for one forward/backward (one sequence) only; at rest, in ``state_dict`` and in
checkpoints the weight stays CSR.

* ``compute="sparse"``: always the CSR kernels (the memory-bound choice at large sizes).
* ``compute="dense"``: always materialise, if the dense matrices fit the budget
  (:func:`set_dense_budget`, default :data:`DEFAULT_DENSE_BUDGET` bytes for all matrices of a
  module together); over the budget it falls back to the sparse path.
* ``compute="auto"`` (default): on the CPU, dense when it fits the budget and the module's density
  is at least :func:`auto_min_density` of its hidden size (the crossover measured on this project's
  CPU, see docs/compute_paths.md), sparse otherwise; large layers stay sparse through the budget.
  On other devices sparse (not measured there yet).

The default for modules built with ``compute=None`` is global: :func:`set_default_compute` or, for
a block, ``with default_compute("sparse"): ...``; it starts as the environment variable
``SPARSE_ENGINE_COMPUTE`` says (default ``auto``), so a whole program (or a test's subprocesses) can
be pinned to one path from outside. A module's ``compute`` attribute is read at each
forward. Growth by gradient (``record_grad_factors``, RigL/Selfish-RNN gradient growth) needs the
factors of the sparse backward, so a recording forward always takes the sparse path.
"""
from __future__ import annotations

import contextlib
import os
import threading
import weakref

import torch
from torch import nn

from ..sparse import SparseWeight

__all__ = ["COMPUTE_CHOICES", "set_default_compute", "get_default_compute", "default_compute",
           "set_dense_budget", "get_dense_budget", "check_compute", "use_dense", "auto_min_density", "materialize"]

COMPUTE_CHOICES = ("auto", "sparse", "dense")
#: bytes of dense matrices one module may materialise per forward (all layers together)
DEFAULT_DENSE_BUDGET = 256 * 2**20
#: ``auto``: the lowest density (nnz / dense entries over the module's sparse matrices) that goes
#: dense, for hidden sizes up to :data:`AUTO_SMALL_HIDDEN` and above (docs/compute_paths.md)
AUTO_MIN_DENSITY = (0.03, 0.15)
AUTO_SMALL_HIDDEN = 256

#: the environment variable that sets the initial global default (read once, at import)
ENV_VAR = "SPARSE_ENGINE_COMPUTE"


def _initial_default() -> str:
    mode = os.environ.get(ENV_VAR, "auto")
    if mode not in COMPUTE_CHOICES:
        raise ValueError(f"{ENV_VAR} must be one of {COMPUTE_CHOICES}, got {mode!r}")
    return mode


_state = {"compute": _initial_default(), "budget": DEFAULT_DENSE_BUDGET}


def check_compute(mode, name: str = "compute") -> str:
    if mode not in COMPUTE_CHOICES:
        raise ValueError(f"{name} must be one of {COMPUTE_CHOICES}, got {mode!r}")
    return mode


def set_default_compute(mode: str) -> None:
    """The compute path of modules whose ``compute`` is None (the default): 'auto', 'sparse' or 'dense'."""
    _state["compute"] = check_compute(mode)


def get_default_compute() -> str:
    return _state["compute"]


@contextlib.contextmanager
def default_compute(mode: str):
    """``with default_compute('sparse'): ...``: the global default for the block."""
    old = _state["compute"]
    set_default_compute(mode)
    try:
        yield
    finally:
        _state["compute"] = old


def set_dense_budget(nbytes: int) -> None:
    """Bytes of dense matrices one module may materialise per forward (0: never dense)."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError(f"nbytes must be a non-negative int, got {nbytes!r}")
    _state["budget"] = nbytes


def get_dense_budget() -> int:
    return _state["budget"]


def use_dense(mode: str | None, weights, hidden_size: int, device_type: str = "cpu") -> bool:
    """Whether a module with the given ``compute`` setting (None: the global default) and matrices
    (SparseWeights or dense tensors) on ``device_type`` runs dense this forward. ``auto`` goes dense
    on the CPU only, where its rule was measured (on a GPU it stays sparse until measured there;
    ``compute='dense'`` works on any device)."""
    mode = get_default_compute() if mode is None else mode
    if mode == "sparse":
        return False
    sparse = [w for w in weights if isinstance(w, SparseWeight)]
    itemsize = lambda w: w.values.element_size()  # noqa: E731
    nbytes = sum(w.shape[0] * w.shape[1] * itemsize(w) for w in sparse)
    if nbytes > get_dense_budget():
        return False
    if mode == "dense" or not sparse:
        return True
    if device_type != "cpu":
        return False
    entries = sum(w.shape[0] * w.shape[1] for w in sparse)
    density = sum(w.nnz for w in sparse) / entries if entries else 1.0
    return density >= auto_min_density(hidden_size)


def auto_min_density(hidden_size: int) -> float:
    """The density from which ``compute='auto'`` goes dense. Measured (LSTM fwd+bwd, T=35, B=20,
    one thread, quiet machine): the dense path wins from about 3% at hidden 200 and between 10%
    and 33% at hidden 500 and 1,000 (the CSR kernels keep more of their rows in cache at small
    sizes); docs/compute_paths.md has the table."""
    small, large = AUTO_MIN_DENSITY
    return small if hidden_size <= AUTO_SMALL_HIDDEN else large


def materialize(w) -> torch.Tensor:
    """The dense matrix of a SparseWeight, differentiable with respect to its values only (the
    gradient of the dense matrix is read at the stored positions); a dense weight as it is."""
    if not isinstance(w, SparseWeight):
        return w
    rows, cols = w.shape
    values = w.values
    return values.new_zeros(rows * cols).scatter(0, _positions(w), values).view(rows, cols)


#: weight -> (row_ptr, col_idx, their versions, positions): kept outside the module (not pickled,
#: not copied), dropped with the weight
_POSITIONS: "weakref.WeakKeyDictionary[SparseWeight, tuple]" = weakref.WeakKeyDictionary()


def _positions(w: SparseWeight) -> torch.Tensor:
    """row * cols + col of every stored entry, kept until the weight's pattern changes
    (``set_pattern`` and ``load_state_dict`` give it new index tensors)."""
    rp, ci = w.row_ptr, w.col_idx
    cached = _POSITIONS.get(w)
    if cached is not None and cached[0] is rp and cached[1] is ci and cached[2] == (rp._version, ci._version):
        return cached[3]
    row = torch.repeat_interleave(torch.arange(w.shape[0], device=rp.device), rp.diff(), output_size=w.nnz)
    flat = row * w.shape[1] + ci.long()
    _POSITIONS[w] = (rp, ci, (rp._version, ci._version), flat)
    return flat


_SKELETONS = threading.local()


def skeleton(cls: type, *args, **kwargs) -> nn.Module:
    """A torch module ``cls(*args, **kwargs)`` on the meta device (no memory), whose code the dense
    path runs with ``torch.func.functional_call`` on the materialised weights. One per
    configuration and thread (``functional_call`` swaps its parameters during a call, so threads,
    e.g. DataParallel replicas, must not share one); the caller sets its training mode."""
    cache = _SKELETONS.__dict__.setdefault("modules", {})
    key = (cls, args, tuple(sorted(kwargs.items())))
    if key not in cache:
        cache[key] = cls(*args, device="meta", **kwargs)
    return cache[key]
