"""SparseRNN/SparseLSTM/SparseGRU against torch.nn.RNN/LSTM/GRU holding the same weights."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import sparse_engine as se
from sparse_engine import SparseWeight
from sparse_engine.testing import check_against_torch, random_packed

SPARSE = {"LSTM": se.nn.SparseLSTM, "GRU": se.nn.SparseGRU, "RNN_TANH": se.nn.SparseRNN, "RNN_RELU": se.nn.SparseRNN}


# (num_layers, bidirectional, batch_first, given state, T, B, I, H)
CASES = [
    (1, False, False, False, 5, 3, 4, 7),
    (1, True, True, True, 4, 2, 3, 33),
    (2, False, True, True, 3, 1, 5, 6),
    (2, True, False, False, 1, 4, 2, 5),
    (3, True, False, True, 4, 2, 3, 9),
    (3, False, False, False, 6, 1, 1, 1),
]


# the fused C++ steps on every case, the composed (CUDA-fallback) path on half of them
RUNS = [(c, True) for c in CASES] + [(c, False) for c in CASES[::2]]


@pytest.mark.parametrize("mode", list(SPARSE))
@pytest.mark.parametrize("case,fused", RUNS,
                         ids=lambda c: "L{}-bi{}-bf{}-h0{}-T{}-B{}-I{}-H{}".format(*c) if isinstance(c, tuple)
                         else ("fused" if c else "composed"))
def test_matches_torch_float64(case, mode, fused, rng, build_rnn):
    L, bi, bf, given, T, B, I, H = case
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    m = build_rnn(mode, I, H, torch.float64, num_layers=L, bidirectional=bi, batch_first=bf, fused=fused)
    x = torch.randn((B, T, I) if bf else (T, B, I), generator=rng, dtype=torch.float64)
    hx = None
    if given:
        shape = (L * (2 if bi else 1), B, H)
        hx = torch.randn(shape, generator=rng, dtype=torch.float64)
        if mode == "LSTM":
            hx = (hx, torch.randn(shape, generator=rng, dtype=torch.float64))
    check_against_torch(m, x, hx, torch.float64, rng)


@pytest.mark.parametrize("sparse", ["both", "recurrent", "input"])
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_matches_torch_float32_and_sparse_choice(mode, sparse, rng, build_rnn):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    m = build_rnn(mode, 6, 37, torch.float32, sparse=sparse, num_layers=2, bidirectional=True)
    sp_ih, sp_hh = {"both": (True, True), "recurrent": (False, True), "input": (True, False)}[sparse]
    assert isinstance(m.weight_ih_l1_reverse, SparseWeight) == sp_ih
    assert isinstance(m.weight_hh_l0, SparseWeight) == sp_hh
    assert isinstance(m.weight_hh_l0, nn.Module if sp_hh else nn.Parameter)
    x = torch.randn(7, 5, 6, generator=rng)
    check_against_torch(m, x, None, torch.float32, rng)


@pytest.mark.parametrize("mode", list(SPARSE))
def test_unbatched_input(mode, rng, build_rnn):
    m = build_rnn(mode, 3, 5, torch.float64, num_layers=2)
    x = torch.randn(4, 3, generator=rng, dtype=torch.float64)
    h = torch.randn(2, 5, generator=rng, dtype=torch.float64)
    hx = (h, torch.randn(2, 5, generator=rng, dtype=torch.float64)) if mode == "LSTM" else h
    check_against_torch(m, x, hx, torch.float64, rng)


def test_parameter_names_and_shapes_match_torch():
    m = se.nn.SparseLSTM(3, 10, num_layers=2, bidirectional=True, density=0.5)
    d = nn.LSTM(3, 10, num_layers=2, bidirectional=True)
    assert m._flat_weights_names == d._flat_weights_names
    for name in d._flat_weights_names:
        ours = getattr(m, name)
        assert tuple(ours.shape) == tuple(getattr(d, name).shape), name
    assert m.weight_hh_l1_reverse.shape == (40, 10)
    assert 0.3 < m.weight_hh_l0.density < 0.7
    names = {n for n, _ in m.named_parameters()}
    assert "weight_hh_l0.values" in names and "bias_ih_l1_reverse" in names


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_dropout_train_vs_eval(mode, rng, build_rnn):
    torch.manual_seed(0)
    m = build_rnn(mode, 4, 8, torch.float64, num_layers=3, dropout=0.5)
    ref = build_rnn(mode, 4, 8, torch.float64, num_layers=3, dropout=0.0)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(5, 2, 4, generator=rng, dtype=torch.float64)
    m.eval()
    torch.testing.assert_close(m(x)[0], ref(x)[0], rtol=0, atol=0)  # eval: no dropout
    m.train()
    y1, y2 = m(x)[0], m(x)[0]
    assert not torch.allclose(y1, ref(x)[0])  # train: dropped between layers
    assert not torch.allclose(y1, y2)         # and stochastic
    # dropout=0 in train mode equals eval mode exactly
    ref.train()
    torch.testing.assert_close(ref(x)[0], ref.eval()(x)[0], rtol=0, atol=0)


def test_dropout_gradient_flows(rng, build_rnn):
    m = build_rnn("LSTM", 3, 6, torch.float64, num_layers=2, dropout=0.3)
    y, _ = m(torch.randn(4, 2, 3, generator=rng, dtype=torch.float64))
    y.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
def test_from_dense_and_to_dense_roundtrip(mode, rng):
    torch.manual_seed(1)
    cls_dense = {"LSTM": nn.LSTM, "GRU": nn.GRU}.get(mode, nn.RNN)
    kw = {"nonlinearity": mode[4:].lower()} if mode.startswith("RNN_") else {}
    d = cls_dense(4, 9, num_layers=2, bidirectional=True, dtype=torch.float64, **kw)
    # density: the largest-magnitude fraction of each sparse matrix
    s = SPARSE[mode].from_dense(d, density=0.25)
    for name in d._flat_weights_names:
        ours, ref = getattr(s, name), getattr(d, name).detach()
        if isinstance(ours, SparseWeight):
            assert ours.nnz == round(0.25 * ref.numel())
            dense_ours = ours.to_dense()
            kept = dense_ours != 0
            assert ref.abs()[kept].min() >= ref.abs()[~kept].max()
            torch.testing.assert_close(dense_ours[kept], ref[kept])
        else:
            torch.testing.assert_close(ours.detach(), ref)
    # no density: exact copy; to_dense gives it back
    exact = SPARSE[mode].from_dense(d)
    back = exact.to_dense()
    assert type(back) is cls_dense
    for name in d._flat_weights_names:
        torch.testing.assert_close(getattr(back, name), getattr(d, name), rtol=0, atol=0)
    x = torch.randn(3, 2, 4, generator=rng, dtype=torch.float64)
    torch.testing.assert_close(exact(x)[0], d(x)[0], rtol=1e-10, atol=1e-10)
    # mask
    masks = {n: torch.rand(getattr(d, n).shape, generator=rng) < 0.3
             for n in d._flat_weights_names if n.startswith("weight")}
    s2 = SPARSE[mode].from_dense(d, mask=masks, sparse="recurrent")
    assert isinstance(s2.weight_hh_l1, SparseWeight) and not isinstance(s2.weight_ih_l1, SparseWeight)
    assert s2.weight_hh_l1.nnz == int(masks["weight_hh_l1"].sum())


def test_from_dense_bad_arguments():
    with pytest.raises(TypeError, match="nn.LSTM"):
        se.nn.SparseLSTM.from_dense(nn.GRU(2, 3))
    with pytest.raises(ValueError, match="at most one"):
        se.nn.SparseLSTM.from_dense(nn.LSTM(2, 3), density=0.5, mask={})
    with pytest.raises(ValueError, match="weight_ih_l0"):
        se.nn.SparseLSTM.from_dense(nn.LSTM(2, 3), mask={})
    with pytest.raises(TypeError, match="dict"):
        se.nn.SparseLSTM.from_dense(nn.LSTM(2, 3), mask=torch.ones(12, 2, dtype=torch.bool))


def test_bad_input_errors(rng):
    m = se.nn.SparseLSTM(3, 4, num_layers=2, density=0.5)
    x = torch.randn(5, 2, 3, generator=rng)
    with pytest.raises(ValueError, match="input_size=3"):
        m(torch.randn(5, 2, 4, generator=rng))
    with pytest.raises(ValueError, match="3-D"):
        m(torch.randn(5, generator=rng))
    with pytest.raises(TypeError, match="dtype"):
        m(x.double())
    with pytest.raises(TypeError, match="tuple"):
        m(x, torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match="h_0 must have shape"):
        m(x, (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match="c_0 must have shape"):
        m(x, (torch.zeros(2, 2, 4), torch.zeros(2, 3, 4)))
    with pytest.raises(ValueError, match="at least one time step"):
        m(torch.randn(0, 2, 3, generator=rng))
    g = se.nn.SparseGRU(3, 4, density=0.5)
    with pytest.raises(ValueError, match="hx must have shape"):
        g(x, torch.zeros(1, 5, 4))
    with pytest.raises(ValueError, match="sparse must be one of"):
        se.nn.SparseLSTM(3, 4, sparse="gates")
    with pytest.raises(ValueError, match="hidden_size"):
        se.nn.SparseLSTM(3, 0)
    with pytest.raises(ValueError, match="dropout"):
        se.nn.SparseLSTM(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="nonlinearity"):
        se.nn.SparseRNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="density"):
        se.nn.SparseLSTM(3, 4, density=0.0)
    with pytest.raises(ValueError, match="proj_size must be smaller than hidden_size"):
        se.nn.SparseLSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="proj_size must be a non-negative int"):
        se.nn.SparseLSTM(3, 4, proj_size=-1)
    with pytest.raises(ValueError, match="proj_size is only supported for LSTM"):
        se.nn.SparseGRU(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="compute must be one of"):
        se.nn.SparseLSTM(3, 4, compute="fast")


def test_state_dict_roundtrip_and_optimizer(rng):
    m = se.nn.SparseLSTM(3, 6, num_layers=2, density=0.3, dtype=torch.float64)
    m2 = se.nn.SparseLSTM(3, 6, num_layers=2, density=0.3, dtype=torch.float64)
    m2.load_state_dict(m.state_dict())  # other random pattern, same nnz: pattern is loaded too
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    torch.testing.assert_close(m(x)[0], m2(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", list(SPARSE))
def test_batch_wider_than_a_register_block(mode, dtype, rng, build_rnn):
    """B=70: two full 32-column blocks of the fused kernel plus a tail, vector and scalar lanes."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    m = build_rnn(mode, 5, 19, dtype, density=0.3, bidirectional=True)
    x = torch.randn(3, 70, 5, generator=rng, dtype=dtype)
    check_against_torch(m, x, None, dtype, rng)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "composed"])
