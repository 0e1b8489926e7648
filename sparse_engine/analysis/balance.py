"""Structural balance of signed directed graphs: the three definitions found in Zhang et al.
(2023)'s code, computed from a :class:`~sparse_engine.analysis.census.TriadCensus`.

Only the transitive triad types 030T, 120D, 120U and 300 take part (see census.py for
semicycles and CB / PB / CI triads).

* ``"semicycle"`` (a): per type BR_X = balanced / (balanced + unbalanced) semicycles; the value
  is the mean of BR_X over the types that have at least one semicycle. A type with no
  semicycles has BR_X = NaN and is left out of the mean (and reported as NaN); a type whose
  semicycles are all unbalanced has BR_X = 0 and *is* in the mean (the original code dropped
  those silently).
* ``"triad"`` (b): a triad is balanced when all of its semicycles are (CB), unbalanced when any
  is not; per type CB_X / triads_X, value = sum CB / sum triads over the four types.
* ``"weighted"`` (c): per type (CB + 0.5 PB) / (CB + PB + CI); value = mean over the types
  that have at least one triad (empty types NaN, left out as in (a)).
A graph without any transitive triad has value NaN under every definition.

Conventions. ``convention="default"`` is the above. ``convention="seed"`` reproduces the
paper's public code (``analysis/calculate_triad_balanced.py`` of the sparse-RNNs repository)
number for number: there BR_X is 0 for a type without semicycles, and the mean of (a) leaves
out every type whose BR_X is 0, so a type whose semicycles are all unbalanced drops out of the
mean too (which raises the value); the seed code has no (c), and its (b) equals ours. The census
side of that convention (only the nodes that appear in edges) is
``signed_triad_census(..., nodes="edges")``. On the shipped networks the two conventions differ
where a transitive type has no balanced semicycle (e.g. two Person_node pruning networks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .census import TRANSITIVE_TYPES, TriadCensus, feed_forward_loops, signed_triad_census

__all__ = ["DEFINITIONS", "CONVENTIONS", "Balance", "structural_balance", "balance_measures", "ffl_coherence"]

DEFINITIONS = ("semicycle", "triad", "weighted")
CONVENTIONS = ("default", "seed")


@dataclass
class Balance:
    definition: str
    per_type: dict[str, float]  # NaN where the type is empty
    value: float


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def _mean(xs) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def _from_census(c: TriadCensus, definition: str, convention: str = "default") -> Balance:
    T = TRANSITIVE_TYPES
    if definition == "semicycle":
        per = {t: _ratio(c.balanced[t], c.balanced[t] + c.unbalanced[t]) for t in T}
        if convention == "seed":  # empty types are 0, and every 0 is left out of the mean
            per = {t: 0.0 if math.isnan(v) else v for t, v in per.items()}
            return Balance(definition, per, _mean(v for v in per.values() if v != 0))
        return Balance(definition, per, _mean(per.values()))
    triads = {t: c.cb[t] + c.pb[t] + c.ci[t] for t in T}
    if definition == "triad":
        per = {t: _ratio(c.cb[t], triads[t]) for t in T}
        return Balance(definition, per, _ratio(sum(c.cb.values()), sum(triads.values())))
    if definition == "weighted":
        per = {t: _ratio(c.cb[t] + 0.5 * c.pb[t], triads[t]) for t in T}
        return Balance(definition, per, _mean(per.values()))
    raise ValueError(f"definition must be one of {DEFINITIONS}, got {definition!r}")


def structural_balance(W, definition: str = "semicycle", *, convention: str = "default", transpose: bool = False,
                       key: str | None = None) -> Balance:
    """Structural balance of ``W`` (any input of :func:`~sparse_engine.analysis.to_graph`, or a
    TriadCensus already computed) under one of :data:`DEFINITIONS` and :data:`CONVENTIONS`."""
    if definition not in DEFINITIONS:
        raise ValueError(f"definition must be one of {DEFINITIONS}, got {definition!r}")
    _check_convention(convention)
    c = W if isinstance(W, TriadCensus) else signed_triad_census(W, transpose=transpose, key=key)
    return _from_census(c, definition, convention)


def balance_measures(c: TriadCensus, convention: str = "default") -> dict[str, float]:
    """Every balance number of a census, flat: ``balance_<definition>`` and
    ``balance_<definition>_<type>``."""
    _check_convention(convention)
    out = {}
    for d in DEFINITIONS:
        b = _from_census(c, d, convention)
        out[f"balance_{d}"] = b.value
        out.update({f"balance_{d}_{t}": v for t, v in b.per_type.items()})
    return out


def ffl_coherence(W, *, types=TRANSITIVE_TYPES, transpose: bool = False, key: str | None = None) -> np.ndarray:
    """w_ij * w_jk + w_ik for every feed-forward loop i->j->k, i->k (in the order of
    :func:`~sparse_engine.analysis.feed_forward_loops`)."""
    return feed_forward_loops(W, types=types, transpose=transpose, key=key).coherence
