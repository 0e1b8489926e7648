"""Controllers SET, RigL, GradualMagnitudePruning, DeepR, SelfishRNN: what each update does
against independent references, schedules against their formulas, determinism, callbacks,
and a short end-to-end run per algorithm where the loss falls."""
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import sparse_engine as se
from sparse_engine.nn import SparseLinear
from sparse_engine.training import (SET, DeepR, GradFactorRecorder, GradualMagnitudePruning, RigL, SelfishRNN,
                                    SparseNTASGD, cosine_decay, cubic_density, erk_densities, narang_threshold,
                                    redistribute, sparse_weights, sparsify_)
from sparse_engine.testing import (assert_bit_equal, check_invariants, entry_keys, set_keep_reference, smallest_reference,
                                   value_by_key)


def mlp(seed=0, density=0.3, hidden=32):
    torch.manual_seed(seed)
    return nn.Sequential(SparseLinear(12, hidden, density=density), nn.Tanh(),
                         SparseLinear(hidden, 3, density=min(1.0, density * 2)))


def data(seed=0, n=256):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=g)
    teacher = torch.randn(12, 3, generator=g)
    y = (x @ teacher + 0.3 * torch.tanh(x[:, :3] * 2)).argmax(1)
    return x, y


def run(model, opt, ctl, epochs, batches=8, seed=0, val=False):
    x, y = data(seed)
    losses = []
    for _ in range(epochs):
        tot = 0.0
        for b in range(batches):
            xb, yb = x[b::batches], y[b::batches]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            ctl.step()
            tot += float(loss.detach())
        losses.append(tot / batches)
        if val:
            ctl.end_epoch(val_loss=losses[-1])
        else:
            ctl.end_epoch()
    return losses


def patterns(model):
    return {n: (w.row_ptr.clone(), w.col_idx.clone(), w.values.detach().clone())
            for n, w in sparse_weights(model).items()}


# ------------------------------------------------------------------ schedules
def test_cubic_density_against_formula():
    di, df, s, e = 0.9, 0.05, 10, 110
    for t, p in ((0, 0.0), (10, 0.0), (35, 0.25), (60, 0.5), (110, 1.0), (500, 1.0)):
        assert cubic_density(t, s, e, di, df) == pytest.approx(df + (di - df) * (1 - p) ** 3)
    assert cubic_density(60, s, e, 1.0, 0.0) == pytest.approx(0.125)


def test_narang_threshold_ramps_to_q():
    q, s, r, e, f = 0.4, 100, 300, 700, 50
    theta = 2 * q * f / (2 * (r - s) + 3 * (e - r))
    assert narang_threshold(50, q, s, r, e, f) == 0.0
    assert narang_threshold(200, q, s, r, e, f) == pytest.approx(theta * 101 / f)
    assert narang_threshold(500, q, s, r, e, f) == pytest.approx((theta * 201 + 1.5 * theta * 201) / f)
    assert narang_threshold(e, q, s, r, e, f) == pytest.approx(q, rel=0.01)


def test_cosine_decay():
    assert cosine_decay(0, 100, 0.5, 0.005) == pytest.approx(0.5)
    assert cosine_decay(50, 100, 0.5, 0.005) == pytest.approx(0.005 + 0.495 / 2)
    assert cosine_decay(100, 100, 0.5, 0.005) == pytest.approx(0.005)
    assert cosine_decay(25, 100, 0.3) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))


def test_erk_densities_match_total_and_cap():
    shapes = {"a": (100, 1000), "b": (500, 500), "c": (3, 4)}
    d = erk_densities(shapes, 0.05)
    total = sum(r * c for r, c in shapes.values())
    assert sum(d[n] * r * c for n, (r, c) in shapes.items()) == pytest.approx(0.05 * total)
    assert d["c"] == 1.0  # tiny layer made dense
    raw = {n: (r + c) / (r * c) for n, (r, c) in shapes.items()}
    assert d["a"] / d["b"] == pytest.approx(raw["a"] / raw["b"])


def test_sparsify_uniform():
    model = mlp()
    dens = sparsify_(model, 0.2, generator=torch.Generator().manual_seed(0))
    for n, w in sparse_weights(model).items():
        assert dens[n] == 0.2
        check_invariants(w, nnz=round(0.2 * w.shape[0] * w.shape[1]))


# ------------------------------------------------------------------ SET
def test_set_prunes_per_sign_and_regrows_at_empty_positions():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    seen = []
    ctl = SET(model, opt, zeta=0.3, seed=1, callbacks=[lambda step, ws: seen.append((step, sorted(ws)))])
    run(model, opt, ctl, epochs=0)
    # one manual epoch so momentum exists, then check the update against the reference
    x, y = data()
    for b in range(4):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[b::4]), y[b::4]).backward()
        opt.step()
        ctl.step()
    ws = sparse_weights(model)
    before = {n: (value_by_key(w), entry_keys(w), w.values.detach().numpy().copy(),
                  dict(zip(entry_keys(w).tolist(), opt.state[w.values]["momentum_buffer"].tolist())))
              for n, w in ws.items()}
    ctl.end_epoch()
    assert seen == [(4, sorted(ws))]
    for n, w in ws.items():
        vals, k, v, mom = before[n]
        check_invariants(w, nnz=len(vals))
        keep = set_keep_reference(v, 0.3)
        kept = set(k[keep].tolist())
        after = value_by_key(w)
        new = set(after) - kept
        assert kept <= set(after) and len(new) == (~keep).sum()
        assert not (new & kept)
        assert all(after[q] == 0.0 for q in new)  # default init zero
        m = dict(zip(entry_keys(w).tolist(), opt.state[w.values]["momentum_buffer"].tolist()))
        assert all(m[q] == mom[q] for q in kept) and all(m[q] == 0 for q in new)


