"""The recurrent (hidden-to-hidden) matrices of the models sparse_engine trains, as graphs: one
per gate and the summed graph; and loading them from a checkpoint, an edge list or a ``.npz``.

Gate blocks. Every cell keeps its W_hh as one (G*H, H) matrix with its G gate blocks stacked
in torch's order (:data:`sparse_engine.kernels.constants.GATE_NAMES`: LSTM i, f, g, o; GRU r, z, n;
RNN and CT-RNN one block, named ``h``). Block k, rows k*H..(k+1)*H, is the H x H matrix through
which unit i drives gate k of unit j (entry [j, i]); each block is a directed signed graph in
the convention of :mod:`.graph`. The number of gates is read from the shape: (H, H) one block,
(3H, H) GRU, (4H, H) LSTM.

The summed graph (:data:`SUM`, ``"sum"``), reported for gated cells: S = sum of the G blocks
(LSTM W_i + W_f + W_g + W_o, GRU W_r + W_z + W_n), an edge i -> j wherever S[j, i] != 0, with
S[j, i] as its weight and sign. Zhang et al. (2023) analyse the recurrent matrix of a vanilla
RNN as a directed signed graph and give no rule for gated cells; the sum is the one graph per
layer that keeps every hidden-to-hidden connection (an edge exists when any gate connects i to
j, unless their weights cancel exactly) signed by the net direct drive. The gates act through
different nonlinearities (sigmoid gates multiply, the tanh candidate adds), so the sum's sign is
a summary, not a linearised influence: the per-gate graphs are reported next to it. For a
one-block cell the block is the graph and no separate sum is reported.

Dense recurrent matrices (a model trained with ``sparse='input'``) are the graphs of their
nonzeros, i.e. (nearly) complete graphs; :class:`RecurrentMatrix` says ``dense=True``.
Explicitly stored zeros (e.g. connections regrown at 0 by a topology update) are not edges.
"""
from __future__ import annotations

import functools
import operator
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..kernels.constants import GATE_NAMES
from ..sparse import SparseWeight
from .graph import _one_line, _state_dict_weight, _torch_load, read_edge_csv

__all__ = ["SUM", "CHECKPOINT_SUFFIXES", "gate_names", "gate_graphs", "is_recurrent_name", "recurrent_weights",
           "RecurrentMatrix", "load_recurrent", "AnalysisResult"]

#: The name of the summed graph of a gated cell's blocks.
SUM = "sum"

#: File suffixes read as ``torch.save`` checkpoints.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")

_BY_GATES = {len(names): names for names in GATE_NAMES.values()}  # 1: h, 3: GRU r z n, 4: LSTM i f g o
_CELL_BY_GATES = {1: "RNN", 3: "GRU", 4: "LSTM"}
_RECURRENT_NAME = re.compile(r"(?:^|\.)weight_hh(?:_l\d+)?(?:_reverse)?$")


def is_recurrent_name(name: str) -> bool:
    """True for torch's names of hidden-to-hidden weights: ``weight_hh``, ``weight_hh_l0``,
    ``rnn.weight_hh_l1_reverse``, ..."""
    return bool(_RECURRENT_NAME.search(name))


