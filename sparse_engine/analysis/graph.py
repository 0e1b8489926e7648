"""Turning weights into directed signed graphs, and export to networkx / Gephi CSV.

Convention (used by every function in :mod:`sparse_engine.analysis`): a square matrix W is the
graph with an edge i -> j wherever W[j, i] != 0 and i != j. Rows are postsynaptic, columns
presynaptic, as in ``y = W x`` (and ``nn.Linear.weight``, :class:`~sparse_engine.SparseWeight`).
The edge's weight is W[j, i] and its sign the sign of that weight. Self-loops are dropped and
explicitly stored zeros are not edges. For a matrix stored the other way round (used as
``h @ W_rec``, so that W_rec[i, j] is the weight i -> j) pass ``transpose=True``.

Inputs (``W`` below): a SparseWeight, any scipy.sparse matrix/array, a checkpoint path or a
state_dict (``key=`` names the SparseWeight's prefix, e.g. ``"rnn.weight_hh"``). Nothing here
builds a dense n x n array.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ..sparse import SparseWeight

__all__ = ["GraphCSR", "to_graph", "edges", "load_sparse_weight", "to_networkx", "read_edge_csv",
           "write_edge_csv"]


@dataclass
class GraphCSR:
    """A square CSR in the post-row convention: entry k of row r is the edge col_idx[k] -> r
    with weight values[k] (zeros and self-loops are still present and ignored by the kernels).
    ``positions[k]`` is where entry k is stored in the source SparseWeight's ``values``
    (None: the same position), so lesions can edit the source."""

    row_ptr: torch.Tensor  # int64 [n+1]
    col_idx: torch.Tensor  # int32 [nnz]
    values: torch.Tensor   # float32/float64 [nnz]
    positions: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return self.row_ptr.numel() - 1

    def source_positions(self, k: torch.Tensor) -> torch.Tensor:
        return k if self.positions is None else self.positions[k]


def _state_dict_weight(state: dict, key: str | None) -> SparseWeight:
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
            break
    prefixes = sorted(k[: -len("row_ptr")] for k in state if isinstance(k, str) and k.endswith("row_ptr")
                      and (k[: -len("row_ptr")] + "col_idx") in state)
    if key is None:
        if len(prefixes) != 1:
            raise ValueError(f"key must name one SparseWeight of the checkpoint, found prefixes "
                             f"{[p.rstrip('.') for p in prefixes]}")
        prefix = prefixes[0]
    else:
        prefix = key if key.endswith(".") or key == "" else key + "."
        if prefix + "row_ptr" not in state:
            raise ValueError(f"key={key!r} is not a SparseWeight in the checkpoint; found "
                             f"{[p.rstrip('.') for p in prefixes]}")
    row_ptr, col_idx, values = (state[prefix + n] for n in ("row_ptr", "col_idx", "values"))
    extra = state.get(prefix + "_extra_state")
    if isinstance(extra, dict) and "shape" in extra:
        shape = tuple(extra["shape"])
    else:
        shape = (row_ptr.numel() - 1, int(col_idx.max()) + 1 if col_idx.numel() else 0)
    return SparseWeight(row_ptr, col_idx, values.detach().clone(), shape, requires_grad=False)


def load_sparse_weight(checkpoint, key: str | None = None) -> SparseWeight:
    """The SparseWeight stored under ``key`` in a checkpoint (path or state_dict). With one
    SparseWeight in the checkpoint, ``key`` may be omitted."""
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict):
        raise TypeError(f"checkpoint must be a path or a state_dict, got {type(checkpoint).__name__}")
    return _state_dict_weight(checkpoint, key)


def _check_square(shape, name="W") -> int:
    if shape[0] != shape[1]:
        raise ValueError(f"{name} must be square (a recurrent matrix), got shape {tuple(shape)}")
    return int(shape[0])


def to_graph(W, *, transpose: bool = False, key: str | None = None) -> GraphCSR:
    """``W`` (SparseWeight, scipy.sparse, checkpoint path or state_dict) as a :class:`GraphCSR`.
    O(nnz); the SparseWeight's own tensors are used without copying when possible."""
    if isinstance(W, GraphCSR):
        return W
    if isinstance(W, (str, os.PathLike, dict)):
        W = load_sparse_weight(W, key)
    if isinstance(W, SparseWeight):
        _check_square(W.shape)
        values = W.values.detach().cpu()
        if not transpose:
            g = GraphCSR(W.row_ptr.cpu(), W.col_idx.cpu(), values)
        else:
            perm = W.csc_perm.cpu()
            g = GraphCSR(W.csc_ptr.cpu(), W.csc_row.cpu(), values[perm], perm)
    elif sp.issparse(W):
        _check_square(W.shape)
        m = sp.csr_matrix(W.T if transpose else W, copy=True)
        m.sum_duplicates()
        m.sort_indices()
        data = m.data
        if data.dtype not in (np.float32, np.float64):
            if not (np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_):
                raise TypeError(f"W must hold real numbers, got dtype {data.dtype}")
            data = data.astype(np.float64)
        g = GraphCSR(torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int32)),
                     torch.from_numpy(np.ascontiguousarray(data)))
    else:
        raise TypeError("W must be a SparseWeight, a scipy.sparse matrix, a checkpoint path or a "
                        f"state_dict, got {type(W).__name__}")
    if not bool(torch.isfinite(g.values).all()):
        raise ValueError("W must have finite values (found NaN or inf)")
    return g