def make(algo, model, opt, seed, steps=8, callbacks=()):
    if algo == "SET":
        return SET(model, opt, zeta=0.3, seed=seed, init="normal", callbacks=callbacks)
    if algo == "SelfishRNN":
        return SelfishRNN(model, opt, total_steps=steps, redistribution="magnitude", seed=seed, callbacks=callbacks)
    if algo == "SelfishRNN-gradient":
        return SelfishRNN(model, opt, total_steps=steps, growth="gradient", death="SET", seed=seed,
                          callbacks=callbacks)
    if algo == "RigL":
        return RigL(model, opt, end_step=steps, update_every=2, seed=seed, callbacks=callbacks)
    if algo == "GMP":
        return GradualMagnitudePruning(model, opt, final_density=0.3, end_step=steps, frequency=2, seed=seed,
                                       callbacks=callbacks)
    return DeepR(model, opt, l1=1e-3, temperature=1e-2, rewire_every=2, seed=seed, callbacks=callbacks)


ALGOS = ["SET", "SelfishRNN", "SelfishRNN-gradient", "RigL", "GMP", "DeepR"]


@pytest.mark.parametrize("algo", ALGOS)
def test_deterministic_given_seed_and_invariant_after_every_update(algo):
    outs = []
    for seed in (3, 3, 4):
        model = mlp(seed=0)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        updates = []

        def cb(step, ws):
            updates.append(step)
            for w in ws.values():
                check_invariants(w)
            assert sorted(ws) == sorted(sparse_weights(model))

        run(model, opt, make(algo, model, opt, seed, callbacks=[cb]), epochs=2, batches=4)
        assert updates
        outs.append(patterns(model))
    same = lambda a, b: all(torch.equal(x, y) for n in a for x, y in zip(a[n], b[n]))
    assert same(outs[0], outs[1])
    if algo in ("SET", "SelfishRNN", "DeepR"):  # the others draw nothing at random on small layers
        assert not same(outs[0], outs[2])


def test_set_epsilon_redraws_erdos_renyi():
    model = mlp()
    SET(model, torch.optim.SGD(model.parameters(), lr=0.1), epsilon=2.0)
    for w in sparse_weights(model).values():
        r, c = w.shape
        check_invariants(w, nnz=round(min(1.0, 2.0 * (r + c) / (r * c)) * r * c))


# ------------------------------------------------------------------ RigL
def test_recorder_factors_give_the_dense_gradient():
    layer = SparseLinear(7, 5, density=0.5)
    rec = GradFactorRecorder(layer, {"weight": layer.weight})
    rec.armed = True
    rec.new_step()
    x = torch.randn(4, 3, 7)
    dense = layer.weight.to_dense().requires_grad_()
    (torch.sin(x @ dense.t() + layer.bias).sum()).backward()
    (torch.sin(layer(x)).sum()).backward()
    G, X = rec.factors(layer.weight)
    assert torch.allclose(G @ X.t(), dense.grad, atol=1e-5)
    with torch.no_grad():
        layer(x)  # evaluation passes do not replace the recorded factors
    assert torch.equal(rec.factors(layer.weight)[0], G)


def test_rigl_update_drops_smallest_and_grows_largest_gradient():
    """Algorithm 1 of RigL: an update iteration drops by |w| as the batch found them, grows at the
    empty positions of largest |gradient| (a just-dropped one keeps its value, RigL's code's
    reinit_when_same=False) and takes no gradient step; the other iterations step."""
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    ctl = RigL(model, opt, end_step=10, update_every=3, update_fraction=0.4, seed=0)
    ws = sparse_weights(model)
    x, y = data()
    regrown = 0
    for t in range(1, 10):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[t::9]), y[t::9]).backward()
        before = {n: (entry_keys(w), w.values.detach().numpy().copy()) for n, w in ws.items()}
        biases = [p.detach().clone() for n, p in model.named_parameters() if n.endswith("bias")]
        if t % 3 == 0:
            factors = {n: ctl.recorder.factors(w) for n, w in ws.items()}
            moments = {n: opt.state[w.values]["exp_avg"].clone() for n, w in ws.items()}
        opt.step()
        ctl.step()
        moved = [not torch.equal(b, p) for b, (n, p) in zip(biases, ((n, p) for n, p in model.named_parameters()
                                                                    if n.endswith("bias")))]
        assert any(moved) == (t % 3 != 0), t  # no gradient step on an update iteration, one otherwise
        if t % 3 == 0:
            f = 0.2 * (1 + math.cos(math.pi * t / 10))
            assert ctl.fraction(t) == pytest.approx(f)
            for n, w in ws.items():
                k, v = before[n]
                G, X = factors[n]
                check_invariants(w, nnz=k.size)
                n_upd = int(f * k.size)
                dropped = smallest_reference(np.abs(v), n_upd)
                kept = set(k[~dropped].tolist())
                after = set(entry_keys(w).tolist())
                grown = after - kept
                assert kept <= after and len(grown) == n_upd
                D = np.abs((G.double() @ X.double().t()).numpy()).reshape(-1)
                empty = np.setdiff1d(np.arange(D.size), np.array(sorted(kept), dtype=np.int64))
                # every grown position has |grad| >= every empty position not grown
                not_grown = np.setdiff1d(empty, np.array(sorted(grown), dtype=np.int64))
                if grown and not_grown.size:
                    assert D[sorted(grown)].min() >= D[not_grown].max() - 1e-6
                old = dict(zip(k.tolist(), v.tolist()))
                now = value_by_key(w)
                for q in after:  # kept and regrown entries as they were, new ones at zero
                    assert now[q] == old.get(q, 0.0), (n, q)
                regrown += len(grown & set(k[dropped].tolist()))
                m_old = dict(zip(k.tolist(), moments[n].tolist()))
                m_now = dict(zip(entry_keys(w).tolist(), opt.state[w.values]["exp_avg"].tolist()))
                assert all(m_now[q] == m_old.get(q, 0.0) for q in after)  # the state moves with its entry
    assert regrown > 0  # the case the rule is about happened
    assert not ctl.recorder.armed  # no update at or after end_step


