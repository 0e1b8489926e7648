"""The training algorithms against the rules of their papers (and the public code named in
docs/papers.md), on small cases computed by hand or by an independent numpy reference."""
import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from sparse_engine.nn import SparseLinear
from sparse_engine.training import DeepR, GradualMagnitudePruning, SelfishRNN, narang_threshold, selfish_set_keep
from sparse_engine.testing import check_invariants, entry_keys, value_by_key


def frozen_then_grown(seed=0):
    """A dense 30 x 40 layer with N(0, 1/40) weights (a tail like trained weights')."""
    torch.manual_seed(seed)
    lin = SparseLinear(40, 30, density=1.0, bias=False)
    with torch.no_grad():
        lin.weight.values.copy_(torch.randn(lin.weight.nnz, generator=torch.Generator().manual_seed(seed)) / 40 ** 0.5)
    return lin


# ------------------------------------------------------------------ Narang et al. gradual pruning
@pytest.mark.parametrize("requantile", [False, True])
def test_narang_q_is_taken_when_pruning_starts(requantile, caplog):
    lin = frozen_then_grown()
    opt = torch.optim.SGD(lin.parameters(), lr=0.0)  # values change only by the growth below
    # the weights grow 5x before pruning starts at step 100 (long ramps, as in training, so that the final
    # threshold is q to 0.1%)
    ctl = GradualMagnitudePruning(lin, opt, final_density=0.05, schedule="narang", start_step=100, ramp_step=1000,
                                  end_step=2000, frequency=100, requantile=requantile)
    assert ctl.q is None  # not taken from the untrained weights
    with caplog.at_level(logging.INFO, logger="sparse_engine.training"):
        for t in range(1, 2101):
            if t == 50:
                with torch.no_grad():
                    lin.weight.values.mul_(5.0)
            ctl.step()
    w = lin.weight
    check_invariants(w)
    # q is the |w| kept at 5% of the grown weights, so the run ends near its target
    assert 0.04 <= w.density <= 0.06
    assert ctl.reached["weight"] == w.density
    assert "density" in caplog.text and "0.0500" in caplog.text
    # q is the 95% quantile of the grown weights; the old rule's q (from the untrained weights) is 5x
    # smaller, and more than half of the grown weights lie above it
    assert ctl.q["weight"] == pytest.approx(float(np.sort(np.abs(5 * frozen_values()))[1200 - 60]), rel=1e-6)
    assert 0.5 < float((np.abs(5 * frozen_values()) >= ctl.q["weight"] / 5).mean())


def frozen_values():
    return frozen_then_grown().weight.values.detach().numpy()


def test_narang_q_given_from_a_trained_model_and_its_checks():
    lin = frozen_then_grown()
    opt = torch.optim.SGD(lin.parameters(), lr=0.0)
    v = np.abs(frozen_values())
    q = float(np.sort(v)[1200 - 300])  # the |w| that keeps 25%
    ctl = GradualMagnitudePruning(lin, opt, final_density=0.25, schedule="narang", start_step=0, ramp_step=20,
                                  end_step=40, frequency=4, q=q)
    for _ in range(40):
        ctl.step()
    eps = narang_threshold(40, q, 0, 20, 40, 4)
    assert lin.weight.nnz == int((v >= eps).sum())
    with pytest.raises(ValueError, match="q must"):
        GradualMagnitudePruning(lin, opt, final_density=0.25, schedule="narang", ramp_step=2, end_step=4, q=-1.0)
    with pytest.raises(ValueError, match="q must give"):
        GradualMagnitudePruning(lin, opt, final_density=0.25, schedule="narang", ramp_step=2, end_step=4,
                                q={"other": 1.0})
    with pytest.raises(ValueError, match="narang"):
        GradualMagnitudePruning(lin, opt, final_density=0.25, end_step=4, q=1.0)


