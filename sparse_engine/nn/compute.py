"""Which path a recurrent module computes with: the sparse kernels, or dense products over the
weights materialised for one forward.

At small sizes and high densities a dense BLAS product beats any CSR kernel (hidden 200 at
density 0.33 is a 53k-nonzero matrix that MKL/oneDNN multiplies faster than we can gather it),
and torch's fused LSTM/GRU/RNN runs the whole sequence in C++. ``compute="dense"`` uses that:
each forward writes every sparse weight's values into a dense matrix (the op ``scatter_csr``;
:func:`materialize`, whose backward reads the dense gradient at the stored positions only
(``gather_csr``): the values get exactly the gradient of the sparse path) and calls torch's
recurrence (``torch.lstm``, ``torch.gru``, ...) on those matrices. The dense matrix of each weight
is a buffer kept between forwards (per thread, while nothing else holds it; its size counts in the
budget), rewritten at each forward; ``state_dict``, checkpoints and the topology controllers see
only the CSR weight.

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

from ..sparse import SparseWeight

_ops = torch.ops.sparse_engine

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
    gradient of the dense matrix is read at the stored positions); a dense weight as it is.

    The matrix is written into a buffer kept per weight, whose zeros stay from one call to the
    next while the pattern is the same, so each call writes the nnz values only (the op
    ``scatter_csr``): a fresh zero-filled matrix per forward costs, at hidden 200, about as much
    again in page faults and cache misses of torch's recurrence as the writing itself. The
    buffer is reused only when nothing else holds it (the graph of an earlier forward that has
    not run its backward keeps its own, and a new buffer is made), and the values are written
    on every call (an update through ``.data`` leaves the version counter as it is, so a dense
    copy kept for unchanged values could go stale unseen)."""
    if not isinstance(w, SparseWeight):
        return w
    entry = _entry(w)
    values = w.values
    buf = entry.buffer
    if buf is None or buf.dtype != values.dtype or buf.device != values.device or _held(buf):
        buf = entry.buffer = values.new_zeros(w.shape)
    if torch.is_grad_enabled() and values.requires_grad:
        return _ToDense.apply(values, w.row_ptr, w.col_idx, buf)
    _ops.scatter_csr(w.row_ptr, w.col_idx, values, buf)
    return buf.detach()


def _held(buf: torch.Tensor) -> bool:
    """Whether anything but ``buf`` itself shares its storage (the Python storage object made
    here counts one; torch's cudagraph trees test their cached buffers the same way)."""
    return torch._C._storage_Use_Count(buf.untyped_storage()._cdata) > 2


class _ToDense(torch.autograd.Function):
    """(values, row_ptr, col_idx, buffer) -> the buffer with the values written at the pattern's
    positions (zeros elsewhere, see :func:`materialize`), as a new alias. Its backward reads the
    gradient at those positions (:class:`_AtPattern`), and that one's backward writes into zeros
    again, so double backward works."""

    @staticmethod
    def forward(values, row_ptr, col_idx, buf):
        _ops.scatter_csr(row_ptr, col_idx, values, buf)
        return buf.detach()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[1], inputs[2])

    @staticmethod
    def backward(ctx, grad):
        row_ptr, col_idx = ctx.saved_tensors
        return _AtPattern.apply(grad, row_ptr, col_idx), None, None, None


class _AtPattern(torch.autograd.Function):
    """(dense, row_ptr, col_idx) -> dense at the pattern's positions (the op ``gather_csr``)."""

    @staticmethod
    def forward(dense, row_ptr, col_idx):
        return _ops.gather_csr(row_ptr, col_idx, dense)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[1], inputs[2])
        ctx.shape = inputs[0].shape

    @staticmethod
    def backward(ctx, grad):
        row_ptr, col_idx = ctx.saved_tensors
        return _ToDense.apply(grad, row_ptr, col_idx, grad.new_zeros(ctx.shape)), None, None


class _Entry:
    """What :func:`materialize` keeps per weight: the pattern it was made for (its index tensors
    and their versions) and the dense buffer."""
    __slots__ = ("row_ptr", "col_idx", "versions", "buffer")

    def __init__(self, w: SparseWeight):
        self.row_ptr, self.col_idx = w.row_ptr, w.col_idx
        self.versions = (w.row_ptr._version, w.col_idx._version)
        self.buffer = None

    def matches(self, w: SparseWeight) -> bool:
        rp, ci = w.row_ptr, w.col_idx
        return self.row_ptr is rp and self.col_idx is ci and self.versions == (rp._version, ci._version)


#: per thread, weight -> its _Entry: kept outside the module (not pickled, not copied), dropped
#: with the weight. Per thread, so two threads running one module (a shared model served from a
#: thread pool, ``torch.func.functional_call`` with other values in each) never write one buffer.
_LOCAL = threading.local()


def _entry(w: SparseWeight) -> _Entry:
    """The weight's entry in this thread, made again when its pattern changed (``set_pattern``
    and ``load_state_dict`` give it new index tensors)."""
    entries = _LOCAL.__dict__.get("entries")
    if entries is None:
        entries = _LOCAL.entries = weakref.WeakKeyDictionary()
    entry = entries.get(w)
    if entry is None or not entry.matches(w):
        entry = entries[w] = _Entry(w)
    return entry
