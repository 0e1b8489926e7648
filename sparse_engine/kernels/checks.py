"""The argument checks of the sparse ops on the Python side, written once: the Python twin of
the C++ kernels' checks (``csrc/checks.h``, ``csrc/index_check.h``), worded like them.

* :func:`check_index`: what a kernel needs before it reads an index (tensors, dtypes row_ptr
  int64 and col_idx int32, 1-D, one device, the two ends of row_ptr: one sync). The
  torch-primitive kernels (:mod:`sparse_engine.kernels.topology_torch`) call it.
* :func:`check_pattern`: :func:`check_index` plus the content of the pattern that a kernel reading
  it whole relies on (row_ptr non-decreasing, every column in range, and where asked sorted and
  unique columns in each row), worded like the C++ check (``check_csr_content``); the
  torch-primitive topology and densify kernels call it. O(rows + nnz), a few syncs.
* :func:`check_csr`: the whole structure of a matrix (length of row_ptr, its ends, values per
  entry, non-decreasing row_ptr, column range, columns sorted and unique within each row),
  O(nnz). :meth:`SparseWeight.validate <sparse_engine.SparseWeight.validate>` calls it, so does
  everything that builds a SparseWeight, loads one from a state_dict or a checkpoint, or reads
  one for the analysis.
* :func:`check_operand`: a dense operand given with a sparse weight (2-D, features x batch, the
  weight's rows or columns, its values' dtype and device): :mod:`sparse_engine.ops` calls it
  before the kernel, whose own checks would name the op's internal arguments.
* :func:`check_dtype_like`: the dtype rule of every float operand, a module's inputs and states
  included: the dtype of the values it meets, except under autocast (which casts).

All raise ValueError (TypeError for a wrong type) naming the argument and the first problem; a float
operand of the wrong dtype raises :class:`DtypeMismatch`, both at once.
"""
from __future__ import annotations

import torch

__all__ = ["check_tensor", "check_dtype", "check_same_device", "check_index", "check_pattern", "check_csr",
           "check_operand", "check_dtype_like", "DtypeMismatch"]


class DtypeMismatch(TypeError, ValueError):
    """A float operand whose dtype is not that of the values it meets: a TypeError (a wrong kind of
    tensor), and a ValueError too, what ``torch.nn``'s recurrent modules raise for it (so code written
    against them catches ours)."""

#: The column bound of a pattern whose column count the op does not know (compact): not negative.
ANY_COLUMN = 2**31


def check_tensor(t, name: str) -> torch.Tensor:
    """``t`` itself when it is a tensor, else TypeError naming ``name``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def check_dtype(t, name: str, dtype: torch.dtype) -> torch.Tensor:
    """``t`` itself when it is a tensor of ``dtype``, else TypeError ("row_ptr must be int64, got ...")."""
    if check_tensor(t, name).dtype != dtype:
        raise TypeError(f"{name} must be {str(dtype).removeprefix('torch.')}, got {t.dtype}")
    return t


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    """The device of all ``tensors`` (keyword: argument name), ValueError naming each when they differ."""
    devs = {n: t.device for n, t in tensors.items()}
    first = next(iter(devs.values()))
    if any(d != first for d in devs.values()):
        raise ValueError(f"all tensors must be on one device, got {', '.join(f'{n} on {d}' for n, d in devs.items())}")
    return first


def check_dtype_like(t: torch.Tensor, name: str, ref: torch.Tensor, like: str) -> None:
    """:class:`DtypeMismatch` unless ``t`` has ``ref``'s dtype ("X must have dtype torch.float32 like
    {like}, got ..."), or autocast is on for ``ref``'s device (the ops cast their operands there)."""
    if t.dtype != ref.dtype and not torch.is_autocast_enabled(ref.device.type):
        raise DtypeMismatch(f"{name} must have dtype {ref.dtype} like {like}, got {t.dtype}")


def check_operand(t, name: str, rows: int, values: torch.Tensor) -> None:
    """A dense operand (features x batch) of a product with a sparse weight whose ``values`` it
    meets: a 2-D tensor of ``rows`` rows, the values' dtype (:func:`check_dtype_like`) and device.
    (On every product's path: the passing case makes no further call.)"""
    if not isinstance(t, torch.Tensor):
        check_tensor(t, name)
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (features x batch), got shape {tuple(t.shape)}")
    if t.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows (features), got shape {tuple(t.shape)}")
    if t.dtype != values.dtype:
        check_dtype_like(t, name, values, "the weight values")
    if t.device != values.device:
        raise ValueError(f"{name} must be on {values.device} like the weight, got {t.device}")


