"""What the training code builds on the topology ops: keep masks (exact selections against numpy),
random and gradient growth (only at empty positions, uniform, RigL's tiled top-k against the dense
gradient), rewire() (invariants, values, gradients and optimizer state remapped, against a
{position: value} model under hypothesis), and every controller through the device-generic
functions (the ops' CUDA code path, on the CPU; on a CUDA model nothing leaves the device). The ops
themselves: tests/ops/test_topology.py."""
import contextlib
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparse_engine import SparseWeight
from sparse_engine.kernels import densify_torch, topology_torch
from sparse_engine.nn import SparseLinear
from sparse_engine.training import (SET, DeepR, GradualMagnitudePruning, RigL, SelfishRNN, gradient_growth,
                                    global_magnitude_keep, magnitude_keep, new_values, random_empty, rewire,
                                    set_keep, sparse_weights, threshold_keep, topology)
from sparse_engine.training.controllers import base
from sparse_engine.testing import (check_invariants, check_structure, entry_keys, random_weight, set_keep_reference,
                                   smallest_reference, value_by_key)
from sparse_engine.testing import assert_same_bits as same
from sparse_engine.testing import weight_strategy as weights

ops = torch.ops.sparse_engine
tt = SimpleNamespace(**topology_torch.OPS, **densify_torch.OPS)  # the kernels by operator name, like ops
F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16


