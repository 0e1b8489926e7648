"""Graph conversion, edge-list CSV and networkx export, the balance recorder, lesions."""
import csv

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import sparse_engine  # noqa: F401
from sparse_engine.analysis import (BalanceRecorder, edges, feed_forward_loops, lesion_ffls, load_sparse_weight,
                                    read_edge_csv, signed_triad_census, structural_balance, to_networkx,
                                    write_edge_csv)
from sparse_engine.testing import random_weight


def test_edge_convention_zeros_and_self_loops():
    # W[j, i] != 0 is the edge i -> j; the diagonal and stored zeros are not edges
    W = sp.csr_matrix((np.array([2.0, -3.0, 5.0, 0.0]), (np.array([1, 2, 0, 0]), np.array([0, 1, 0, 2]))),
                      shape=(3, 3))
    src, dst, w = edges(W)
    assert list(zip(src.tolist(), dst.tolist(), w.tolist())) == [(0, 1, 2.0), (1, 2, -3.0)]
    src, dst, _ = edges(W, transpose=True)
    assert sorted(zip(src.tolist(), dst.tolist())) == [(1, 0), (2, 1)]
    G = to_networkx(W)
    assert set(G.edges) == {(0, 1), (1, 2)} and G.number_of_nodes() == 3
    assert G.edges[1, 2]["sign"] == -1 and G.edges[0, 1]["weight"] == 2.0


def test_csv_round_trip(tmp_path, rng):
    W = random_weight(30, 30, 0.2, generator=rng)
    path = tmp_path / "w.csv"
    write_edge_csv(W, path)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["Id", "Source", "Target", "Weight"]
    D = W.to_dense().numpy()
    for r in rows[:20]:  # Source -> Target is W[Target, Source]
        assert float(r["Weight"]) == pytest.approx(D[int(r["Target"]), int(r["Source"])])
    back = read_edge_csv(path, n=W.shape[0])
    assert (back != W.to_scipy()).nnz == 0
    assert signed_triad_census(back) == signed_triad_census(W)
    # transpose=True writes W[Source, Target] as Source -> Target, like h @ W_rec
    write_edge_csv(W, path, transpose=True)
    assert (read_edge_csv(path, n=W.shape[0]) != W.to_scipy().T).nnz == 0
    with pytest.raises(ValueError, match="n="):
        read_edge_csv(path, n=2)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        read_edge_csv(bad)


def test_real_csv_orientation(shared_data):
    path = shared_data("sparse_rnns_networks", "MNIST__pruning_n_150_p_0.05__epoch_200.csv")
    W = read_edge_csv(path, n=150)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert W.nnz == len(rows)
    for r in rows[::97]:
        assert W[int(r["Target"]), int(r["Source"])] == pytest.approx(float(r["Weight"]))
    G = to_networkx(W)
    r = rows[5]
    if r["Source"] != r["Target"]:
        assert G.has_edge(int(r["Source"]), int(r["Target"]))


def test_checkpoint_key_selection(tmp_path, rng):
    m = torch.nn.Module()
    m.a, m.b = random_weight(30, 30, 0.2, generator=rng), random_weight(10, 10, 0.2, generator=rng)
    with pytest.raises(ValueError, match="key"):
        load_sparse_weight(m.state_dict())
    w = load_sparse_weight({"state_dict": m.state_dict()}, key="b")
    assert w.shape == (10, 10) and torch.equal(w.col_idx, m.b.col_idx)
    with pytest.raises(TypeError, match="checkpoint"):
        load_sparse_weight(3)


