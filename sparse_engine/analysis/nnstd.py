"""NNSTD, the neural network sparse topology distance (Liu et al., ECML-PKDD 2020).

Layers are matrices (out x in), rows = neurons, like ``nn.Linear.weight`` and SparseWeight;
a neuron's input set is the set of columns where its row is nonzero. Per layer:

1. the cost between neuron a of network A and neuron b of network B is 1 - Jaccard(in(a), in(b)),
   0 when both input sets are empty; intersections come from one sparse product of the binary
   matrices, A_bin @ B_bin^T (no pairwise loops);
2. neurons are matched at minimum total cost. Jaccard distance is a metric, so two neurons with
   the same input set (cost 0; two empty ones included) are matched to each other first: an
   exchange never makes that worse. Only pairs that share an input have a cost below 1, so the
   dense (out x out) assignment (``scipy.optimize.linear_sum_assignment``) of the rest equals a
   maximum-weight matching on the sparse graph of overlapping pairs (weight = Jaccard), the
   rest paired arbitrarily at cost 1. ``solver="auto"`` takes the one that needs less memory:
   the dense cost matrix (8 bytes a pair of neurons) when at least 40% of the pairs overlap,
   else :func:`max_weight_matching` on the overlap graph (about 20 bytes an overlapping pair;
   exact, always finite, time growing with the overlaps). That is also the faster one on both
   sides (dense LSA is slow on mostly-zero matrices: 40 s against 3.5 s for two unrelated
   5,000-neuron layers). ``solver="dense"`` or ``"sparse"`` forces one; both reach the same
   optimum. Optimal matchings can tie; the per-layer optimum is unique but which tied matching
   is taken changes the next layer's input order, as in any implementation;
3. the matching permutes the next layer's inputs in B (its column matched[i] becomes column
   i), so later layers are compared in A's neuron order. The first layer's inputs are taken as
   aligned (the same data features).

A layer's distance is its matched cost / its neurons. The network distance is, by default,
the mean of the layers' distances, as the NNSTD paper's public code computes it
(``average="layers"``); ``average="neurons"`` gives the total matched cost / total neurons
instead (every neuron weighs the same, so wide layers count more). With
``align_outputs=True`` the last layer's neurons are not matched (output units are fixed class
labels): they are compared in place.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import maximum_bipartite_matching

from ..sparse import SparseWeight
from .matching import max_weight_matching

__all__ = ["AVERAGES", "SOLVERS", "NNSTDResult", "nnstd", "max_weight_matching", "nnstd_matrix", "jaccard_similarity",
           "jaccard_cost", "load_nnstd_layers", "find_nnstd_networks"]


@dataclass
class NNSTDResult:
    distance: float                 # mean of per_layer (average="layers") or total cost / total neurons
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


def jaccard_similarity(A: sp.csr_matrix, B: sp.csr_matrix) -> sp.coo_matrix:
    """Jaccard similarity between the rows' nonzero sets of two binary CSR matrices with the same
    number of columns, at the pairs that share a column (sparse; empty rows are left out)."""
    inter = (A @ B.T).tocoo()
    na = np.diff(A.indptr).astype(np.float64)
    nb = np.diff(B.indptr).astype(np.float64)
    sim = inter.data / (na[inter.row] + nb[inter.col] - inter.data)
    return sp.coo_matrix((sim, (inter.row, inter.col)), shape=(A.shape[0], B.shape[0]))


def jaccard_cost(A: sp.csr_matrix, B: sp.csr_matrix) -> np.ndarray:
    """Dense (rows(A) x rows(B)) matrix of 1 - Jaccard (0 for two empty rows), for tests;
    :func:`nnstd` never builds it (its dense solver takes the similarities of the neurons left
    after the zero-cost pairs)."""
    cost = 1.0 - jaccard_similarity(A, B).toarray()
    cost[np.ix_(np.diff(A.indptr) == 0, np.diff(B.indptr) == 0)] = 0.0
    return cost


#: How the layers' neurons are matched (see the module doc).
SOLVERS = ("auto", "dense", "sparse")

#: ``solver="auto"`` takes the dense assignment when at least this fraction of the pairs of
#: neurons overlap: its cost matrix (8 bytes a pair) is then no larger than the sparse solver's
#: overlap graph (about 20 bytes an overlapping pair), and dense is then also the faster
#: (measured crossover: 38% of the pairs, 1,500 and 3,000 neurons).
DENSE_FILL = 0.4

#: How the layers' distances make the network's: their mean (the paper's code) or total cost
#: over total neurons.
AVERAGES = ("layers", "neurons")


def _identical_pairs(sim: sp.coo_matrix) -> tuple[np.ndarray, np.ndarray]:
    """A maximum matching of the pairs with the same (nonempty) input set: Jaccard exactly 1.0
    (intersection / union is 1.0 only when they are equal)."""
    same = sim.data == 1.0
    if not same.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    g = sp.csr_matrix((np.ones(int(same.sum())), (sim.row[same], sim.col[same])), shape=sim.shape)
    col = maximum_bipartite_matching(g, perm_type="column")
    li = np.flatnonzero(col >= 0)
    return li, col[li].astype(np.int64)


def _match(A: sp.csr_matrix, B: sp.csr_matrix, solver: str = "auto"):
    """Minimum-cost perfect matching of A's rows to B's rows (same count) under 1 - Jaccard:
    (col, total cost), col[i] = B row matched to A row i."""
    n = A.shape[0]
    col = np.full(n, -1, dtype=np.int64)
    empty_a = np.flatnonzero(np.diff(A.indptr) == 0)
    empty_b = np.flatnonzero(np.diff(B.indptr) == 0)
    k = min(len(empty_a), len(empty_b))
    col[empty_a[:k]] = empty_b[:k]  # the same (empty) input set: cost 0
    sim = jaccard_similarity(A, B)
    li, ri = _identical_pairs(sim)  # the same nonempty input set: cost 0
    col[li] = ri
    free_b = np.ones(n, dtype=bool)
    free_b[col[col >= 0]] = False
    keep = (col[sim.row] < 0) & free_b[sim.col]
    rest = sp.coo_matrix((sim.data[keep], (sim.row[keep], sim.col[keep])), shape=sim.shape)
    gain = float(len(li))
    if rest.nnz:
        rows, cols = np.flatnonzero(col < 0), np.flatnonzero(free_b)
        if solver == "dense" or (solver == "auto" and rest.nnz >= DENSE_FILL * len(rows) * len(cols)):
            dense = rest.tocsr()[rows][:, cols].toarray()
            a, b = linear_sum_assignment(dense, maximize=True)
            pick = dense[a, b] > 0
            li, ri = rows[a[pick]], cols[b[pick]]
        else:
            li, ri = max_weight_matching(rest)
        col[li] = ri
        gain += float(np.asarray(rest.tocsr()[li, ri]).sum())
    free_a = np.flatnonzero(col < 0)
    used = np.zeros(n, dtype=bool)
    used[col[col >= 0]] = True
    col[free_a] = np.flatnonzero(~used)
    return col, float(n - k - gain)


def nnstd(layers_a, layers_b, *, align_outputs: bool = False, average: str = "layers",
          solver: str = "auto") -> NNSTDResult:
    """Topology distance between two networks given as lists of layer matrices (out x in);
    ``average``: one of :data:`AVERAGES`, ``solver``: one of :data:`SOLVERS` (see the module
    doc)."""
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
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
        if align_outputs and idx == len(layers_a) - 1:
            col = np.arange(A.shape[0])
            sim = jaccard_similarity(A, B)
            on_diag = sim.row == sim.col
            both_empty = (np.diff(A.indptr) == 0) & (np.diff(B.indptr) == 0)
            total = float(A.shape[0] - sim.data[on_diag].sum() - both_empty.sum())
        else:
            col, total = _match(A, B, solver)
        costs += total
        neurons += A.shape[0]
        per_layer.append(total / A.shape[0] if A.shape[0] else 0.0)
        matchings.append(col)
        perm = col
    if average == "layers":
        return NNSTDResult(float(np.mean(per_layer)), per_layer, matchings)
    return NNSTDResult(costs / neurons if neurons else 0.0, per_layer, matchings)


def nnstd_matrix(networks, layer: int | None = None, **options) -> np.ndarray:
    """The symmetric matrix of :func:`nnstd` distances between every two of ``networks`` (each a
    list of layer matrices), computed once per pair as ``nnstd(networks[i], networks[j])`` for
    i < j (zero diagonal): the distance (``average`` over the layers), or with ``layer`` that
    layer's (its matching follows the earlier layers'). ``options`` go to :func:`nnstd`. The NNSTD
    paper's heat maps (its Figure 4) are ``layer=0`` among the networks of one epoch."""
    networks = list(networks)
    if layer is not None:
        n_layers = min((len(n) for n in networks), default=0)
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
            raise ValueError(f"layer must be an int in [0, {n_layers}) (the networks' layers), got {layer!r}")
    D = np.zeros((len(networks), len(networks)))
    for i in range(len(networks)):
        for j in range(i + 1, len(networks)):
            got = nnstd(networks[i], networks[j], **options)
            D[i, j] = D[j, i] = got.distance if layer is None else got.per_layer[layer]
    return D


def load_nnstd_layers(folder) -> list[sp.csr_matrix]:
    """Layers ``weight_l0.npz, weight_l1.npz, ...`` of the NNSTD paper's topologies as (out x in)
    CSR matrices. The files hold (in + 1, out) matrices whose last row is the bias: it is
    dropped and the rest transposed."""
    folder = Path(folder)
    files = sorted(folder.glob("weight_l*.npz"), key=lambda p: int(p.stem[len("weight_l"):]))
    if not files:
        raise ValueError(f"folder must contain weight_l<i>.npz files, found none in {folder}")
    return [sp.csr_matrix(sp.load_npz(f)[:-1].T) for f in files]


def find_nnstd_networks(folder) -> dict[str, Path]:
    """Every folder at or below ``folder`` that holds ``weight_l<i>.npz`` layers (the NNSTD
    paper's layout, e.g. ``e5_s0_w1/epoch_190``), by its path relative to ``folder``, sorted."""
    folder = Path(folder)
    found = {p.parent for p in folder.rglob("weight_l*.npz") if p.stem[len("weight_l"):].isdigit()}
    return {(str(d.relative_to(folder)) if d != folder else d.name): d for d in sorted(found)}
