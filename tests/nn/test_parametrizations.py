"""torch.nn.utils.parametrize on SparseWeight values: a user parametrization, WeightDrop
(DropConnect, once per forward), the sparse weight norm; forward against a hand-computed one,
training updates the original values, state_dict round trip, topology updates refused."""
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import pack_sequence

import sparse_engine as se
import sparse_engine.testing  # noqa: F401  (se.testing)
from sparse_engine.nn import SparseWeightNorm, WeightDrop, sparse_weight_norm, unparametrized, weight_drop


class Scale(nn.Module):
    def forward(self, v):
        return 3.0 * v


def test_register_parametrization_on_values(rng):
    """Torch's own mechanism on ``values`` (ModuleDict's method name no longer collides)."""
    w = se.testing.random_weight(6, 5, 0.5, seed=int(torch.randint(0, 2**31, (1,), generator=rng)))
    stored = w.values.detach().clone()
    parametrize.register_parametrization(w, "values", Scale())
    assert isinstance(w, se.SparseWeight) and parametrize.is_parametrized(w, "values")
    original = w.parametrizations["values"].original
    assert torch.equal(original.detach(), stored) and torch.equal(w.values, 3 * stored)
    x = torch.randn(5, 4, generator=rng, dtype=torch.float64)
    y = se.ops.spmm(w, x)
    torch.testing.assert_close(y, se.testing.dense(w) @ x)  # the products see the parametrized values
    y.sum().backward()
    row, col, _ = w.coo()
    torch.testing.assert_close(original.grad, 3 * x.sum(1)[col])  # d/dv of sum(3 V x)
    parametrize.remove_parametrizations(w, "values")
    torch.testing.assert_close(w.values.detach(), 3 * stored)


def lstm_with_drop(p=0.5, seed=0):
    torch.manual_seed(seed)
    m = se.nn.SparseLSTM(3, 6, num_layers=2, density=0.5, dtype=torch.float64)
    return weight_drop(m, p)


