"""Recording balance during training: a callback for the topology controllers.

Contract: the controller calls ``recorder(step, weights)`` after each topology update, where
``step`` is an int (epoch or batch counter, the controller's choice) and ``weights`` maps layer
names to SparseWeights (e.g. ``sparse_engine.sparse.sparse_weights(model)``). For
every square weight (a recurrent matrix; others are skipped, or pick names with ``layers=``)
the recorder appends one record, a flat dict::

    {"step", "layer", "n", "edges", "positive_edges", "negative_edges",
     <the 16 census counts>, <per transitive type: _balanced, _unbalanced, _CB, _PB, _CI>,
     <balance_semicycle, balance_triad, balance_weighted and their per-type values>}

``records`` holds them in call order; ``columns()`` / ``rows()`` give a pandas-free table and
``to_csv(path)`` writes it (``pandas.DataFrame(recorder.records)`` works too).
"""
from __future__ import annotations

import csv
from collections.abc import Mapping

from ..sparse import SparseWeight
from .balance import balance_measures
from .census import _census_of_graph
from .graph import edges, to_graph

__all__ = ["BalanceRecorder"]


class BalanceRecorder:
    """Callable ``recorder(step, weights)`` storing census and balance records (see module doc).

    layers: names to record (default: every square weight); transpose: the weights are stored
    as ``h @ W`` (see graph.py); every: record only when ``step % every == 0``."""

    def __init__(self, *, layers=None, transpose: bool = False, every: int = 1):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.layers = None if layers is None else set([layers] if isinstance(layers, str) else layers)
        self.transpose = transpose
        self.every = every
        self.records: list[dict] = []

    def __call__(self, step: int, weights: Mapping[str, SparseWeight]) -> None:
        if not isinstance(step, int):
            raise TypeError(f"step must be an int, got {type(step).__name__}")
        if not isinstance(weights, Mapping):
            raise TypeError(f"weights must be a mapping name -> SparseWeight, got {type(weights).__name__}")
        if step % self.every:
            return
        for name, w in weights.items():
            if not isinstance(w, SparseWeight):
                raise TypeError(f"weights[{name!r}] must be a SparseWeight, got {type(w).__name__}")
            if self.layers is not None and name not in self.layers:
                continue
            if w.shape[0] != w.shape[1]:
                if self.layers is not None:
                    raise ValueError(f"weights[{name!r}] must be square to be analysed, got shape {w.shape}")
                continue
            g = to_graph(w, transpose=self.transpose)
            _, _, val = edges(g)
            rec = {"step": step, "layer": name, "n": g.n, "edges": len(val),
                   "positive_edges": int((val > 0).sum()), "negative_edges": int((val < 0).sum())}
            c = _census_of_graph(g)
            rec.update(c.as_dict())
            rec.update(balance_measures(c))
            self.records.append(rec)

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