def test_cubic_schedule_is_zhu_and_gupta_in_sparsity():
    # Zhu & Gupta: s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 in sparsity; our densities are 1 - s_t
    from sparse_engine.training import cubic_density
    s_i, s_f, t0, n = 0.0, 0.95, 5, 95
    for t in (5, 20, 50, 77, 100):
        s_t = s_f + (s_i - s_f) * (1 - (t - t0) / n) ** 3
        assert cubic_density(t, t0, t0 + n, 1 - s_i, 1 - s_f) == pytest.approx(1 - s_t)


# ------------------------------------------------------------------ DEEP R
def deepr_layer(values):
    lin = SparseLinear(2, 2, density=1.0, bias=False)
    with torch.no_grad():
        lin.weight.values.copy_(torch.tensor(values))
    return lin


def test_deepr_bellec_rule_hand_computed():
    # one step of Bellec et al.'s Algorithm 1 after the optimizer's gradient step:
    # w <- w - lr*alpha*s + sqrt(2*lr*T)*nu; a connection whose sign flips is dormant and a random
    # dormant position is activated at 0 with its fixed sign
    lin = deepr_layer([0.5, -0.5, 2e-4, -0.7])
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    lr, alpha, T = 0.1, 3e-3, 0.02
    ctl = DeepR(lin, opt, l1=alpha, temperature=T, seed=3)
    nu = torch.randn(4, generator=torch.Generator().manual_seed(0))
    ctl.generator.manual_seed(0)  # the noise is drawn from the controller's generator
    expected = torch.tensor([0.5, -0.5, 2e-4, -0.7]) - lr * alpha * torch.tensor([1., -1., 1., -1.]) \
        + math.sqrt(2 * lr * T) * nu
    assert math.sqrt(2 * lr * T) == pytest.approx(0.06324555)
    ctl.step()
    w = lin.weight
    check_invariants(w, nnz=4)  # the count is kept
    alive = (expected * torch.tensor([1., -1., 1., -1.])) >= 0
    got = w.values.detach()
    # survivors hold the hand-computed values; a flipped one was regrown at 0 (the only empty position
    # of a full 2x2 layer is its own) with its fixed sign
    assert torch.allclose(got[alive], expected[alive].float(), atol=1e-7)
    assert (got[~alive] == 0).all()
    assert ctl.sign["weight"].tolist() == [1, -1, 1, -1]


def test_deepr_bellec_noise_scale_and_l1_follow_the_learning_rate():
    lin = SparseLinear(200, 100, density=0.5, bias=False)
    opt = torch.optim.SGD(lin.parameters(), lr=0.02)
    with torch.no_grad():
        lin.weight.values.copy_(torch.sign(lin.weight.values.detach()) * 10.0)  # nothing flips
    ctl = DeepR(lin, opt, l1=0.5, temperature=0.25, seed=1)
    before = lin.weight.values.detach().clone()
    ctl.step()
    d = lin.weight.values.detach() - before
    s = torch.sign(before)
    assert float((d * s).mean()) == pytest.approx(-0.02 * 0.5, abs=3 * math.sqrt(2 * 0.02 * 0.25) / 100)
    assert float(d.std()) == pytest.approx(math.sqrt(2 * 0.02 * 0.25), rel=0.05)  # sqrt(2 lr T) = 0.1


def test_deepr_zhang_rule_once_per_epoch_without_learning_rate():
    # Zhang et al.'s scripts: per epoch, w + sigma*N(0,1) - alpha*s, then dormant removal and regrowth
    lin = deepr_layer([0.5, -0.5, 2e-4, -0.7])
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    ctl = DeepR(lin, opt, rule="zhang", l1=1e-3, noise=0.0, seed=0)
    for _ in range(5):
        ctl.step()  # no terms between rewirings
    assert lin.weight.values.detach().tolist() == pytest.approx([0.5, -0.5, 2e-4, -0.7])
    ctl.end_epoch()
    # 2e-4 - 1e-3 < 0: dormant, regrown at its own position (the only empty one) at 0 with sign +
    assert lin.weight.values.detach().tolist() == pytest.approx([0.499, -0.499, 0.0, -0.699])
    check_invariants(lin.weight, nnz=4)


