"""Signed triad census, FFLs and balance: brute force over every triple, networkx, hand-made graphs.
(The analysis ops' schemas and fake kernels: tests/ops/test_analysis.py.)"""
import itertools
import math

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import sparse_engine  # noqa: F401
from sparse_engine import SparseWeight
from sparse_engine.analysis import (TRANSITIVE_TYPES, TRIAD_TYPES, feed_forward_loops, ffl_coherence,
                                    signed_triad_census, structural_balance, to_networkx)
from sparse_engine.kernels.constants import PARALLEL_WORK
from sparse_engine.testing import random_scipy

# Holland-Leinhardt triads on nodes 0, 1, 2, written from their definitions.
HAND_TRIADS = {
    "003": [], "012": [(0, 1)], "102": [(0, 1), (1, 0)],
    "021D": [(1, 0), (1, 2)], "021U": [(0, 1), (2, 1)], "021C": [(0, 1), (1, 2)],
    "111D": [(0, 1), (1, 0), (2, 1)], "111U": [(0, 1), (1, 0), (1, 2)],
    "030T": [(0, 1), (1, 2), (0, 2)], "030C": [(0, 1), (1, 2), (2, 0)],
    "201": [(0, 1), (1, 0), (1, 2), (2, 1)],
    "120D": [(1, 0), (1, 2), (0, 2), (2, 0)], "120U": [(0, 1), (2, 1), (0, 2), (2, 0)],
    "120C": [(0, 1), (1, 2), (0, 2), (2, 0)],
    "210": [(0, 1), (1, 0), (1, 2), (2, 1), (0, 2)],
    "300": [(a, b) for a in range(3) for b in range(3) if a != b],
}


def graph_matrix(n, signed_edges):
    """scipy matrix in the post-row convention from (src, dst, weight) triples."""
    if not signed_edges:
        return sp.csr_matrix((n, n))
    s, d, w = zip(*signed_edges)
    return sp.csr_matrix((w, (d, s)), shape=(n, n))


def brute_force(A):
    """Census and signed counts by looking at every triple of a dense copy."""
    D = A.toarray()
    n = D.shape[0]
    E = (D.T != 0)  # E[i, j]: edge i -> j
    np.fill_diagonal(E, False)
    W = D.T  # W[i, j] = weight of i -> j
    counts = dict.fromkeys(TRIAD_TYPES, 0)
    sig = {t: [0, 0, 0, 0, 0] for t in TRANSITIVE_TYPES}
    ffls = set()
    for a, b, c in itertools.combinations(range(n), 3):
        code = sum(bit for bit, (x, y) in zip((1, 2, 4, 8, 16, 32), ((a, b), (b, a), (a, c), (c, a), (b, c), (c, b)))
                   if E[x, y])
        t = nx.algorithms.triads.TRIAD_NAMES[nx.algorithms.triads.TRICODES[code] - 1]
        counts[t] += 1
        if t not in TRANSITIVE_TYPES:
            continue
        bal = unb = 0
        for i, j, k in itertools.permutations((a, b, c)):
            if E[i, j] and E[j, k] and E[i, k]:
                ffls.add((i, j, k))
                if W[i, j] * W[j, k] * W[i, k] > 0:
                    bal += 1
                else:
                    unb += 1
        s = sig[t]
        s[0] += bal
        s[1] += unb
        s[2 if unb == 0 else (4 if bal == 0 else 3)] += 1
    return counts, sig, ffls


def check_against_brute(A, **kw):
    c = signed_triad_census(A, **kw)
    counts, sig, ffls = brute_force(A.T.tocsr() if kw.get("transpose") else A)
    assert c.counts == counts
    for t in TRANSITIVE_TYPES:
        assert [c.balanced[t], c.unbalanced[t], c.cb[t], c.pb[t], c.ci[t]] == sig[t], t
        assert c.cb[t] + c.pb[t] + c.ci[t] == c.counts[t]
    f = feed_forward_loops(A, **kw)
    assert {tuple(x) for x in f.nodes} == ffls and len(f) == len(ffls)
    D = (A.T.tocsr() if kw.get("transpose") else A).toarray().T  # D[i, j]: weight of i -> j
    np.fill_diagonal(D, 0)
    every = {(i, j, k) for i, j, k in itertools.permutations(range(D.shape[0]), 3)
             if D[i, j] and D[j, k] and D[i, k]}
    f_all = feed_forward_loops(A, types=None, **kw)
    assert [tuple(x) for x in f_all.nodes] == sorted(every)
    np.testing.assert_array_equal(f_all.weights, [[D[i, j], D[j, k], D[i, k]] for i, j, k in sorted(every)]
                                  if every else np.zeros((0, 3)))