def test_recorder_records_and_csv(tmp_path, rng):
    rec = BalanceRecorder()
    W1, W2, inp = (random_weight(30, 30, 0.2, generator=rng), random_weight(20, 20, 0.2, generator=rng),
                   random_weight(30, 8, 0.5, generator=rng))
    rec(0, {"rec": W1, "inp": inp})   # non-square weights are skipped
    rec(1, {"rec": W2})
    assert [(r["step"], r["layer"]) for r in rec.records] == [(0, "rec"), (1, "rec")]
    r = rec.records[0]
    assert r["balance_semicycle"] == structural_balance(W1).value or np.isnan(r["balance_semicycle"])
    assert r["030T"] == signed_triad_census(W1).counts["030T"]
    assert r["edges"] == r["positive_edges"] + r["negative_edges"] == len(edges(W1)[0])
    rec.to_csv(tmp_path / "r.csv")
    with open(tmp_path / "r.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and rows[1]["n"] == "20" and list(rows[0]) == rec.columns()
    every = BalanceRecorder(every=2, layers=["rec"])
    for step in range(5):
        every(step, {"rec": W1, "other": W2})
    assert [r["step"] for r in every.records] == [0, 2, 4]
    with pytest.raises(TypeError, match="step"):
        rec(1.5, {"rec": W1})
    with pytest.raises(TypeError, match="weights"):
        rec(1, [W1])
    with pytest.raises(ValueError, match="square"):
        BalanceRecorder(layers="inp")(0, {"inp": inp})


@pytest.mark.parametrize("kind", ["unbalanced", "balanced", "random"])
def test_lesions_remove_ffls_cumulatively(kind, rng):
    W = random_weight(25, 25, 0.25, generator=rng)
    before = (W.row_ptr.clone(), W.col_idx.clone(), W.values.detach().clone())
    f0 = feed_forward_loops(W, types=None)
    nnz_seen = []

    def evaluate():
        nnz_seen.append(W.nnz)
        return float(W.values.detach().abs().sum())

    curve = lesion_ffls(W, evaluate, kind=kind, mode="redetect", runs=1, max_removals=15, seed=1).curves[0]
    assert len(curve.removed) == 15 and curve.n_removed == list(range(16))
    assert len(curve.scores) == 16 and nnz_seen == [before[1].numel() - 3 * k for k in range(16)]
    assert all(a >= b for a, b in zip(curve.scores, curve.scores[1:]))  # weights only disappear
    start = {tuple(x): bool(b) for x, b in zip(f0.nodes, f0.balanced)}
    for ffl in curve.removed:  # removed FFLs existed and were of the requested kind
        assert ffl in start
        if kind != "random":
            assert start[ffl] == (kind == "balanced")
    # restored afterwards
    assert torch.equal(W.row_ptr, before[0]) and torch.equal(W.col_idx, before[1])
    assert torch.equal(W.values.detach(), before[2])


def test_lesions_until_none_left_and_every(rng):
    W = random_weight(20, 20, 0.3, generator=rng)
    curve = lesion_ffls(W, lambda: None, kind="unbalanced", mode="redetect", runs=1, restore=False).curves[0]
    assert not (~feed_forward_loops(W, types=None).balanced).any() and len(curve.removed) > 0
    W2 = random_weight(20, 20, 0.3, seed=5)
    curve = lesion_ffls(W2, lambda: 0, kind="random", mode="redetect", runs=1, max_removals=7, every=3).curves[0]
    assert curve.n_removed == [0, 3, 6, 7]
    with pytest.raises(ValueError, match="kind"):
        lesion_ffls(W2, lambda: 0, kind="x")
    with pytest.raises(TypeError, match="weight"):
        lesion_ffls(W2.to_scipy(), lambda: 0)
    with pytest.raises(TypeError, match="evaluate"):
        lesion_ffls(W2, 3)


def test_lesion_with_transpose_and_model(rng):
    """A model using h @ W: lesions with transpose=True remove the right connections."""
    W = random_weight(20, 20, 0.3, generator=rng)
    h = torch.randn(4, 20, dtype=torch.float64)

    def evaluate():
        return (h @ W.to_dense()).sum().item()

    f = feed_forward_loops(W, transpose=True, types=None)
    curve = lesion_ffls(W, evaluate, kind="unbalanced", mode="redetect", runs=1, max_removals=1, transpose=True,
                        seed=0, restore=False).curves[0]
    (i, j, k), = curve.removed
    D = W.to_dense()
    assert D[i, j] == 0 and D[j, k] == 0 and D[i, k] == 0  # W[i, j] is i -> j with transpose
    assert not f.balanced[[tuple(x) for x in f.nodes].index((i, j, k))]


def test_two_byte_sparse_weights_are_analysed_as_float32():
    """A bfloat16 or float16 SparseWeight (which SparseWeight accepts) gives the numbers of its
    float32 copy (before: the kernels' "values must be float32 or float64")."""
    import numpy as np
    import scipy.sparse as sp
    import torch

    from sparse_engine.analysis import feed_forward_loops, signed_triad_census, structural_balance
    from sparse_engine.sparse import SparseWeight

    M = sp.random(30, 30, 0.2, format="csr", random_state=0)
    M.data -= 0.5
    M.sort_indices()
    parts = (torch.from_numpy(M.indptr.astype(np.int64)), torch.from_numpy(M.indices.astype(np.int32)))
    ref = SparseWeight(*parts, torch.from_numpy(M.data).to(torch.bfloat16).float(), (30, 30), requires_grad=False)
    for dt in (torch.bfloat16, torch.float16):
        W = SparseWeight(*parts, torch.from_numpy(M.data).to(dt), (30, 30), requires_grad=False)
        for kind in ("semicycle", "triad", "weighted"):
            assert structural_balance(W, kind).value == structural_balance(ref, kind).value
        assert len(feed_forward_loops(W)) == len(feed_forward_loops(ref)) > 0
        assert signed_triad_census(W, transpose=True) == signed_triad_census(ref, transpose=True)