def test_deepr_rule_options_are_checked():
    lin = deepr_layer([0.5, -0.5, 0.1, -0.7])
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="rule must"):
        DeepR(lin, opt, rule="langevin")
    with pytest.raises(ValueError, match="temperature"):
        DeepR(lin, opt, noise=1e-3)
    with pytest.raises(ValueError, match="noise"):
        DeepR(lin, opt, rule="zhang", temperature=1e-3)
    with pytest.raises(ValueError, match="temperature must"):
        DeepR(lin, opt, temperature=-1.0)
    assert DeepR(lin, opt).rewire_every == 1 and DeepR(lin, opt, rule="zhang").rewire_every == "epoch"


# ------------------------------------------------------------------ Selfish-RNN (its public code)
def test_selfish_set_death_hand_computed():
    v = torch.tensor([0.5, -0.9, 0.1, -0.2, 0.3, -0.05, 0.0, 0.7])
    # rate 0.5 of 8 stored: ceil(4) = 4 removals, ceil(4 / 2) = 2 per sign; the stored zero always goes
    assert selfish_set_keep(v, 0.5).tolist() == [True, False, False, False, False, True, False, True]
    assert selfish_set_keep(v, 0.5, "nearest_zero").tolist() == [True, True, False, False, False, False, False, True]
    # more removals than one sign has: all of that sign
    assert selfish_set_keep(torch.tensor([0.5, -0.9, 0.1]), 1.0).tolist() == [False, False, False]
    with pytest.raises(ValueError, match="negatives"):
        selfish_set_keep(v, 0.5, "largest")


def full_layer(values, bias=False):
    lin = SparseLinear(2, 2, density=1.0, bias=bias)
    with torch.no_grad():
        lin.weight.values.copy_(torch.tensor(values))
    return lin


@pytest.mark.parametrize("reset", [False, True])
def test_selfish_weight_regrown_where_it_was_pruned_keeps_its_value_and_state(reset):
    lin = full_layer([0.5, -0.05, 0.7, -0.7])
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    opt.state[lin.weight.values]["momentum_buffer"] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    ctl = SelfishRNN(lin, opt, total_steps=100, death_rate=0.25, reset_regrown=reset, seed=0)
    ctl.start_averaging()
    for _ in range(3):
        ctl.step()  # the average of each weight counts 3 steps
    ctl.end_epoch()
    # ceil(0.25 * 4) = 1 removal (-0.05, the smallest |w|); the only empty position is its own
    w = lin.weight
    check_invariants(w, nnz=4)
    mom = opt.state[w.values]["momentum_buffer"]
    if reset:  # a new weight: zero value, zero momentum, no average yet
        assert w.values.detach().tolist() == pytest.approx([0.5, 0.0, 0.7, -0.7])
        assert mom.tolist() == [1.0, 0.0, 3.0, 4.0] and ctl.averager.count["weight"].tolist() == [3, 0, 3, 3]
    else:  # as the code: its mask went 1 -> 0 -> 1 and nothing was reset
        assert w.values.detach().tolist() == pytest.approx([0.5, -0.05, 0.7, -0.7])
        assert mom.tolist() == [1.0, 2.0, 3.0, 4.0] and ctl.averager.count["weight"].tolist() == [3, 3, 3, 3]


def two_layers():
    torch.manual_seed(0)
    return nn.Sequential(SparseLinear(3, 2, density=1.0, bias=False), SparseLinear(2, 2, density=1.0, bias=False))


def test_selfish_momentum_redistribution_normalises_adam_momentum():
    model = two_layers()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    a, b = model[0].weight.values, model[1].weight.values
    opt.state[a].update(exp_avg=torch.full((6,), 1.0), exp_avg_sq=torch.full((6,), 4.0))
    opt.state[b].update(exp_avg=torch.full((4,), -1.0), exp_avg_sq=torch.full((4,), 0.25))
    ctl = SelfishRNN(model, opt, total_steps=10, redistribution="momentum")
    # |m| / (sqrt(v) + 1e-8): 1/2 and 1/0.5 (exp_avg alone would call the layers equal)
    assert ctl._scores() == pytest.approx([0.5, 2.0])
    ctl = SelfishRNN(model, opt, total_steps=10, redistribution="nonzeros", threshold=0.3)
    expected = [float((w.values.detach().abs() > 0.3).sum()) for w in (model[0].weight, model[1].weight)]
    assert ctl._scores() == expected


