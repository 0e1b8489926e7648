"""Null models: invariants of each randomisation, determinism, z-scores; real pruned RNNs."""
import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import sparse_engine  # noqa: F401
from sparse_engine.analysis import edges, null_model_test, randomize, read_edge_csv, signed_triad_census
from sparse_engine.testing import random_scipy


def degrees(src, dst, n):
    return np.bincount(src, minlength=n), np.bincount(dst, minlength=n)


@pytest.mark.parametrize("method", ["sign_shuffle", "swap", "swap_shuffle"])
def test_randomisation_invariants(method):
    rng = np.random.default_rng()
    A = random_scipy(60, 60, 0.08, generator=rng, diagonal=False)
    n = A.shape[0]
    s0, d0, w0 = edges(A)
    outs = list(randomize(A, method, K=5, seed=3))
    assert len(outs) == 5
    changed = 0
    for g in outs:
        s, d, w = edges(g)
        assert len(s) == len(s0) and not np.any(s == d)
        assert len(set(zip(s.tolist(), d.tolist()))) == len(s)  # no duplicate edges
        for a, b in zip(degrees(s, d, n), degrees(s0, d0, n)):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(np.sort(w), np.sort(w0))  # same weights (same signs)
        if method == "sign_shuffle":
            assert signed_triad_census(g).counts == signed_triad_census(A).counts
            np.testing.assert_array_equal(s, s0)
            np.testing.assert_array_equal(d, d0)
        if method == "swap":  # each weight stays with its source: (src, weight) multiset kept
            assert sorted(zip(s.tolist(), w.tolist())) == sorted(zip(s0.tolist(), w0.tolist()))
        changed += not (np.array_equal(s, s0) and np.array_equal(d, d0) and np.array_equal(w, w0))
    assert changed == 5
    # deterministic for a seed, different for another
    again = list(randomize(A, method, K=5, seed=3))
    for g, h in zip(outs, again):
        assert torch.equal(g.col_idx, h.col_idx) and torch.equal(g.values, h.values)
    other = next(randomize(A, method, K=1, seed=4))
    assert not (torch.equal(other.col_idx, outs[0].col_idx) and torch.equal(other.values, outs[0].values))


def test_swaps_deterministic_across_thread_counts():
    rng = np.random.default_rng()
    A = random_scipy(300, 300, 0.04, generator=rng, diagonal=False)  # large enough for the op's parallel path over K
    n_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = [g.col_idx.clone() for g in randomize(A, "swap", K=4, seed=9)]
    finally:
        torch.set_num_threads(n_threads)
    b = [g.col_idx for g in randomize(A, "swap", K=4, seed=9)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_z_scores_and_p_values():
    rng = np.random.default_rng()
    A = random_scipy(60, 60, 0.08, generator=rng, diagonal=False)
    r = null_model_test(A, "sign_shuffle", K=30, seed=1)
    k = "balance_semicycle"
    x = r.null[k]
    assert len(x) == 30
    assert r.mean[k] == pytest.approx(np.nanmean(x))
    assert r.z[k] == pytest.approx((r.observed[k] - r.mean[k]) / np.nanstd(x, ddof=1))
    assert r.p_greater[k] == pytest.approx((1 + np.sum(x >= r.observed[k])) / 31)
    # the unsigned census does not change under sign shuffling: zero spread, z undefined
    assert r.std["030T"] == 0 and np.isnan(r.z["030T"]) and r.p_greater["030T"] == 1.0
    assert {row["measure"] for row in r.table()} == set(r.observed) - set(r.undefined)


def test_a_measure_the_graph_does_not_define_is_named_not_tested_and_not_warned_about():
    # a directed 6-cycle with a chord-free path: no transitive triad, so every balance value is NaN
    n = 6
    src, dst = np.arange(n), (np.arange(n) + 1) % n
    A = sp.csr_matrix((np.where(src % 2, 1.0, -1.0), (dst, src)), shape=(n, n))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing said unasked
        r = null_model_test(A, "sign_shuffle", K=9, seed=0)
    for k in ("balance_semicycle", "balance_triad", "balance_weighted_300"):
        assert np.isnan(r.observed[k]) and np.isnan(r.p_greater[k]) and np.isnan(r.p_less[k]), k
    assert r.undefined["balance_triad_300"] == "no 300 triad in the graph"
    assert r.undefined["balance_semicycle"] == "no transitive triad in the graph"
    assert set(r.undefined) == {k for k, v in r.observed.items() if np.isnan(v)}
    rows = {row["measure"] for row in r.table()}
    assert rows == set(r.observed) - set(r.undefined) and "021C" in rows
    assert {row["measure"] for row in r.table(undefined=True)} == set(r.observed)
    assert r.p_greater["021C"] == 1.0  # defined measures keep their p-values


def test_bad_inputs():
    A = sp.csr_matrix((4, 4))
    with pytest.raises(ValueError, match="method"):
        null_model_test(A, "nope")
    with pytest.raises(ValueError, match="K"):
        list(randomize(A, "swap", K=0))
    with pytest.raises(ValueError, match="swaps_per_edge"):
        list(randomize(A, "swap", K=1, swaps_per_edge=-1))


# Zhang et al.'s pruned RNNs after training: much more balanced than sign-shuffled copies.
# (Checked on every file: it holds for the final pruned MNIST, SMS, Gesture, Gesture CT-RNN and
# Mackey-Glass networks, z between 3.6 and 11; not for the person-activity neural ODE, whose
# balance is below its nulls, nor for the dense initial networks.)
PRUNED = ["MNIST__pruning_n_150_p_0.05__epoch_200.csv", "SMS__pruning_n_100_p_0.05_1__epoch_100.csv",
          "Gesture__pruning_n_128_p_0.05__epoch_200.csv", "Gesture_ctrnn__pruning_n_128_p_0.05__epoch_200.csv",
          "MG__pruning_n_128_p_0.05__epoch_100.csv"]


@pytest.mark.parametrize("name", PRUNED)
def test_pruned_networks_more_balanced_than_sign_shuffles(name, shared_data):
    n = int(re.search(r"_n_(\d+)_", name).group(1))
    A = read_edge_csv(shared_data("sparse_rnns_networks", name), n)
    r = null_model_test(A, "sign_shuffle", K=60, seed=0)
    for k in ("balance_semicycle", "balance_triad", "balance_weighted"):
        assert r.observed[k] > np.nanmax(r.null[k]), k
        assert r.z[k] > 3, k


@pytest.mark.parametrize("density", [0.5, 0.9])
def test_swaps_on_dense_graphs_keep_the_graph_simple(density, np_rng):
    """Dense graphs: most proposals hit an existing edge, so the op's edge-key set answers many
    lookups and shifts many keys on deletion; a lost or stale key would show as a duplicate edge
    or a changed degree after many accepted swaps."""
    n = 40
    A = random_scipy(n, n, density, generator=np_rng, diagonal=False)
    s0, d0, _ = edges(A)
    out = torch.ops.sparse_engine.degree_preserving_swaps(torch.from_numpy(s0.astype(np.int32)),
                                                          torch.from_numpy(d0.astype(np.int32)), n, 200_000,
                                                          torch.tensor([5, 6]))
    for d in out:
        d = d.numpy().astype(np.int64)
        assert not np.any(d == s0) and len(set(zip(s0.tolist(), d.tolist()))) == len(s0)
        np.testing.assert_array_equal(np.bincount(d, minlength=n), np.bincount(d0, minlength=n))
        assert np.count_nonzero(d != d0) > len(d0) // 10  # swaps were accepted
