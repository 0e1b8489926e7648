"""Null models for the signed census and balance: randomised copies of a graph, z-scores and
empirical p-values per measure.

Methods (each randomisation is seeded from ``seed`` through numpy's SeedSequence, so results
do not depend on the number of threads):

* ``"sign_shuffle"``: same edges, the weights permuted at random among them (so the number of
  positive and negative edges is kept; the unsigned census is unchanged).
* ``"swap"``: degree-preserving double-edge swaps (a->b, c->d becomes a->d, c->b when that
  creates no self-loop or duplicate), ``swaps_per_edge * m`` attempts; every in- and
  out-degree is kept and each weight stays on its edge slot (it moves with the edge's source),
  i.e. signs are kept on the edges.
* ``"swap_shuffle"``: swaps, then the weights shuffled as in sign_shuffle.

The swaps run in the compiled op ``degree_preserving_swaps``, several randomisations in
parallel (one per thread); each census runs in parallel itself.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from .balance import CONVENTIONS, balance_measures
from .census import NODE_SETS, TRANSITIVE_TYPES, _census_of_graph, _edge_nodes_only
from .graph import GraphCSR, edges, to_graph

__all__ = ["METHODS", "randomize", "NullModelResult", "null_model_test"]

METHODS = ("sign_shuffle", "swap", "swap_shuffle")


def _graph_from_edges(n: int, src, dst, w) -> GraphCSR:
    m = sp.csr_matrix((w, (dst, src)), shape=(n, n))
    m.sort_indices()
    return GraphCSR(torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int32)),
                    torch.from_numpy(np.ascontiguousarray(m.data)))


def randomize(W, method: str = "sign_shuffle", K: int = 1, *, seed: int = 0, swaps_per_edge: float = 10.0,
              transpose: bool = False, key: str | None = None):
    """Yields ``K`` randomised copies of ``W``'s graph (as :class:`GraphCSR`), one at a time."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(K, int) or K < 1:
        raise ValueError(f"K must be a positive int, got {K!r}")
    if swaps_per_edge < 0:
        raise ValueError(f"swaps_per_edge must be >= 0, got {swaps_per_edge}")
    g = to_graph(W, transpose=transpose, key=key)
    n = g.n
    src, dst, w = edges(g)
    children = np.random.SeedSequence(seed).spawn(K)
    batch = max(1, torch.get_num_threads())
    for start in range(0, K, batch):
        seqs = children[start:start + batch]
        if method == "sign_shuffle":
            new_dst = [dst] * len(seqs)
        else:
            seeds = torch.tensor([int(s.generate_state(1, np.uint64)[0] >> np.uint64(1)) for s in seqs],
                                 dtype=torch.int64)
            n_swaps = int(round(swaps_per_edge * len(src)))
            out = torch.ops.sparse_engine.degree_preserving_swaps(
                torch.from_numpy(src.astype(np.int32)), torch.from_numpy(dst.astype(np.int32)), n, n_swaps, seeds)
            new_dst = [d.numpy().astype(np.int64) for d in out]
        for s, d in zip(seqs, new_dst):
            ww = np.random.default_rng(s).permutation(w) if method != "swap" else w
            yield _graph_from_edges(n, src, d, ww)


def _measures(g: GraphCSR, nodes: str = "all", convention: str = "default") -> dict[str, float]:
    c = _census_of_graph(_edge_nodes_only(g) if nodes == "edges" else g)
    out = {k: float(v) for k, v in c.as_dict().items()}
    out.update(balance_measures(c, convention))
    return out