def test_selfish_momentum_growth_with_adam_uses_dense_moments():
    torch.manual_seed(1)
    lin = SparseLinear(6, 5, density=0.5, bias=False)
    opt = torch.optim.Adam(lin.parameters(), lr=0.01, betas=(0.8, 0.9))
    ctl = SelfishRNN(lin, opt, total_steps=100, death_rate=0.3, growth="momentum", seed=0)
    g = torch.Generator().manual_seed(2)
    m = torch.zeros(5, 6, dtype=torch.float64)
    v = torch.zeros(5, 6, dtype=torch.float64)
    for _ in range(3):
        x = torch.randn(7, 6, generator=g)
        dense = lin.weight.to_dense().double().requires_grad_(True)  # the masked-dense twin's gradient
        (x.double() @ dense.T).pow(2).sum().backward()
        m = 0.8 * m + 0.2 * dense.grad
        v = 0.9 * v + 0.1 * dense.grad ** 2
        opt.zero_grad()
        (lin(x) ** 2).sum().backward()
        opt.step()
        ctl.step()
    assert torch.allclose(ctl.dense_momentum["weight"][0].double(), m, rtol=1e-5, atol=1e-6)
    assert torch.allclose(ctl.dense_momentum["weight"][1].double(), v, rtol=1e-5, atol=1e-6)
    before = set(entry_keys(lin.weight).tolist())
    vals = lin.weight.values.detach().abs().numpy()
    n = math.ceil(0.3 * lin.weight.nnz)
    died = {int(k) for k in entry_keys(lin.weight)[np.argsort(vals, kind="stable")[:n]]}
    ctl.end_epoch()
    # the n empty positions (the just-pruned included) of largest |m| / (sqrt(v) + 1e-8)
    score = (m / (v.sqrt() + 1e-8)).abs().flatten()
    for k in before - died:
        score[k] = -math.inf
    chosen = set(torch.topk(score, n).indices.tolist())
    after = set(entry_keys(lin.weight).tolist())
    assert after == (before - died) | chosen
    fresh = sorted(chosen - before)
    pos = [sorted(after).index(k) for k in fresh]
    assert torch.allclose(opt.state[lin.weight.values]["exp_avg"][pos].double(), m.flatten()[fresh], rtol=1e-5)


def test_selfish_momentum_growth_with_sgd_regrows_the_pruned_with_momentum_first():
    torch.manual_seed(0)
    lin = SparseLinear(8, 8, density=0.25, bias=False)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    opt.state[lin.weight.values]["momentum_buffer"] = torch.rand(lin.weight.nnz) + 0.1
    ctl = SelfishRNN(lin, opt, total_steps=100, death_rate=0.5, growth="momentum", seed=0)
    before = value_by_key(lin.weight)
    ctl.end_epoch()
    # the code masks SGD's buffer every step: only the just-pruned positions have momentum, so they
    # all come back, keeping their values
    assert value_by_key(lin.weight) == before


def test_selfish_momentum_growth_memory_limit_and_optimizer():
    lin = SparseLinear(60, 50, density=0.1, bias=False)
    with pytest.raises(ValueError, match="dense_momentum_max_bytes"):
        SelfishRNN(lin, torch.optim.Adam(lin.parameters()), total_steps=10, growth="momentum",
                   dense_momentum_max_bytes=1000)
    with pytest.raises(ValueError, match="momentum > 0"):
        SelfishRNN(lin, torch.optim.SGD(lin.parameters(), lr=0.1), total_steps=10, growth="momentum")
