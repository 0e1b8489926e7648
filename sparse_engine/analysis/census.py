"""Signed triad census and feed-forward loops (transitive semicycles).

The 16 Holland-Leinhardt triad types are counted over all C(n, 3) node triples by the compiled
kernel ``torch.ops.sparse_engine.signed_triad_census`` (edges, wedges and triangles only; see
csrc/cpu/analysis_cpu.cpp), in O(m * average forward degree) time and O(n + m) memory.

Signed part. A transitive semicycle is an ordered node triple (i, j, k) with the edges i->j,
j->k and i->k (a feed-forward loop, FFL). It is balanced when w_ij * w_jk * w_ik > 0, where
w_ab is the weight of the directed edge a->b, i.e. W[b, a]; when i->j and j->i both exist they
keep their own signs and only the edge in the semicycle's direction counts. Only triads of the
four transitive types are looked at: 030T has 1 semicycle, 120D and 120U 2, and 300 has 6 (all
orderings; the two 3-cycles are not semicycles). 120C and 210 also contain such triples but are
intransitive types and are not counted (as in Zhang et al.'s code). A triad is completely
balanced (CB) when all its semicycles are balanced, completely unbalanced (CI) when none is,
and partially balanced (PB) otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from .. import kernels  # noqa: F401  (loads the compiled operators)
from .graph import GraphCSR, edges, to_graph

__all__ = ["TRIAD_TYPES", "TRANSITIVE_TYPES", "NODE_SETS", "TriadCensus", "signed_triad_census", "FeedForwardLoops",
           "feed_forward_loops"]


TRIAD_TYPES = ("003", "012", "102", "021D", "021U", "021C", "111D", "111U", "030T", "030C", "201",
               "120D", "120U", "120C", "210", "300")
TRANSITIVE_TYPES = ("030T", "120D", "120U", "300")
SEMICYCLES_PER_TRIAD = {"030T": 1, "120D": 2, "120U": 2, "300": 6}


@dataclass
class TriadCensus:
    """Counts of the 16 triad types; for each transitive type the balanced and unbalanced
    semicycles and the CB / PB / CI triads."""

    n: int
    counts: dict[str, int]
    balanced: dict[str, int] = field(default_factory=dict)
    unbalanced: dict[str, int] = field(default_factory=dict)
    cb: dict[str, int] = field(default_factory=dict)
    pb: dict[str, int] = field(default_factory=dict)
    ci: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        """Flat {name: count}: census types, then ``<type>_balanced``, ``_unbalanced``,
        ``_CB``, ``_PB``, ``_CI`` for the transitive types."""
        out = dict(self.counts)
        for t in TRANSITIVE_TYPES:
            out.update({f"{t}_balanced": self.balanced[t], f"{t}_unbalanced": self.unbalanced[t],
                        f"{t}_CB": self.cb[t], f"{t}_PB": self.pb[t], f"{t}_CI": self.ci[t]})
        return out


def _census_of_graph(g: GraphCSR) -> TriadCensus:
    counts, signed = torch.ops.sparse_engine.signed_triad_census(g.row_ptr, g.col_idx, g.values)
    counts = [int(c) for c in counts]
    n = g.n
    counts[0] = n * (n - 1) * (n - 2) // 6 - sum(counts[1:])  # exact Python integers
    signed = signed.tolist()
    c = TriadCensus(n, dict(zip(TRIAD_TYPES, counts)))
    for t, (bal, unb, cb, pb, ci) in zip(TRANSITIVE_TYPES, signed):
        c.balanced[t], c.unbalanced[t], c.cb[t], c.pb[t], c.ci[t] = bal, unb, cb, pb, ci
    return c


#: Which nodes a census counts: every node of the matrix, or only those that are an end of an edge
#: (nonzero, not a self-loop), as the paper's code does (it builds its graph from the edge list).
NODE_SETS = ("all", "edges")


def _edge_nodes_only(g: GraphCSR) -> GraphCSR:
    """The subgraph of the nodes that are an end of an edge, renumbered in their order."""
    src, dst, w = edges(g)
    keep = np.unique(np.concatenate([src, dst]))
    m = sp.csr_matrix((w, (np.searchsorted(keep, dst), np.searchsorted(keep, src))), shape=(len(keep),) * 2)
    m.sort_indices()
    return GraphCSR(torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int32)),
                    torch.from_numpy(np.ascontiguousarray(m.data)))


def signed_triad_census(W, *, nodes: str = "all", transpose: bool = False, key: str | None = None) -> TriadCensus:
    """The signed triad census of ``W`` (see :mod:`sparse_engine.analysis.graph` for inputs
    and the edge convention); ``nodes``: one of :data:`NODE_SETS` (``"edges"`` leaves out the
    nodes without edges, which changes the counts of 003, 012 and 102 and ``n``, nothing else)."""
    if nodes not in NODE_SETS:
        raise ValueError(f"nodes must be one of {NODE_SETS}, got {nodes!r}")
    g = to_graph(W, transpose=transpose, key=key)
    return _census_of_graph(_edge_nodes_only(g) if nodes == "edges" else g)


@dataclass
class FeedForwardLoops:
    """Transitive semicycles (i, j, k): edges i->j, j->k, i->k. Rows are sorted by (i, j, k).

    ``nodes`` [S, 3] (i, j, k); ``weights`` [S, 3] (w_ij, w_jk, w_ik); ``positions`` [S, 3]
    where those three weights are stored in the source's values (for a SparseWeight: indices
    into ``W.values``); ``types`` [S] the triad type names."""

    nodes: np.ndarray
    weights: np.ndarray
    positions: np.ndarray
    types: np.ndarray

    def __len__(self) -> int:
        return len(self.types)

    @property
    def balanced(self) -> np.ndarray:
        """True where w_ij * w_jk * w_ik > 0."""
        return np.prod(np.sign(self.weights), axis=1) > 0

    @property
    def coherence(self) -> np.ndarray:
        """w_ij * w_jk + w_ik: the indirect path's gain plus the direct one (positive when the
        direct edge reinforces the indirect path, a coherent loop)."""
        return self.weights[:, 0] * self.weights[:, 1] + self.weights[:, 2]


def feed_forward_loops(W, *, types=TRANSITIVE_TYPES, transpose: bool = False,
                       key: str | None = None) -> FeedForwardLoops:
    """Every transitive semicycle in triads of the given types (default: the four transitive
    types, as the census counts; ``("030T",)`` keeps only isolated FFL motifs; None: every
    (i, j, k) with i->j, j->k, i->k whatever the rest of its triad, which includes the FFLs
    inside 120C and 210 triads)."""
    if types is None:
        types = TRIAD_TYPES
    if isinstance(types, str):
        types = (types,)
    bad = [t for t in types if t not in TRIAD_TYPES]
    if bad:
        raise ValueError(f"types must be triad type names from {TRIAD_TYPES}, got {bad}")
    mask = sum(1 << TRIAD_TYPES.index(t) for t in set(types))
    g = to_graph(W, transpose=transpose, key=key)
    nodes, pos, tcode = torch.ops.sparse_engine.transitive_semicycles(g.row_ptr, g.col_idx, g.values, mask)
    nodes, pos, tcode = nodes.numpy(), pos.numpy(), tcode.numpy()
    order = np.lexsort((nodes[:, 2], nodes[:, 1], nodes[:, 0]))
    nodes, pos, tcode = nodes[order], pos[order], tcode[order]
    weights = g.values.numpy()[pos] if len(pos) else np.zeros((0, 3), g.values.numpy().dtype)
    src_pos = g.source_positions(torch.from_numpy(pos)).numpy() if len(pos) else pos
    return FeedForwardLoops(nodes, weights, src_pos, np.asarray(TRIAD_TYPES, dtype=object)[tcode.astype(np.int64)])
