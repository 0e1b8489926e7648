"""Recording balance during training: a callback for the topology controllers, and an
end-of-epoch record for training without one.

When records are taken:

* ``recorder(step, weights)``: the controllers call it after each topology update, with
  ``step`` the optimizer steps so far and ``weights`` their SparseWeights by name (a record is
  taken when ``step % every == 0``; the weights are recorded after the update, so connections
  regrown at zero are stored but are not yet edges);
* ``recorder.end_epoch(step, weights, epoch)``: ``sparse-engine train --record-balance`` calls
  it at the end of every epoch (after the controller's end-of-epoch update, if any) with every
  recurrent weight of the model, sparse or dense (:func:`~.recurrent.recurrent_weights`), so a
  run without a topology algorithm still gets one record per epoch. A weight already recorded
  at the same step (by an update at the end of the epoch) is not recorded twice.

What is recorded. By default the weights named like torch's hidden-to-hidden matrices
(``weight_hh*``; :func:`~.recurrent.is_recurrent_name`), or, when no name is, every weight that
is square or a stack of 3 or 4 square gate blocks; ``layers=`` names them instead (each must
have such a shape). A weight with one block gives one record (gate ``h``); an LSTM's / GRU's
W_hh one per gate block (``i, f, g, o`` / ``r, z, n``) and one for the summed graph (``sum``),
see :mod:`.recurrent`. Each record is a flat dict::

    {"step", "epoch", "event" ("update" or "epoch_end"), "layer", "gate", "dense", "n",
     "stored" (stored entries of the block, explicit zeros included), "edges" (nonzero
     off-diagonal entries), "positive_edges", "negative_edges",
     <the 16 census counts>, <per transitive type: _balanced, _unbalanced, _CB, _PB, _CI>,
     <balance_semicycle, balance_triad, balance_weighted and their per-type values>}

With ``null=K`` each record also holds, for each definition d, the null model's
``null_mean_balance_<d>``, ``null_std_balance_<d>`` and ``z_balance_<d>`` from K randomised
copies (``null_method``, seeded by ``seed`` + the record's step; :func:`~.nulls.null_model_test`):
the band the balance-over-epochs figure draws. It costs K more censuses per record.

``epoch`` is the ``epoch`` argument of ``end_epoch``, else the attribute ``recorder.epoch``
(which ``train`` sets to the current epoch, 1-based; None by default). ``records`` holds them
in call order; ``columns()`` / ``rows()`` give a pandas-free table and ``to_csv(path)`` writes
it (``pandas.DataFrame(recorder.records)`` works too).

Written as it goes. With ``path=`` the CSV is written while training runs: the first record
writes the header and every record held so far (so a resumed run, whose records came back from
the checkpoint, rewrites them first), each later one appends its rows and flushes, so a run
that stops early keeps its records. :func:`read_record` reads such a file back as a list of
dicts with numbers as numbers (the table the plots draw from).

Cost. One record is one signed census of the graph: O(edges x average forward degree), about
a second for a million edges on one core, independent of the training step's cost (see
docs/analysis.md for the measured fraction of a 100,000-neuron epoch).
"""
from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from ..sparse import SparseWeight
from .balance import balance_measures
from .census import _census_of_graph
from .graph import edges, to_graph
from .recurrent import gate_graphs, gate_names, is_recurrent_name

__all__ = ["BalanceRecorder", "read_record"]