@pytest.mark.parametrize("step_on_update", [False, True])
def test_rigl_options_take_the_earlier_behaviour(step_on_update):
    """reset_regrown=True starts a weight dropped and regrown in one update at zero; step_on_update=True
    also takes the gradient step on an update iteration, before the update (both the behaviour before
    they were options)."""
    model = mlp(density=0.6)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctl = RigL(model, opt, end_step=10, update_every=1, update_fraction=1.0, reset_regrown=True,
               step_on_update=step_on_update, seed=0)
    x, y = data()
    ws = list(sparse_weights(model).values())
    nn.functional.cross_entropy(model(x), y).backward()
    bias = model[-1].bias.detach().clone()
    if not step_on_update:  # the update runs inside opt.step(), on the weights as the batch found them
        before = [(entry_keys(w), w.values.detach().numpy().copy()) for w in ws]
    opt.step()
    if step_on_update:  # the update runs in ctl.step(), on the stepped weights
        before = [(entry_keys(w), w.values.detach().numpy().copy()) for w in ws]
    ctl.step()
    assert torch.equal(bias, model[-1].bias) != step_on_update
    regrown = 0
    for w, (k, v) in zip(ws, before):
        now = value_by_key(w)
        dropped = smallest_reference(np.abs(v), int(ctl.fraction(1) * k.size))
        back = [q for q in k[dropped].tolist() if q in now]
        regrown += len(back)
        assert all(now[q] == 0 for q in back)
        assert all(now[q] == x for q, x in zip(k[~dropped].tolist(), v[~dropped].tolist()))
    assert regrown > 0


def test_rigl_needs_gradient_factors():
    class Owner(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = SparseLinear(4, 4).weight

    m = Owner()
    with pytest.raises(ValueError, match="dense_grad_factors"):
        RigL(m, torch.optim.SGD(m.parameters(), lr=0.1), end_step=10)


# ------------------------------------------------------------------ gradual pruning
def test_gmp_cubic_hits_the_schedule_and_prunes_smallest():
    model = mlp(density=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ctl = GradualMagnitudePruning(model, opt, final_density=0.1, start_step=2, end_step=20, frequency=4)
    ws = sparse_weights(model)
    x, y = data()
    for t in range(1, 25):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[t::24]), y[t::24]).backward()
        opt.step()
        before = {n: (entry_keys(w), w.values.detach().numpy().copy()) for n, w in ws.items()}
        ctl.step()
        for n, w in ws.items():
            size = w.shape[0] * w.shape[1]
            k, v = before[n]
            if 2 <= t <= 20 and ((t - 2) % 4 == 0 or t == 20):
                p = (t - 2) / 18
                target = round((0.1 + 0.9 * (1 - p) ** 3) * size)
                check_invariants(w, nnz=min(k.size, target))
                assert np.array_equal(np.sort(entry_keys(w)), np.sort(k[~smallest_reference(np.abs(v), k.size - w.nnz)]))
            else:
                assert w.nnz == k.size
    for w in ws.values():
        assert w.nnz == round(0.1 * w.shape[0] * w.shape[1])