def test_weight_drop_forward_equals_hand_computed_dropout(rng):
    """Training mode: the forward equals the module whose W_hh values are dropped by the mask
    F.dropout draws under the same seed, once per forward (every step and length group)."""
    m = lstm_with_drop()
    ref = se.nn.SparseLSTM(3, 6, num_layers=2, density=0.5, dtype=torch.float64)
    raw = {n: w.parametrizations["values"].original.detach() for n, w in m.named_children() if "hh" in n}
    ref.load_state_dict({k.replace("parametrizations.values.original", "values"): v
                         for k, v in m.state_dict().items()})
    x = pack_sequence([torch.randn(n, 3, generator=rng, dtype=torch.float64) for n in (5, 2, 4)],
                      enforce_sorted=False)
    torch.manual_seed(11)
    y = m(x)[0].data
    torch.manual_seed(11)  # the same draws, in the module's order: l0 then l1, once each
    with torch.no_grad():
        for n in ("weight_hh_l0", "weight_hh_l1"):
            getattr(ref, n).values.copy_(nn.functional.dropout(raw[n], 0.5, True))
    torch.testing.assert_close(y, ref(x)[0].data, rtol=1e-12, atol=1e-12)
    dropped = (ref.weight_hh_l0.values == 0).float().mean()
    assert 0.2 < dropped < 0.8
    m.eval()  # no dropout in evaluation
    ref.load_state_dict({k.replace("parametrizations.values.original", "values"): v
                         for k, v in m.state_dict().items()})
    torch.testing.assert_close(m(x)[0].data, ref(x)[0].data, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("compute", ["sparse", "dense"])
def test_training_through_weight_drop_updates_the_original(compute, rng):
    m = lstm_with_drop()
    m.compute = compute
    orig = m.weight_hh_l0.parametrizations["values"].original
    before = orig.detach().clone()
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    assert any(p is orig for p in m.parameters())
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    m(x)[0].pow(2).sum().backward()
    assert orig.grad is not None and (orig.grad != 0).any()
    opt.step()
    assert not torch.equal(orig.detach(), before)


def test_weight_drop_state_dict_round_trip(rng):
    m = lstm_with_drop(seed=1)
    m2 = lstm_with_drop(seed=2)
    m2.load_state_dict(m.state_dict())
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    m.eval(), m2.eval()
    torch.testing.assert_close(m(x)[0], m2(x)[0], rtol=0, atol=0)
    plain = se.nn.SparseLSTM(3, 6, num_layers=2, density=0.5, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="parametrizations.values.original"):
        plain.load_state_dict(m.state_dict())


def test_weight_drop_bad_arguments():
    with pytest.raises(ValueError, match="p must be"):
        WeightDrop(1.0)
    with pytest.raises(ValueError, match="names must name SparseWeight"):
        weight_drop(se.nn.SparseLSTM(3, 4, density=0.5), 0.3, names=["bias_hh_l0"])
    with pytest.raises(ValueError, match="no sparse weight_hh"):
        weight_drop(se.nn.SparseLSTM(3, 4, density=0.5, sparse="input"), 0.3)


def test_sparse_weight_norm_is_per_row_weight_norm(rng):
    w = se.testing.random_weight(7, 9, 0.4, empty_rows=1, seed=int(torch.randint(0, 2**31, (1,), generator=rng)))
    dense_before = se.testing.dense(w)
    sparse_weight_norm(w)
    norm = w.parametrizations["values"][0]
    assert isinstance(norm, SparseWeightNorm)
    torch.testing.assert_close(se.testing.dense(w), dense_before)  # g starts at the rows' norms
    with torch.no_grad():
        norm.g.copy_(torch.rand(7, generator=rng, dtype=torch.float64) + 0.5)
    v = se.testing.dense(w)  # hand computed: g[r] * V[r] / ||V[r]|| (V: the stored original values)
    row, col, _ = w.coo()
    V = torch.zeros(7, 9, dtype=torch.float64)
    V[row, col] = w.parametrizations["values"].original.detach()
    rows = V.norm(dim=1, keepdim=True)
    want = torch.where(rows > 0, norm.g.detach()[:, None] * V / rows.clamp_min(1e-300), torch.zeros(()))
    torch.testing.assert_close(v, want)
    # torch's dense weight norm of the same matrix gives the same weight and gradients
    lin = nn.Linear(9, 7, bias=False, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(V)
    lin = nn.utils.parametrizations.weight_norm(lin)
    with torch.no_grad():
        lin.parametrizations.weight.original0.copy_(norm.g.detach()[:, None])
    x = torch.randn(9, 3, generator=rng, dtype=torch.float64)
    se.ops.spmm(w, x).pow(2).sum().backward()
    (lin.weight @ x).pow(2).sum().backward()
    keep = rows[:, 0] > 0
    torch.testing.assert_close(norm.g.grad[keep], lin.parametrizations.weight.original0.grad[keep, 0])
    torch.testing.assert_close(w.parametrizations["values"].original.grad,
                               lin.parametrizations.weight.original1.grad[row, col])


def test_sparse_weight_norm_state_dict_and_training(rng):
    torch.manual_seed(0)
    m = se.nn.SparseLSTM(3, 5, density=0.6, dtype=torch.float64)
    sparse_weight_norm(m.weight_hh_l0)
    torch.manual_seed(1)
    m2 = se.nn.SparseLSTM(3, 5, density=0.6, dtype=torch.float64)
    sparse_weight_norm(m2.weight_hh_l0)
    m2.load_state_dict(m.state_dict())
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    torch.testing.assert_close(m(x)[0], m2(x)[0], rtol=0, atol=0)
    g = m.weight_hh_l0.parametrizations["values"][0].g
    before = g.detach().clone()
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    m(x)[0].pow(2).sum().backward()
    opt.step()
    assert not torch.equal(g.detach(), before)


def test_topology_update_of_a_parametrized_weight_is_refused():
    m = weight_drop(se.nn.SparseLSTM(3, 4, density=0.5), 0.2)
    w = m.weight_hh_l0
    with pytest.raises(ValueError, match="parametrized"):
        w.set_pattern(w.row_ptr, w.col_idx, w.values.detach())
    with pytest.raises(ValueError, match="parametrized"):
        se.training.SET(m, None, zeta=0.3).end_epoch()


def test_topology_update_inside_unparametrized_keeps_the_parametrization_and_optimizer(rng):
    """SET on a weight-dropped LSTM: the update prunes by the stored values, the optimizer state
    follows, and the same WeightDrop is back on the same Parameter afterwards."""
    torch.manual_seed(0)
    m = weight_drop(se.nn.SparseLSTM(3, 8, density=0.5, dtype=torch.float64), 0.5)
    w = m.weight_hh_l0
    original, drop = w.parametrizations["values"].original, w.parametrizations["values"][0]
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    ctl = se.training.SET(m, opt, zeta=0.3, seed=1)
    for _ in range(2):
        opt.zero_grad()
        m(torch.randn(4, 2, 3, generator=rng, dtype=torch.float64))[0].pow(2).sum().backward()
        opt.step()
    stored = original.detach().clone()
    cols = w.col_idx.clone()
    with unparametrized(m):
        assert w.values is original
        ctl.end_epoch()
    assert not torch.equal(cols, w.col_idx)
    assert w.parametrizations["values"].original is original and w.parametrizations["values"][0] is drop
    assert opt.state[original]["momentum_buffer"].shape == original.shape
    positive = stored[stored > 0].sort().values  # SET pruned the 30% of positives nearest zero, by stored value
    n_drop = int(0.3 * positive.numel() + 0.5)
    kept = set(w.parametrizations["values"].original.detach().tolist())
    assert not (set(positive[:n_drop].tolist()) & kept) and set(positive[n_drop:].tolist()) <= kept
    m(torch.randn(4, 2, 3, generator=rng, dtype=torch.float64))[0].sum().backward()  # trains on
    assert original.grad.shape == original.shape
