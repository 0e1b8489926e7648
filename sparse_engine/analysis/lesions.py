"""Motif lesions: remove feed-forward loops (FFLs) from a trained recurrent weight, cumulatively,
and re-evaluate the model after each removal (Zhang et al. 2023).

"Remove" means the FFL's three connections (i->j, j->k, i->k) are taken out of the sparse
pattern (they are no longer stored, not merely set to 0), so the forward pass and any later
analysis see them gone. Kinds of removal:

* ``"unbalanced"``: FFLs with w_ij * w_jk * w_ik < 0;
* ``"balanced"``: FFLs with w_ij * w_jk * w_ik > 0;
* ``"random"``: any FFL (the motif control);
* ``"edges"``: random connections, three per step (as many as one FFL), the control that
  ignores motifs altogether.

Modes:

* ``"fixed"`` (default, as the paper's code does): the FFLs of the kind are found once on the
  intact weight, shuffled (one seeded order per run) and removed in that order; a motif whose
  connections were already taken by an earlier removal loses only the rest. This is repeated
  ``runs`` times (10 by default, as the paper) and the curves averaged (:class:`LesionRuns`).
  The paper lesions the FFLs it planted in the initial mask; with ``motifs=`` you give that list
  (nodes (i, j, k)), otherwise every FFL of the intact graph is a candidate.
* ``"redetect"``: after each removal the FFLs are found again on the lesioned graph (removals
  destroy FFLs that shared an edge) and the next one is drawn at random among those of the kind
  still present; it stops when none is left. The answer to "how many motifs of this kind must go
  before the model fails" rather than a replay of one list.

By default an FFL is any (i, j, k) with i->j, j->k and i->k, whatever else connects the three
nodes (``types=None``); ``types=`` restricts the candidates to triads of those types (e.g. the
census's transitive types).

The weight is modified in place while ``evaluate()`` runs and restored after each run (and at
the end unless ``restore=False``, which leaves the last run's lesioned pattern). Reset
optimizer state yourself if you train the lesioned model afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..sparse import SparseWeight
from ..training.topology import rewire
from .census import feed_forward_loops

__all__ = ["KINDS", "MODES", "LesionCurve", "LesionRuns", "lesion_ffls"]

KINDS = ("unbalanced", "balanced", "random", "edges")
MODES = ("fixed", "redetect")


@dataclass
class LesionCurve:
    """One run: ``scores[i]`` is ``evaluate()`` after ``n_removed[i]`` motifs (or edge triples)
    were removed (0: intact); ``removed`` lists the removed motifs' nodes (i, j, k) in order (for
    ``"edges"``: the source positions of the three connections)."""

    kind: str
    n_removed: list[int] = field(default_factory=list)
    scores: list = field(default_factory=list)
    removed: list[tuple[int, int, int]] = field(default_factory=list)


@dataclass
class LesionRuns:
    """The runs of :func:`lesion_ffls`. ``n_removed``, ``mean`` and ``std`` (ddof=0, as the
    paper's code) are over the steps every run reached (all of them in ``"fixed"`` mode, where
    the runs remove the same motifs in other orders); scores must be numbers for those."""

    kind: str
    mode: str
    curves: list[LesionCurve]

    def _steps(self) -> int:
        return min(len(c.scores) for c in self.curves)

    @property
    def n_removed(self) -> list[int]:
        return self.curves[0].n_removed[: self._steps()]

    def _table(self) -> np.ndarray:
        k = self._steps()
        return np.array([c.scores[:k] for c in self.curves], dtype=np.float64)

    @property
    def mean(self) -> np.ndarray:
        return self._table().mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        return self._table().std(axis=0)


def _candidates(weight, kind, types, transpose, motifs):
    """(labels, [k, 3] source positions) of the removable units of ``kind`` on the intact weight."""
    if kind == "edges":
        return None, np.flatnonzero(weight.values.detach().cpu().numpy() != 0)  # storage positions
    ffl = feed_forward_loops(weight, types=types, transpose=transpose)
    if motifs is not None:
        want = {tuple(int(x) for x in m) for m in motifs}
        keep = np.array([tuple(int(x) for x in row) in want for row in ffl.nodes], dtype=bool)
        ffl_nodes, ffl_pos, bal = ffl.nodes[keep], ffl.positions[keep], ffl.balanced[keep]
    else:
        ffl_nodes, ffl_pos, bal = ffl.nodes, ffl.positions, ffl.balanced
    if kind != "random":
        pick = bal == (kind == "balanced")
        ffl_nodes, ffl_pos = ffl_nodes[pick], ffl_pos[pick]
    return ffl_nodes, ffl_pos


def _apply(weight, original, alive) -> None:
    """The original pattern with the connections where ``alive`` is False taken out."""
    weight.set_pattern(*original)
    rewire(weight, torch.as_tensor(alive, device=weight.values.device))  # prune only


def _fixed_run(weight, evaluate, kind, labels, pos, rng, max_removals, every, original) -> LesionCurve:
    curve = LesionCurve(kind, [0], [evaluate()])
    order = rng.permutation(len(pos))
    if kind == "edges":
        units = [pos[order[s:s + 3]] for s in range(0, len(order), 3)]
        names = [tuple(int(x) for x in u) for u in units]
    else:
        units = [pos[o] for o in order]
        names = [tuple(int(x) for x in labels[o]) for o in order]
    if max_removals is not None:
        units, names = units[:max_removals], names[:max_removals]
    alive = np.ones(weight.nnz, dtype=bool)
    for step, (u, name) in enumerate(zip(units, names), 1):
        alive[u] = False
        curve.removed.append(name)
        if step % every == 0 or step == len(units):
            _apply(weight, original, alive)
            curve.n_removed.append(step)
            curve.scores.append(evaluate())
    return curve


def _drop(weight: SparseWeight, positions) -> None:
    keep = torch.ones(weight.nnz, dtype=torch.bool, device=weight.values.device)
    keep[torch.as_tensor(positions, dtype=torch.long, device=keep.device)] = False
    rewire(weight, keep)  # prune only: the training package's compaction


def _redetect_run(weight, evaluate, kind, types, transpose, rng, max_removals, every) -> LesionCurve:
    curve = LesionCurve(kind, [0], [evaluate()])
    while max_removals is None or len(curve.removed) < max_removals:
        if kind == "edges":
            live = np.flatnonzero(weight.values.detach().cpu().numpy() != 0)
            if len(live) == 0:
                break
            pick = rng.choice(live, size=min(3, len(live)), replace=False)
            _drop(weight, pick)
            curve.removed.append(tuple(int(x) for x in pick))
        else:
            ffl = feed_forward_loops(weight, types=types, transpose=transpose)
            cand = np.arange(len(ffl)) if kind == "random" else np.flatnonzero(ffl.balanced == (kind == "balanced"))
            if len(cand) == 0:
                break
            pick = int(cand[rng.integers(len(cand))])
            _drop(weight, ffl.positions[pick])
            curve.removed.append(tuple(int(x) for x in ffl.nodes[pick]))
        if len(curve.removed) % every == 0:
            curve.n_removed.append(len(curve.removed))
            curve.scores.append(evaluate())
    if curve.n_removed[-1] != len(curve.removed):
        curve.n_removed.append(len(curve.removed))
        curve.scores.append(evaluate())
    return curve


def lesion_ffls(weight: SparseWeight, evaluate, *, kind: str = "unbalanced", mode: str = "fixed", runs: int = 10,
                max_removals: int | None = None, every: int = 1, types=None, motifs=None, transpose: bool = False,
                seed: int = 0, restore: bool = True) -> LesionRuns:
    """Removes motifs of ``kind`` from ``weight`` (a square SparseWeight, the recurrent matrix) in
    ``mode`` (see the module doc), ``runs`` times from the intact weight, each run until its
    list (or, redetecting, the graph) has none left or ``max_removals`` were removed, calling
    ``evaluate()`` first and then after every ``every`` removals (and after the last). Run r
    draws from ``numpy.random.SeedSequence(seed).spawn(runs)[r]``."""
    if not isinstance(weight, SparseWeight):
        raise TypeError(f"weight must be a SparseWeight, got {type(weight).__name__}")
    if not callable(evaluate):
        raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be a positive int, got {runs!r}")
    if max_removals is not None and max_removals < 0:
        raise ValueError(f"max_removals must be >= 0, got {max_removals}")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if motifs is not None and mode != "fixed":
        raise ValueError("motifs (a fixed list of FFLs) only applies to mode='fixed'")
    original = (weight.row_ptr.clone(), weight.col_idx.clone(), weight.values.detach().clone())
    if mode == "fixed":
        labels, pos = _candidates(weight, kind, types, transpose, motifs)
    curves = []
    try:
        for r, child in enumerate(np.random.SeedSequence(seed).spawn(runs)):
            rng = np.random.default_rng(child)
            if r:
                weight.set_pattern(*original)
            if mode == "fixed":
                curves.append(_fixed_run(weight, evaluate, kind, labels, pos, rng, max_removals, every, original))
            else:
                curves.append(_redetect_run(weight, evaluate, kind, types, transpose, rng, max_removals, every))
    finally:
        if restore:
            weight.set_pattern(*original)
    return LesionRuns(kind, mode, curves)
