"""The recurrence's streamed layout (step-major blocks, per-step weight gradients, states read
back from the output) and the models' shortcuts around it: same numbers as the plain reading of
the module's output, torch's output layout, and a peak memory of a few copies of the output."""
import pytest
import torch
from torch import nn

import sparse_engine as se
from sparse_engine.kernels.constants import GATES
from sparse_engine.models import SequenceModel
from sparse_engine.recurrent import sequence as recurrence
from sparse_engine.recurrent.layout import batch_rows
from sparse_engine.recurrent.sequence import Config, Recurrence
from sparse_engine.testing import peak_rss_growth, random_weight


# The tests' sizes all fall under STACK_BYTES (one product over all T*B columns); these run the
# per-step schedule of large runs on them.
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "CTRNN"])
@pytest.mark.parametrize("kinds,reverse,fused", [
    ("sparse-sparse", False, True), ("dense-sparse", True, True), ("sparse-dense", False, True),
    ("sparse-sparse", True, False)])
def test_gradcheck_recurrence_per_step(mode, reverse, kinds, fused, rng, monkeypatch, gradcheck_recurrence):
    monkeypatch.setattr(recurrence, "STACK_BYTES", 0)
    gradcheck_recurrence(mode, reverse, kinds, fused, rng)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_per_step_and_stacked_agree(mode, monkeypatch):
    """A bidirectional two-layer module (both weights sparse) gives the same outputs and
    gradients with either schedule."""
    results = []
    for limit in (recurrence.STACK_BYTES, 0):
        monkeypatch.setattr(recurrence, "STACK_BYTES", limit)
        torch.manual_seed(0)
        cls = {"LSTM": se.nn.SparseLSTM, "GRU": se.nn.SparseGRU, "RNN_TANH": se.nn.SparseRNN}[mode]
        m = cls(5, 7, num_layers=2, bidirectional=True, density=0.4, dtype=torch.float64)
        x = torch.randn(6, 3, 5, dtype=torch.float64, requires_grad=True)
        out, _ = m(x)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
        results.append([out.detach(), x.grad] + [p.grad for p in m.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["classify", "regress"])
@pytest.mark.parametrize("model,layers,sparse", [("rnn", 1, "recurrent"), ("rnn", 2, "both"), ("lstm", 2, "both"),
                                                 ("gru", 1, "input"), ("ctrnn", 1, "both")])
def test_sequence_model_same_as_reading_the_output(model, layers, sparse, kind):
    """Classification reads h_n, regression applies the readout per step on the step-major output:
    both give the outputs and gradients of ``readout(out[:, -1])`` / ``readout(out)`` on the
    module's own output."""
    torch.manual_seed(0)
    m = SequenceModel(model, 3, 4, 9, layers, 0.5, sparse, kind).double()
    x = torch.randn(5, 6, 3, dtype=torch.float64)
    target = torch.randn(5, 4, dtype=torch.float64) if kind == "classify" else torch.randn(5, 6, 4,
                                                                                           dtype=torch.float64)
    got = m(x)
    ((got - target) ** 2).sum().backward()
    ours = _grads(m)
    m.zero_grad()
    out, _ = m.rnn(x)
    ref = m.readout(out[:, -1] if kind == "classify" else out)
    ((ref - target) ** 2).sum().backward()
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    theirs = _grads(m)
    assert ours.keys() == theirs.keys() and len(ours) >= 5
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-10, atol=1e-12, msg=name)


def test_batch_rows_is_a_per_step_transpose_with_its_gradient():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(4, 70, 3, generator=g, dtype=torch.float64, requires_grad=True)
    out = batch_rows(y)
    assert out.shape == (4, 3, 70) and out.is_contiguous()
    torch.testing.assert_close(out, y.transpose(1, 2), rtol=0, atol=0)
    assert torch.autograd.gradcheck(batch_rows, (y,))
    # a non-contiguous gradient (a batch-first consumer) comes back right too
    w = torch.randn(3, 4, 70, generator=g, dtype=torch.float64)
    (out.transpose(0, 1) * w).sum().backward()
    torch.testing.assert_close(y.grad, w.permute(1, 2, 0), rtol=0, atol=0)


@pytest.mark.parametrize("batch_first", [False, True])
def test_output_layout_as_torch(batch_first):
    """Time-major output contiguous; batch-first the transposed view, as torch's nn.RNN returns."""
    torch.manual_seed(0)
    x = torch.randn(4, 6, 3)
    ours, _ = se.nn.SparseRNN(3, 8, batch_first=batch_first, density=0.5)(x)
    theirs, _ = nn.RNN(3, 8, batch_first=batch_first)(x)
    assert ours.shape == theirs.shape
    assert ours.is_contiguous() == theirs.is_contiguous()
    assert ours.transpose(0, 1).is_contiguous() == theirs.transpose(0, 1).is_contiguous()