def gate_names(shape, name: str = "W") -> tuple[str, ...]:
    """The gate names of a recurrent matrix of this shape: ``("h",)`` for (H, H), GRU's for
    (3H, H), LSTM's for (4H, H); a ValueError naming ``name`` for any other shape."""
    rows, cols = (int(s) for s in shape)
    if cols > 0 and rows % cols == 0 and rows // cols in _BY_GATES:
        return _BY_GATES[rows // cols]
    raise ValueError(f"{name} has shape {(rows, cols)}: not a recurrent matrix (square H x H, or the stacked "
                     "square gate blocks of a GRU (3H x H) or an LSTM (4H x H))")


def _as_scipy(W, name: str) -> tuple[sp.csr_matrix, bool]:
    """(CSR with the stored entries, whether the source was dense)."""
    if isinstance(W, SparseWeight):
        m, dense = W.to_scipy(), False
    elif isinstance(W, torch.Tensor):
        if W.layout != torch.strided or W.dim() != 2:
            raise ValueError(f"{name} must be a 2-D dense tensor or a SparseWeight, got {W.dim()}-D {W.layout}")
        t = W.detach().cpu()
        if t.element_size() == 2 or not t.is_floating_point():
            t = t.float()
        m, dense = sp.csr_matrix(t.numpy()), True
    elif isinstance(W, np.ndarray):
        if W.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array, got {W.ndim}-D")
        m, dense = sp.csr_matrix(W), True
    elif sp.issparse(W):
        m, dense = sp.csr_matrix(W), False
    else:
        raise TypeError(f"{name} must be a SparseWeight, a dense tensor or array, or a scipy.sparse matrix, "
                        f"got {type(W).__name__}")
    if m.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {m.dtype}")
    if m.dtype.kind == "f" and not np.isfinite(m.data).all():
        raise ValueError(f"{name} must have finite values (found NaN or inf)")
    return m, dense


def gate_graphs(W, *, gates=None, summed: bool = True, transpose: bool = False,
                name: str = "W") -> dict[str, sp.csr_matrix]:
    """The H x H graphs of a recurrent matrix ``W`` (SparseWeight, dense tensor or array, or
    scipy.sparse), by name: each gate block in :data:`GATE_NAMES` order and, for gated cells
    (``summed``), :data:`SUM` last. ``gates``: one name or a list to keep (default all).
    ``transpose``: the blocks are used as ``h @ W_k`` (see :mod:`.graph`). O(nnz)."""
    m, _ = _as_scipy(W, name)
    names = gate_names(m.shape, name)
    H = m.shape[1]
    out = {g: m[k * H:(k + 1) * H] for k, g in enumerate(names)}
    if len(names) > 1 and (summed or gates is not None):
        out[SUM] = functools.reduce(operator.add, out.values()).tocsr()
    if gates is not None:
        wanted = [gates] if isinstance(gates, str) else list(gates)
        bad = [g for g in wanted if g not in out]
        if bad:
            raise ValueError(f"gate {bad[0]!r} is not one of {list(out)} ({name}, shape {m.shape})")
        out = {g: out[g] for g in wanted}
    if transpose:
        out = {g: b.T.tocsr() for g, b in out.items()}
    return out


def recurrent_weights(model: nn.Module) -> dict[str, SparseWeight | torch.Tensor]:
    """Every hidden-to-hidden weight of ``model`` by qualified name (``rnn.weight_hh_l0``,
    ``rnn.weight_hh`` of a CT-RNN, ...), SparseWeight or dense Parameter alike."""
    out = {}
    for mod_name, mod in model.named_modules():
        prefix = mod_name + "." if mod_name else ""
        for name, p in mod.named_parameters(recurse=False):
            if p.dim() == 2 and is_recurrent_name(prefix + name):
                out[prefix + name] = p
        for name, child in mod.named_children():
            if isinstance(child, SparseWeight) and is_recurrent_name(prefix + name):
                out[prefix + name] = child
    return out


@dataclass
class RecurrentMatrix:
    """A recurrent matrix loaded for analysis. ``matrix``: the SparseWeight, dense tensor or
    scipy matrix as stored; ``key``: its name in the checkpoint (None for .csv/.npz);
    ``dense``: stored dense; ``ids``: the original node ids of an edge list (node k is
    ``ids[k]``; None otherwise); ``others``: the checkpoint's other recurrent matrices."""

    source: str
    key: str | None
    matrix: object
    dense: bool = False
    ids: np.ndarray | None = None
    others: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.matrix.shape)

    @property
    def gates(self) -> tuple[str, ...]:
        return gate_names(self.shape, self.label)

    @property
    def hidden(self) -> int:
        return self.shape[1]

    @property
    def cell(self) -> str:
        """``"LSTM"``, ``"GRU"`` or ``"RNN"`` (one block: RNN, CT-RNN or any square matrix)."""
        return _CELL_BY_GATES[len(self.gates)]

    @property
    def primary(self) -> str:
        """The graph that stands for the whole matrix: the sum for gated cells, else the block."""
        return SUM if len(self.gates) > 1 else self.gates[0]

    @property
    def label(self) -> str:
        return f"{self.source}: {self.key}" if self.key else self.source

    def graphs(self, gate=None, *, transpose: bool = False) -> dict[str, sp.csr_matrix]:
        """``gate_graphs`` of the matrix: one gate (or :data:`SUM`) by name, or all (None)."""
        return gate_graphs(self.matrix, gates=gate, transpose=transpose, name=self.label)

    def describe(self) -> str:
        gates = self.gates
        what = (f"one {self.hidden} x {self.hidden} block" if len(gates) == 1 else
                f"{self.cell} gate stack, hidden size {self.hidden}: blocks {', '.join(gates)} and their sum")
        text = f"{self.label} ({what})"
        if self.key and not is_recurrent_name(self.key):
            text += "; note: not a hidden-to-hidden weight (weight_hh...), so its graph is not the recurrent network"
        if self.dense:
            text += (": stored dense (a model trained with sparse='input'), so every nonzero entry is an edge "
                     "and the graph is (nearly) complete")
        if self.ids is not None and not np.array_equal(self.ids, np.arange(len(self.ids))):
            text += f"; node ids relabelled 0..{len(self.ids) - 1} in increasing order (largest id {self.ids[-1]})"
        if self.others:
            text += f"; other recurrent matrices (key=/--key): {', '.join(self.others)}"
        return text


