"""The densify family's ``scatter_csr`` and ``gather_csr`` written with PyTorch's own tensor
primitives, their kernels on CUDA and on every device without a C++ kernel: ``<op>_torch`` here is the twin of ``<op>_cpu`` in
``csrc/cpu/densify_cpu.cpp``. :mod:`sparse_engine.kernels.library` registers them (:data:`OPS`)
as those operators' kernels on CUDA and on every other device without one, as it does the
topology kernels of :mod:`sparse_engine.kernels.topology_torch` (whose module docstring says why
torch primitives). The family's other operators (the pattern as bits) are CPU-only: on other
devices the dense-compute path (``sparse_engine.recurrent.compute_paths``) uses these two.

Each call checks its index (host synchronisations: the first H200 profile counted 32 a training
step of the dense-compute path at 1,500 units), so that path calls them only where a pattern is new:
it keeps each pattern's :func:`flat_positions` (checked once) and writes and reads the dense matrix
with ``index_put_`` / ``take`` at those, which do not synchronise. Semantics and error messages
are those of the CPU kernels; nothing here is CUDA-specific, so the tests run them on CPU tensors
against the C++ kernels.
"""
from __future__ import annotations

import torch

from .._moved import old_name
from .checks import check_index as _check_csr
from .checks import check_pattern as _check_pattern
from .checks import check_same_device as _same_device
from .checks import check_tensor as _tensor

__all__ = ["scatter_csr_torch", "gather_csr_torch", "flat_positions", "OPS"]


def _csr_dense_positions(row_ptr, col_idx, dense, sorted: bool):
    """(rows, cols) int64 of the stored entries, after the checks of the CPU kernels (``sorted``:
    sorted, unique columns in each row, which a scatter needs: a duplicate's result would depend on
    the order of the writes)."""
    _check_csr(row_ptr, col_idx)
    if _tensor(dense, "dense").dim() != 2 or dense.shape[0] != row_ptr.numel() - 1:
        raise ValueError(f"dense must be 2-D with rows={row_ptr.numel() - 1} rows, got shape {tuple(dense.shape)}")
    _same_device(row_ptr=row_ptr, col_idx=col_idx, dense=dense)
    _check_pattern(row_ptr, col_idx, dense.shape[1], sorted=sorted)
    cols = col_idx.long()
    rows = torch.repeat_interleave(torch.arange(dense.shape[0], device=dense.device), row_ptr.diff(),
                                   output_size=cols.numel())
    return rows, cols


def flat_positions(row_ptr, col_idx, like: torch.Tensor) -> torch.Tensor:
    """The stored entries' positions in the row-major 2-D matrix ``like`` (int64 ``r * cols + c``),
    after the checks of :func:`scatter_csr_torch` (sorted, unique columns in each row)."""
    rows, cols = _csr_dense_positions(row_ptr, col_idx, like, sorted=True)
    return rows * like.shape[1] + cols


def scatter_csr_torch(row_ptr, col_idx, values, dense) -> None:
    """dense[r, c] = values[k] for every stored entry k at (r, c); dense's other entries are kept."""
    rows, cols = _csr_dense_positions(row_ptr, col_idx, dense, sorted=True)
    if _tensor(values, "values").dim() != 1 or values.numel() != cols.numel():
        raise ValueError(f"values must be 1-D with nnz={cols.numel()} entries, got shape {tuple(values.shape)}")
    if values.dtype != dense.dtype:
        raise TypeError(f"values must have dense's dtype {dense.dtype}, got {values.dtype}")
    _same_device(values=values, dense=dense)
    dense[rows, cols] = values


def gather_csr_torch(row_ptr, col_idx, dense) -> torch.Tensor:
    """out[k] = dense[r, c] for every stored entry k at (r, c)."""
    rows, cols = _csr_dense_positions(row_ptr, col_idx, dense, sorted=False)
    return dense[rows, cols]


#: The kernels by operator name (``torch.ops.sparse_engine.<name>``), registered by
#: :mod:`sparse_engine.kernels.library`.
OPS = {f.__name__.removesuffix("_torch"): f for f in (scatter_csr_torch, gather_csr_torch)}

__getattr__ = old_name(__name__)  # its old names, answered with a warning (sparse_engine._moved)
