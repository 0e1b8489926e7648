"""torch.nn interoperability (issue 18, part A): whole-model pickles under weights_only,
to_dense keeping mode and requires_grad, zero-size batches, TorchScript refused clearly."""
import io

import pytest
import torch
from torch import nn

import sparse_engine
from sparse_engine.io import serialization
from sparse_engine.nn import (SparseCTRNN, SparseCTRNNCell, SparseGRU, SparseGRUCell, SparseLinear, SparseLSTM,
                              SparseLSTMCell, SparseRNN, SparseRNNCell)

LAYERS = (SparseRNN, SparseLSTM, SparseGRU)
CELLS = (SparseRNNCell, SparseLSTMCell, SparseGRUCell)


class Net(nn.Module):
    """A user's model: torch layers around ours."""

    def __init__(self, rnn_cls):
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.rnn = rnn_cls(6, 5, num_layers=2, density=0.4, bidirectional=True)
        self.cell = SparseCTRNN(10, 4, density=0.5)
        self.out = SparseLinear(4, 3, density=0.5)

    def forward(self, x):
        y, _ = self.rnn(self.embed(x))
        y, _ = self.cell(y)
        return self.out(y)


def _pickle(obj) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


# ------------------------------------------------------------------ safe globals
def test_safe_globals_lists_every_module_class_of_the_package():
    found = set(serialization.safe_globals())
    for cls in (*LAYERS, *CELLS, SparseCTRNN, SparseCTRNNCell, SparseLinear, sparse_engine.SparseWeight,
                sparse_engine.models.SequenceModel):
        assert cls in found, cls
    assert all(c.__module__.startswith("sparse_engine.") for c in found)
    # unpickling DDP reconnects to a process group: it is no safe global
    assert sparse_engine.distributed.DistributedDataParallel not in found


@pytest.mark.parametrize("rnn_cls", LAYERS)
def test_whole_model_loads_under_weights_only(rnn_cls):
    torch.manual_seed(0)
    model = Net(rnn_cls).eval()
    x = torch.randint(0, 11, (7, 3))
    buf = _pickle(model)
    allowed = [Net, nn.Embedding, *serialization.safe_globals()]
    with torch.serialization.safe_globals(allowed):
        loaded = torch.load(buf, weights_only=True)
    assert type(loaded.rnn) is rnn_cls
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_plain_weights_only_load_needs_the_list():
    """Not registered at import (see sparse_engine.io.serialization): without the list a whole
    model is refused, naming our class; with it (or after add_safe_globals) it loads."""
    torch.manual_seed(0)
    lstm = SparseLSTM(4, 3, density=0.5)
    with pytest.raises(Exception, match="SparseLSTM"):
        torch.load(_pickle(lstm), weights_only=True)
    saved = torch.serialization.get_safe_globals()
    try:
        torch.serialization.add_safe_globals(serialization.safe_globals())
        loaded = torch.load(_pickle(lstm), weights_only=True)
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved)
    torch.testing.assert_close(loaded.weight_hh_l0.values, lstm.weight_hh_l0.values)
    torch.testing.assert_close(loaded.weight_hh_l0.col_idx, lstm.weight_hh_l0.col_idx)
    with pytest.raises(Exception, match="SparseLSTM"):  # the registration above was undone
        torch.load(_pickle(lstm), weights_only=True)


# ------------------------------------------------------------------- to_dense
def _to_dense_cases():
    return [SparseLinear(5, 4, density=0.5), *(c(5, 4, density=0.5) for c in LAYERS),
            *(c(5, 4, density=0.5) for c in CELLS), SparseLSTM(5, 4, density=0.5, sparse="recurrent")]


@pytest.mark.parametrize("training", [True, False])
def test_to_dense_keeps_training_mode(training):
    for module in _to_dense_cases():
        dense = module.train(training).to_dense()
        assert dense.training is training, type(module).__name__