_SPARSE_PARTS = ("row_ptr", "col_idx", "values", "_extra_state")


def _matrices(state: dict) -> dict[str, str]:
    """The 2-D matrices of a state_dict, {name: "sparse" or "dense"} in the state_dict's order:
    SparseWeights by prefix (``""`` for a SparseWeight's own state_dict) and dense tensors."""
    sparse = set()
    for k in state:
        if isinstance(k, str) and (k == "row_ptr" or k.endswith(".row_ptr")):
            prefix = k[: -len("row_ptr")]
            if prefix + "col_idx" in state and prefix + "values" in state:
                sparse.add(prefix[:-1])
    names = {}
    for k, v in state.items():
        if not isinstance(k, str):
            continue
        owner, _, part = k.rpartition(".")
        if owner in sparse and part in _SPARSE_PARTS:
            names.setdefault(owner, "sparse")
        elif isinstance(v, torch.Tensor) and v.dim() == 2:
            names[k] = "dense"
    return names


def _unwrap(state: dict) -> dict:
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if wrapper in state and isinstance(state[wrapper], dict):
            return state[wrapper]
    return state


def load_recurrent(source, key: str | None = None) -> RecurrentMatrix:
    """The recurrent matrix of ``source`` for analysis:

    * a checkpoint (``.pt``, ``.pth``, ``.ckpt``; or an already loaded state_dict, also nested
      under ``"model"``/``"state_dict"``): the matrix ``key`` (a SparseWeight's prefix such as
      ``rnn.weight_hh_l1``, or a dense tensor's name); by default the first hidden-to-hidden
      weight (``*weight_hh_l0``, a CT-RNN's ``weight_hh``), sparse or dense; a checkpoint
      without one but with exactly one SparseWeight gives that one;
    * a Gephi edge list (``.csv``, :func:`~sparse_engine.analysis.read_edge_csv`);
    * a scipy sparse matrix (``.npz``, ``scipy.sparse.save_npz``).

    The matrix must be square or a stack of 3 or 4 square gate blocks. Errors: FileNotFoundError
    for a missing file, ValueError naming the file (one line) for anything else: a directory, an
    unknown suffix, a file that is not a checkpoint / edge list / sparse .npz or is truncated, a
    checkpoint without such a matrix, an unknown ``key``, a wrong shape, NaN or inf weights."""
    if isinstance(source, dict):
        return _from_state(source, key, "state_dict")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a checkpoint, edge list or .npz file")
    suffix = path.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        state = _torch_load(path)
        if not isinstance(state, dict):
            raise ValueError(f"{path} holds a {type(state).__name__}, not a checkpoint (a state_dict, or a dict "
                             "with one under 'model' or 'state_dict')")
        return _from_state(state, key, str(path))
    if key is not None:
        raise ValueError(f"{path}: key={key!r} only applies to checkpoints")
    if suffix == ".csv":
        W, ids = read_edge_csv(path, return_ids=True)
        return _checked(RecurrentMatrix(str(path), None, W, ids=ids))
    if suffix == ".npz":
        try:
            W = sp.load_npz(path)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:
            raise ValueError(f"{path} is not a scipy sparse matrix saved by scipy.sparse.save_npz "
                             f"({_one_line(e)})") from e
        return _checked(RecurrentMatrix(str(path), None, W))
    raise ValueError(f"{path}: unknown file type {suffix or '(no suffix)'!r}; expected a checkpoint "
                     f"({', '.join(CHECKPOINT_SUFFIXES)}), a Gephi edge list (.csv) or a scipy sparse matrix (.npz)")