def test_gmp_global_scope_and_narang():
    model = mlp(density=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ctl = GradualMagnitudePruning(model, opt, final_density=0.2, end_step=4, frequency=2, scope="global")
    total = sum(w.shape[0] * w.shape[1] for w in sparse_weights(model).values())
    run(model, opt, ctl, epochs=1, batches=4)
    assert sum(w.nnz for w in sparse_weights(model).values()) == sum(
        round(0.2 * w.shape[0] * w.shape[1]) for w in sparse_weights(model).values())
    assert total > 0
    model = mlp(density=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # frozen values
    initial = {n: w.values.detach().abs().clone() for n, w in sparse_weights(model).items()}
    ctl = GradualMagnitudePruning(model, opt, final_density=0.25, schedule="narang", start_step=0, ramp_step=40,
                                  end_step=80, frequency=10)
    run(model, opt, ctl, epochs=1, batches=80)
    for n, w in sparse_weights(model).items():
        eps = narang_threshold(80, ctl.q[n], 0, 40, 80, 10)
        assert eps == pytest.approx(ctl.q[n] * 205 / 200)  # about q at the end of the ramp
        # with frozen values the survivors are exactly the initial weights above the final threshold
        assert w.nnz == int((initial[n] >= eps).sum())
        assert (w.values.detach().abs() >= eps).all()
        check_invariants(w)
        assert 0.15 < w.density <= 0.25


# ------------------------------------------------------------------ DEEP R
def test_deepr_removes_sign_flips_and_regrows_with_stored_sign():
    lin = SparseLinear(2, 2, density=1.0, bias=False)
    with torch.no_grad():
        lin.weight.values.copy_(torch.tensor([0.5, -0.5, 0.7, -0.7]))
    opt = torch.optim.SGD(lin.parameters(), lr=0.0)
    ctl = DeepR(lin, opt, rule="zhang", l1=0.0, noise=0.0, seed=0)
    with torch.no_grad():
        lin.weight.values[1] = 0.3  # was negative: its sign flipped, so it dies
    assert ctl.dead("weight").tolist() == [False, True, False, False]
    ctl.end_epoch()
    w = lin.weight
    check_invariants(w, nnz=4)
    # the only empty position is the one that died: regrown there with its stored (negative) sign at 0
    assert w.values.detach().tolist() == pytest.approx([0.5, 0.0, 0.7, -0.7])
    assert ctl.sign["weight"].tolist() == [1, -1, 1, -1]


def test_deepr_l1_and_noise_terms():
    lin = SparseLinear(30, 20, density=0.5, bias=False)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    ctl = DeepR(lin, opt, l1=1e-2, rewire_every=10**6)
    before = lin.weight.values.detach().clone()
    ctl.step()
    assert torch.allclose(lin.weight.values.detach(), before - 0.1 * 1e-2 * torch.sign(before))
    ctl = DeepR(lin, opt, l1=0.0, temperature=1.25, rewire_every=10**6, seed=1)  # std sqrt(2 lr T) = 0.5
    before = lin.weight.values.detach().clone()
    ctl.step()
    assert float((lin.weight.values.detach() - before).std()) == pytest.approx(0.5, rel=0.15)


# ------------------------------------------------------------------ Selfish-RNN
def test_redistribute_exact_sum_caps_and_proportions():
    assert redistribute(10, [1.0, 1.0], [100, 100]) == [5, 5]
    assert redistribute(10, [3.0, 1.0], [100, 2]) == [8, 2]
    assert redistribute(7, [1.0, 1.0, 1.0], [5, 5, 5]) == [3, 2, 2]
    out = redistribute(1000, [0.3, 2.0, 0.0, 1.1], [50, 900, 10, 400])
    assert sum(out) == 1000 and all(o <= c for o, c in zip(out, [50, 900, 10, 400]))
    with pytest.raises(ValueError):
        redistribute(10, [1.0], [9])


def test_sparse_ntasgd_averages_each_weight_over_its_lifetime():
    lin = SparseLinear(5, 4, density=0.5, bias=False)
    avg = SparseNTASGD({"w": lin.weight})
    avg.start()
    history = []
    for s in range(6):
        with torch.no_grad():
            lin.weight.values.add_(torch.randn(lin.weight.nnz))
        avg.update()
        history.append(lin.weight.values.detach().clone())
    # mu = 1/(step-1) from step 3: the mean over steps 2..6
    assert torch.allclose(avg.ax["w"], torch.stack(history[1:]).mean(0), atol=1e-6)
    trained = lin.weight.values.detach().clone()
    with avg.averaged():
        assert torch.allclose(lin.weight.values.detach(), avg.ax["w"])
    assert torch.equal(lin.weight.values.detach(), trained)


def test_selfish_rnn_update_death_rate_and_averages_of_removed_dropped():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ctl = SelfishRNN(model, opt, total_steps=40, death_rate=0.5, redistribution="magnitude", seed=0)
    ctl.start_averaging()
    total_before = sum(w.nnz for w in sparse_weights(model).values())
    run(model, opt, ctl, epochs=1, batches=8)
    assert ctl.death_rate == pytest.approx(cosine_decay(8, 40, 0.5, 0.005))
    total_after = sum(w.nnz for w in sparse_weights(model).values())
    assert total_after == total_before  # redistribution moves connections, never loses them
    for n, w in sparse_weights(model).items():
        check_invariants(w)
        c = ctl.averager.count[n]
        assert c.numel() == w.nnz
        assert set(c.unique().tolist()) <= {0, 8}  # survivors kept their counter, newborns restart


def test_selfish_rnn_nonmonotone_trigger():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ctl = SelfishRNN(model, opt, total_steps=100, nonmono=2)
    for i, v in enumerate([5.0, 4.0, 3.0, 2.5, 2.4]):
        ctl.end_epoch(val_loss=v)
        assert not ctl.averager.active
    ctl.end_epoch(val_loss=3.5)  # worse than min of all but the last 2
    assert ctl.averager.active


def test_selfish_rnn_bad_options():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(ValueError, match="momentum"):
        SelfishRNN(model, opt, total_steps=10, growth="momentum")
    with pytest.raises(ValueError, match="death"):
        SelfishRNN(model, opt, total_steps=10, death="random")
    with pytest.raises(ValueError, match="total_steps"):
        SelfishRNN(model, opt, total_steps=0)


# ------------------------------------------------------------------ common errors
def test_controller_bad_inputs():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="no SparseWeight"):
        SET(nn.Linear(3, 3), opt)
    with pytest.raises(TypeError, match="optimizer"):
        SET(model, "sgd")
    with pytest.raises(ValueError, match="zeta"):
        SET(model, opt, zeta=2)
    with pytest.raises(TypeError, match="callbacks"):
        SET(model, opt, callbacks=[1])
    with pytest.raises(ValueError, match="init"):
        SET(model, opt, init="ones")
    with pytest.raises(ValueError, match="end_step"):
        RigL(model, opt, end_step=0)
    with pytest.raises(ValueError, match="ramp_step"):
        GradualMagnitudePruning(model, opt, final_density=0.1, end_step=10, schedule="narang")
    with pytest.raises(ValueError, match="rewire_every"):
        DeepR(model, opt, rewire_every="batch")


# ------------------------------------------------------------------ end to end
@pytest.mark.parametrize("algo", ["SET", "SelfishRNN", "SelfishRNN-gradient", "RigL", "GMP", "DeepR"])
def test_end_to_end_loss_falls(algo):
    model = mlp(seed=1, density=0.5 if algo != "GMP" else 1.0, hidden=48)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    epochs, batches = 12, 8
    calls = []
    cb = [lambda step, ws: calls.append(step)]
    if algo == "SET":
        ctl = SET(model, opt, zeta=0.2, init="he_uniform", seed=0, callbacks=cb)
    elif algo.startswith("SelfishRNN"):
        growth = "gradient" if algo.endswith("gradient") else "random"
        ctl = SelfishRNN(model, opt, total_steps=epochs * batches, death="SET", growth=growth,
                         redistribution="nonzeros", seed=0, callbacks=cb)
    elif algo == "RigL":
        ctl = RigL(model, opt, end_step=epochs * batches * 3 // 4, update_every=5, seed=0, callbacks=cb)
    elif algo == "GMP":
        ctl = GradualMagnitudePruning(model, opt, final_density=0.3, end_step=epochs * batches // 2,
                                      frequency=4, callbacks=cb)
    else:
        ctl = DeepR(model, opt, l1=1e-4, temperature=1e-4, seed=0, callbacks=cb)
    losses = run(model, opt, ctl, epochs, batches, val=algo.startswith("SelfishRNN"))
    assert calls, "callbacks were never called"
    for w in sparse_weights(model).values():
        check_invariants(w)
    assert losses[-1] < 0.7 * losses[0], losses


class FactorOwner(nn.Module):
    """A non-SparseLinear module following the dense_grad_factors protocol (as an RNN would)."""

    def __init__(self):
        super().__init__()
        self.record_grad_factors = False
        self._factors = None
        self.w = SparseLinear(6, 5, density=0.4).weight

    def forward(self, x):
        from sparse_engine import ops

        xt = x.t().contiguous()
        y = ops.spmm(self.w, xt)
        if self.record_grad_factors and y.requires_grad:
            def keep(g, xt=xt.detach()):
                self._factors = (g.detach(), xt)
            y.register_hook(keep)
        return y.t()

    def dense_grad_factors(self, name):
        assert name == "w"
        return self._factors


def test_rigl_through_the_dense_grad_factors_protocol():
    m = FactorOwner()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    ctl = RigL(m, opt, end_step=10, update_every=2, update_fraction=0.5)
    x = torch.randn(8, 6)
    nnz = m.w.nnz
    for t in range(1, 4):
        opt.zero_grad()
        m(x).pow(2).sum().backward()
        if t == 2:
            assert m.record_grad_factors
            G, X = m.dense_grad_factors("w")
            dense = m.w.to_dense().requires_grad_()
            (dense @ x.t()).pow(2).sum().backward()
            assert torch.allclose(G @ X.t(), dense.grad, atol=1e-5)
            before = set(entry_keys(m.w).tolist())
        opt.step()
        ctl.step()
        if t == 2:
            assert not m.record_grad_factors
            check_invariants(m.w, nnz=nnz)
            assert set(entry_keys(m.w).tolist()) != before


# ------------------------------------------------------------ 2-byte weights
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_topology_update_of_2byte_weights_equals_the_float32_update(dtype):
    """The topology kernels take float32/float64: a float16/bfloat16 weight is widened (exactly)
    for the update and rounded back, so its update is the float32 update of the same values."""
    from sparse_engine import SparseWeight
    from sparse_engine.training.topology import gradient_growth, magnitude_keep, random_empty, rewire, set_keep
    g = torch.Generator().manual_seed(5)
    mask = torch.rand(40, 30, generator=g) < 0.2
    dense = torch.randn(40, 30, generator=g).to(dtype)
    w2, w4 = SparseWeight.from_dense(dense, mask), SparseWeight.from_dense(dense.float(), mask)
    assert w2.values.dtype == dtype
    for keep_fn in (lambda v: magnitude_keep(v, 50), lambda v: set_keep(v, 0.3)):
        assert torch.equal(keep_fn(w2.values), keep_fn(w4.values))
    G, X = torch.randn(40, 7, generator=g).to(dtype), torch.randn(30, 7, generator=g).to(dtype)
    got, want = gradient_growth(w2.row_ptr, w2.col_idx, G, X, 20), gradient_growth(w4.row_ptr, w4.col_idx,
                                                                                     G.float(), X.float(), 20)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    opt = torch.optim.Adam([w2.values], lr=0.1)
    w2.values.grad = torch.ones_like(w2.values)
    opt.step()
    w4.values.data.copy_(w2.values.detach().float())
    keep = magnitude_keep(w4.values, 50)
    grow = lambda rp, ci: random_empty(rp, ci, 30, 60, seed=9)
    new = torch.randn(60, generator=g).to(dtype)  # (randn in bfloat16 is not randn in float32 rounded)
    rewire(w2, keep, grow, values=new, optimizer=opt)
    rewire(w4, keep, grow, values=new.float())
    w2.validate()
    assert w2.values.dtype == dtype and opt.state[w2.values]["exp_avg"].dtype == dtype
    assert torch.equal(w2.row_ptr, w4.row_ptr) and torch.equal(w2.col_idx, w4.col_idx)
    assert torch.equal(w2.values.detach(), w4.values.detach().to(dtype))
    assert opt.state[w2.values]["exp_avg"].shape == (w2.nnz,)


@pytest.mark.parametrize("algo", ALGOS)
def test_controllers_train_bfloat16_models(algo):
    model = mlp(seed=0).to(torch.bfloat16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    updates = []

    def cb(step, ws):
        updates.append(step)
        for w in ws.values():
            w.validate()
            assert w.values.dtype == torch.bfloat16

    x, y = data()
    x = x.to(torch.bfloat16)
    ctl = make(algo, model, opt, seed=0, callbacks=[cb])
    for epoch in range(2):
        for b in range(4):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b::4]).float(), y[b::4]).backward()
            opt.step()
            ctl.step()
        ctl.end_epoch()
    assert updates
    for w in sparse_weights(model).values():
        assert w.values.dtype == torch.bfloat16
        state = opt.state[w.values]
        assert state["momentum_buffer"].shape == (w.nnz,) and state["momentum_buffer"].dtype == torch.bfloat16