# ------------------------------------------------------------------------------------- keep masks
def test_magnitude_keep_prunes_exactly_the_smallest(rng):
    w = random_weight(60, 50, 0.2, generator=rng)
    v = w.values.detach().numpy()
    for n_prune in (0, 1, w.nnz // 3, w.nnz):
        keep = magnitude_keep(w.values, n_prune).numpy()
        assert np.array_equal(~keep, smallest_reference(np.abs(v), n_prune))


def test_global_magnitude_keep_uses_one_threshold_across_layers(rng):
    vs = [torch.randn(n, generator=rng) * s for n, s in ((300, 1.0), (200, 0.1), (0, 1.0), (100, 3.0))]
    n_prune = 250
    keeps = global_magnitude_keep(vs, n_prune)
    allv = np.abs(np.concatenate([v.double().numpy() for v in vs]))
    ref = ~smallest_reference(allv, n_prune)
    assert np.array_equal(np.concatenate([k.numpy() for k in keeps]), ref)
    assert [k.numel() for k in keeps] == [v.numel() for v in vs]


@pytest.mark.parametrize("zeta", [0.0, 0.1, 0.3, 0.5, 1.0])
def test_set_keep_prunes_each_sign_nearest_zero(rng, zeta):
    v = torch.randn(200_777, generator=rng, dtype=torch.float64)
    v[::50] = 0.0
    v[1::7] = v[1::7].round()  # ties among magnitudes
    keep = set_keep(v, zeta).numpy()
    assert np.array_equal(keep, set_keep_reference(v.numpy(), zeta))
    assert not keep[v.numpy() == 0].any()


def test_set_keep_drops_negatives_nearest_zero_not_most_negative():
    v = torch.tensor([-5.0, -0.1, 0.2, 4.0, -3.0, 0.05])
    keep = set_keep(v, 0.34)  # one of three of each sign
    assert keep.tolist() == [True, False, True, True, True, False]


def test_threshold_keep():
    v = torch.tensor([0.5, -0.01, 0.02, -2.0])
    assert threshold_keep(v, 0.02).tolist() == [True, False, True, True]


def test_selection_bad_inputs(rng):
    with pytest.raises(ValueError, match="n_prune"):
        magnitude_keep(torch.randn(5, generator=rng), 6)
    with pytest.raises(ValueError, match="zeta"):
        set_keep(torch.randn(5, generator=rng), 1.5)
    with pytest.raises(ValueError, match="NaN"):
        ops.select_smallest(torch.tensor([1.0, float("nan")]), 1)
    with pytest.raises(TypeError, match="scores"):
        ops.select_smallest(torch.arange(4), 1)
    with pytest.raises(ValueError, match="threshold"):
        threshold_keep(torch.randn(3, generator=rng), -1.0)


# ---------------------------------------------------------------------------------- random growth
@pytest.mark.parametrize("rows,cols,density,n", [(40, 30, 0.05, 100), (40, 30, 0.9, 100), (1, 1000, 0.5, 499),
                                                 (300, 300, 0.05, 10000), (1, 100000, 0.01, 20000),
                                                 (5, 3, 0.0, 15), (7, 9, 1.0, 0)])
def test_random_empty_positions_are_new_unique_sorted(rng, rows, cols, density, n):
    w = random_weight(rows, cols, density, generator=rng)
    n = min(n, rows * cols - w.nnz)
    r, c = random_empty(w.row_ptr, w.col_idx, cols, n, seed=int(torch.randint(0, 2**40, (1,), generator=rng)))
    assert r.numel() == c.numel() == n and r.dtype == torch.int64 and c.dtype == torch.int32
    k = (r * cols + c.long()).numpy()
    assert np.all(np.diff(k) > 0)  # sorted, unique
    assert ((c >= 0) & (c < cols)).all() and ((r >= 0) & (r < rows)).all()
    assert not np.isin(k, entry_keys(w)).any()


def test_random_empty_is_deterministic_per_seed(rng):
    w = random_weight(50, 50, 0.1, generator=rng)
    a = random_empty(w.row_ptr, w.col_idx, 50, 200, seed=7)
    b = random_empty(w.row_ptr, w.col_idx, 50, 200, seed=7)
    c = random_empty(w.row_ptr, w.col_idx, 50, 200, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


@pytest.mark.parametrize("n", [1, 2])  # n=1: rejection sampling; n=2: enumeration (< 4n empty)
def test_random_empty_is_uniform_over_empty_positions(n):
    dense = torch.zeros(3, 4)
    occupied = [(0, 0), (0, 3), (1, 1), (2, 0), (2, 2), (2, 3)]
    for i, j in occupied:
        dense[i, j] = 1.0
    w = SparseWeight.from_dense(dense)
    counts = {}
    trials = 3000
    for s in range(trials):
        r, c = random_empty(w.row_ptr, w.col_idx, 4, n, seed=s)
        for key in (r * 4 + c.long()).tolist():
            counts[key] = counts.get(key, 0) + 1
    empty = sorted(set(range(12)) - {i * 4 + j for i, j in occupied})
    assert sorted(counts) == empty
    expect = trials * n / len(empty)
    for key in empty:  # binomial sd ~ 20: a 6-sd band
        assert abs(counts[key] - expect) < 6 * math.sqrt(expect), counts


def test_random_empty_refuses_too_many(rng):
    w = random_weight(4, 4, 0.5, generator=rng)
    with pytest.raises(ValueError, match="empty positions"):
        random_empty(w.row_ptr, w.col_idx, 4, 16 - w.nnz + 1, seed=0)


# ----------------------------------------------------------------------------------------- rewire
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_rewire_keeps_values_and_optimizer_state_only_where_it_should(rng, opt_name):
    w = random_weight(30, 40, 0.1, dtype=torch.float32, generator=rng)
    if opt_name == "sgd":
        opt = torch.optim.SGD([w.values], lr=0.1, momentum=0.9)
        names = ["momentum_buffer"]
    else:
        opt = torch.optim.Adam([w.values], lr=0.01)
        names = ["exp_avg", "exp_avg_sq"]
    for _ in range(2):
        w.values.grad = torch.randn(w.nnz, generator=rng)
        opt.step()
    before = value_by_key(w)
    state_before = {n: dict(zip(entry_keys(w).tolist(), opt.state[w.values][n].tolist())) for n in names}
    grad_before = dict(zip(entry_keys(w).tolist(), w.values.grad.tolist()))
    step_before = opt.state[w.values].get("step")
    n_prune = w.nnz // 4
    keep = magnitude_keep(w.values, n_prune)
    pruned_keys = set(entry_keys(w)[~keep.numpy()].tolist())
    grown = {}

    def grow(rp, ci):
        r, c = random_empty(rp, ci, 40, n_prune + 5, seed=3)
        grown["keys"] = set((r * 40 + c.long()).tolist())
        return r, c

    remap = rewire(w, keep, grow, init="normal", init_scale=0.5, generator=rng, optimizer=opt)
    check_invariants(w, nnz=len(before) + 5)
    assert remap.n_removed == n_prune and remap.n_grown == n_prune + 5
    after = value_by_key(w)
    kept_keys = set(before) - pruned_keys
    assert set(after) == kept_keys | grown["keys"]
    assert not (grown["keys"] & kept_keys)  # grown only at positions empty after pruning
    for k in kept_keys:
        assert after[k] == before[k]
    ak = entry_keys(w).tolist()
    for n in names:
        st = dict(zip(ak, opt.state[w.values][n].tolist()))
        for k in kept_keys:
            assert st[k] == state_before[n][k]
        for k in grown["keys"]:
            assert st[k] == 0.0
    g = dict(zip(ak, w.values.grad.tolist()))
    assert all(g[k] == grad_before[k] for k in kept_keys) and all(g[k] == 0 for k in grown["keys"])
    if step_before is not None:
        assert torch.equal(opt.state[w.values]["step"], step_before)
    # the optimizer keeps working on the resized parameter
    w.values.grad = torch.randn(w.nnz, generator=rng)
    opt.step()


def test_rewire_frees_before_it_allocates(rng, monkeypatch):
    """At 128M connections memory not reused at once is slow to touch (docs/topology.md), so the
    stale transposed index is dropped before the operator runs, and the gradient and Adam's state
    are moved only after the new pattern is set, each old tensor unreferenced once replaced."""
    import weakref

    from sparse_engine.training import topology

    w = random_weight(30, 40, 0.2, dtype=torch.float32, generator=rng)
    opt = torch.optim.Adam([w.values], lr=0.01)
    w.values.grad = torch.randn(w.nnz, generator=rng)
    opt.step()
    w.values.grad = torch.randn(w.nnz, generator=rng)
    w._transpose()
    old = [weakref.ref(t) for t in (w.values.grad, opt.state[w.values]["exp_avg"], opt.state[w.values]["exp_avg_sq"])]
    old_col = w.col_idx
    seen = []

    class Ops:
        def __getattr__(self, name):
            op = getattr(torch.ops.sparse_engine, name)

            def call(*args):
                seen.append((name, w.has_transpose, w.col_idx is old_col, sum(r() is not None for r in old)))
                return op(*args)
            return call

    keep = magnitude_keep(w.values, 30)
    monkeypatch.setattr(topology, "_ops", Ops())
    rewire(w, keep, topology.RandomGrowth(30, 1), optimizer=opt)
    assert seen[0] == ("rewire", False, True, 3)  # the transposed index gone, the old pattern in use
    gathers = [s for s in seen if s[0] == "gather_or_zero"]
    assert len(gathers) == 3 and all(not s[2] for s in gathers)  # after set_pattern
    assert [s[3] for s in gathers] == [3, 2, 1]  # each old tensor freed once replaced
    assert all(r() is None for r in old)


def test_rewire_prune_only_and_empty_rows(rng):
    w = random_weight(20, 10, 0.3, generator=rng)
    keep = torch.zeros(w.nnz, dtype=torch.bool)
    rewire(w, keep)
    check_invariants(w, nnz=0)
    r, c = random_empty(w.row_ptr, w.col_idx, 10, 7, seed=0)
    rewire(w, torch.zeros(0, dtype=torch.bool), lambda rp, ci: (r, c))
    check_invariants(w, nnz=7)
    assert (w.values == 0).all()  # default init is zero


def test_rewire_bad_inputs(rng):
    w = random_weight(5, 5, 0.5, generator=rng)
    with pytest.raises(ValueError, match="keep"):
        rewire(w, torch.ones(w.nnz + 1, dtype=torch.bool))
    with pytest.raises(TypeError, match="SparseWeight"):
        rewire(torch.zeros(3), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="init"):
        rewire(w, torch.ones(w.nnz, dtype=torch.bool), lambda rp, ci: random_empty(rp, ci, 5, 1, 0), init="bogus")


def test_new_values_inits(rng):
    w = random_weight(40, 60, 0.25, dtype=torch.float32, generator=rng)
    assert (new_values(100, w, "zero") == 0).all()
    fan_in, fan_out = w.nnz / 40, w.nnz / 60
    he = new_values(5000, w, "he_uniform", generator=rng)
    assert he.abs().max() <= math.sqrt(6 / fan_in) and he.abs().max() > 0.9 * math.sqrt(6 / fan_in)
    xa = new_values(5000, w, "xavier_uniform", generator=rng)
    assert xa.abs().max() <= math.sqrt(6 / (fan_in + fan_out))
    nrm = new_values(20000, w, "normal", init_scale=0.1, generator=rng)
    assert abs(float(nrm.std()) - 0.1) < 0.005
    assert torch.equal(new_values(3, w, lambda n, wt, g: torch.full((n,), 2.0)), torch.full((3,), 2.0))
    assert new_values(3, w, "zero").dtype == torch.float32


# ------------------------------------------------- rewire against a dictionary model (hypothesis)
EXAMPLES = settings().max_examples  # of the profile tests/conftest.py loaded
seeds = st.integers(0, 2**32 - 1)
densities = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))