def check_index(row_ptr, col_idx) -> tuple[int, int]:
    """(rows, nnz) of a CSR index given to a kernel; the ends of row_ptr are checked (one sync)."""
    check_dtype(row_ptr, "row_ptr", torch.int64)
    check_dtype(col_idx, "col_idx", torch.int32)
    if row_ptr.dim() != 1 or row_ptr.numel() < 1:
        raise ValueError("row_ptr must be 1-D with rows+1 >= 1 entries")
    if col_idx.dim() != 1:
        raise ValueError("col_idx must be 1-D")
    check_same_device(row_ptr=row_ptr, col_idx=col_idx)
    rows, nnz = row_ptr.numel() - 1, col_idx.numel()
    first, last = row_ptr[[0, -1]].tolist()
    if first != 0 or last != nnz:
        raise ValueError(f"row_ptr must start at 0 and end at nnz={nnz}, got {first} and {last}")
    return rows, nnz


def check_pattern(row_ptr, col_idx, n_cols: int, *, sorted: bool = False) -> tuple[int, int]:
    """(rows, nnz) of a CSR index given to a kernel that reads it whole: :func:`check_index`, then
    row_ptr non-decreasing, every column in [0, n_cols) and, with ``sorted``, the columns sorted
    and unique within each row (ValueError naming the first problem, like the C++ kernels)."""
    rows, nnz = check_index(row_ptr, col_idx)
    drops = torch.nonzero(row_ptr[1:] < row_ptr[:-1])
    if drops.numel():
        i = int(drops[0])
        raise ValueError(f"row_ptr must be non-decreasing, got row_ptr[{i}]={int(row_ptr[i])} > "
                         f"row_ptr[{i + 1}]={int(row_ptr[i + 1])} ({rows} rows)")
    outside = col_idx < 0
    if n_cols < ANY_COLUMN:
        outside |= col_idx >= n_cols
    bad = torch.nonzero(outside)
    if bad.numel():
        k = int(bad[0])
        raise ValueError(f"col_idx entry {int(col_idx[k])} (position {k}) out of range [0, {n_cols})")
    if sorted:
        _check_rows_sorted(row_ptr, col_idx)
    return rows, nnz


def _check_rows_sorted(rp: torch.Tensor, ci: torch.Tensor) -> None:
    """ValueError unless each row's columns (row_ptr non-decreasing from 0 to nnz) increase strictly."""
    if ci.numel() < 2:
        return
    step_ok = ci[1:] > ci[:-1]
    row_start = torch.zeros(ci.numel(), dtype=torch.bool, device=ci.device)
    starts = rp[:-1][rp[:-1] < ci.numel()]
    row_start[starts] = True
    bad = ~step_ok & ~row_start[1:]
    if bool(bad.any()):
        k = int(bad.nonzero()[0]) + 1
        row = int(torch.searchsorted(rp, torch.tensor(k, device=rp.device), right=True)) - 1
        kind = "duplicate" if int(ci[k]) == int(ci[k - 1]) else "unsorted"
        raise ValueError(f"col_idx must be sorted and unique within each row: {kind} column {int(ci[k])} in row {row}")


def check_csr(row_ptr: torch.Tensor, col_idx: torch.Tensor, shape: tuple[int, int],
              n_values: int | None = None) -> None:
    """Raises ValueError naming the first structural problem of the (rows x cols) CSR
    (row_ptr int64, col_idx integer, both 1-D) with ``n_values`` values (None: not checked). O(nnz)."""
    rows, cols = shape
    rp, ci = row_ptr, col_idx
    if rp.numel() != rows + 1:
        raise ValueError(f"row_ptr must have rows+1={rows + 1} entries, got {rp.numel()}")
    if int(rp[0]) != 0:
        raise ValueError(f"row_ptr[0] must be 0, got {int(rp[0])}")
    if int(rp[-1]) != ci.numel():
        raise ValueError(f"row_ptr[-1] must equal nnz={ci.numel()} (length of col_idx), got {int(rp[-1])}")
    if n_values is not None and n_values != ci.numel():
        raise ValueError(f"values must have nnz={ci.numel()} entries like col_idx, got {n_values}")
    if rows and bool((rp[1:] < rp[:-1]).any()):
        raise ValueError("row_ptr must be non-decreasing")
    if ci.numel() == 0:
        return
    if int(ci.min()) < 0 or int(ci.max()) >= cols:
        raise ValueError(f"col_idx entries must be in [0, cols={cols}), got range [{int(ci.min())}, {int(ci.max())}]")
    _check_rows_sorted(rp, ci)
