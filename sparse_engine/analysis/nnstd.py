"""NNSTD, the neural network sparse topology distance (Liu et al., ECML-PKDD 2020).

Layers are matrices (out x in), rows = neurons, like ``nn.Linear.weight`` and SparseWeight;
a neuron's input set is the set of columns where its row is nonzero. Per layer:

1. the cost between neuron a of network A and neuron b of network B is 1 - Jaccard(in(a), in(b)),
   0 when both input sets are empty; intersections come from one sparse product of the binary
   matrices, A_bin @ B_bin^T (no pairwise loops);
2. neurons are matched by ``scipy.optimize.linear_sum_assignment`` on that (out x out) cost
   matrix (dense: it is as large as the assignment problem itself, O(out^2), never O(n_in x
   n_in) of a whole network);
3. the matching permutes the next layer's inputs in B (its column matched[i] becomes column
   i), so later layers are compared in A's neuron order. The first layer's inputs are taken as
   aligned (the same data features).

A layer's distance is its matched cost / its neurons; the network distance is the total matched
cost / total neurons. With ``align_outputs=True`` the last layer's neurons are not matched
(output units are fixed class labels): they are compared in place.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

from ..sparse import SparseWeight

__all__ = ["NNSTDResult", "nnstd", "jaccard_cost", "load_nnstd_layers"]


@dataclass
class NNSTDResult:
    distance: float                 # total matched cost / total neurons
    per_layer: list[float]          # matched cost / neurons, per layer
    matchings: list[np.ndarray]     # matchings[l][i]: B's neuron matched to A's neuron i


def _binary(M, name: str) -> sp.csr_matrix:
    if isinstance(M, SparseWeight):
        M = M.to_scipy()
    if not sp.issparse(M):
        raise TypeError(f"{name} must be a scipy.sparse matrix or a SparseWeight, got {type(M).__name__}")
    M = sp.csr_matrix(M, copy=True)
    M.eliminate_zeros()
    M.data = np.ones_like(M.data, dtype=np.float64)
    return M


def jaccard_cost(A: sp.csr_matrix, B: sp.csr_matrix) -> np.ndarray:
    """Dense (rows(A) x rows(B)) matrix of 1 - Jaccard between the rows' nonzero sets of two
    binary CSR matrices with the same number of columns (0 for two empty rows)."""
    inter = (A @ B.T).tocoo()
    na = np.diff(A.indptr).astype(np.float64)
    nb = np.diff(B.indptr).astype(np.float64)
    cost = np.ones((A.shape[0], B.shape[0]))
    cost[np.ix_(na == 0, nb == 0)] = 0.0
    cost[inter.row, inter.col] = 1.0 - inter.data / (na[inter.row] + nb[inter.col] - inter.data)
    return cost


def nnstd(layers_a, layers_b, *, align_outputs: bool = False) -> NNSTDResult:
    """Topology distance between two networks given as lists of layer matrices (out x in)."""
    if not isinstance(layers_a, (list, tuple)) or not isinstance(layers_b, (list, tuple)):
        raise TypeError("layers_a and layers_b must be lists of layer matrices")
    if len(layers_a) != len(layers_b) or not layers_a:
        raise ValueError(f"layers_a and layers_b must hold the same number (>= 1) of layers, got "
                         f"{len(layers_a)} and {len(layers_b)}")
    perm = None
    costs, neurons, per_layer, matchings = 0.0, 0, [], []
    for idx, (ma, mb) in enumerate(zip(layers_a, layers_b)):
        A, B = _binary(ma, f"layers_a[{idx}]"), _binary(mb, f"layers_b[{idx}]")
        if A.shape != B.shape:
            raise ValueError(f"layers_a[{idx}] and layers_b[{idx}] must have the same shape, got "
                             f"{A.shape} and {B.shape}")
        if perm is not None:
            if B.shape[1] != len(perm):
                raise ValueError(f"layers_b[{idx}] must have {len(perm)} inputs (the previous layer's "
                                 f"neurons), got shape {B.shape}")
            B = B[:, perm]
        cost = jaccard_cost(A, B)
        if align_outputs and idx == len(layers_a) - 1:
            col = np.arange(A.shape[0])
        else:
            _, col = linear_sum_assignment(cost)
        total = float(cost[np.arange(A.shape[0]), col].sum())
        costs += total
        neurons += A.shape[0]
        per_layer.append(total / A.shape[0] if A.shape[0] else 0.0)
        matchings.append(col)
        perm = col
    return NNSTDResult(costs / neurons if neurons else 0.0, per_layer, matchings)


def load_nnstd_layers(folder) -> list[sp.csr_matrix]:
    """Layers ``weight_l0.npz, weight_l1.npz, ...`` of the NNSTD paper's topologies as (out x in)
    CSR matrices. The files hold (in + 1, out) matrices whose last row is the bias: it is
    dropped and the rest transposed."""
    folder = Path(folder)
    files = sorted(folder.glob("weight_l*.npz"), key=lambda p: int(p.stem[len("weight_l"):]))
    if not files:
        raise ValueError(f"folder must contain weight_l<i>.npz files, found none in {folder}")
    return [sp.csr_matrix(sp.load_npz(f)[:-1].T) for f in files]