def test_random_graphs_match_brute_force(np_rng):
    rng = np_rng
    for _ in range(60):
        n = int(rng.integers(0, 16))
        A = random_scipy(n, n, rng.uniform(0.05, 0.9), generator=rng,
                         explicit_zeros=0.2 * int(rng.integers(2)),  # explicit zeros: not edges
                         diagonal=bool(rng.integers(2)))
        check_against_brute(A)


def test_transpose_option_matches_brute_force(np_rng):
    rng = np_rng
    for _ in range(10):
        check_against_brute(random_scipy(12, 12, 0.3, generator=rng, diagonal=False), transpose=True)


def test_unsigned_counts_match_networkx(np_rng):
    rng = np_rng
    for n, p in [(60, 0.05), (200, 0.02), (40, 0.5)]:
        A = random_scipy(n, n, p, generator=rng, diagonal=False)
        assert signed_triad_census(A).counts == nx.triadic_census(to_networkx(A))


def test_power_law_hubs_match_networkx(np_rng):
    rng = np_rng
    n, m = 300, 3000
    w = 1.0 / np.arange(1, n + 1) ** 0.8
    s = rng.choice(n, m, p=w / w.sum())
    d = rng.choice(n, m, p=w / w.sum())
    A = sp.csr_matrix((rng.standard_normal(m), (d, s)), shape=(n, n))
    A.setdiag(0)
    A.eliminate_zeros()
    assert signed_triad_census(A).counts == nx.triadic_census(to_networkx(A))


def test_hub_graph_matches_networkx_and_dense_ffls(np_rng):
    """A dense core of hubs with leaves of degree 2 attached: the kernel searches the leaves'
    short lists in the hubs' long ones (its hub path) for many edges."""
    rng = np_rng
    hubs, leaves = 100, 400
    n = hubs + leaves
    core = sp.random(hubs, hubs, density=0.6, random_state=rng, format="coo")
    leaf = np.repeat(np.arange(hubs, n), 2)
    hub = rng.integers(0, hubs, 2 * leaves)
    out = rng.random(2 * leaves) < 0.5
    src = np.concatenate([core.col, np.where(out, leaf, hub)])
    dst = np.concatenate([core.row, np.where(out, hub, leaf)])
    A = sp.csr_matrix((rng.standard_normal(len(src)), (dst, src)), shape=(n, n))
    A.setdiag(0)
    A.eliminate_zeros()
    c = signed_triad_census(A)
    assert c.counts == nx.triadic_census(to_networkx(A))
    E = A.toarray().T  # E[i, j]: weight of i -> j
    i, j = np.nonzero(E)
    every = [(a, b, k) for a, b in zip(i, j) for k in np.flatnonzero((E[b] != 0) & (E[a] != 0))]
    f = feed_forward_loops(A, types=None)
    assert [tuple(x) for x in f.nodes] == sorted(every)
    signs = np.array([np.sign(E[a, b] * E[b, k] * E[a, k]) for a, b, k in sorted(every)])
    np.testing.assert_array_equal(f.balanced, signs > 0)


@pytest.mark.parametrize("name", TRIAD_TYPES)
def test_hand_made_triads(name):
    A = graph_matrix(3, [(s, d, 1.0) for s, d in HAND_TRIADS[name]])
    c = signed_triad_census(A)
    assert c.counts == {t: int(t == name) for t in TRIAD_TYPES}
    n_semi = {"030T": 1, "120D": 2, "120U": 2, "300": 6}
    for t in TRANSITIVE_TYPES:
        assert c.balanced[t] == (n_semi[t] if t == name else 0)
        assert c.unbalanced[t] == 0


