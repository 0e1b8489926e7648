"""Sparse initialisation: topologies built directly in CSR, in O(nnz) time and memory (never a
dense or rows*cols-sized array, so it works for 10^5-10^6 neurons; written in
:mod:`sparse_engine.sparse.patterns`, public here), and ``torch.nn.init``'s functions for
SparseWeights.

The ``torch.nn.init`` mirrors (``uniform_``, ``normal_``, ``trunc_normal_``, ``constant_``,
``zeros_``, ``ones_``, ``xavier_uniform_``/``xavier_normal_``, ``kaiming_uniform_``/``kaiming_normal_``,
``orthogonal_``) take the same arguments as torch's and either a SparseWeight (they fill its
stored values in place, keeping the pattern) or a plain tensor (then they are torch's function),
so ``for name, w in named_weights(model): init.xavier_uniform_(w)`` ports torch code.

Fans (xavier, kaiming): ``fan='dense'`` (default) takes the dense matrix's fan_in = cols and
fan_out = rows, as torch does for the same layer; ``fan='nnz'`` takes the mean stored entries per
row (fan_in) and per column (fan_out), the fan a sparse unit actually has. The default is the
dense fan because it is what the masked-dense code of the papers does (Selfish-RNN and
sparselearning initialise the dense layer, then apply the mask), so a ported recipe reproduces
their numbers; with it the activation scale shrinks with density (by
sqrt(density) for kaiming), which ``fan='nnz'`` avoids (the scale of
:func:`default_values`, the modules' own initialisation).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .sparse import SparseWeight, sparse_weights
from .sparse.patterns import default_values, erdos_renyi_density, random_pattern  # noqa: F401  (public here)

__all__ = ["erdos_renyi_density", "random_pattern", "default_values", "uniform_", "normal_", "trunc_normal_",
           "constant_", "zeros_", "ones_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
           "orthogonal_", "named_weights"]


# ------------------------------------------------------------ torch.nn.init on SparseWeights
# Each function below mirrors torch.nn.init's function of the same name and arguments. Given a
# plain tensor it is torch.nn.init's function; given a SparseWeight it fills the stored values
# (never a dense matrix, except orthogonal_), so initialisation code written against
# nn.LSTM ports by changing the import. See docs/torch_nn_compat.md.
_FANS = ("dense", "nnz")


def _sparse(w):
    """``w`` if it is a SparseWeight, None for a tensor, TypeError otherwise."""
    if isinstance(w, SparseWeight):
        return w
    if isinstance(w, torch.Tensor):
        return None
    raise TypeError(f"tensor must be a torch.Tensor or a SparseWeight, got {type(w).__name__}")


def _fans(w, fan: str) -> tuple[float, float]:
    """(fan_in, fan_out) of a SparseWeight: the dense layer's (cols, rows) with ``fan='dense'``,
    the mean stored entries per row and per column with ``fan='nnz'``."""
    if fan not in _FANS:
        raise ValueError(f"fan must be one of {_FANS}, got {fan!r}")
    rows, cols = w.shape
    if fan == "dense":
        return float(cols), float(rows)
    return max(1.0, w.nnz / max(rows, 1)), max(1.0, w.nnz / max(cols, 1))


def _dense_with_hint(fn, tensor, *args, **kwargs):
    """torch.nn.init's ``fn`` on a tensor; a 1-D tensor given to a fan-based init is most likely
    a SparseWeight's ``values`` (from ``named_parameters()``): say what to pass instead."""
    if tensor.dim() < 2:
        raise ValueError(f"{fn.__name__} needs a matrix, got a tensor of shape {tuple(tensor.shape)}; for a "
                         "SparseWeight's values pass the SparseWeight itself (e.g. lstm.weight_hh_l0), or iterate "
                         "sparse_engine.init.named_weights(model) instead of model.named_parameters()")
    return fn(tensor, *args, **kwargs)


def _fill(w, sample):
    """Gives a SparseWeight's values ``sample(values)`` in place (no autograd); returns ``w``."""
    with torch.no_grad():
        sample(w.values)
    return w


def uniform_(tensor, a: float = 0.0, b: float = 1.0, generator: torch.Generator | None = None):
    """U(a, b) at every stored entry."""
    w = _sparse(tensor)
    if w is None:
        return nn.init.uniform_(tensor, a, b, generator=generator)
    return _fill(w, lambda v: v.uniform_(a, b, generator=generator))


def normal_(tensor, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None):
    """N(mean, std^2) at every stored entry."""
    w = _sparse(tensor)
    if w is None:
        return nn.init.normal_(tensor, mean, std, generator=generator)
    return _fill(w, lambda v: v.normal_(mean, std, generator=generator))