@pytest.mark.parametrize("algo", ALGOS)
def test_controllers_evolve_the_same_topology_on_the_dense_path(algo):
    """Training with compute='dense' rewires exactly as with compute='sparse' (float64: the
    gradients agree to rounding), for every controller; RigL's growth by gradient records its
    factors on the sparse path."""
    def train(path):
        torch.manual_seed(0)
        model = nn.ModuleDict({"rnn": se.nn.SparseLSTM(3, 8, density=0.4, compute=path, dtype=torch.float64),
                               "out": se.nn.SparseLinear(8, 2, density=0.5, dtype=torch.float64)})
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        ctl = make(algo, model, opt, seed=1)
        start = {n: w.col_idx.clone() for n, w in sparse_weights(model).items()}
        g = torch.Generator().manual_seed(2)
        for epoch in range(1):  # one epoch: later updates rank values that differ by rounding only
            for _ in range(4):
                x = torch.randn(5, 4, 3, generator=g, dtype=torch.float64)
                y = torch.randint(0, 2, (4,), generator=g)
                opt.zero_grad()
                out = model["out"](model["rnn"](x)[0][-1])
                nn.functional.cross_entropy(out, y).backward()
                opt.step()
                ctl.step()
            ctl.end_epoch()
        assert any(not torch.equal(start[n], w.col_idx) for n, w in sparse_weights(model).items())  # rewired
        return {n: (w.row_ptr, w.col_idx, w.values.detach()) for n, w in sparse_weights(model).items()}

    sparse, dense = train("sparse"), train("dense")
    for name in sparse:
        assert torch.equal(sparse[name][0], dense[name][0]) and torch.equal(sparse[name][1], dense[name][1]), name
        torch.testing.assert_close(sparse[name][2], dense[name][2], rtol=1e-9, atol=1e-9)