class BalanceRecorder:
    """Callable ``recorder(step, weights)`` storing census and balance records (see module doc).

    layers: names to record (default: the recurrent weights, see the module doc); transpose: the
    weights are stored as ``h @ W`` (see graph.py); every: record an update only when
    ``step % every == 0``; path: a CSV written as records are taken; null, null_method, seed:
    null-model statistics per record (see the module doc)."""

    def __init__(self, *, layers=None, transpose: bool = False, every: int = 1, path=None, null: int = 0,
                 null_method: str = "sign_shuffle", seed: int = 0):
        from .nulls import METHODS

        if not isinstance(null, int) or null < 0 or null == 1:
            raise ValueError(f"null must be 0 (none) or an int >= 2 (randomised copies per record), got {null!r}")
        if null_method not in METHODS:
            raise ValueError(f"null_method must be one of {METHODS}, got {null_method!r}")
        self.null, self.null_method, self.seed = null, null_method, seed
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file path or None, got {type(path).__name__}")
        self.path = path
        self._written: int | None = None  # records already in the file (None: file not started)
        self._columns: list[str] = []
        self.layers = None if layers is None else set([layers] if isinstance(layers, str) else layers)
        self.transpose = transpose
        self.every = every
        self.epoch = None
        self.records: list[dict] = []

    def __call__(self, step: int, weights: Mapping[str, SparseWeight]) -> None:
        self._check(step, weights)
        if step % self.every:
            return
        self.record(step, weights)

    def end_epoch(self, step: int, weights: Mapping, epoch: int | None = None) -> None:
        """The end-of-epoch record (event ``epoch_end``) of each weight not yet recorded at ``step``."""
        self._check(step, weights)
        done = {r["layer"] for r in self.records if r["step"] == step}  # from the records: survives a resume
        fresh = {k: w for k, w in weights.items() if k not in done}
        self.record(step, fresh, event="epoch_end", epoch=epoch)

    @staticmethod
    def _check(step, weights) -> None:
        if not isinstance(step, int):
            raise TypeError(f"step must be an int, got {type(step).__name__}")
        if not isinstance(weights, Mapping):
            raise TypeError(f"weights must be a mapping name -> SparseWeight, got {type(weights).__name__}")

    def _selected(self, weights: Mapping) -> list[str]:
        for name, w in weights.items():
            if not isinstance(w, (SparseWeight, torch.Tensor)):
                raise TypeError(f"weights[{name!r}] must be a SparseWeight or a dense tensor, got {type(w).__name__}")
        if self.layers is not None:
            return [n for n in weights if n in self.layers]
        recurrent = [n for n in weights if is_recurrent_name(n)]
        if recurrent:
            return recurrent
        out = []
        for n, w in weights.items():
            try:
                gate_names(w.shape)
            except ValueError:
                continue  # neither square nor a gate stack: not a recurrent matrix
            out.append(n)
        return out

    def record(self, step: int, weights: Mapping, *, event: str = "update", epoch: int | None = None) -> None:
        """Records every selected weight of ``weights`` now (no ``every`` filter)."""
        self._check(step, weights)
        epoch = self.epoch if epoch is None else epoch
        for name in self._selected(weights):
            w = weights[name]
            label = f"weights[{name!r}]"
            if self.layers is not None:
                try:
                    gate_names(w.shape, label)
                except ValueError as e:
                    raise ValueError(f"{e}; it must be square to be analysed") from None
            for gate, block in gate_graphs(w, transpose=self.transpose, name=label).items():
                g = to_graph(block)
                _, _, val = edges(g)
                rec = {"step": step, "epoch": epoch, "event": event, "layer": name, "gate": gate,
                       "dense": not isinstance(w, SparseWeight), "n": g.n, "stored": int(block.nnz),
                       "edges": len(val), "positive_edges": int((val > 0).sum()),
                       "negative_edges": int((val < 0).sum())}
                c = _census_of_graph(g)
                rec.update(c.as_dict())
                rec.update(balance_measures(c))
                if self.null:
                    rec.update(self._null_columns(g, step))
                self.records.append(rec)
        if self.path is not None:
            self._write_new()

    def _null_columns(self, g, step: int) -> dict:
        from .balance import DEFINITIONS
        from .nulls import null_model_test

        with warnings.catch_warnings():  # NaN measures (no transitive triad) are expected early in training
            warnings.simplefilter("ignore")
            res = null_model_test(g, self.null_method, K=self.null, seed=self.seed + step)
        out = {}
        for d in DEFINITIONS:
            k = f"balance_{d}"
            out.update({f"null_mean_{k}": res.mean[k], f"null_std_{k}": res.std[k], f"z_{k}": res.z[k]})
        return out

    def _write_new(self) -> None:
        """Appends the records not yet in the file (all of them, header first, the first time or
        when a record brings a new column)."""
        cols = self.columns()
        if self._written is None or cols != self._columns or self._written > len(self.records):
            self.to_csv(self.path)
            return
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerows([r.get(c) for c in cols] for r in self.records[self._written:])
            f.flush()
        self._written = len(self.records)

    def columns(self) -> list[str]:
        cols: list[str] = []
        for r in self.records:
            cols.extend(k for k in r if k not in cols)
        return cols

    def rows(self) -> list[list]:
        cols = self.columns()
        return [[r.get(c) for c in cols] for r in self.records]

    def to_csv(self, path) -> None:
        with open(path, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(self.columns())
            out.writerows(self.rows())
        if self.path is not None and os.path.abspath(path) == os.path.abspath(self.path):
            self._written, self._columns = len(self.records), self.columns()


def _value(text: str):
    """A CSV cell back as Python: '' None, True/False, int, float (nan too), else the text."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_record(path) -> list[dict]:
    """The records of a balance CSV (``--record-balance``, ``BalanceRecorder(path=...)`` or
    ``to_csv``) as dicts in file order, numbers as int/float, empty cells None. A ValueError
    naming the file when it is not such a table (no ``step``/``balance_semicycle`` column)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    with open(path, newline="", encoding="utf-8-sig") as f:  # (a byte-order mark: a spreadsheet's save)
        reader = csv.DictReader(f)
        need = {"step", "layer", "gate", "balance_semicycle"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            got = "no header" if reader.fieldnames is None else ", ".join(reader.fieldnames[:8]) + (
                ", ..." if len(reader.fieldnames) > 8 else "")
            raise ValueError(f"{path} is not a balance record: expected the columns {', '.join(sorted(need))} (a CSV "
                             f"written by --record-balance), got {got}")
        return [_record(path, reader.line_num, row) for row in reader]


def _record(path: Path, line: int, row: dict) -> dict:
    """One row of a balance record as Python values; ValueError naming the file, the line and the
    column of a row that lost or gained cells, or of a number column holding text."""
    if None in row or any(v is None for v in row.values()):
        raise ValueError(f"{path}, line {line}: the row's number of cells differs from the header's")
    out = {k: _value(v) for k, v in row.items()}
    for k, v in out.items():
        numeric = k in ("step", "epoch") or k.startswith(("balance_", "null_mean_", "null_std_", "z_"))
        if numeric and v is not None and (isinstance(v, (str, bool))):
            raise ValueError(f"{path}, line {line}: column {k} holds {row[k]!r}, expected a number")
    if not isinstance(out["step"], int):
        raise ValueError(f"{path}, line {line}: column step holds {row['step']!r}, expected an integer")
    return out
