"""Maximum-weight bipartite matching on a sparse graph, exact and always finite, for NNSTD.

The graph's connected components are matched independently (a matching never joins two
components), small ones packed together into one solve. Each solve is one call of scipy's
``min_weight_full_bipartite_matching`` (LAPJVsp) on a *rectangular* graph: the left nodes,
against the right nodes plus one private "stay unmatched" column per left node. Every left node
is matched (to a right node at cost ``C - w`` or to its own column at cost ``C``, with
``C = 2 max(w)`` so every cost is positive), so the minimum-cost full matching is a
maximum-weight matching of the graph. With more columns than rows scipy skips LAPJVsp's
augmenting row reduction and runs only its shortest augmenting paths: one finite Dijkstra-like
search per left node, exact in float arithmetic like ``scipy.optimize.linear_sum_assignment``.
The row reduction of a square graph is what looped forever on float ties (a 102 x 11 layer pair,
see docs/analysis.md); integer-scaled costs make it terminate, but a price war can then take as
many steps as the scale is large, and the rounding makes the optimum approximate.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching

__all__ = ["max_weight_matching"]

#: Components are packed into solves of about this many nodes: each of a solve's searches first
#: resets one array entry per column, so one solve over everything would cost rows x columns.
BATCH_NODES = 4096


def _batches(labels: np.ndarray, n_components: int) -> np.ndarray:
    """Batch index per component: components in increasing size, a new batch every BATCH_NODES
    nodes (a component is never split; a large one ends up alone or with a few small ones)."""
    sizes = np.bincount(labels, minlength=n_components)
    order = np.argsort(sizes, kind="stable")
    start = np.cumsum(sizes[order]) - sizes[order]
    batch = np.empty(n_components, np.int64)
    batch[order] = start // BATCH_NODES
    return batch


def _grouped(batch_of: np.ndarray, n_batches: int):
    """Nodes sorted by batch, each node's index inside its batch, and the batches' bounds."""
    order = np.argsort(batch_of, kind="stable")
    bounds = np.searchsorted(batch_of[order], np.arange(n_batches + 1))
    local = np.empty(len(batch_of), np.int64)
    local[order] = np.arange(len(batch_of)) - bounds[batch_of[order]]
    return order, local, bounds


def _renumber(idx: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``idx`` (in 0..n-1), sorted, and ``idx`` as positions among them."""
    nodes = np.flatnonzero(np.bincount(idx, minlength=n))
    position = np.zeros(n, np.int64)
    position[nodes] = np.arange(len(nodes))
    return nodes, position[idx]


def max_weight_matching(sim) -> tuple[np.ndarray, np.ndarray]:
    """A maximum-weight matching (not necessarily perfect) of the bipartite graph whose edges are
    the entries of ``sim`` (a scipy.sparse matrix: rows left, columns right, weights; entries
    <= 0 are never worth matching and are ignored): (left, right) index arrays. Exact up to the
    float rounding of ``2 max(w) - w``; time grows with the edges and the components' sizes,
    never with rows x columns of the whole graph."""
    if not sp.issparse(sim):
        raise TypeError(f"sim must be a scipy.sparse matrix, got {type(sim).__name__}")
    sim = sp.csr_matrix(sim, copy=True)
    sim.sum_duplicates()  # O(nnz) when already canonical, as overlaps from a sparse product are
    sim = sim.tocoo()
    if not np.isfinite(sim.data).all():
        raise ValueError("sim must hold finite weights")
    keep = sim.data > 0
    row, col, w = sim.row[keep], sim.col[keep], sim.data[keep].astype(np.float64)
    if len(w) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # the nodes that have an edge, renumbered: left 0..nl-1, right nl..nl+nr-1
    left_nodes, row = _renumber(row, sim.shape[0])
    right_nodes, col = _renumber(col, sim.shape[1])
    nl, nr = len(left_nodes), len(right_nodes)
    graph = sp.coo_matrix((np.ones(len(w)), (row, nl + col)), shape=(nl + nr, nl + nr))
    n_comp, labels = connected_components(graph, directed=False)
    batch = _batches(labels, n_comp)
    n_batches = int(batch.max()) + 1
    lorder, llocal, lbounds = _grouped(batch[labels[:nl]], n_batches)
    rorder, rlocal, rbounds = _grouped(batch[labels[nl:]], n_batches)
    ebatch = batch[labels[row]]
    eorder = np.argsort(ebatch, kind="stable")
    ebounds = np.searchsorted(ebatch[eorder], np.arange(n_batches + 1))
    big = 2.0 * w.max()
    out_l, out_r = [], []
    for b in range(n_batches):
        e = eorder[ebounds[b]:ebounds[b + 1]]
        rows, cols = lbounds[b + 1] - lbounds[b], rbounds[b + 1] - rbounds[b]
        own = np.arange(rows)
        cost = sp.csr_matrix((np.concatenate([big - w[e], np.full(rows, big)]),
                              (np.concatenate([llocal[row[e]], own]), np.concatenate([rlocal[col[e]], cols + own]))),
                             shape=(rows, cols + rows))
        li, ri = min_weight_full_bipartite_matching(cost)
        pick = ri < cols
        out_l.append(left_nodes[lorder[lbounds[b] + li[pick]]])
        out_r.append(right_nodes[rorder[rbounds[b] + ri[pick]]])
    return np.concatenate(out_l).astype(np.int64), np.concatenate(out_r).astype(np.int64)
