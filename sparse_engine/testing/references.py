"""float64 references of spmm, spmm_t and sddmm with the rounding bound a result must be within, and
numpy references of the topology selections (the k smallest, SET's keep mask)."""
from __future__ import annotations

import decimal
from typing import NamedTuple

import numpy as np
import torch

from ..sparse import SparseWeight
from .checks import _check, _describe


# ----------------------------------------------------------------------- references
def dense(W: SparseWeight) -> torch.Tensor:
    """``W`` as a float64 dense tensor on the CPU (O(rows * cols) memory)."""
    row, col, v = W.coo()
    D = torch.zeros(W.shape, dtype=torch.float64)
    D[row.cpu(), col.cpu()] = v.detach().cpu().double()
    return D


def _f64(t: torch.Tensor, absolute: bool) -> torch.Tensor:
    t = t.detach().cpu().double()
    return t.abs() if absolute else t


def spmm_reference(W: SparseWeight, X: torch.Tensor, *, absolute: bool = False) -> torch.Tensor:
    """float64 ``W @ X`` (``absolute=True``: ``|W| @ |X|``, the sum of |terms| that rounding
    error bounds scale with)."""
    D = dense(W)
    return (D.abs() if absolute else D) @ _f64(X, absolute)


def spmm_t_reference(W: SparseWeight, G: torch.Tensor, *, absolute: bool = False) -> torch.Tensor:
    """float64 ``W.T @ G`` (``absolute=True``: ``|W|.T @ |G|``)."""
    D = dense(W)
    return (D.abs() if absolute else D).T @ _f64(G, absolute)


def sddmm_reference(W: SparseWeight, G: torch.Tensor, X: torch.Tensor, *, absolute: bool = False) -> torch.Tensor:
    """float64 ``(G @ X.T)[row_k, col_k]`` at each stored entry k of ``W``, in CSR order
    (``absolute=True``: of ``|G|`` and ``|X|``). Takes O(min(rows * cols, nnz * batch)) memory."""
    row, col, _ = W.coo()
    row, col = row.cpu(), col.cpu()
    Gd, Xd = _f64(G, absolute), _f64(X, absolute)
    rows, cols = W.shape
    if rows * cols <= W.nnz * Xd.shape[1]:
        return (Gd @ Xd.T)[row, col]
    return (Gd[row] * Xd[col]).sum(1)


class Reference(NamedTuple):
    """An op's float64 result, the same sum over |terms| (what a rounding bound scales with),
    and how many terms each output sums at most."""

    value: torch.Tensor
    abs_value: torch.Tensor
    terms: int


def references(W: SparseWeight, X: torch.Tensor | None = None, G: torch.Tensor | None = None) -> dict[str, Reference]:
    """:class:`Reference` of ``"spmm"`` (``W @ X``, needs ``X``), ``"spmm_t"`` (``W.T @ G``,
    needs ``G``) and ``"sddmm"`` (needs both), for the ops whose inputs are given."""
    rows, cols = W.shape
    out = {}
    if X is not None:
        out["spmm"] = Reference(spmm_reference(W, X), spmm_reference(W, X, absolute=True), cols)
    if G is not None:
        out["spmm_t"] = Reference(spmm_t_reference(W, G), spmm_t_reference(W, G, absolute=True), rows)
    if X is not None and G is not None:
        out["sddmm"] = Reference(sddmm_reference(W, G, X), sddmm_reference(W, G, X, absolute=True), X.shape[1])
    return out


def rounding_bound(ref: torch.Tensor, abs_ref: torch.Tensor, terms: int, dtype: torch.dtype) -> torch.Tensor:
    """What rounding allows a sum of ``terms`` products in ``dtype``, elementwise (``ref``, ``abs_ref``:
    a :class:`Reference`'s value and sum of |products|): ``2 terms eps abs_ref`` in float32/float64;
    in float16/bfloat16 (float32 sums, rounded once to the storage type: a 2-byte accumulator does not
    fit) ``u |ref| + 2 (terms + 1) 2^-24 abs_ref`` plus half the smallest subnormal step."""
    fi = torch.finfo(dtype)
    if fi.bits > 16:
        return 2 * max(terms, 1) * fi.eps * abs_ref + 1e-300
    return fi.eps / 2 * ref.abs() + 2 * (max(terms, 1) + 1) * 2.0 ** -24 * abs_ref + fi.smallest_normal * fi.eps / 2


def assert_within_rounding(out: torch.Tensor, ref: torch.Tensor, abs_ref: torch.Tensor, terms: int,
                           dtype: torch.dtype) -> None:
    """``out`` of ``dtype``, shaped like ``ref``, within :func:`rounding_bound` of it everywhere:
    ``assert_within_rounding(ops.spmm(W, X), *references(W, X)["spmm"], W.values.dtype)``."""
    _check(out.dtype == dtype and out.shape == ref.shape, f"{_describe(out)}, expected {dtype} {tuple(ref.shape)}")
    err, bound = (out.detach().double() - ref).abs(), rounding_bound(ref, abs_ref, terms, dtype)
    if not bool((err <= bound).all()):
        raise AssertionError(f"max error/bound {float((err / bound).max()):.3g}")


def smallest_reference(scores: np.ndarray, k: int) -> np.ndarray:
    """Bool mask of the ``k`` smallest ``scores``, ties to the lower index (-0.0 equals 0.0): a
    stable sort. The contract of ``ops.select_smallest`` and of ``training.magnitude_keep``
    (which drops the smallest ``|values|``)."""
    out = np.zeros(scores.size, bool)
    out[np.argsort(scores + 0.0, kind="stable")[:k]] = True
    return out


def _llround(x: float) -> int:
    """C's llround: the nearest integer, halves away from zero, of the exact binary value."""
    return int(decimal.Decimal(x).to_integral_value(rounding=decimal.ROUND_HALF_UP))


def set_keep_reference(v: np.ndarray, zeta: float) -> np.ndarray:
    """SET's keep mask (``training.set_keep``): drop round(zeta P) of the P positive values nearest
    zero and round(zeta N) of the N negative ones (ties: the lower index), and every zero."""
    keep = np.zeros(v.size, bool)
    for sign in (v > 0, v < 0):
        idx = np.flatnonzero(sign)
        order = idx[np.argsort(np.abs(v[idx]), kind="stable")]
        keep[order[_llround(zeta * float(idx.size)):]] = True
    return keep
