"""Helpers of the training tests (and of test_testing): invariants of a SparseWeight and numpy references."""
import math

import numpy as np

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