def test_signed_hand_made():
    # 030T 0->1->2, 0->2 with one negative edge: one unbalanced semicycle
    c = signed_triad_census(graph_matrix(3, [(0, 1, 1.0), (1, 2, 1.0), (0, 2, -0.5)]))
    assert (c.balanced["030T"], c.unbalanced["030T"], c.ci["030T"]) == (0, 1, 1)
    # two negative edges: balanced
    c = signed_triad_census(graph_matrix(3, [(0, 1, -1.0), (1, 2, 1.0), (0, 2, -0.5)]))
    assert (c.balanced["030T"], c.unbalanced["030T"], c.cb["030T"]) == (1, 0, 1)
    # 300 with one negative edge: it lies in 3 of the 6 semicycles
    e = [(a, b, -1.0 if (a, b) == (2, 0) else 1.0) for a, b in HAND_TRIADS["300"]]
    c = signed_triad_census(graph_matrix(3, e))
    assert (c.balanced["300"], c.unbalanced["300"], c.pb["300"]) == (3, 3, 1)
    # 120D (1->0, 1->2, 0<->2) whose reciprocal edges differ in sign: semicycle (1,0,2) uses
    # 0->2 (+), semicycle (1,2,0) uses 2->0 (-)
    e = [(1, 0, 1.0), (1, 2, 1.0), (0, 2, 1.0), (2, 0, -1.0)]
    c = signed_triad_census(graph_matrix(3, e))
    assert (c.balanced["120D"], c.unbalanced["120D"], c.pb["120D"]) == (1, 1, 1)
    f = feed_forward_loops(graph_matrix(3, e))
    assert [tuple(x) for x in f.nodes] == [(1, 0, 2), (1, 2, 0)]
    assert f.balanced.tolist() == [True, False]
    np.testing.assert_allclose(f.weights, [[1.0, 1.0, 1.0], [1.0, -1.0, 1.0]])
    np.testing.assert_allclose(f.coherence, [2.0, 0.0])


def disjoint(*triads):
    """Graph of disjoint 3-node triads given as lists of (src, dst, weight) on nodes 0..2."""
    e = []
    for t, tri in enumerate(triads):
        e += [(3 * t + s, 3 * t + d, w) for s, d, w in tri]
    return graph_matrix(3 * len(triads), e)


def test_balance_definitions_hand_made():
    ffl_bal = [(0, 1, 1.0), (1, 2, 1.0), (0, 2, 1.0)]
    ffl_unb = [(0, 1, 1.0), (1, 2, 1.0), (0, 2, -1.0)]
    t300 = [(a, b, -1.0 if (a, b) == (2, 0) else 1.0) for a, b in HAND_TRIADS["300"]]
    t120u = [(a, b, 1.0) for a, b in HAND_TRIADS["120U"]]
    A = disjoint(ffl_bal, ffl_unb, t300, t120u)
    a = structural_balance(A, "semicycle")
    assert a.per_type["030T"] == 0.5 and a.per_type["300"] == 0.5 and a.per_type["120U"] == 1.0
    assert math.isnan(a.per_type["120D"])  # empty type: NaN, left out of the mean
    assert a.value == pytest.approx(2 / 3)
    b = structural_balance(A, "triad")
    assert b.value == pytest.approx(2 / 4) and b.per_type["300"] == 0.0
    c = structural_balance(A, "weighted")
    assert c.per_type["300"] == 0.5 and c.value == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    # a type with BR = 0 stays in the mean: 120D with both semicycles unbalanced
    t120d = [(1, 0, 1.0), (1, 2, 1.0), (0, 2, -1.0), (2, 0, -1.0)]
    a2 = structural_balance(disjoint(ffl_bal, t120d), "semicycle")
    assert a2.per_type["120D"] == 0.0 and a2.value == pytest.approx(0.5)
    # the census can be passed instead of the graph
    assert structural_balance(signed_triad_census(A), "triad").value == b.value


def test_no_transitive_triads_gives_nan():
    for d in ("semicycle", "triad", "weighted"):
        assert math.isnan(structural_balance(graph_matrix(3, [(0, 1, 1.0)]), d).value)