@pytest.mark.parametrize("compute", ["sparse", "dense"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_step_major_is_forward_before_the_transposition(mode, batch_first, compute):
    """``step_major`` gives ``forward``'s output as (T, D*H, B) and its final states, with the same
    gradients (also on the dense compute path)."""
    torch.manual_seed(0)
    cls = se.nn.SparseLSTM if mode == "LSTM" else se.nn.SparseGRU
    m = cls(3, 6, num_layers=2, bidirectional=True, batch_first=batch_first, density=0.5, dtype=torch.float64,
            compute=compute)
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    T, B = (5, 4) if batch_first else (4, 5)
    w_out = torch.randn(T, 12, B, dtype=torch.float64)
    w_h = torch.randn(4, B, 6, dtype=torch.float64)

    def run(y, states):
        h = states[0] if mode == "LSTM" else states
        ((y * w_out).sum() + (h * w_h).sum()).backward()
        grads = [p.grad.clone() for p in m.parameters()]
        m.zero_grad()
        return y.detach(), h.detach(), grads

    y, h, g_got = run(*m.step_major(x))
    out, states = m(x)
    ref_y, ref_h, g_ref = run(out.permute(1, 2, 0) if batch_first else out.permute(0, 2, 1), states)
    torch.testing.assert_close(y, ref_y, rtol=0, atol=0)
    torch.testing.assert_close(h, ref_h, rtol=0, atol=0)
    assert all(g.abs().sum() > 0 for g in g_got)
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_step_major_refuses_packed_sequences():
    m = se.nn.SparseGRU(3, 4, density=0.5)
    packed = nn.utils.rnn.pack_sequence([torch.randn(3, 3), torch.randn(2, 3)])
    with pytest.raises(TypeError, match="PackedSequence"):
        m.step_major(packed)


SETUP = """
    import torch
    from sparse_engine.models import SequenceModel
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SequenceModel("rnn", 28, 10, {H}, 1, 2e-4, "recurrent", "classify")
    x, y = torch.randn({B}, {T}, 28), torch.randint(0, 10, ({B},))
    torch.nn.functional.cross_entropy(model(x[:2, :2]), y[:2]).backward()  # allocator and kernels warm
    model.zero_grad()
"""


def test_training_step_peak_is_a_few_outputs():
    """One classifier forward+backward at hidden 20,000 (T=28, B=64) raises the peak by at most 4
    copies of the output (T x H x B): the output (the saved states) and per-step temporaries
    (measured: 1.5). (The layout-copying recurrence this replaced took 5.)"""
    H, T, B = 20_000, 28, 64
    grew = peak_rss_growth(SETUP.format(H=H, T=T, B=B), "torch.nn.functional.cross_entropy(model(x), y).backward()",
                           env={"OMP_NUM_THREADS": "1"})
    ratio = grew / (T * H * B * 4)
    assert 0.5 < ratio < 4.0, f"peak grew by {ratio:.2f} outputs"  # (the lower bound: it measured something)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "composed"])
@pytest.mark.parametrize("stacked", [True, False], ids=["stacked", "per-step"])
def test_each_activation_is_saved_once(mode, fused, stacked, rng, monkeypatch):
    """What the recurrence keeps for its backward besides its inputs and weights: the output Y
    (T x H x B, the states), LSTM's cell states (T of H x B) and each step's activations (T of
    4H x B: LSTM [i f g o], GRU [r z n W_hn h + b_hn]), each in a storage of exactly its size:
    nothing saved twice, no input part (gx) kept, no view holding a larger buffer alive."""
    if not stacked:
        monkeypatch.setattr(recurrence, "STACK_BYTES", 0)
    I, H, B, T = 5, 7, 3, 4
    G = GATES[mode]
    W_ih, W_hh = (random_weight(G * H, n, 0.5, empty_rows=1, generator=rng) for n in (I, H))
    cfg = Config(mode, H, B, T, False, W_ih.index, W_hh.index, fused=fused)
    rnd = lambda *shape: torch.randn(*shape, generator=rng, dtype=torch.float64)  # noqa: E731
    x, h0 = rnd(T, I, B).requires_grad_(), rnd(H, B)
    c0 = rnd(H, B) if mode == "LSTM" else None
    w_ih, w_hh = (W.values.detach().clone().requires_grad_() for W in (W_ih, W_hh))
    b_ih, b_hh = rnd(G * H), rnd(G * H)
    y, h, c = Recurrence.apply(cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    given = {t.untyped_storage().data_ptr() for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh) if t is not None}
    storages = {}
    for t in y.grad_fn.saved_tensors:
        if t is not None and t.untyped_storage().data_ptr() not in given:
            storages.setdefault(t.untyped_storage().data_ptr(), []).append(t.untyped_storage().nbytes())
    assert all(len(v) == 1 for v in storages.values()), "a storage saved twice"
    HB = H * B * 8
    expected = [T * HB] + ([HB] * T if mode == "LSTM" else []) + [4 * HB] * T  # Y, c_1..c_T, acts
    assert sorted(v[0] for v in storages.values()) == sorted(expected)
    (y.sum() + h.sum()).backward()
    assert x.grad is not None and w_hh.grad is not None
