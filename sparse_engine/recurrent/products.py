"""W x, W^T g and the weight gradient g x^T for a layer's weight, sparse or dense: the one way
the modules compute them (outside :mod:`sparse_engine.ops`, the checked public wrappers).

A weight reaches the kernels as the raw operators take it, ``(values, index)``: a SparseWeight's
values (through its parametrization, if any) and its five index tensors (``SparseWeight.index``),
or a dense matrix and ``None`` (:func:`weight_args`). :func:`mm`, :func:`mm_t`, :func:`wgrad` and
:func:`transposed` take that pair: inside the recurrence's autograd.Function, where the values are
the Function's inputs and the index travels in its ``Config`` (:mod:`sparse_engine.recurrent.sequence`),
and in :func:`matmul`, the product the composed models (RHN, ON-LSTM, the ODE-RNN, the language
models) differentiate under plain autograd. The sparse products are the operators
``torch.ops.sparse_engine.{spmm,spmm_t,sddmm}`` (autograd formulas in ``csrc/autograd.cpp``), the
dense ones torch's.
"""
from __future__ import annotations

import torch

from .. import ops
from ..sparse import SparseWeight

_ops = torch.ops.sparse_engine

__all__ = ["weight_args", "mm", "mm_t", "wgrad", "transposed", "matmul"]


def weight_args(w, index: tuple | None = None):
    """(values, index) of a weight as the kernels take it: a SparseWeight's values and its five
    index tensors; any other tensor is taken as the values of ``index`` (None: a dense matrix)."""
    return (w.values, w.index) if isinstance(w, SparseWeight) else (w, index)


def mm(w, idx, x):
    """W x for a sparse (values, index) or dense W."""
    return w @ x if idx is None else _ops.spmm(*idx, w, x)


def mm_t(w, idx, g, w_t=None):
    """W^T g; ``w_t``: a sparse W's values in column order (:func:`transposed`), or None."""
    return w.t() @ g if idx is None else _ops.spmm_t(*idx, w, g, w_t)


def transposed(w, idx):
    """A sparse W's values in the order of its transposed index, ``values[csc_perm]``, for the
    W^T g products that share these values (a recurrence's backward: once per sequence instead
    of a gather in each of its T steps, csrc/values_t.h); None for a dense W. No gradient: the
    products' gradients go to ``w``."""
    if idx is None:
        return None
    with torch.no_grad():
        return w.index_select(0, idx[4])


#: Entries per chunk of :func:`untransposed`: torch's indexed write takes an int64 copy of the
#: int32 permutation it is given, 8 bytes a nonzero (1 GB at 128M nonzeros) if taken whole.
UNTRANSPOSE_CHUNK = 1 << 22


def untransposed(values_t, idx):
    """The inverse of :func:`transposed`: per-entry values in the transposed index's order back in
    the CSR's (``out[csc_perm] = values_t``), in chunks of :data:`UNTRANSPOSE_CHUNK` entries."""
    out = torch.empty_like(values_t)
    perm = idx[4]
    for a in range(0, values_t.numel(), UNTRANSPOSE_CHUNK):
        out[perm[a:a + UNTRANSPOSE_CHUNK]] = values_t[a:a + UNTRANSPOSE_CHUNK]
    return out


def wgrad(idx, g, x):
    """Gradient of W for y = W x: g x^T, only at the nonzeros when W is sparse."""
    return g @ x.t() if idx is None else _ops.sddmm(*idx, g, x)


def matmul(w, x: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
    """W X for a SparseWeight or dense (rows x cols) Parameter ``w`` and feature-major X
    (cols x B), differentiable. ``values`` replaces a SparseWeight's values (DropConnect masks
    them) or a dense matrix. A SparseWeight with its own values goes through
    :func:`sparse_engine.ops.spmm` (checked, and it passes the CSR alone when nothing will need
    W^T, so the transposed index is not built for it)."""
    if isinstance(w, SparseWeight):
        return ops.spmm(w, x) if values is None else mm(values, w.index, x)
    return mm(w if values is None else values, None, x)
