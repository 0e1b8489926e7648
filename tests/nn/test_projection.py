"""SparseLSTM(proj_size=P) against nn.LSTM(proj_size=P) holding the same weights, on the sparse
and the dense compute path; gradcheck; conversion; the .proj_size attribute of every module."""
import pytest
import torch
from torch import nn
from torch.func import functional_call

import sparse_engine as se
from sparse_engine import SparseWeight
from sparse_engine.testing import check_against_torch, random_packed

# (num_layers, bidirectional, batch_first, given state, T, B, I, H, P)
CASES = [
    (1, False, False, False, 5, 3, 4, 7, 3),
    (2, True, True, True, 4, 2, 3, 6, 1),
    (3, False, False, True, 3, 1, 2, 5, 4),
]


def lstm(I, H, P, **kw):
    return se.nn.SparseLSTM(I, H, proj_size=P, density=0.5, dtype=torch.float64, **kw)


def state(L, B, H, P, g):
    return (torch.randn(L, B, P, generator=g, dtype=torch.float64),
            torch.randn(L, B, H, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("compute", ["sparse", "dense"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "L{}-bi{}-bf{}-h0{}-T{}-B{}-I{}-H{}-P{}".format(*c))
def test_matches_torch_float64(case, compute, rng):
    L, bi, bf, given, T, B, I, H, P = case
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    m = lstm(I, H, P, num_layers=L, bidirectional=bi, batch_first=bf, compute=compute)
    x = torch.randn((B, T, I) if bf else (T, B, I), generator=rng, dtype=torch.float64)
    hx = state(L * (2 if bi else 1), B, H, P, rng) if given else None
    check_against_torch(m, x, hx, torch.float64, rng)


@pytest.mark.parametrize("compute", ["sparse", "dense"])
def test_packed_and_unbatched(compute, rng):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    m = lstm(3, 6, 2, num_layers=2, bidirectional=True, compute=compute)
    x = random_packed([4, 1, 5, 4], 3, dtype=torch.float64, generator=rng)
    check_against_torch(m, x, state(4, 4, 6, 2, rng), torch.float64, rng)
    m.zero_grad()
    h0 = torch.randn(4, 2, generator=rng, dtype=torch.float64)
    check_against_torch(m, torch.randn(5, 3, generator=rng, dtype=torch.float64),
                        (h0, torch.randn(4, 6, generator=rng, dtype=torch.float64)), torch.float64, rng)


def test_shapes_names_and_sparsity():
    m = se.nn.SparseLSTM(3, 8, num_layers=2, bidirectional=True, proj_size=5, density=0.5)
    d = nn.LSTM(3, 8, num_layers=2, bidirectional=True, proj_size=5)
    assert m._flat_weights_names == d._flat_weights_names and m.proj_size == 5
    for name in d._flat_weights_names:
        assert tuple(getattr(m, name).shape) == tuple(getattr(d, name).shape), name
    assert isinstance(m.weight_hr_l1_reverse, SparseWeight)
    rec = se.nn.SparseLSTM(3, 8, proj_size=5, density=0.5, sparse="recurrent")
    inp = se.nn.SparseLSTM(3, 8, proj_size=5, density=0.5, sparse="input")
    assert isinstance(rec.weight_hr_l0, SparseWeight) and isinstance(inp.weight_hr_l0, nn.Parameter)
    y, (h, c) = m(torch.randn(4, 2, 3))
    assert y.shape == (4, 2, 10) and h.shape == (4, 2, 5) and c.shape == (4, 2, 8)
    with pytest.raises(ValueError, match=r"h_0 must have shape \(4, 2, 5\)"):
        m(torch.randn(4, 2, 3), (torch.zeros(4, 2, 8), torch.zeros(4, 2, 8)))
    assert "proj_size=5" in repr(m)


def test_gradcheck(rng):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    m = lstm(2, 4, 2, bidirectional=True, compute="sparse")
    names = ["weight_ih_l0.values", "weight_hh_l0_reverse.values", "weight_hr_l0.values", "weight_hr_l0_reverse.values",
             "bias_hh_l0"]
    params = dict(m.named_parameters())
    x = torch.randn(3, 2, 2, generator=rng, dtype=torch.float64, requires_grad=True)
    h0, c0 = (t.requires_grad_() for t in state(2, 2, 4, 2, rng))

    def f(x, h0, c0, *vals):
        y, (h, c) = functional_call(m, {**params, **dict(zip(names, vals))}, (x, (h0, c0)))
        return y, h, c
    inputs = (x, h0, c0, *(params[n].detach().clone().requires_grad_() for n in names))
    assert torch.autograd.gradcheck(f, inputs)


def test_from_dense_to_dense(rng):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    d = nn.LSTM(3, 6, num_layers=2, proj_size=2, dtype=torch.float64)
    m = se.nn.SparseLSTM.from_dense(d, density=0.5)
    assert m.proj_size == 2 and abs(m.weight_hr_l1.density - 0.5) < 0.1
    back = m.to_dense()
    assert back.proj_size == 2
    for name in d._flat_weights_names:
        ours, ref = getattr(back, name), getattr(d, name)
        kept = ours != 0
        assert torch.equal(ours[kept], ref[kept]), name
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    torch.testing.assert_close(m(x)[0], back(x)[0], rtol=1e-12, atol=1e-12)


def test_every_recurrent_module_has_proj_size():
    for module in (se.nn.SparseRNN(2, 3, density=0.5), se.nn.SparseGRU(2, 3, density=0.5),
                   se.nn.SparseLSTM(2, 3, density=0.5), se.nn.SparseLSTMCell(2, 3, density=0.5),
                   se.nn.SparseGRUCell(2, 3, density=0.5), se.nn.SparseRNNCell(2, 3, density=0.5),
                   se.nn.SparseCTRNN(2, 3, density=0.5)):
        assert module.proj_size == 0, type(module).__name__
