"""Helpers of the training tests (and of test_testing): invariants of a SparseWeight, numpy references,
and bit-for-bit comparison of nested states (resume tests)."""
import math

import numpy as np
import torch

from sparse_engine import SparseWeight


def check_invariants(w: SparseWeight, nnz=None):
    """Sorted, unique, in range, transposed index consistent with a scipy CSC of the same matrix."""
    w.validate()
    if nnz is not None:
        assert w.nnz == nnz
    csc = w.to_scipy().tocsc()
    csc.sort_indices()
    assert np.array_equal(w.csc_ptr.numpy(), csc.indptr)
    assert np.array_equal(w.csc_row.numpy(), csc.indices)
    values = w.values.detach().float() if w.values.element_size() == 2 else w.values.detach()  # as to_scipy()
    assert np.array_equal(values.numpy()[w.csc_perm.numpy()], csc.data)


def keys(w: SparseWeight) -> np.ndarray:
    row, col, _ = w.coo()
    return (row * w.shape[1] + col).numpy()


def value_by_key(w: SparseWeight) -> dict:
    return dict(zip(keys(w).tolist(), w.values.detach().numpy().tolist()))


def ref_smallest(scores: np.ndarray, k: int) -> np.ndarray:
    """Bool mask of the k smallest scores, ties to the lower index (stable sort)."""
    out = np.zeros(scores.size, bool)
    out[np.argsort(scores, kind="stable")[:k]] = True
    return out


def ref_set_keep(v: np.ndarray, zeta: float) -> np.ndarray:
    keep = np.zeros(v.size, bool)
    for sel in (v > 0, v < 0):
        idx = np.nonzero(sel)[0]
        n_drop = math.floor(zeta * idx.size + 0.5)
        order = idx[np.argsort(np.abs(v[idx]), kind="stable")]
        keep[order[n_drop:]] = True
    return keep


def assert_bit_equal(a, b, where="state"):
    """Nested dicts/lists/tuples of tensors and numbers equal bit for bit (same types, dtypes, devices;
    NaN equals NaN); ``where`` names the first difference."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert a.device == b.device and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            assert_bit_equal(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bit_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert type(a) is type(b) and a == b, (where, a, b)