def budget(share: float = 1.0, **kw) -> settings:
    """``share`` of the profile's examples for one test (at least 5)."""
    return settings(max_examples=max(5, int(EXAMPLES * share)), **kw)


@budget()
@given(W=weights(dtypes=st.sampled_from([F32, F64, BF16])), p_keep=densities, grow_share=st.floats(0.0, 1.0),
       init=st.sampled_from(["given", "zero", "normal"]), seed=seeds)
def test_rewire_matches_a_dictionary_model(W, p_keep, grow_share, init, seed):
    """rewire = prune the unkept entries, grow at empty positions of the pruned pattern: the
    result, the optimizer state and the gradient follow a {position: value} model."""
    rows, cols = W.shape
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    keep = torch.rand(W.nnz, generator=g) < p_keep
    W.values.grad = torch.randn(W.nnz, generator=g).to(W.values.dtype)
    opt = torch.optim.SGD([W.values], lr=0.1, momentum=0.9)
    opt.state[W.values]["momentum_buffer"] = torch.randn(W.nnz, generator=g).to(W.values.dtype)
    keys_of_before = entry_keys(W)
    old_v, old_g = W.values.detach().double().numpy().copy(), W.values.grad.double().numpy().copy()
    old_m = opt.state[W.values]["momentum_buffer"].double().numpy().copy()
    kept_keys = entry_keys(W)[keep.numpy()]
    free = np.setdiff1d(np.arange(rows * cols), kept_keys)  # pruned positions may be regrown
    new = np.sort(rng.choice(free, int(grow_share * free.size), replace=False)) if free.size else free
    seen = {}

    def grow(rp, ci):
        seen["pattern"] = (rp.clone(), ci.clone())
        return torch.from_numpy(new // max(cols, 1)).long(), torch.from_numpy(new % max(cols, 1)).int()

    values = torch.randn(new.size, generator=g).to(W.values.dtype) if init == "given" else None
    remap = topology.rewire(W, keep, grow, init="zero" if init == "given" else init, values=values,
                            generator=torch.Generator().manual_seed(seed), optimizer=opt)
    check_structure(W)
    # grow saw the pruned pattern
    rp, ci = seen["pattern"]
    assert np.array_equal(ci.numpy(), kept_keys % max(cols, 1))
    assert np.array_equal(rp.numpy(), np.concatenate([[0], np.cumsum(np.bincount(kept_keys // max(cols, 1),
                                                                                 minlength=rows))]))
    assert W.nnz == kept_keys.size + new.size == remap.new_nnz
    after = entry_keys(W)
    assert np.array_equal(after, np.union1d(kept_keys, new))
    v, gr = W.values.detach().double().numpy(), W.values.grad.double().numpy()
    mom = opt.state[W.values]["momentum_buffer"].double().numpy()
    is_new = np.isin(after, new)
    assert not gr[is_new].any() and not mom[is_new].any()  # new entries start afresh
    if init == "zero":
        assert not v[is_new].any()
    if init == "given":
        assert np.array_equal(v[is_new], values.double().numpy())
    src = np.searchsorted(keys_of_before, after[~is_new])  # kept entries keep value, gradient and state
    for now, then in ((v, old_v), (gr, old_g), (mom, old_m)):
        assert np.array_equal(now[~is_new], then[src])
    # the Remap says the same: origin[p] is the old position of the entry now at p, -1 if new
    origin = np.full(after.size, -1)
    origin[~is_new] = src
    assert np.array_equal(remap.origin().numpy(), origin)
    assert remap.n_grown == new.size and remap.n_removed == keys_of_before.size - kept_keys.size


# ------------------------------------------------------------------------------------ RigL growth
def dense_topk(w, G, X, k):
    D = (G.double() @ X.double().t()).numpy()
    cols = w.shape[1]
    occupied = np.zeros(D.size, bool)
    occupied[entry_keys(w)] = True
    cand = np.nonzero(~occupied)[0]
    mag = np.abs(D.reshape(-1)[cand])
    order = cand[np.lexsort((cand, -mag))][:k]  # largest |g|, ties to the lower key
    order.sort()
    return order // cols, order % cols, D.reshape(-1)[order]


@pytest.mark.parametrize("rows,cols,M,k,tile_rows,tile_elems", [
    (37, 23, 5, 40, 4, 4 * 6), (37, 23, 5, 1, 256, 2**22), (10, 50, 3, 300, 3, 3 * 7), (1, 9, 1, 5, 1, 2)])
def test_tiled_gradient_topk_equals_dense_topk(rng, rows, cols, M, k, tile_rows, tile_elems):
    w = random_weight(rows, cols, 0.3, generator=rng)
    k = min(k, rows * cols - w.nnz)
    G = torch.randn(rows, M, generator=rng, dtype=torch.float64)
    X = torch.randn(cols, M, generator=rng, dtype=torch.float64)
    r, c, g = gradient_growth(w.row_ptr, w.col_idx, G, X, k, method="exact", tile_rows=tile_rows,
                              tile_elems=tile_elems)
    rr, rc, rg = dense_topk(w, G, X, k)
    assert np.array_equal(r.numpy(), rr) and np.array_equal(c.numpy(), rc)
    assert np.allclose(g.numpy(), rg)


def test_tiled_gradient_topk_ties_go_to_lower_position(rng):
    w = random_weight(12, 16, 0.2, generator=rng)
    G = torch.randint(-1, 2, (12, 2), generator=rng).double()  # many equal |grad|
    X = torch.randint(-1, 2, (16, 2), generator=rng).double()
    for k in (1, 10, 60):
        r, c, _ = gradient_growth(w.row_ptr, w.col_idx, G, X, k, method="exact", tile_rows=5, tile_elems=35)
        rr, rc, _ = dense_topk(w, G, X, k)
        assert np.array_equal(r.numpy(), rr) and np.array_equal(c.numpy(), rc)


def test_sampled_gradient_growth(rng):
    w = random_weight(30, 40, 0.1, generator=rng)
    G = torch.randn(30, 4, generator=rng, dtype=torch.float64)
    X = torch.randn(40, 4, generator=rng, dtype=torch.float64)
    # a budget that covers every empty position: the sample is all of them, so exact
    r, c, g = gradient_growth(w.row_ptr, w.col_idx, G, X, 25, method="sample", sample_factor=1000, seed=1)
    rr, rc, rg = dense_topk(w, G, X, 25)
    assert np.array_equal(r.numpy(), rr) and np.array_equal(c.numpy(), rc)
    # a small budget: still k distinct empty positions with their true gradients
    r, c, g = gradient_growth(w.row_ptr, w.col_idx, G, X, 25, method="sample", sample_factor=2, seed=1)
    key = (r * 40 + c.long()).numpy()
    assert key.size == 25 and np.all(np.diff(key) > 0) and not np.isin(key, entry_keys(w)).any()
    D = (G @ X.t()).numpy().reshape(-1)
    assert np.allclose(g.numpy(), D[key])


def test_gradient_growth_bad_inputs(rng):
    w = random_weight(6, 5, 0.5, generator=rng)
    G, X = torch.randn(6, 3, generator=rng, dtype=torch.float64), torch.randn(5, 3, generator=rng, dtype=torch.float64)
    with pytest.raises(ValueError, match="G must have"):
        gradient_growth(w.row_ptr, w.col_idx, G[:5], X, 1)
    with pytest.raises(ValueError, match="batch size"):
        gradient_growth(w.row_ptr, w.col_idx, G, X[:, :2], 1)
    with pytest.raises(ValueError, match="empty positions"):
        gradient_growth(w.row_ptr, w.col_idx, G, X, 31)
    with pytest.raises(ValueError, match="method"):
        gradient_growth(w.row_ptr, w.col_idx, G, X, 1, method="dense")


def test_backward_works_after_nnz_change_while_old_graph_is_alive(rng):
    from sparse_engine.nn import SparseLinear

    layer = SparseLinear(8, 6, density=0.5)
    x = torch.randn(4, 8, generator=rng)
    loss = layer(x).pow(2).sum()
    loss.backward()  # ``loss`` keeps the old graph (and its gradient accumulator) alive
    w = layer.weight
    rewire(w, magnitude_keep(w.values, 5))
    layer.zero_grad()
    loss = layer(x).pow(2).sum()
    loss.backward()
    assert w.values.grad.shape == (w.nnz,)


# ------------------------------------------------------------ controllers through the generic ops
def mlp(seed=0, density=0.3, hidden=48, device="cpu"):
    torch.manual_seed(seed)
    return nn.Sequential(SparseLinear(12, hidden, density=density), nn.Tanh(),
                         SparseLinear(hidden, 3, density=min(1.0, density * 2))).to(device)


CONTROLLERS = {
    "SET": lambda m, o: SET(m, o, zeta=0.3, init="normal", seed=1),
    "RigL": lambda m, o: RigL(m, o, end_step=20, update_every=2, grad_method="exact", seed=1),
    "RigL-sample": lambda m, o: RigL(m, o, end_step=20, update_every=2, grad_method="sample", seed=1),
    "GMP": lambda m, o: GradualMagnitudePruning(m, o, final_density=0.1, end_step=12, frequency=2),
    "GMP-global": lambda m, o: GradualMagnitudePruning(m, o, final_density=0.1, end_step=12, frequency=2,
                                                       scope="global"),
    "DeepR": lambda m, o: DeepR(m, o, l1=1e-3, temperature=1e-3, rewire_every=2, seed=1),
    "SelfishRNN": lambda m, o: SelfishRNN(m, o, total_steps=30, death_rate=0.4, redistribution="magnitude",
                                          growth="gradient", seed=1),
    "SelfishRNN-random": lambda m, o: SelfishRNN(m, o, total_steps=30, death="SET", redistribution="nonzeros",
                                                 seed=1),
}


DETERMINISTIC = {"RigL", "GMP", "GMP-global", "SelfishRNN"}  # no random growth: equal to the C++ run


def train(name, device="cpu", steps=12, epochs=2, on_update=None):
    model = mlp(device=device)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    ctl = CONTROLLERS[name](model, opt)
    if on_update is not None:
        ctl.callbacks.append(on_update)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 12, generator=g).to(device)
    y = torch.randint(0, 3, (64,), generator=g).to(device)
    for _ in range(epochs):
        for b in range(steps // epochs):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b::4]), y[b::4]).backward()
            opt.step()
            ctl.step()
        ctl.end_epoch()
    return model, opt, ctl


def state_of(model, opt):
    out = {}
    for n, w in sparse_weights(model).items():
        out[n] = (w.row_ptr.cpu(), w.col_idx.cpu(), w.values.detach().cpu(),
                  *(t.cpu() for k, t in sorted(opt.state[w.values].items()) if t.dim()))
    return out


@pytest.mark.parametrize("name", list(CONTROLLERS))
def test_controllers_through_the_generic_ops(monkeypatch, name):
    """The CUDA code path, on the CPU: every topology op of every controller runs the
    device-generic functions. Deterministic algorithms give the C++ run's result bit for bit;
    the others keep every invariant."""
    updates = []

    def check(step, weights):
        updates.append(step)
        for w in weights.values():
            check_invariants(w)

    ref = state_of(*train(name)[:2])
    monkeypatch.setattr(topology, "_ops", tt)  # the one place the training code calls the operators from
    model, opt, ctl = train(name, on_update=check)
    assert updates
    got = state_of(model, opt)
    if name in DETERMINISTIC:
        for n in ref:
            same(tuple(got[n]), tuple(ref[n]))
    else:
        for n in ref:  # same nnz where the algorithm fixes it
            if not name.startswith("SelfishRNN"):
                assert got[n][1].numel() == ref[n][1].numel()


# ------------------------------------------------------------------------------------------- CUDA
@contextlib.contextmanager
def no_host_copies(limit=64):
    """Records every copy of more than ``limit`` elements from a CUDA tensor to the host made
    through the Tensor methods (.cpu(), .to(), .numpy(), .tolist(), copy_)."""
    seen = []
    orig = {n: getattr(torch.Tensor, n) for n in ("cpu", "to", "tolist", "numpy", "copy_")}

    def big(t):
        return isinstance(t, torch.Tensor) and t.is_cuda and t.numel() > limit

    def wrap(n):
        f = orig[n]

        def method(self, *a, **k):
            out = f(self, *a, **k)
            if n == "copy_":
                src = a[0] if a else k.get("src")
                if big(src) and self.device.type == "cpu":
                    seen.append((n, src.numel()))
            elif big(self) and not (isinstance(out, torch.Tensor) and out.is_cuda):
                seen.append((n, self.numel()))
            return out
        return method

    for n in orig:
        setattr(torch.Tensor, n, wrap(n))
    try:
        yield seen
    finally:
        for n, f in orig.items():
            setattr(torch.Tensor, n, f)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the topology ops' CUDA kernels)")
class TestCUDA:
    @pytest.mark.parametrize("name", list(CONTROLLERS))
    def test_controllers_stay_on_the_device(self, name):
        updates = []

        def check(step, weights):
            updates.append(step)
            for w in weights.values():
                for t in (w.values, w.row_ptr, w.col_idx, w.csc_ptr, w.csc_row, w.csc_perm):
                    assert t.is_cuda
                w.validate()

        with no_host_copies() as copies:
            model, opt, ctl = train(name, device="cuda", on_update=check)
        assert updates
        assert not copies, f"nnz-sized host copies during training: {copies}"
        for w in sparse_weights(model).values():
            check_invariants(SparseWeight(w.row_ptr.cpu(), w.col_idx.cpu(), w.values.detach().cpu(), w.shape))
            for t in opt.state[w.values].values():
                assert t.is_cuda or t.dim() == 0
        for per_entry in (getattr(ctl, "sign", {}), getattr(getattr(ctl, "averager", None), "ax", {})):
            assert all(t.is_cuda for t in per_entry.values())

    @pytest.mark.parametrize("name", ["SET", "GMP", "GMP-global", "RigL", "SelfishRNN", "SelfishRNN-random"])
    def test_one_update_equals_the_cpu_run(self, name, monkeypatch):
        """From the same state (weights, exact integer-valued data and gradients), one update on
        CUDA prunes exactly what the CPU prunes (the keep mask each rewire is given, as the positions
        kept), and keeps their values; with gradient growth it also grows the same, so the whole
        weight agrees. Random growth draws other positions on each device, and Selfish-RNN's regrowth
        at a just-pruned position keeps the old value there (first H200 run: 11 such entries), so
        there the kept entries and the entry count are what must agree."""
        kept = []  # per rewire call: the positions the pruning keeps
        real = base.rewire

        def recording(weight, keep, *args, **kwargs):
            kept.append(frozenset(entry_keys(weight)[keep.cpu().numpy()].tolist()))
            return real(weight, keep, *args, **kwargs)

        monkeypatch.setattr(base, "rewire", recording)

        def build(device):
            torch.manual_seed(0)
            model = nn.Sequential(SparseLinear(16, 24, density=0.3, bias=False))
            with torch.no_grad():
                w = model[0].weight
                w.values.copy_(torch.randint(-8, 9, (w.nnz,), generator=torch.Generator().manual_seed(1)).float())
            model = model.to(device)
            opt = torch.optim.SGD(model.parameters(), lr=0.5)
            ctl = {"SET": lambda: SET(model, opt, zeta=0.3, seed=1),
                   "GMP": lambda: GradualMagnitudePruning(model, opt, final_density=0.1, end_step=2, frequency=1),
                   "GMP-global": lambda: GradualMagnitudePruning(model, opt, final_density=0.1, end_step=2,
                                                                 frequency=1, scope="global"),
                   "RigL": lambda: RigL(model, opt, end_step=10, update_every=1, grad_method="exact", seed=1),
                   "SelfishRNN": lambda: SelfishRNN(model, opt, total_steps=10, growth="gradient", seed=1),
                   "SelfishRNN-random": lambda: SelfishRNN(model, opt, total_steps=10, seed=1)}[name]()
            g = torch.Generator().manual_seed(2)
            x = torch.randint(-2, 3, (8, 16), generator=g).float().to(device)
            c = torch.randint(-2, 3, (8, 24), generator=g).float().to(device)
            opt.zero_grad()
            (model(x) * c).sum().backward()  # exact small integers: G = c, X = x
            opt.step()
            kept.clear()
            ctl.step()
            ctl.end_epoch()
            assert kept, "no topology update ran"
            return value_by_key(model[0].weight), list(kept)

        (cpu, cpu_kept), (cuda, cuda_kept) = build("cpu"), build("cuda")
        assert cuda_kept == cpu_kept
        if name in ("SET", "SelfishRNN-random"):  # random growth: the kept entries and the count agree
            assert len(cuda) == len(cpu)
            cpu = {k: v for k, v in cpu.items() if k in cpu_kept[-1]}
            cuda = {k: v for k, v in cuda.items() if k in cuda_kept[-1]}
        assert cuda == cpu
