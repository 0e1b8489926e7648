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
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ..sparse import SparseWeight

__all__ = ["GraphCSR", "to_graph", "edges", "load_sparse_weight", "to_networkx", "read_edge_csv",
           "write_edge_csv", "ID_SPREAD"]


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


def _one_line(e: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters) of an exception."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _torch_load(path):
    """``torch.load`` (weights only, to the CPU) with one error for a missing file
    (FileNotFoundError) and one for anything unreadable (CheckpointError, a ValueError naming the
    file, never the unpickler's internals)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    from ..io.checkpoint import read_payload

    return read_payload(path, weights_only=True)  # CheckpointError (a ValueError) for a damaged file


def load_sparse_weight(checkpoint, key: str | None = None) -> SparseWeight:
    """The SparseWeight stored under ``key`` in a checkpoint (path or state_dict). With one
    SparseWeight in the checkpoint, ``key`` may be omitted."""
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = _torch_load(checkpoint)
    if not isinstance(checkpoint, dict):
        raise TypeError(f"checkpoint must be a path or a state_dict, got {type(checkpoint).__name__}")
    return _state_dict_weight(checkpoint, key)


def _check_square(shape, name="W") -> int:
    if shape[0] != shape[1]:
        hint = ""
        if shape[1] and shape[0] in (3 * shape[1], 4 * shape[1]):
            hint = ("; it looks like the stacked gate blocks of a GRU/LSTM W_hh: take one block or their "
                    "sum with sparse_engine.analysis.gate_graphs")
        raise ValueError(f"{name} must be square (a recurrent matrix), got shape {tuple(shape)}{hint}")
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
        if values.dtype not in (torch.float32, torch.float64):  # 2-byte weights: the kernels read float32
            values = values.float()
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


#: Without ``n``, an edge list's ids are used as unit numbers while the largest id + 1 is at most
#: this many times the number of distinct ids (the isolated units below the largest id stay
#: nodes, as in every network of the sparse-RNNs code); ids spread wider are relabelled.
ID_SPREAD = 2

#: The graph kernels index nodes with int32.
MAX_NODES = 2**31 - 1


def _where(path, line) -> str:
    return f"{path}, line {line}"


def _node_id(text: str, column: str, where: str) -> int:
    t = text.strip()
    try:
        v = int(t)
    except ValueError:
        try:
            f = float(t)
        except ValueError:
            f = math.nan
        if not f.is_integer():
            raise ValueError(f"{where}: {column} {text!r} is not a node id (a non-negative integer)") from None
        v = int(f)
    if not 0 <= v < 2**63:
        raise ValueError(f"{where}: {column} {text!r} is not a node id (a non-negative integer below 2**63)")
    return v


def _weight(text: str, where: str) -> float:
    try:
        v = float(text.strip())
    except ValueError:
        raise ValueError(f"{where}: Weight {text!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{where}: Weight {text!r} is not a finite number")
    return v


def _read_edges(path, reader, need, src, dst, w, lines) -> None:
    """Reads the header and the rows of an edge list into src, dst, w (and each row's line)."""
    header = None
    for row in reader:
        if any(c.strip() for c in row):
            header = [c.strip() for c in row]
            break
    if header is None:
        raise ValueError(f"{path} is empty: expected a Gephi edge list with the header Id,Source,Target,Weight")
    lower = [h.lower() for h in header]
    missing = [h for h in need if h.lower() not in lower]
    if missing:
        raise ValueError(f"{_where(path, reader.line_num)}: an edge list needs the columns {need}, "
                         f"got header {header} (missing {missing})")
    c_src, c_dst, c_w = (lower.index(h.lower()) for h in need)
    for row in reader:
        if not any(c.strip() for c in row):
            continue
        where = _where(path, reader.line_num)
        if len(row) != len(header):
            raise ValueError(f"{where}: {len(row)} fields, the header has {len(header)} columns")
        src.append(_node_id(row[c_src], "Source", where))
        dst.append(_node_id(row[c_dst], "Target", where))
        w.append(_weight(row[c_w], where))
        lines.append(reader.line_num)


def _refuse_duplicates(path, src: np.ndarray, dst: np.ndarray, lines: list[int]) -> None:
    """ValueError naming the first edge given twice and both its lines: summed they may cancel or
    flip a sign, and which row should win is the file's to say (networkx, which the papers' code
    reads through, keeps the last)."""
    if len(src) < 2:
        return
    order = np.lexsort((dst, src))  # stable: equal edges in file order
    s, d = src[order], dst[order]
    same = np.flatnonzero((s[1:] == s[:-1]) & (d[1:] == d[:-1]))
    if same.size:
        k = same[np.argmin(order[same + 1])]  # the repeat that comes first in the file
        i, j = order[k], order[k + 1]
        raise ValueError(f"{_where(path, lines[j])}: the edge {src[j]} -> {dst[j]} is given again (first at line "
                         f"{lines[i]}): an edge list holds each edge once")


def read_edge_csv(path, n: int | None = None, *, return_ids: bool = False):
    """Reads a Gephi edge list with columns ``Source,Target,Weight`` (any others, e.g. ``Id``,
    ``Type``, are ignored; names case-insensitive) into an n x n scipy CSR in this module's
    convention: Source -> Target is the weight from presynaptic Source to postsynaptic Target,
    i.e. ``W[Target, Source] = Weight`` (the transpose of a W_rec used as ``h @ W_rec``).

    Node ids. With ``n``, ids are unit numbers 0..n-1 (give it when the last units may have no
    edges). Without it, ids are used as they are, n = largest id + 1, while that is at most
    :data:`ID_SPREAD` times the number of distinct ids (so a network whose units are 0..n-1 reads
    exactly as its ids say); otherwise the distinct ids are relabelled 0..k-1 in increasing
    order, so a huge id costs nothing. ``return_ids=True`` returns ``(W, ids)`` with ``ids[k]``
    the original id of node k (``arange(n)`` when ids were kept); :func:`write_edge_csv` takes
    it back.

    Errors (ValueError naming the file, and the line for a bad row): an empty file, a missing
    column, a row with another number of fields than the header, an id that is not a
    non-negative integer, a weight that is not a finite number, an edge given twice (summed, two
    rows may cancel or flip its sign), no edges at all (unless ``n``)."""
    path = Path(path)
    need = ("Source", "Target", "Weight")
    src, dst, w, lines = [], [], [], []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            _read_edges(path, reader, need, src, dst, w, lines)
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not a UTF-8 text edge list ({_one_line(e)})") from None
        except csv.Error as e:
            raise ValueError(f"{_where(path, reader.line_num)}: not a CSV row ({_one_line(e)})") from None
    if n is not None and not 0 <= n <= MAX_NODES:
        raise ValueError(f"n must be in [0, {MAX_NODES}], got {n}")
    if not src and n is None:
        raise ValueError(f"{path} has no edges (only a header); give n to read it as an empty graph")
    src_a, dst_a = np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64)
    w_a = np.array(w, dtype=np.float64)
    _refuse_duplicates(path, src_a, dst_a, lines)
    top = int(max(src_a.max(initial=-1), dst_a.max(initial=-1))) + 1
    if n is not None:
        if n < top:
            raise ValueError(f"n={n} is smaller than the largest node id + 1 = {top} in {path}")
        ids = np.arange(n, dtype=np.int64)
    else:
        uniq = np.unique(np.concatenate([src_a, dst_a]))
        if top <= ID_SPREAD * len(uniq):
            n, ids = top, np.arange(top, dtype=np.int64)
        else:
            if len(uniq) > MAX_NODES:
                raise ValueError(f"{path} has {len(uniq):,} distinct node ids, more than {MAX_NODES:,}")
            n, ids = len(uniq), uniq
            src_a, dst_a = np.searchsorted(uniq, src_a), np.searchsorted(uniq, dst_a)
    W = sp.csr_matrix((w_a, (dst_a, src_a)), shape=(n, n))
    return (W, ids) if return_ids else W


def write_edge_csv(W, path, *, transpose: bool = False, key: str | None = None, ids=None) -> None:
    """Writes the nonzero entries as a Gephi edge list ``Id,Source,Target,Weight`` with
    Source -> Target from presynaptic to postsynaptic (the format :func:`read_edge_csv` reads).
    Self-loops are written too (the analyses ignore them), so reading gives the same matrix.
    ``ids``: the original id of each node (from ``read_edge_csv(..., return_ids=True)``), written
    instead of the node numbers."""
    src, dst, w = edges(W, transpose=transpose, key=key, self_loops=True)
    if ids is not None:
        ids = np.asarray(ids, dtype=np.int64)
        n = to_graph(W, transpose=transpose, key=key).n
        if ids.shape != (n,):
            raise ValueError(f"ids must give one id per node ({n}), got shape {ids.shape}")
        src, dst = ids[src], ids[dst]
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["Id", "Source", "Target", "Weight"])
        out.writerows(zip(range(len(src)), src.tolist(), dst.tolist(), w.tolist()))
