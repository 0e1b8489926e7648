"""The three kernels of sparse training as PyTorch operators.

``spmm(W, X)``      Y = W X            X: (cols x B) -> (rows x B)
``spmm_t(W, G)``    W^T G              G: (rows x B) -> (cols x B)
``sddmm(W, G, X)``  out[k] = sum_b G[row_k, b] X[col_k, b]   (length nnz)

``spmm_t`` reads W's values in column order, ``values[csc_perm]``: each call gathers them
through the transposed index (on the CPU, for B = 1 or values of 4 MiB and more, it scatters
the CSR's rows instead, reading the values in order: docs/cpu_kernels.md), unless it is given
them (``values_t=transposed_values(W)``), made once for every product with the same values
(several W^T G in one backward, a recurrence's T steps). Then it is exactly spmm over the
transposed CSR, with no indirection. The gathered copy
is not tracked: make it again after any change of the values (an optimizer step, an update
through ``.data``), since a stale one gives a wrong product silently.

Activations are feature-major (features x batch). dtypes: float32, float64, and float16 /
bfloat16 as storage (products and sums in float32, each output rounded once); the weight
values and the dense operands must share one dtype. Each op has an autograd formula written
in terms of the other two and a fake kernel, so they work in eager mode, under autograd
(including double backward) and inside ``torch.compile(fullgraph=True)``. Under
``torch.autocast`` (CPU or CUDA) they are lower-precision ops like ``torch.mm``: float32/float64
operands are cast to the autocast dtype (float16 or bfloat16) and the kernels run in it, with
float32 accumulation; gradients flow back to the float32 values through the casts.
The raw operators are ``torch.ops.sparse_engine.{spmm,spmm_t,sddmm}`` and take the index
tensors of a :class:`~sparse_engine.SparseWeight` explicitly (see ``SparseWeight.index``).
This module holds the user-facing wrappers; their argument checks are
:func:`sparse_engine.kernels.checks.check_operand`'s (the dense operands) and the kernels' own (the
index). The autograd formulas are registered in C++ (``csrc/autograd.cpp``), the fake kernels
and the autocast rules by :mod:`sparse_engine.kernels.library`.
"""
from __future__ import annotations

import torch

from . import kernels  # noqa: F401  (loads the compiled operators)
from .sparse import SparseWeight
from .kernels.checks import check_operand

_ops = torch.ops.sparse_engine

__all__ = ["spmm", "spmm_t", "sddmm", "transposed_values"]


# ---------------------------------------------------------------------------- checks
# (the dense operands: sparse.csr.check_operand, the one checker of the sparse ops' arguments;
# the index: the kernels' own checks, csrc/checks.h and csrc/index_check.h)
def _check_weight(W) -> None:
    if not isinstance(W, SparseWeight):
        raise TypeError(f"W must be a sparse_engine.SparseWeight, got {type(W).__name__}")


def _needs_transpose(W, X: torch.Tensor) -> bool:
    """Whether spmm(W, X) may need W^T later, for the gradient of X (the backward computes it
    with spmm_t). The first layer of a model, whose input needs no gradient, does not."""
    return W.has_transpose or (torch.is_grad_enabled() and X.requires_grad)


def spmm(W, X: torch.Tensor) -> torch.Tensor:
    """Y = W X for a SparseWeight W (rows x cols) and dense X (cols x B)."""
    _check_weight(W)
    values = W.parts()[0]
    check_operand(X, "X", W.shape[1], values)
    return _ops.spmm(*(W.index if _needs_transpose(W, X) else W.csr_index), values, X)


def spmm_t(W, G: torch.Tensor, values_t: torch.Tensor | None = None) -> torch.Tensor:
    """W^T G for a SparseWeight W (rows x cols) and dense G (rows x B). ``values_t``: W's values
    in column order, :func:`transposed_values` of the current values (optional; the gradient goes
    to ``W.values`` either way)."""
    _check_weight(W)
    values = W.parts()[0]
    check_operand(G, "G", W.shape[0], values)
    return _ops.spmm_t(*W.index, values, G, values_t)


def transposed_values(W) -> torch.Tensor:
    """W's values in the order of its transposed index, ``values[csc_perm]`` (length nnz, no
    gradient), for :func:`spmm_t`'s ``values_t``: one gather, made once for the products that share
    these values. It is a copy: after the values change it is stale and must be made again."""
    _check_weight(W)
    with torch.no_grad():
        return W.values.index_select(0, W.csc_perm)


def sddmm(W, G: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """out[k] = sum_b G[row_k, b] X[col_k, b] at W's nonzeros: the gradient of W's values
    for Y = W X with upstream gradient G. W's values are not used."""
    _check_weight(W)
    values = W.parts()[0]
    check_operand(G, "G", W.shape[0], values)
    check_operand(X, "X", W.shape[1], values)
    if G.shape[1] != X.shape[1]:
        raise ValueError(f"G and X must have the same batch size, got {G.shape[1]} and {X.shape[1]}")
    # its backward computes X's gradient with spmm_t, which reads the transposed index
    return _ops.sddmm(*(W.index if _needs_transpose(W, X) else W.csr_index), G, X)