def test_to_dense_keeps_requires_grad_per_parameter():
    for module in _to_dense_cases():
        frozen = list(module.named_parameters())[::2]  # every other parameter frozen
        for _, p in frozen:
            p.requires_grad_(False)
        dense = module.to_dense()
        names = {n.removesuffix(".values") for n, _ in frozen}
        for name, p in dense.named_parameters():
            assert p.requires_grad is (name not in names), (type(module).__name__, name)
        assert any(not p.requires_grad for p in dense.parameters())


def test_linear_to_dense_matches_the_sparse_layer():
    torch.manual_seed(0)
    lin = SparseLinear(6, 5, density=0.4)
    dense = lin.to_dense()
    x = torch.randn(3, 2, 6)
    torch.testing.assert_close(dense(x), lin(x))
    torch.testing.assert_close(dense.weight, lin.weight.to_dense())
    assert isinstance(dense, nn.Linear) and SparseLinear(6, 5, bias=False, density=0.4).to_dense().bias is None


# ---------------------------------------------------------------- zero-size batch
@pytest.mark.parametrize("compute", ["auto", "sparse", "persistent", "dense"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cls", LAYERS)
def test_zero_batch_layers_match_torch(cls, batch_first, compute):
    """On every compute path (the whole-sequence ops' backward once failed to size an empty batch)."""
    torch.manual_seed(0)
    sparse = cls(5, 7, num_layers=2, bidirectional=True, batch_first=batch_first, density=0.5, compute=compute)
    dense = sparse.to_dense()
    x = torch.randn((0, 3, 5) if batch_first else (3, 0, 5), requires_grad=True)
    out, h = sparse(x)
    ref, ref_h = dense(x)
    assert out.shape == ref.shape == ((0, 3, 14) if batch_first else (3, 0, 14))
    flat = lambda s: s if isinstance(s, tuple) else (s,)  # noqa: E731
    assert [t.shape for t in flat(h)] == [t.shape for t in flat(ref_h)]
    out.sum().backward()  # the backward of an empty batch runs too
    assert x.grad.shape == x.shape
    assert all(not p.grad.any() for p in sparse.parameters() if p.grad is not None)


@pytest.mark.parametrize("cls", CELLS)
def test_zero_batch_cells_match_torch(cls):
    sparse = cls(5, 4, density=0.5)
    out = sparse(torch.randn(0, 5))
    ref = sparse.to_dense()(torch.randn(0, 5))
    for a, b in zip(out if isinstance(out, tuple) else (out,), ref if isinstance(ref, tuple) else (ref,)):
        assert a.shape == b.shape == (0, 4)


def test_zero_batch_linear_and_ctrnn():
    assert SparseLinear(5, 4, density=0.5)(torch.randn(0, 5)).shape == (0, 4)
    out, h = SparseCTRNN(5, 4, density=0.5)(torch.randn(3, 0, 5))
    assert out.shape == (3, 0, 4) and h.shape == (1, 0, 4)
    assert SparseCTRNNCell(5, 4, density=0.5)(torch.randn(0, 5)).shape == (0, 4)


# ---------------------------------------------------- torch's methods and attributes
@pytest.mark.parametrize("make", [lambda: SparseLSTM(5, 40, num_layers=2, density=0.25, sparse="recurrent"),
                                  lambda: SparseGRUCell(5, 40, density=0.25), lambda: SparseCTRNN(5, 40, density=0.25)])
def test_reset_parameters_redraws_with_the_construction_scale(make):
    torch.manual_seed(0)
    module = make()
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    patterns = {n: w.col_idx.clone() for n, w in module.named_modules() if isinstance(w, sparse_engine.SparseWeight)}
    module.reset_parameters()
    for name, p in module.named_parameters():
        assert not torch.equal(p, before[name]), name
        owner = name.removesuffix(".values")
        if owner in patterns:
            w = module.get_submodule(owner)
            assert torch.equal(w.col_idx, patterns[owner])
            bound = (w.nnz / w.shape[0]) ** -0.5  # 1/sqrt(stored entries per row)
        else:
            bound = 40 ** -0.5  # torch's 1/sqrt(hidden_size)
        assert p.abs().max() <= bound and p.abs().max() > 0.8 * bound, name


def test_all_weights_is_torchs_layout():
    sparse = SparseGRU(5, 4, num_layers=2, bidirectional=True, density=0.5)
    dense = nn.GRU(5, 4, num_layers=2, bidirectional=True)
    got = [[tuple(w.shape) for w in group] for group in sparse.all_weights]
    assert got == [[tuple(w.shape) for w in group] for group in dense.all_weights]
    assert sparse.all_weights[3][1] is sparse.weight_hh_l1_reverse
    assert [len(g) for g in SparseLSTM(5, 4, bias=False, density=0.5).all_weights] == [2]


def test_isinstance_alternative_to_rnnbase():
    """Our layers are not nn.RNNBase subclasses (docs/torch_nn_compat.md); the documented check
    accepts torch's and ours and nothing else."""
    from sparse_engine.nn.rnn import SparseRNNBase

    rnn_like = (nn.RNNBase, SparseRNNBase)
    for m in (nn.LSTM(3, 4), nn.GRU(3, 4), SparseLSTM(3, 4), SparseGRU(3, 4), SparseRNN(3, 4)):
        assert isinstance(m, rnn_like)
    assert not isinstance(SparseLSTM(3, 4), nn.RNNBase)
    for m in (SparseLSTMCell(3, 4), SparseLinear(3, 4), SparseCTRNN(3, 4), nn.LSTMCell(3, 4)):
        assert not isinstance(m, rnn_like)


# ---------------------------------------------------------------- what torch warns and raises
@pytest.mark.parametrize("cls", LAYERS)
def test_one_layer_with_dropout_warns_as_torch(cls):
    import warnings
    dense = {SparseRNN: nn.RNN, SparseLSTM: nn.LSTM, SparseGRU: nn.GRU}[cls]
    for layers, count in ((1, 1), (2, 0)):
        with warnings.catch_warnings(record=True) as ours:
            warnings.simplefilter("always")
            cls(3, 4, num_layers=layers, dropout=0.5, density=0.5)
        with warnings.catch_warnings(record=True) as theirs:
            warnings.simplefilter("always")
            dense(3, 4, num_layers=layers, dropout=0.5)
        assert [str(w.message) for w in ours] == [str(w.message) for w in theirs] and len(ours) == count


@pytest.mark.parametrize("cls", LAYERS)
def test_a_wrong_dtype_is_caught_as_torch_raises_it(cls):
    """torch.nn's recurrent modules raise ValueError for an input of another dtype; ours raise one error that
    is a ValueError and a TypeError, naming the input (or the state)."""
    m = cls(3, 4, density=0.5)
    for args, name in (((torch.randn(2, 1, 3, dtype=torch.float64),), "input"),
                       ((torch.randn(2, 1, 3), torch.zeros(1, 1, 4, dtype=torch.float64)), "h0|hx|h_0")):
        if cls is SparseLSTM and len(args) == 2:
            args = (args[0], (args[1], args[1]))
        with pytest.raises(ValueError, match=f"^({name}).* must have dtype torch.float32") as caught:
            m(*args)
        assert isinstance(caught.value, TypeError)
    with pytest.raises(ValueError, match="input dtype"):  # torch's own
        m.to_dense()(torch.randn(2, 1, 3, dtype=torch.float64))


def test_linear_names_the_input_in_its_errors():
    lin = SparseLinear(5, 4, density=0.5)
    with pytest.raises(ValueError, match=r"^input must have last dimension in_features=5, got shape \(\)"):
        lin(torch.tensor(1.0))
    with pytest.raises(TypeError, match="^input must have dtype torch.float32 like the weight values, got "
                                        "torch.float64"):
        lin(torch.randn(2, 5, dtype=torch.float64))