def edges(W, *, transpose: bool = False, key: str | None = None, self_loops: bool = False):
    """(src, dst, weight) numpy arrays of the graph's edges (zeros and, unless ``self_loops``,
    self-loops removed), ordered by (dst, src)."""
    g = to_graph(W, transpose=transpose, key=key)
    dst = np.repeat(np.arange(g.n, dtype=np.int64), np.diff(g.row_ptr.numpy()))
    src = g.col_idx.numpy().astype(np.int64)
    w = g.values.numpy()
    keep = (w != 0) & ((src != dst) | self_loops)
    return src[keep], dst[keep], w[keep]


def to_networkx(W, *, transpose: bool = False, key: str | None = None):
    """A ``networkx.DiGraph`` with every node 0..n-1 and edge attributes ``weight`` and
    ``sign`` (+1/-1)."""
    import networkx as nx

    g = to_graph(W, transpose=transpose, key=key)
    src, dst, w = edges(g)
    G = nx.DiGraph()
    G.add_nodes_from(range(g.n))
    G.add_edges_from((int(s), int(d), {"weight": float(x), "sign": 1 if x > 0 else -1})
                     for s, d, x in zip(src, dst, w))
    return G


def read_edge_csv(path, n: int | None = None) -> sp.csr_matrix:
    """Reads a Gephi edge list ``Id,Source,Target,Weight`` (Source -> Target is the weight from
    presynaptic Source to postsynaptic Target) into an n x n scipy CSR in this module's
    convention, i.e. ``W[Target, Source] = Weight`` (the transpose of a W_rec used as
    ``h @ W_rec``). ``n`` defaults to the largest id + 1; give it when the last units may
    have no edges."""
    path = Path(path)
    with open(path, newline="") as f:
        header = [h.strip() for h in next(csv.reader(f))]
    need = ("Source", "Target", "Weight")
    if any(h not in header for h in need):
        raise ValueError(f"path must be a CSV with columns {need}, got header {header}")
    cols = [header.index(h) for h in need]
    data = np.loadtxt(path, delimiter=",", skiprows=1, usecols=cols, ndmin=2, dtype=np.float64)
    src, dst, w = data[:, 0].astype(np.int64), data[:, 1].astype(np.int64), data[:, 2]
    size = int(max(src.max(initial=-1), dst.max(initial=-1))) + 1
    if n is None:
        n = size
    elif n < size:
        raise ValueError(f"n={n} is smaller than the largest node id + 1 = {size} in {path}")
    return sp.csr_matrix((w, (dst, src)), shape=(n, n))


def write_edge_csv(W, path, *, transpose: bool = False, key: str | None = None) -> None:
    """Writes the nonzero entries as a Gephi edge list ``Id,Source,Target,Weight`` with
    Source -> Target from presynaptic to postsynaptic (the format :func:`read_edge_csv` reads).
    Self-loops are written too (the analyses ignore them), so reading gives the same matrix."""
    src, dst, w = edges(W, transpose=transpose, key=key, self_loops=True)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["Id", "Source", "Target", "Weight"])
        out.writerows(zip(range(len(src)), src.tolist(), dst.tolist(), w.tolist()))