# ------------------------------------------------------------------ state_dict: bit-exact resume
def resumable(algo, model, opt, seed):
    """Controllers with every piece of state in use: NT-ASGD averages, redistribution, growth by
    gradient, changing nnz, dead-sign records, schedules reaching past the save."""
    if algo == "SET":
        return SET(model, opt, zeta=0.3, init="normal", seed=seed)
    if algo == "SelfishRNN":
        return SelfishRNN(model, opt, total_steps=24, redistribution="momentum", nonmono=1, init="normal", seed=seed)
    if algo == "SelfishRNN-gradient":
        return SelfishRNN(model, opt, total_steps=24, death="SET", growth="gradient", redistribution="magnitude",
                          nonmono=1, seed=seed)
    if algo == "RigL":
        return RigL(model, opt, end_step=20, update_every=3, seed=seed)
    if algo == "GMP":
        return GradualMagnitudePruning(model, opt, final_density=0.2, end_step=20, frequency=3, scope="global",
                                       seed=seed)
    if algo == "GMP-narang":
        return GradualMagnitudePruning(model, opt, final_density=0.2, start_step=2, ramp_step=10, end_step=20,
                                       frequency=3, schedule="narang", seed=seed)
    return DeepR(model, opt, l1=1e-3, temperature=1e-2, rewire_every=5, seed=seed)


