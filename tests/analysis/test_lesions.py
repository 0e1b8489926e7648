"""Motif lesions as the paper's code does them (one fixed shuffled list, cumulative, averaged over
runs) against a brute-force replay on the dense matrix; the re-detecting mode is tested in
test_graph.py."""
import itertools

import numpy as np
import pytest
import torch

from sparse_engine.analysis import lesion_ffls
from sparse_engine.testing import random_weight


def brute_ffls(D: np.ndarray) -> dict[tuple[int, int, int], bool]:
    """Every (i, j, k) with edges i->j, j->k, i->k (edge a->b where D[b, a] != 0) -> balanced."""
    n = len(D)
    e = lambda a, b: a != b and D[b, a] != 0  # noqa: E731
    return {(i, j, k): D[j, i] * D[k, j] * D[k, i] > 0 for i, j, k in itertools.permutations(range(n), 3)
            if e(i, j) and e(j, k) and e(i, k)}


@pytest.mark.parametrize("kind", ["unbalanced", "balanced", "random"])
def test_fixed_list_replayed_cumulatively(kind, rng):
    W = random_weight(18, 18, 0.3, generator=rng)
    D0 = W.to_dense().numpy().copy()
    ffls = brute_ffls(D0)
    want = sorted(f for f, b in ffls.items() if kind == "random" or b == (kind == "balanced"))
    seen = []
    res = lesion_ffls(W, lambda: seen.append(W.to_dense().numpy().copy()) or float(W.nnz), kind=kind, runs=3, seed=4)
    assert res.mode == "fixed" and len(res.curves) == 3
    at = 0
    orders = []
    for curve in res.curves:
        # each run removes every candidate of the intact graph once, in its own order
        assert sorted(curve.removed) == want and curve.n_removed == list(range(len(want) + 1))
        orders.append(curve.removed)
        D = D0.copy()
        for step, ffl in enumerate([None] + curve.removed):
            if ffl is not None:
                i, j, k = ffl
                D[j, i] = D[k, j] = D[k, i] = 0  # cumulative: earlier cuts stay cut
            np.testing.assert_array_equal(seen[at], D)
            assert curve.scores[step] == np.count_nonzero(D)
            at += 1
    assert len(want) < 3 or len({tuple(o) for o in orders}) > 1  # shuffled per run
    np.testing.assert_allclose(res.mean, np.mean([c.scores for c in res.curves], axis=0))
    np.testing.assert_allclose(res.std, np.std([c.scores for c in res.curves], axis=0))
    assert torch.equal(W.to_dense(), torch.from_numpy(D0))  # restored


def test_defaults_ten_runs_every_and_max(rng):
    W = random_weight(20, 20, 0.3, generator=rng)
    res = lesion_ffls(W, lambda: 0.0, kind="random", max_removals=7, every=3)
    assert len(res.curves) == 10 and res.n_removed == [0, 3, 6, 7]
    assert all(len(c.removed) == 7 for c in res.curves)
    # the same seed gives the same runs; another seed other orders
    again = lesion_ffls(W, lambda: 0.0, kind="random", max_removals=7, every=3)
    assert [c.removed for c in again.curves] == [c.removed for c in res.curves]
    other = lesion_ffls(W, lambda: 0.0, kind="random", max_removals=7, every=3, seed=1)
    assert [c.removed for c in other.curves] != [c.removed for c in res.curves]


def test_given_motifs_and_random_edges(rng):
    W = random_weight(16, 16, 0.35, generator=rng)
    D0 = W.to_dense().numpy().copy()
    ffls = brute_ffls(D0)
    planted = sorted(ffls)[:4] + [(0, 0, 0)]  # a non-FFL in the list is ignored, as a motif lost in training
    res = lesion_ffls(W, lambda: 0, kind="random", motifs=planted, runs=2)
    assert all(sorted(c.removed) == sorted(planted[:4]) for c in res.curves)
    nnz = []
    res = lesion_ffls(W, lambda: nnz.append(np.count_nonzero(W.to_dense().numpy())), kind="edges", runs=1,
                      max_removals=5, restore=False)
    assert nnz == [np.count_nonzero(D0) - 3 * s for s in range(6)]
    assert np.count_nonzero(W.to_dense().numpy()) == np.count_nonzero(D0) - 15


def test_lesion_curve_of_a_model_that_relies_on_its_motifs(rng):
    """A linear readout of W's entries: cutting motifs lowers it step by step; lr-0 style
    check that the curve is not flat when something is removed."""
    W = random_weight(15, 15, 0.4, generator=rng)
    W.values.data.abs_()  # all positive: every FFL balanced
    res = lesion_ffls(W, lambda: float(W.values.detach().sum()), kind="balanced", runs=2)
    assert len(res.n_removed) > 1 and (np.diff(res.mean) <= 0).all() and res.mean[-1] < res.mean[0]
    assert lesion_ffls(W, lambda: 0, kind="unbalanced").n_removed == [0]  # none to remove


def test_bad_arguments(rng):
    W = random_weight(10, 10, 0.3, generator=rng)
    with pytest.raises(ValueError, match="mode"):
        lesion_ffls(W, lambda: 0, mode="again")
    with pytest.raises(ValueError, match="runs"):
        lesion_ffls(W, lambda: 0, runs=0)
    with pytest.raises(ValueError, match="motifs"):
        lesion_ffls(W, lambda: 0, mode="redetect", motifs=[(0, 1, 2)])
