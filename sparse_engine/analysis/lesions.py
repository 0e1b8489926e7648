"""Motif lesions: remove feed-forward loops from a trained recurrent weight one at a time,
cumulatively, and re-evaluate the model after each removal (Zhang et al. 2023).

"Remove" means the FFL's three connections (i->j, j->k, i->k) are taken out of the sparse
pattern with ``SparseWeight.set_pattern`` (they are no longer stored, not merely set to 0), so
later analysis and the forward pass both see them gone. After each removal the FFLs are found
again on the lesioned graph (removals destroy FFLs that shared an edge), and the next one is
drawn at random (seeded) among those of the requested kind:

* ``"unbalanced"``: w_ij * w_jk * w_ik < 0;
* ``"balanced"``: w_ij * w_jk * w_ik > 0;
* ``"random"``: any FFL (the control).

By default an FFL is any (i, j, k) with i->j, j->k and i->k, whatever else connects the three
nodes (``types=None``). Restricting to triad types (e.g. the census's transitive types) is
allowed, but then a removal can turn a triad of another type (120C, 210) into a counted one, so
FFLs that were not candidates at the start can become candidates later.

The weight is modified in place while ``evaluate()`` runs and restored at the end unless
``restore=False``. Reset optimizer state yourself if you train the lesioned model afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..sparse import SparseWeight
from ..training.topology import rewire
from .census import feed_forward_loops

__all__ = ["KINDS", "LesionCurve", "lesion_ffls"]

KINDS = ("unbalanced", "balanced", "random")


@dataclass
class LesionCurve:
    """``scores[i]`` is ``evaluate()`` after ``n_removed[i]`` FFLs were removed (0: intact);
    ``removed`` lists the removed FFLs' nodes (i, j, k) in order."""

    kind: str
    n_removed: list[int] = field(default_factory=list)
    scores: list = field(default_factory=list)
    removed: list[tuple[int, int, int]] = field(default_factory=list)


def _drop(weight: SparseWeight, positions) -> None:
    keep = torch.ones(weight.nnz, dtype=torch.bool, device=weight.values.device)
    keep[torch.as_tensor(positions, dtype=torch.long, device=keep.device)] = False
    rewire(weight, keep)  # prune only: the training package's compaction


def lesion_ffls(weight: SparseWeight, evaluate, *, kind: str = "unbalanced", max_removals: int | None = None,
                every: int = 1, types=None, transpose: bool = False, seed: int = 0,
                restore: bool = True) -> LesionCurve:
    """Removes FFLs of ``kind`` from ``weight`` (a square SparseWeight, the recurrent matrix)
    until none is left or ``max_removals`` were removed, calling ``evaluate()`` first and then
    after every ``every`` removals (and after the last). Returns the curve."""
    if not isinstance(weight, SparseWeight):
        raise TypeError(f"weight must be a SparseWeight, got {type(weight).__name__}")
    if not callable(evaluate):
        raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if max_removals is not None and max_removals < 0:
        raise ValueError(f"max_removals must be >= 0, got {max_removals}")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    original = (weight.row_ptr.clone(), weight.col_idx.clone(), weight.values.detach().clone())
    rng = np.random.default_rng(seed)
    curve = LesionCurve(kind)
    curve.n_removed.append(0)
    curve.scores.append(evaluate())
    try:
        while max_removals is None or len(curve.removed) < max_removals:
            ffl = feed_forward_loops(weight, types=types, transpose=transpose)
            if kind == "random":
                cand = np.arange(len(ffl))
            else:
                cand = np.flatnonzero(ffl.balanced == (kind == "balanced"))
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
    finally:
        if restore:
            weight.set_pattern(*original)
    return curve