def drive(model, opt, sched, ctl, start, stop, batches=4):
    """Training steps start+1..stop (global numbering), epochs of ``batches`` steps with
    end_epoch and a validation loss that triggers NT-ASGD at the end of epoch 3."""
    x, y = data(0)
    losses = []
    val = [1.0, 0.5, 1.2, 0.9, 0.7, 0.6, 0.5]
    for t in range(start + 1, stop + 1):
        b = (t - 1) % batches
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[b::batches]), y[b::batches])
        loss.backward()
        opt.step()
        sched.step()
        ctl.step()
        losses.append(float(loss.detach()))
        if t % batches == 0:
            if isinstance(ctl, SelfishRNN):
                ctl.end_epoch(val_loss=val[t // batches - 1])
            else:
                ctl.end_epoch()
    return losses


def trainer(algo, model_seed, density, ctl_seed):
    model = mlp(seed=model_seed, density=density)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)  # DEEP R's L1 term follows the lr
    return model, opt, sched, resumable(algo, model, opt, ctl_seed)


STATE_ALGOS = ["SET", "SelfishRNN", "SelfishRNN-gradient", "RigL", "GMP", "GMP-narang", "DeepR"]


@pytest.mark.parametrize("algo", STATE_ALGOS)
def test_controller_state_dict_resumes_bit_exactly(algo, tmp_path):
    """N steps, save model + optimizer + scheduler + controller (mid-epoch, through a file read
    with weights_only=True), M more steps; fresh objects of another seed and density load the
    file and run the same M steps: losses, values, topology, optimizer and controller state
    are equal bit for bit."""
    from sparse_engine.io.checkpoint import load_checkpoint, save_checkpoint

    N, M = 14, 10
    model, opt, sched, ctl = trainer(algo, model_seed=0, density=0.3, ctl_seed=5)
    drive(model, opt, sched, ctl, 0, N)
    updates = []
    ctl.callbacks.append(lambda step, ws: updates.append(step))
    path = save_checkpoint(tmp_path / "ck.pt", model, opt, scheduler=sched.state_dict(), controller=ctl.state_dict())
    if algo.startswith("SelfishRNN"):
        assert ctl.averager.active and ctl.val_losses  # the averages are part of the saved state
    saved_nnz = {n: w.nnz for n, w in sparse_weights(model).items()}
    torch.load(path, weights_only=True)  # tensors, numbers, strings: no pickled objects
    losses = drive(model, opt, sched, ctl, N, N + M)
    assert updates, "no topology update after the save: the test would not see controller state"

    model2, opt2, sched2, ctl2 = trainer(algo, model_seed=1, density=0.5, ctl_seed=6)
    if algo in ("GMP", "GMP-narang"):
        assert {n: w.nnz for n, w in sparse_weights(model2).items()} != saved_nnz
    payload = load_checkpoint(path, model2, opt2)
    sched2.load_state_dict(payload["extra"]["scheduler"])
    ctl2.load_state_dict(payload["extra"]["controller"])
    losses2 = drive(model2, opt2, sched2, ctl2, N, N + M)

    assert losses2 == losses
    assert_bit_equal(model2.state_dict(), model.state_dict(), "model")
    assert_bit_equal(opt2.state_dict(), opt.state_dict(), "optimizer")
    assert_bit_equal(ctl2.state_dict(), ctl.state_dict(), "controller")
    for w in sparse_weights(model2).values():
        check_invariants(w)


def test_controller_state_dict_is_a_snapshot_and_checks_what_it_loads():
    model, opt, sched, ctl = trainer("SelfishRNN", 0, 0.3, 0)
    drive(model, opt, sched, ctl, 0, 13)
    state = ctl.state_dict()
    keys_ = {"controller", "weights", "step_count", "epoch", "generator", "init", "init_scale", "options", "recorder",
             "val_losses", "averager", "dense_momentum"}
    assert set(state) == keys_ and state["step_count"] == 13 and state["epoch"] == 3
    before = {n: t.clone() for n, t in state["averager"]["ax"].items()}
    drive(model, opt, sched, ctl, 13, 14)  # training on does not change a state taken before
    assert_bit_equal(state["averager"]["ax"], before)
    with pytest.raises(ValueError, match="SelfishRNN controller, not SET"):
        SET(model, opt).load_state_dict(state)
    with pytest.raises(ValueError, match="growth"):
        SelfishRNN(model, opt, total_steps=24, growth="gradient").load_state_dict(state)
    other = nn.Sequential(SparseLinear(12, 32, density=0.3))
    with pytest.raises(ValueError, match="sparse weights"):
        SelfishRNN(other, torch.optim.SGD(other.parameters(), lr=0.1), total_steps=24).load_state_dict(state)
    with pytest.raises(ValueError, match="state_dict"):
        ctl.load_state_dict({"step_count": 3})
    # the saved schedule wins over the new controller's options (as torch's LR schedulers)
    fresh = SelfishRNN(model, opt, total_steps=99, death_rate=0.9)
    fresh.load_state_dict(state)
    assert (fresh.total_steps, fresh.death_rate0, fresh.step_count) == (24, 0.5, 13)


def test_deepr_follows_the_current_learning_rate():
    lin = SparseLinear(30, 20, density=0.5, bias=False)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    ctl = DeepR(lin, opt, l1=1e-2, rewire_every=10**6)
    opt.load_state_dict(opt.state_dict())  # replaces the param group dicts
    opt.param_groups[0]["lr"] = 0.5
    before = lin.weight.values.detach().clone()
    ctl.step()
    assert torch.allclose(lin.weight.values.detach(), before - 0.5 * 1e-2 * torch.sign(before))


def test_selfish_rnn_nonmono_zero_compares_with_every_earlier_loss():
    model = mlp()
    ctl = SelfishRNN(model, torch.optim.SGD(model.parameters(), lr=0.05), total_steps=100, nonmono=0)
    ctl.end_epoch(val_loss=2.0)
    ctl.end_epoch(val_loss=1.0)
    assert not ctl.averager.active
    ctl.end_epoch(val_loss=1.5)  # worse than the best so far
    assert ctl.averager.active


def test_set_epsilon_resume_order_is_checked():
    """SET(epsilon=...) draws new weights when built: built before the model's state is loaded, a
    resume is exact; built after it (the weights just loaded replaced), load_state_dict says so."""
    def build():
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return model, opt
    model, opt = build()
    ctl = SET(model, opt, zeta=0.3, epsilon=2, seed=0)
    x, y = data()
    for t in range(4):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[t::4]), y[t::4]).backward()
        opt.step()
        ctl.step()
        ctl.end_epoch()
    saved = (model.state_dict(), opt.state_dict(), ctl.state_dict())
    model2, opt2 = build()
    ctl2 = SET(model2, opt2, zeta=0.3, epsilon=2, seed=0)
    for part, state in zip((model2, opt2, ctl2), saved):
        part.load_state_dict(state)
    for a, b in zip(sparse_weights(model).values(), sparse_weights(model2).values()):
        assert_bit_equal(a.values.detach(), b.values.detach())
    model3, opt3 = build()
    model3.load_state_dict(saved[0])
    ctl3 = SET(model3, opt3, zeta=0.3, epsilon=2, seed=0)
    opt3.load_state_dict(saved[1])
    with pytest.raises(ValueError, match=r"re-drew the weights .* build the controller first"):
        ctl3.load_state_dict(saved[2])


