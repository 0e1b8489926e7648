"""The training algorithms against the rules of their papers (and the public code named in
docs/papers.md), on small cases computed by hand or by an independent numpy reference."""
import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from sparse_engine.nn import SparseLinear
from sparse_engine.training import DeepR, GradualMagnitudePruning, SelfishRNN, narang_threshold, sparse_weights
from _training_util import check_invariants, keys, value_by_key


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
    # q is the 95% quantile of the grown weights; from the untrained weights (the old rule) it was 5x smaller
    # and the run ended at density 0.7
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
