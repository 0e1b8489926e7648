"""sparse_engine.init's mirrors of torch.nn.init: on a SparseWeight they fill the stored values
(pattern kept), on a tensor they are torch's; named_weights gives torch's parameter names."""
import math

import pytest
import torch
from torch import nn

from sparse_engine import SparseWeight, init
from sparse_engine.nn import SparseGRU, SparseLSTM
from sparse_engine.testing import random_weight


def gen(seed):
    return torch.Generator().manual_seed(seed)


def full(rows, cols, dtype=torch.float32):
    """A density-1 SparseWeight: its values are the dense matrix in row-major order."""
    return SparseWeight.from_dense(torch.ones(rows, cols, dtype=dtype))


# (our call, torch's call) on the same arguments
SAMPLERS = {
    "uniform_": lambda f, w, g: f.uniform_(w, -0.3, 0.7, generator=g),
    "normal_": lambda f, w, g: f.normal_(w, 0.2, 1.5, generator=g),
    "trunc_normal_": lambda f, w, g: f.trunc_normal_(w, 0.0, 1.0, -0.5, 0.8, generator=g),
    "xavier_uniform_": lambda f, w, g: f.xavier_uniform_(w, 1.7, generator=g),
    "xavier_normal_": lambda f, w, g: f.xavier_normal_(w, 0.5, generator=g),
    "kaiming_uniform_": lambda f, w, g: f.kaiming_uniform_(w, 0.1, "fan_out", "leaky_relu", generator=g),
    "kaiming_normal_": lambda f, w, g: f.kaiming_normal_(w, 0, "fan_in", "relu", generator=g),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_density_one_matches_torch_bit_for_bit(name):
    """At density 1 with the dense fan, the values are exactly torch's dense init (same draws)."""
    sample = SAMPLERS[name]
    w = full(7, 5)
    sample(init, w, gen(0))
    ref = sample(nn.init, torch.empty(7, 5), gen(0))
    torch.testing.assert_close(w.to_dense(), ref, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_plain_tensors_are_torchs(name):
    sample = SAMPLERS[name]
    t = sample(init, torch.empty(4, 6), gen(1))
    torch.testing.assert_close(t, sample(nn.init, torch.empty(4, 6), gen(1)), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(SAMPLERS) + ["orthogonal_", "constant_", "zeros_", "ones_"])
def test_pattern_kept_values_replaced_in_place(name):
    w = random_weight(37, 53, 0.2, empty_rows=5, full_rows=2, seed=2, dtype=torch.float32)
    before = w.to_dense()
    param, rp, ci = w.values, w.row_ptr.clone(), w.col_idx.clone()
    if name in SAMPLERS:
        SAMPLERS[name](init, w, gen(3))
    elif name == "constant_":
        init.constant_(w, 0.25)
    else:
        getattr(init, name)(w)
    assert w.values is param and param.requires_grad  # the optimizer's Parameter is kept
    assert torch.equal(w.row_ptr, rp) and torch.equal(w.col_idx, ci)
    changed = w.to_dense()
    assert torch.equal(changed == 0, (before == 0) | (changed == 0))  # nothing outside the pattern
    expected = {"constant_": 0.25, "zeros_": 0.0, "ones_": 1.0}
    if name in expected:
        assert torch.all(w.values == expected[name])
    else:
        assert not torch.equal(changed, before)


@pytest.mark.parametrize("name, kind", [("xavier_uniform_", "sum"), ("xavier_normal_", "sum"),
                                        ("kaiming_uniform_", "in"), ("kaiming_normal_", "in")])
def test_nnz_fan_rescales_the_same_draws(name, kind):
    """fan='nnz' draws the same numbers scaled by sqrt(dense fan / stored fan)."""
    w = random_weight(60, 40, 0.25, seed=4, dtype=torch.float64)
    rows, cols = w.shape
    f = getattr(init, name)
    f(w, generator=gen(5))
    dense_fan = w.values.detach().clone()
    f(w, generator=gen(5), fan="nnz")
    fan_in, fan_out = w.nnz / rows, w.nnz / cols
    scale = math.sqrt((cols + rows) / (fan_in + fan_out)) if kind == "sum" else math.sqrt(cols / fan_in)
    torch.testing.assert_close(w.values.detach(), dense_fan * scale)


def test_kaiming_nnz_fan_keeps_unit_activation_scale():
    """What fan='nnz' is for: W x keeps the variance kaiming intends at any density."""
    torch.manual_seed(0)
    w = SparseWeight.random(2000, 2000, 0.02, generator=gen(6))
    init.kaiming_normal_(w, nonlinearity="linear", generator=gen(7), fan="nnz")
    x = torch.randn(2000, 64, generator=gen(8))
    var = (w.to_dense() @ x).var().item()
    assert 0.9 < var < 1.1
    init.kaiming_normal_(w, nonlinearity="linear", generator=gen(7))  # dense fan: shrinks by the density
    assert 0.015 < (w.to_dense() @ x).var().item() < 0.025


def test_orthogonal_keeps_the_pattern_of_an_orthogonal_matrix():
    w = full(6, 9, torch.float64)
    init.orthogonal_(w, gain=2.0, generator=gen(9))
    d = w.to_dense()
    torch.testing.assert_close(d @ d.t(), 4 * torch.eye(6, dtype=torch.float64))
    sparse = random_weight(6, 9, 0.4, empty_rows=1, seed=10, dtype=torch.float64)
    init.orthogonal_(sparse, gain=2.0, generator=gen(9))
    row, col, v = sparse.coo()
    torch.testing.assert_close(v.detach(), d[row, col])  # same draws: the orthogonal matrix's entries


@pytest.mark.parametrize("rescale, expected", [(False, 0.3), (True, 1.0)])
def test_orthogonal_rescale_gives_unit_columns_on_average(rescale, expected):
    w = random_weight(400, 300, 0.3, seed=11, dtype=torch.float64)
    init.orthogonal_(w, generator=gen(12), rescale=rescale)
    d = w.to_dense()
    mean_sq_norm = (d * d).sum(0).mean().item()  # diagonal of W^T W on average
    assert abs(mean_sq_norm / expected - 1) < 0.05


def test_named_weights_gives_torchs_names():
    sparse = SparseLSTM(4, 5, num_layers=2, bidirectional=True, density=0.5, sparse="recurrent")
    dense = nn.LSTM(4, 5, num_layers=2, bidirectional=True)
    ours = dict(init.named_weights(sparse))
    assert set(ours) == {n for n, _ in dense.named_parameters()}
    assert isinstance(ours["weight_hh_l1_reverse"], SparseWeight)
    assert isinstance(ours["weight_ih_l1"], nn.Parameter)  # sparse='recurrent': dense input weights


def test_ported_init_loop():
    """The usual torch loop, ported by swapping named_parameters for named_weights."""
    model = nn.Sequential(nn.Linear(3, 4), SparseGRU(4, 6, density=0.5))
    for name, w in init.named_weights(model):
        if "weight_hh" in name:
            init.orthogonal_(w, generator=gen(13))
        elif "weight" in name:
            init.xavier_uniform_(w, generator=gen(14))
        else:
            init.zeros_(w)
    gru = model[1]
    assert torch.all(gru.bias_ih_l0 == 0) and torch.all(model[0].bias == 0)
    bound = math.sqrt(6 / (4 + 18))
    assert gru.weight_ih_l0.values.abs().max() <= bound and model[0].weight.abs().max() <= math.sqrt(6 / 7)


def test_torch_init_on_a_sparse_weight_points_to_ours():
    lstm = SparseLSTM(4, 5, density=0.5)
    for fn in (nn.init.orthogonal_, nn.init.xavier_uniform_, nn.init.uniform_, nn.init.zeros_):
        with pytest.raises(AttributeError, match=r"not a tensor.*sparse_engine\.init"):
            fn(lstm.weight_hh_l0)
    assert not hasattr(lstm.weight_hh_l0, "no_such_attribute")  # other names: plain AttributeError


def test_bad_arguments():
    w = random_weight(5, 4, 0.5, seed=15)
    with pytest.raises(ValueError, match="named_weights"):
        init.xavier_uniform_(w.values)  # a SparseWeight's values from named_parameters()
    with pytest.raises(ValueError, match="fan must be"):
        init.kaiming_uniform_(w, fan="sparse")
    with pytest.raises(ValueError, match="mode must be"):
        init.kaiming_normal_(w, mode="fan_avg")
    with pytest.raises(TypeError, match="SparseWeight"):
        init.uniform_([1.0, 2.0])
    empty = random_weight(0, 4, 0.5, seed=16)
    init.orthogonal_(empty), init.xavier_normal_(empty, fan="nnz"), init.kaiming_uniform_(empty)  # no error