def test_deepr_state_with_a_device_it_no_longer_uses_loads():
    """A DeepR state saved with a GPU's noise generator loads where the weights are on the CPU (the
    GPU's generator is left out; before, torch.Generator(device='cuda:0') failed without CUDA)."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = DeepR(model, opt, l1=1e-3, temperature=1e-3).state_dict()
    state["device_generators"] = {"cuda:0": torch.Generator().get_state(), "meta": torch.Generator().get_state()}
    ctl = DeepR(model, opt, l1=1e-3, temperature=1e-3)
    ctl.load_state_dict(state)
    assert ctl._device_generators == {}


def test_sparse_ntasgd_averages_bfloat16_weights_in_float32():
    """bfloat16 weights drifting over 600 steps: their averages land within bfloat16's rounding of the
    float64 mean (kept in bfloat16, they stopped moving once mu (w - ax) fell under half its spacing:
    a mean error of 0.16 at 2,000 steps)."""
    torch.manual_seed(0)
    lin = SparseLinear(50, 40, density=0.5, dtype=torch.bfloat16)
    avg = SparseNTASGD({"w": lin.weight})
    avg.start()
    w, g = lin.weight, torch.Generator().manual_seed(1)
    base = w.values.detach().double()
    total, n = torch.zeros(w.nnz, dtype=torch.float64), 0
    for t in range(600):
        with torch.no_grad():
            w.values.copy_(base + 0.5 * t / 600 + 0.05 * torch.randn(w.nnz, generator=g, dtype=torch.float64))
        avg.update()
        if t >= 1:  # the average runs over the weight's steps from its second (mu = 1 at counts 1 and 2)
            total += w.values.detach().double()
            n += 1
    err = (avg.averages("w").double() - total / n).abs()
    assert avg.averages("w").dtype == torch.bfloat16
    assert err.mean() < 2e-3 and err.max() < 2 ** -6


@pytest.mark.parametrize("threshold, after", [(1e-6, 2e-6), (10.0, 5.0), (None, None)])
def test_selfish_threshold_death_follows_the_death_rate_as_the_code(threshold, after):
    """death="threshold" removes |w| <= threshold, then doubles the threshold when the removals fell
    short of ceil(p nnz) summed over the layers by more than 2%, halves it past 2% over (the code's
    truncate_weights); None: a threshold that removes exactly that many keeps its value."""
    model = mlp()
    ctl = SelfishRNN(model, None, total_steps=100, death="threshold", threshold=1.0, seed=0)
    ws = sparse_weights(model)
    p = ctl.death_rate
    expected = sum(math.ceil(p * w.nnz) for w in ws.values())
    v = torch.cat([w.values.detach().abs() for w in ws.values()]).sort().values
    if threshold is None:  # between the expected-th and the next smallest |w|
        threshold = after = float((v[expected - 1] + v[expected]) / 2)
    ctl.threshold = threshold
    before = {n: value_by_key(w) for n, w in ws.items()}
    ctl.end_epoch()
    assert ctl.threshold == pytest.approx(after)
    for n, w in ws.items():  # those above the threshold kept (the rest gone, or regrown keeping theirs)
        now = value_by_key(w)
        assert all(now[q] == x for q, x in before[n].items() if abs(x) > threshold)
        assert w.nnz == len(before[n])  # each layer regrows what it lost (redistribution "none")


@pytest.mark.parametrize("build, name", [
    (lambda m, o: SET(m, o, zeta="0.3"), "zeta"),
    (lambda m, o: SET(m, o, seed=1.7), "seed"),
    (lambda m, o: SET(m, o, init="normal", init_scale=float("nan")), "init_scale"),
    (lambda m, o: SET(m, o, init="normal", init_scale=-1.0), "init_scale"),
    (lambda m, o: RigL(m, o, end_step=True), "end_step"),
    (lambda m, o: RigL(m, o, end_step=10, update_fraction="0.3"), "update_fraction"),
    (lambda m, o: RigL(m, o, end_step=10, max_flops=float("nan")), "max_flops"),
    (lambda m, o: SelfishRNN(m, o, total_steps=True), "total_steps"),
    (lambda m, o: SelfishRNN(m, o, total_steps=10, death="threshold", threshold=float("nan")), "threshold"),
    (lambda m, o: SelfishRNN(m, o, total_steps=10, death="threshold", threshold=-1.0), "threshold"),
    (lambda m, o: SelfishRNN(m, o, total_steps=10, nonmono=True), "nonmono"),
    (lambda m, o: SelfishRNN(m, None, total_steps=10, redistribution="momentum"), "redistribution"),
    (lambda m, o: GradualMagnitudePruning(m, o, final_density=0.1, end_step=10, start_step=2.5), "start_step"),
    (lambda m, o: GradualMagnitudePruning(m, o, final_density=0.1, end_step=10.5), "end_step"),
    (lambda m, o: GradualMagnitudePruning(m, o, final_density=0.1, end_step=10, ramp_step=5), "ramp_step"),
    (lambda m, o: GradualMagnitudePruning(m, o, final_density=0.9, end_step=10), "final_density"),
    (lambda m, o: erk_densities({"a": (4, 4), "b": (8, 2)}, 0.5, power_scale=-1), "power_scale"),
])
def test_controller_arguments_are_checked_when_built(build, name):
    """A wrong argument is a ValueError naming it when the controller is built (before: a float
    step, a NaN scale or a threshold were taken and gave wrong numbers later, a string a TypeError)."""
    model = mlp()
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match=name):
        build(model, opt)


def test_rigl_exact_growth_warns_once_where_an_update_is_costly():
    """grad_method="exact" (the paper's, the default) warns once where an update costs more than
    16 x max_flops multiply-adds, naming the sampled option; "auto" samples there and says nothing."""
    x, y = data()
    for method, warns in (("exact", 1), ("auto", 0)):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ctl = RigL(model, opt, end_step=100, update_every=1, grad_method=method, max_flops=1.0, seed=0)
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            for t in range(3):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                ctl.step()
        said = [w for w in got if "grad_method='auto'" in str(w.message)]
        assert len(said) == warns, [str(w.message) for w in got]