@dataclass
class NullModelResult:
    """Per measure (census counts, signed counts, every balance number): observed value, the K
    null values, their mean and standard deviation (ddof=1), z = (observed - mean) / std (NaN
    when std is 0), and the empirical one-sided p-values with the +1 correction,
    p_greater = (1 + #{null >= observed}) / (K' + 1), p_less likewise, over the K' null values
    that are not NaN (K' = K unless a randomisation has no triad of a type the measure needs).

    A balance measure the observed graph does not define (it has no triad of the types it needs,
    e.g. ``balance_triad_300`` without a 300 triad) is not tested: :attr:`undefined` names it and
    why, its p-values are NaN and :meth:`table` leaves it out; nothing is said about it unasked. A
    measure whose null values are all NaN has NaN p-values too, and :func:`null_model_test` warns,
    as it does when it leaves some NaN null values out (the p-values then rest on fewer nulls)."""

    method: str
    observed: dict[str, float]
    null: dict[str, np.ndarray]
    mean: dict[str, float]
    std: dict[str, float]
    z: dict[str, float]
    p_greater: dict[str, float]
    p_less: dict[str, float]
    undefined: dict[str, str] = field(default_factory=dict)  # measure -> why the graph does not define it

    def table(self, undefined: bool = False) -> list[dict]:
        """One row per measure (the undefined ones too with ``undefined=True``)."""
        return [{"measure": k, "observed": self.observed[k], "null_mean": self.mean[k], "null_std": self.std[k],
                 "z": self.z[k], "p_greater": self.p_greater[k], "p_less": self.p_less[k]}
                for k in self.observed if undefined or k not in self.undefined]


def null_model_test(W, method: str = "sign_shuffle", K: int = 100, *, seed: int = 0, swaps_per_edge: float = 10.0,
                    nodes: str = "all", convention: str = "default", transpose: bool = False,
                    key: str | None = None) -> NullModelResult:
    """Compares ``W``'s census and balance with ``K`` randomisations (see :data:`METHODS`);
    ``nodes`` and ``convention`` as in :func:`~.census.signed_triad_census` and
    :func:`~.balance.structural_balance`, for the observed graph and every null alike."""
    if nodes not in NODE_SETS:
        raise ValueError(f"nodes must be one of {NODE_SETS}, got {nodes!r}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    g = to_graph(W, transpose=transpose, key=key)
    obs = _measures(g, nodes, convention)
    samples = [_measures(r, nodes, convention)
               for r in randomize(g, method, K, seed=seed, swaps_per_edge=swaps_per_edge)]
    null = {k: np.array([s[k] for s in samples]) for k in obs}
    mean, std, z, pg, pl = {}, {}, {}, {}, {}
    nan_observed, nan_null, some_nan = [], [], []
    for k, o in obs.items():
        x = null[k]
        ok = x[~np.isnan(x)]
        mean[k] = float(ok.mean()) if len(ok) else math.nan
        std[k] = float(ok.std(ddof=1)) if len(ok) > 1 else math.nan
        z[k] = (o - mean[k]) / std[k] if std[k] and not math.isnan(std[k]) else math.nan
        if math.isnan(o) or not len(ok):
            pg[k] = pl[k] = math.nan
            (nan_observed if math.isnan(o) else nan_null).append(k)
            continue
        if len(ok) < K:
            some_nan.append(f"{k} ({K - len(ok)} of {K})")
        pg[k] = (1 + int(np.sum(ok >= o))) / (len(ok) + 1)
        pl[k] = (1 + int(np.sum(ok <= o))) / (len(ok) + 1)
    if nan_null:
        warnings.warn(f"null_model_test: every null value of {', '.join(nan_null)} is NaN, so the p-values of "
                      f"{'these measures' if len(nan_null) > 1 else 'this measure'} are NaN", stacklevel=2)
    if some_nan:
        warnings.warn(f"null_model_test: some null values are NaN and left out of the p-values: "
                      f"{', '.join(some_nan)}", stacklevel=2)
    return NullModelResult(method, obs, null, mean, std, z, pg, pl, {k: _why_undefined(k) for k in nan_observed})


def _why_undefined(measure: str) -> str:
    kind = measure.rsplit("_", 1)[-1]
    return f"no {kind} triad in the graph" if kind in TRANSITIVE_TYPES else "no transitive triad in the graph"