def test_inputs_agree_sparseweight_scipy_state_dict_checkpoint(tmp_path):
    g = torch.Generator().manual_seed(0)
    W = SparseWeight.random(40, 40, 0.15, generator=g, dtype=torch.float64)
    ref = signed_triad_census(W.to_scipy())
    assert signed_triad_census(W) == ref
    assert signed_triad_census(W, transpose=True) == signed_triad_census(W.to_scipy().T)
    model = torch.nn.Module()
    model.rec = W
    assert signed_triad_census(model.state_dict()) == ref
    torch.save(model.state_dict(), tmp_path / "ck.pt")
    assert signed_triad_census(tmp_path / "ck.pt", key="rec") == ref
    f1, f2 = feed_forward_loops(W, transpose=True), feed_forward_loops(W.to_scipy().T)
    np.testing.assert_array_equal(f1.nodes, f2.nodes)
    # positions point into W.values even with transpose=True
    np.testing.assert_array_equal(W.values.detach().numpy()[f1.positions], f1.weights)


def test_ffl_types_filter_and_coherence(np_rng):
    rng = np_rng
    A = random_scipy(30, 30, 0.3, generator=rng, diagonal=False)
    all_f = feed_forward_loops(A)
    only = feed_forward_loops(A, types="030T")
    assert set(only.types) <= {"030T"} and len(only) == signed_triad_census(A).counts["030T"]
    assert len(all_f) == sum(signed_triad_census(A).balanced[t] + signed_triad_census(A).unbalanced[t]
                             for t in TRANSITIVE_TYPES)
    D = A.toarray().T
    expect = [D[i, j] * D[j, k] + D[i, k] for i, j, k in all_f.nodes]
    np.testing.assert_allclose(ffl_coherence(A), expect)


def test_large_graph_consistency(np_rng):
    """Above the kernels' parallel threshold (PARALLEL_WORK entries) threads split the work: totals add
    up to C(n, 3), counts agree with networkx and with a one-thread run, FFLs with the census."""
    rng = np_rng
    n = 2500
    A = random_scipy(n, n, 15 / n, generator=rng, diagonal=False)
    assert A.nnz > PARALLEL_WORK
    c = signed_triad_census(A)
    assert sum(c.counts.values()) == n * (n - 1) * (n - 2) // 6
    assert c.counts == nx.triadic_census(to_networkx(A))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert signed_triad_census(A) == c
    finally:
        torch.set_num_threads(threads)
    f = feed_forward_loops(A)
    assert len(f) == sum(c.balanced[t] + c.unbalanced[t] for t in TRANSITIVE_TYPES)
    assert int(f.balanced.sum()) == sum(c.balanced.values())


def test_bad_inputs():
    with pytest.raises(ValueError, match="square"):
        signed_triad_census(sp.csr_matrix((3, 4)))
    with pytest.raises(TypeError, match="W must be"):
        signed_triad_census(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="finite"):
        signed_triad_census(sp.csr_matrix(np.array([[0, np.nan], [1.0, 0]])))
    with pytest.raises(ValueError, match="definition"):
        structural_balance(sp.csr_matrix((3, 3)), "nope")
    with pytest.raises(ValueError, match="types"):
        feed_forward_loops(sp.csr_matrix((3, 3)), types=("999",))
    with pytest.raises(ValueError, match="key"):
        signed_triad_census({"a.row_ptr": torch.zeros(1, dtype=torch.long), "a.col_idx": torch.zeros(0),
                             "a.values": torch.zeros(0)}, key="b")
    op = torch.ops.sparse_engine.signed_triad_census
    with pytest.raises(TypeError, match="col_idx"):
        op(torch.tensor([0, 1]), torch.tensor([0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="sorted"):
        op(torch.tensor([0, 2, 2]), torch.tensor([1, 1], dtype=torch.int32), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"col_idx entry 5 \(position 0\) out of range \[0, 2\)"):
        op(torch.tensor([0, 1, 1]), torch.tensor([5], dtype=torch.int32), torch.tensor([1.0]))