def _from_state(state: dict, key: str | None, label: str) -> RecurrentMatrix:
    state = _unwrap(state)
    kinds = _matrices(state)
    recurrent = [k for k in kinds if is_recurrent_name(k)]
    if key is None:
        if recurrent:
            key = recurrent[0]
        elif [k for k, v in kinds.items() if v == "sparse"] and sum(v == "sparse" for v in kinds.values()) == 1:
            key = next(k for k, v in kinds.items() if v == "sparse")
        else:
            raise ValueError(f"{label} has no recurrent matrix (weight_hh...); name one with key= (--key) among "
                             f"its matrices {list(kinds)}")
    name = key[:-1] if key.endswith(".") else key
    if name not in kinds:
        raise ValueError(f"{label}: {key!r} is not a matrix of the checkpoint; its matrices: {list(kinds)}")
    if kinds[name] == "sparse":
        try:
            W = _state_dict_weight(state, name)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:
            raise ValueError(f"{label}: {name} is not a valid sparse matrix ({_one_line(e)})") from e
        dense = False
    else:
        W, dense = state[name], True
    others = tuple(k for k in recurrent if k != name)
    return _checked(RecurrentMatrix(label, name, W, dense=dense, others=others))


def _checked(m: RecurrentMatrix) -> RecurrentMatrix:
    m.gates  # noqa: B018  (raises for a shape that is not a recurrent matrix)
    _as_scipy(m.matrix, m.label)  # dtype and finite values
    return m


class AnalysisResult(dict):
    """What ``sparse-engine analyze`` (:func:`sparse_engine.runs.analyze`) returns: a dict of
    the overall balance per definition (``semicycle``, ``triad``, ``weighted``) of the
    ``primary`` graph (the chosen gate, else the summed graph of a gated cell, else the one
    block), with attributes

    * ``graphs``: {graph name: {definition: balance}} for every graph analysed (gate order, then
      ``"sum"``);
    * ``census``: {graph name: TriadCensus}; ``null``: {graph name: NullModelResult} (with
      ``null=K``);
    * ``lesions``: {kind: LesionRuns} (with ``lesion=N``);
    * ``matrix``: the :class:`RecurrentMatrix`; ``key``, ``dense``, ``primary``.
    """

    def __init__(self, values: dict, *, matrix: RecurrentMatrix, primary: str, graphs: dict, census: dict,
                 null: dict | None = None, lesions: dict | None = None):
        super().__init__(values)
        self.matrix, self.primary, self.graphs, self.census = matrix, primary, graphs, census
        self.null = null or {}
        self.lesions = lesions or {}

    @property
    def key(self) -> str | None:
        return self.matrix.key

    @property
    def dense(self) -> bool:
        return self.matrix.dense
