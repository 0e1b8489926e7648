"""Recurrent modules implement the growth-by-gradient protocol (RigL, Selfish-RNN growth):
the recorded factors give dL/dW = G X^T everywhere, empty positions included."""
import pytest
import torch
from torch import nn

from sparse_engine import SparseWeight
from sparse_engine.nn import SparseGRU, SparseLSTM, SparseRNN
from sparse_engine.training import RigL


@pytest.mark.parametrize("cls", [SparseLSTM, SparseGRU, SparseRNN])
def test_factors_give_the_dense_gradient(cls, rng):
    torch.manual_seed(int(torch.randint(0, 2**31, (), generator=rng)))
    model = cls(5, 7, num_layers=2, bidirectional=True, density=0.4, dtype=torch.float64)
    dense = model.to_dense()
    x = torch.randn(6, 3, 5, generator=rng, dtype=torch.float64)
    model.record_grad_factors = True
    out, _ = model(x)
    up = torch.randn(out.shape, generator=rng, dtype=out.dtype)
    (out * up).sum().backward()
    dout, _ = dense(x)
    (dout * up).sum().backward()
    names = [n for n, m in model.named_children() if isinstance(m, SparseWeight)]
    assert len(names) == 8
    for name in names:
        G, X = model.dense_grad_factors(name)
        full = G @ X.T
        torch.testing.assert_close(full, getattr(dense, name).grad)  # every position
        row, col, _ = getattr(model, name).coo()
        torch.testing.assert_close(full[row, col], getattr(model, name).values.grad)
    model.record_grad_factors = False
    model(x)
    assert model.dense_grad_factors("weight_hh_l0") is None  # nothing kept when not recording
    with pytest.raises(ValueError, match="weight_ih\\*/weight_hh\\*"):
        model.dense_grad_factors("bias_ih_l0")


def test_rigl_rewires_a_sparse_lstm_by_gradient():
    torch.manual_seed(0)
    lstm = SparseLSTM(4, 16, batch_first=True, density=0.3)
    head = nn.Linear(16, 1)
    model = nn.Sequential()
    model.add_module("lstm", lstm)
    opt = torch.optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=1e-2)
    ctl = RigL(model, opt, end_step=20, update_every=5, update_fraction=0.3, seed=0)
    before = {n: (w.nnz, w.col_idx.clone()) for n, w in ctl.weights.items()}
    x = torch.randn(32, 6, 4, generator=torch.Generator().manual_seed(1))
    y = x.sum((1, 2), keepdim=True).squeeze(-1)
    for _ in range(10):
        opt.zero_grad()
        out, _ = lstm(x)
        loss = nn.functional.mse_loss(head(out[:, -1]), y)
        loss.backward()
        opt.step()
        ctl.step()
    for name, w in ctl.weights.items():
        w.validate()
        assert w.nnz == before[name][0]  # RigL keeps nnz constant
    assert any(not torch.equal(w.col_idx, before[n][1]) for n, w in ctl.weights.items())  # it rewired
    assert torch.isfinite(loss)