def trunc_normal_(tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0,
                  generator: torch.Generator | None = None):
    """N(mean, std^2) truncated to [a, b] at every stored entry."""
    w = _sparse(tensor)
    if w is None:
        return nn.init.trunc_normal_(tensor, mean, std, a, b, generator=generator)
    return _fill(w, lambda v: nn.init.trunc_normal_(v, mean, std, a, b, generator=generator))


def constant_(tensor, val: float):
    """``val`` at every stored entry (the pattern is kept: absent entries stay absent)."""
    w = _sparse(tensor)
    if w is None:
        return nn.init.constant_(tensor, val)
    return _fill(w, lambda v: v.fill_(val))


def zeros_(tensor):
    """Stored entries set to 0 (kept in the pattern, so they can train away from 0)."""
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor, gain: float = 1.0, generator: torch.Generator | None = None, *, fan: str = "dense"):
    """U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010), fans by ``fan``
    (module doc of :mod:`sparse_engine.init`: 'dense' as torch, or 'nnz')."""
    w = _sparse(tensor)
    if w is None:
        return _dense_with_hint(nn.init.xavier_uniform_, tensor, gain, generator=generator)
    fan_in, fan_out = _fans(w, fan)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return _fill(w, lambda v: v.uniform_(-a, a, generator=generator))


def xavier_normal_(tensor, gain: float = 1.0, generator: torch.Generator | None = None, *, fan: str = "dense"):
    """N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)), fans by ``fan``."""
    w = _sparse(tensor)
    if w is None:
        return _dense_with_hint(nn.init.xavier_normal_, tensor, gain, generator=generator)
    fan_in, fan_out = _fans(w, fan)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return _fill(w, lambda v: v.normal_(0.0, std, generator=generator))


def _kaiming_std(w, a, mode, nonlinearity, fan) -> float:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(w, fan)
    return nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan_in if mode == "fan_in" else fan_out)


def kaiming_uniform_(tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator: torch.Generator | None = None, *, fan: str = "dense"):
    """U(-b, b), b = gain * sqrt(3 / fan_mode) (He et al. 2015), fans by ``fan``."""
    w = _sparse(tensor)
    if w is None:
        return _dense_with_hint(nn.init.kaiming_uniform_, tensor, a, mode, nonlinearity, generator=generator)
    bound = math.sqrt(3.0) * _kaiming_std(w, a, mode, nonlinearity, fan)
    return _fill(w, lambda v: v.uniform_(-bound, bound, generator=generator))


def kaiming_normal_(tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator: torch.Generator | None = None, *, fan: str = "dense"):
    """N(0, std^2), std = gain / sqrt(fan_mode), fans by ``fan``."""
    w = _sparse(tensor)
    if w is None:
        return _dense_with_hint(nn.init.kaiming_normal_, tensor, a, mode, nonlinearity, generator=generator)
    std = _kaiming_std(w, a, mode, nonlinearity, fan)
    return _fill(w, lambda v: v.normal_(0.0, std, generator=generator))


def orthogonal_(tensor, gain: float = 1.0, generator: torch.Generator | None = None, *, rescale: bool = False):
    """The entries of a random (semi-)orthogonal matrix (torch's ``orthogonal_`` on the dense
    shape) at the stored positions, times ``gain``. The pattern is kept, so the sparse matrix
    is orthogonal only at density 1: dropping entries at random scales W^T W by the density on
    average. ``rescale=True`` divides by sqrt(density) so that E[W^T W] = gain^2 I (columns of
    unit norm on average). Costs a dense rows x cols matrix and its QR, as torch's does."""
    w = _sparse(tensor)
    if w is None:
        return _dense_with_hint(nn.init.orthogonal_, tensor, gain, generator=generator)
    v = w.values
    q = nn.init.orthogonal_(torch.empty(w.shape, dtype=torch.float64), gain, generator=generator)
    if rescale and w.density > 0:
        q /= math.sqrt(w.density)
    row, col, _ = w.coo()
    return _fill(w, lambda vals: vals.copy_(q[row.cpu(), col.cpu()].to(v.dtype)))


def named_weights(module: nn.Module):
    """``(name, weight)`` like ``module.named_parameters()``, but each SparseWeight once under
    torch's name (``rnn.weight_hh_l0``, not ``rnn.weight_hh_l0.values``), so loops written over
    torch's parameter names port unchanged::

        for name, w in sparse_engine.init.named_weights(model):
            if "weight_hh" in name:
                sparse_engine.init.orthogonal_(w)
    """
    sparse = sparse_weights(module)
    for name, p in module.named_parameters():
        owner = name.removesuffix(".values")
        yield (owner, sparse[owner]) if owner in sparse and name.endswith(".values") else (name, p)
