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
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .census import TRANSITIVE_TYPES, TriadCensus, feed_forward_loops, signed_triad_census

__all__ = ["DEFINITIONS", "Balance", "structural_balance", "balance_measures", "ffl_coherence"]

DEFINITIONS = ("semicycle", "triad", "weighted")


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


def _from_census(c: TriadCensus, definition: str) -> Balance:
    T = TRANSITIVE_TYPES
    if definition == "semicycle":
        per = {t: _ratio(c.balanced[t], c.balanced[t] + c.unbalanced[t]) for t in T}
        return Balance(definition, per, _mean(per.values()))
    triads = {t: c.cb[t] + c.pb[t] + c.ci[t] for t in T}
    if definition == "triad":
        per = {t: _ratio(c.cb[t], triads[t]) for t in T}
        return Balance(definition, per, _ratio(sum(c.cb.values()), sum(triads.values())))
    if definition == "weighted":
        per = {t: _ratio(c.cb[t] + 0.5 * c.pb[t], triads[t]) for t in T}
        return Balance(definition, per, _mean(per.values()))
    raise ValueError(f"definition must be one of {DEFINITIONS}, got {definition!r}")


def structural_balance(W, definition: str = "semicycle", *, transpose: bool = False,
                       key: str | None = None) -> Balance:
    """Structural balance of ``W`` (any input of :func:`~sparse_engine.analysis.to_graph`, or a
    TriadCensus already computed) under one of :data:`DEFINITIONS`."""
    if definition not in DEFINITIONS:
        raise ValueError(f"definition must be one of {DEFINITIONS}, got {definition!r}")
    c = W if isinstance(W, TriadCensus) else signed_triad_census(W, transpose=transpose, key=key)
    return _from_census(c, definition)


def balance_measures(c: TriadCensus) -> dict[str, float]:
    """Every balance number of a census, flat: ``balance_<definition>`` and
    ``balance_<definition>_<type>``."""
    out = {}
    for d in DEFINITIONS:
        b = _from_census(c, d)
        out[f"balance_{d}"] = b.value
        out.update({f"balance_{d}_{t}": v for t, v in b.per_type.items()})
    return out


def ffl_coherence(W, *, types=TRANSITIVE_TYPES, transpose: bool = False, key: str | None = None) -> np.ndarray:
    """w_ij * w_jk + w_ik for every feed-forward loop i->j->k, i->k (in the order of
    :func:`~sparse_engine.analysis.feed_forward_loops`)."""
    return feed_forward_loops(W, types=types, transpose=transpose, key=key).coherence