@pytest.mark.parametrize("mode", list(SPARSE))
def test_packed_matches_torch_fused_and_composed(mode, fused, rng, build_rnn):
    """PackedSequence input on both step paths, 3 layers, bidirectional, given states."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    m = build_rnn(mode, 3, 9, torch.float64, num_layers=3, bidirectional=True, fused=fused)
    x = random_packed([4, 1, 6, 4, 2, 6], 3, dtype=torch.float64, generator=rng)
    h = torch.randn(6, 6, 9, generator=rng, dtype=torch.float64)
    hx = (h, torch.randn(6, 6, 9, generator=rng, dtype=torch.float64)) if mode == "LSTM" else h
    check_against_torch(m, x, hx, torch.float64, rng)


@pytest.mark.parametrize("sparse", ["both", "recurrent", "input"])
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_packed_matches_torch_float32_and_sparse_choice(mode, sparse, rng, build_rnn):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    m = build_rnn(mode, 6, 37, torch.float32, sparse=sparse, num_layers=2, bidirectional=True)
    x = random_packed([7, 3, 5, 7, 1], 6, dtype=torch.float32, generator=rng, enforce_sorted=False)
    check_against_torch(m, x, None, torch.float32, rng)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_packed_dropout_train_vs_eval(mode, rng, build_rnn):
    torch.manual_seed(0)
    m = build_rnn(mode, 4, 8, torch.float64, num_layers=3, dropout=0.5)
    ref = build_rnn(mode, 4, 8, torch.float64, num_layers=3, dropout=0.0)
    ref.load_state_dict(m.state_dict())
    x = random_packed([5, 2, 5, 3], 4, dtype=torch.float64, generator=rng)
    m.eval()
    torch.testing.assert_close(m(x)[0].data, ref(x)[0].data, rtol=0, atol=0)
    m.train()
    y1, y2 = m(x)[0].data, m(x)[0].data
    assert not torch.allclose(y1, ref(x)[0].data) and not torch.allclose(y1, y2)
    y1.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_RELU"])
def test_packed_grad_factors_give_the_dense_gradient(mode, rng, build_rnn):
    """Growth by gradient with packed input: the length groups' factors, concatenated along M,
    give torch's dense gradient; a padded forward afterwards records its own factors again."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    m = build_rnn(mode, 3, 6, torch.float64, num_layers=2, bidirectional=True)
    names = [n for n, c in m.named_children() if isinstance(c, SparseWeight)]
    m.record_grad_factors = True
    for x in (random_packed([4, 2, 4, 1], 3, dtype=torch.float64, generator=rng),
              torch.randn(4, 3, 3, generator=rng, dtype=torch.float64)):
        d = m.to_dense()
        for mod in (m, d):
            y, _ = mod(x)
            y = y.data if isinstance(y, PackedSequence) else y
            (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view(y.shape)).sum().backward()
        for name in names:
            G, X = m.dense_grad_factors(name)
            torch.testing.assert_close(G @ X.T, getattr(d, name).grad, rtol=1e-10, atol=1e-10)
        m.zero_grad()
