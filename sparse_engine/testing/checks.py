"""Checks that raise AssertionError naming what differs: a weight's stored positions and invariants,
and saved states compared bit for bit."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..sparse import SparseWeight


# -------------------------------------------------------------------------- checks
def entry_keys(W: SparseWeight) -> np.ndarray:
    """Each stored entry's position ``row * cols + col``, in CSR order: compare the patterns of
    two weights, or find where an update pruned and regrew."""
    row, col, _ = W.coo()
    return (row.cpu() * W.shape[1] + col.cpu()).numpy()


def value_by_key(W: SparseWeight) -> dict:
    """``{entry_keys(W)[k]: value k}``: what a topology update must keep at the surviving positions."""
    return dict(zip(entry_keys(W).tolist(), W.values.detach().cpu().tolist()))


def _check(ok: bool, message) -> None:
    if not ok:
        raise AssertionError(message)


def check_invariants(W: SparseWeight, nnz: int | None = None) -> None:
    """``W.validate()`` (sorted, unique, in-range columns), ``nnz`` stored entries if given, and a
    transposed index equal to scipy's CSC of the same matrix: what every topology update must
    leave behind."""
    W.validate()
    if nnz is not None:
        _check(W.nnz == nnz, f"nnz is {W.nnz}, expected {nnz}")
    csc = W.to_scipy().tocsc()
    csc.sort_indices()
    _check(np.array_equal(W.csc_ptr.cpu().numpy(), csc.indptr), "csc_ptr differs from scipy's CSC")
    _check(np.array_equal(W.csc_row.cpu().numpy(), csc.indices), "csc_row differs from scipy's CSC")
    values = W.values.detach().cpu()
    values = values.float() if values.element_size() == 2 else values  # as to_scipy() converts them
    _check(np.array_equal(values.numpy()[W.csc_perm.cpu().numpy()], csc.data),
           "csc_perm does not put the values in scipy's CSC order")


def check_structure(W: SparseWeight) -> None:
    """The invariants of :func:`check_invariants` computed with numpy (not with ``W.validate``), an
    independent check for property tests: int64 ``row_ptr`` from 0 to nnz, non-decreasing; int32
    columns in range, strictly increasing within each row; the transposed index the CSC of the same
    matrix (``csc_perm`` a permutation of the CSR positions, by column then row), and scipy's CSC."""
    rows, cols = W.shape
    rp, ci = W.row_ptr.cpu().numpy(), W.col_idx.cpu().numpy()
    _check(W.row_ptr.dtype == torch.int64 and W.col_idx.dtype == torch.int32, "row_ptr must be int64, col_idx int32")
    _check(rp.shape == (rows + 1,) and rp[0] == 0 and rp[-1] == ci.size == W.values.numel(),
           f"row_ptr ({rp.size} entries) must run from 0 to nnz={ci.size}, the number of values {W.values.numel()}")
    _check((np.diff(rp) >= 0).all(), "row_ptr decreases")
    _check(((ci >= 0) & (ci < cols)).all(), f"a column out of range [0, {cols})")
    row = np.repeat(np.arange(rows), np.diff(rp))
    same_row = row[1:] == row[:-1]  # strictly increasing columns inside every row: sorted and unique
    _check((ci[1:][same_row] > ci[:-1][same_row]).all(), "columns not sorted and unique within a row")
    cp, cr, perm = W.csc_ptr.cpu().numpy(), W.csc_row.cpu().numpy(), W.csc_perm.cpu().numpy()
    _check(W.csc_ptr.dtype == torch.int64 and W.csc_row.dtype == torch.int32 and W.csc_perm.dtype == torch.int32,
           "csc_ptr must be int64, csc_row and csc_perm int32")
    _check(np.array_equal(cp, np.concatenate([[0], np.cumsum(np.bincount(ci, minlength=cols))]).astype(np.int64)),
           "csc_ptr does not count the entries of each column")
    _check(np.array_equal(np.sort(perm), np.arange(ci.size)), "csc_perm is not a permutation of the CSR positions")
    _check(np.array_equal(perm, np.lexsort((row, ci))), "csc_perm is not by column, then row")
    _check(np.array_equal(cr, row[perm]), "csc_row is not the rows of the entries csc_perm lists")
    if rows and cols:  # the values read through csc_perm are in the CSC order of scipy's conversion
        csc = W.to_scipy().tocsc()
        csc.sort_indices()
        v = W.values.detach().cpu()
        v = v.float() if v.element_size() == 2 else v
        _check(np.array_equal(v.numpy()[perm], csc.data) and np.array_equal(cr, csc.indices)
               and np.array_equal(cp, csc.indptr), "the transposed index differs from scipy's CSC")


def assert_same_bits(a, b) -> None:
    """Tensors (or tuples of them) of the same dtypes and shapes holding the same bits (NaN equals
    NaN, -0.0 differs from 0.0): a kernel against its twin on another device or in another language."""
    a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    _check(len(a) == len(b), f"{len(a)} tensors vs {len(b)}")
    for i, (x, y) in enumerate(zip(a, b)):
        _check(x.dtype == y.dtype and x.shape == y.shape, f"[{i}]: {_describe(x)} vs {_describe(y)}")
        if x.is_floating_point():
            x, y = (t.view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()]) for t in (x, y))
        _check(torch.equal(x, y), f"[{i}]: the bits differ")


def assert_bit_equal(a, b, where: str = "state") -> None:
    """Nested dicts, lists and tuples of tensors and numbers exactly equal: the same types, keys
    in the same order, tensors of the same dtype, shape and device whose elements compare equal
    (``torch.equal``), numbers equal (a float NaN equals a float NaN). The message names the first
    difference by its path from ``where``, e.g. ``state['opt'][0]``. For a resumed run against
    the run made in one go (model, optimizer and controller state dicts)."""
    if isinstance(a, torch.Tensor):
        _check(isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape,
               f"{where}: {_describe(a)} vs {_describe(b)}")
        _check(a.device == b.device and torch.equal(a, b), f"{where}: tensors differ")
    elif isinstance(a, dict):
        _check(isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} vs {_describe(b)}")
        for k in a:
            assert_bit_equal(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        _check(type(a) is type(b) and len(a) == len(b), f"{where}: {_describe(a)} vs {_describe(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bit_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        _check(isinstance(b, float) and math.isnan(b), f"{where}: nan vs {b!r}")
    else:
        _check(type(a) is type(b) and a == b, f"{where}: {a!r} vs {b!r}")


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor {x.dtype} {tuple(x.shape)} on {x.device}"
    if isinstance(x, dict):
        return f"keys {list(x)}"
    if isinstance(x, (list, tuple)):
        return f"{type(x).__name__} of {len(x)}"
    return repr(x)
