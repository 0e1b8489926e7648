"""A trained dense torch model sparsified: load_dense_state_dict / from_dense with a density chosen
by magnitude or at random; a plain load_state_dict of a dense state_dict refused clearly."""
import pytest
import torch
from torch import nn

from sparse_engine import SparseWeight
from sparse_engine.nn import (SparseCTRNNCell, SparseGRU, SparseGRUCell, SparseLinear, SparseLSTM, SparseLSTMCell,
                              SparseRNN)

PAIRS = [(nn.LSTM, SparseLSTM), (nn.GRU, SparseGRU), (nn.RNN, SparseRNN)]
KW = dict(num_layers=2, bidirectional=True)


def dense_model(cls, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(5, 6, **{**KW, **kw}).double()


def masked_reference(dense: nn.Module, sparse: nn.Module) -> nn.Module:
    """The dense module with each sparse matrix's dropped entries zeroed (float64)."""
    ref = type(dense)(5, 6, **KW).double()
    ref.load_state_dict(dense.state_dict())
    with torch.no_grad():
        for name, w in sparse.named_children():
            if isinstance(w, SparseWeight):
                getattr(ref, name).mul_(w.to_dense() != 0)
    return ref


@pytest.mark.parametrize("dense_cls, sparse_cls", PAIRS)
def test_magnitude_keeps_the_largest_entries_and_matches_the_masked_dense_model(dense_cls, sparse_cls):
    dense = dense_model(dense_cls)
    sparse = sparse_cls(5, 6, **KW, density=0.9, dtype=torch.float64)
    sparse.load_dense_state_dict(dense.state_dict(), density=0.33)
    for name, w in sparse.named_children():
        if not isinstance(w, SparseWeight):
            continue
        d = getattr(dense, name).detach()
        assert w.nnz == round(0.33 * d.numel())
        kept = w.to_dense() != 0
        assert d[kept].abs().min() >= d[~kept].abs().max()
        torch.testing.assert_close(w.to_dense()[kept], d[kept], rtol=0, atol=0)
    torch.testing.assert_close(sparse.bias_hh_l1_reverse, dense.bias_hh_l1_reverse, rtol=0, atol=0)
    x = torch.randn(4, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out, _ = sparse(x)
    ref, _ = masked_reference(dense, sparse)(x)
    torch.testing.assert_close(out, ref)


def test_random_selection_is_seeded_uniform_and_keeps_the_values():
    dense = dense_model(nn.LSTM)
    a = SparseLSTM(5, 6, **KW, density=0.5, dtype=torch.float64)
    b = SparseLSTM(5, 6, **KW, density=0.5, dtype=torch.float64)
    a.load_dense_state_dict(dense.state_dict(), 0.25, selection="random", generator=torch.Generator().manual_seed(2))
    b.load_dense_state_dict(dense.state_dict(), 0.25, selection="random", generator=torch.Generator().manual_seed(2))
    mag = SparseLSTM.from_dense(dense, density=0.25)
    w, d = a.weight_hh_l0, dense.weight_hh_l0.detach()
    assert torch.equal(w.col_idx, b.weight_hh_l0.col_idx)  # same seed, same pattern
    assert w.nnz == round(0.25 * d.numel())
    kept = w.to_dense() != 0
    torch.testing.assert_close(w.to_dense()[kept], d[kept], rtol=0, atol=0)
    assert not torch.equal(kept, mag.weight_hh_l0.to_dense() != 0)  # not the magnitude choice
    # not biased to large weights: kept and dropped have similar mean |w| (both ~ 0.5 bound)
    assert abs(d[kept].abs().mean() - d[~kept].abs().mean()) < 0.25 * d.abs().mean()


def test_density_defaults_to_the_modules_own_and_parameters_are_kept():
    dense = dense_model(nn.GRU)
    sparse = SparseGRU(5, 6, **KW, density=0.4, dtype=torch.float64)
    nnz = {n: w.nnz for n, w in sparse.named_children()}
    params = list(sparse.parameters())
    opt = torch.optim.SGD(sparse.parameters(), lr=0.1)
    sparse.load_dense_state_dict(dense.state_dict())
    assert {n: w.nnz for n, w in sparse.named_children()} == nnz
    assert all(p is q for p, q in zip(sparse.parameters(), params))  # the optimizer's Parameters
    sparse(torch.randn(3, 2, 5, dtype=torch.float64))[0].sum().backward()
    opt.step()  # the resized values still step


def test_mask_and_sparse_recurrent():
    dense = dense_model(nn.RNN, num_layers=1, bidirectional=False)
    sparse = SparseRNN(5, 6, density=0.5, sparse="recurrent", dtype=torch.float64)
    mask = {"weight_hh_l0": torch.eye(6, dtype=torch.bool)}
    sparse.load_dense_state_dict(dense.state_dict(), mask=mask)
    torch.testing.assert_close(sparse.weight_hh_l0.to_dense(), torch.diag(torch.diag(dense.weight_hh_l0.detach())))
    torch.testing.assert_close(sparse.weight_ih_l0, dense.weight_ih_l0, rtol=0, atol=0)  # dense: copied


def test_cells_and_from_dense_selection():
    torch.manual_seed(3)
    cell = nn.LSTMCell(5, 6)
    sparse = SparseLSTMCell(5, 6, density=0.3)
    sparse.load_dense_state_dict(cell.state_dict())
    assert sparse.weight_hh.nnz == round(0.3 * 24 * 6)
    gru = SparseGRUCell.from_dense(nn.GRUCell(5, 6), density=0.5, selection="random",
                                   generator=torch.Generator().manual_seed(4))
    assert gru.weight_ih.nnz == round(0.5 * 18 * 5)
    with pytest.raises(NotImplementedError, match="CT-RNN"):
        SparseCTRNNCell(5, 6).load_dense_state_dict({})


def test_bad_arguments_name_what_was_expected():
    dense = dense_model(nn.LSTM)
    sd = dense.state_dict()
    sparse = SparseLSTM(5, 6, **KW, density=0.3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"missing \['weight_hh_l1_reverse'\]"):
        sparse.load_dense_state_dict({k: v for k, v in sd.items() if k != "weight_hh_l1_reverse"})
    with pytest.raises(ValueError, match="load_state_dict"):
        sparse.load_dense_state_dict(SparseLSTM(5, 6, **KW, density=0.3).state_dict())  # ours: not dense
    with pytest.raises(ValueError, match=r"state_dict\['weight_ih_l0'\] must be a tensor of shape \(24, 5\)"):
        sparse.load_dense_state_dict({**sd, "weight_ih_l0": torch.zeros(24, 4)})
    with pytest.raises(ValueError, match="selection must be one of"):
        sparse.load_dense_state_dict(sd, 0.5, selection="largest")
    with pytest.raises(ValueError, match="at most one of density= and mask="):
        sparse.load_dense_state_dict(sd, 0.5, mask={})
    with pytest.raises(ValueError, match="density must be in"):
        sparse.load_dense_state_dict(sd, 1.5)
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        sparse.load_dense_state_dict([1, 2])


@pytest.mark.parametrize("strict", [True, False])
def test_plain_load_state_dict_of_a_dense_model_points_to_load_dense_state_dict(strict):
    class Net(nn.Module):
        def __init__(self, rnn, out):
            super().__init__()
            self.rnn, self.out = rnn, out

    dense = Net(nn.LSTM(5, 6), nn.Linear(6, 2))
    sparse = Net(SparseLSTM(5, 6, density=0.3), SparseLinear(6, 2, density=0.5))
    with pytest.raises(RuntimeError) as err:
        sparse.load_state_dict(dense.state_dict(), strict=strict)
    msg = str(err.value)
    for key in ("'rnn.weight_ih_l0'", "'rnn.weight_hh_l0'", "'out.weight'"):
        assert f"{key} is a dense matrix" in msg
    assert "load_dense_state_dict(state_dict, density=...)" in msg and "from_dense" in msg
    # a sparse-engine state_dict still loads
    sparse.load_state_dict(Net(SparseLSTM(5, 6, density=0.3), SparseLinear(6, 2, density=0.5)).state_dict())
