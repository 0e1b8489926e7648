"""Cells against torch's cells, the CT-RNN against a dense reference, gradcheck of the recurrence's
Function, and how the modules pick the fused or the composed step. (The fused step ops themselves,
on every device: tests/ops/test_rnn_step.py.)"""
import dataclasses

import pytest
import torch
from torch import nn

import sparse_engine as se
from sparse_engine.recurrent import cell_steps as cell_table
from sparse_engine.recurrent.sequence import Config, Recurrence
from sparse_engine.testing import random_weight


@pytest.fixture(params=[True, False], ids=["fused", "composed"])
def fused(request):
    """The modules' ``fused`` setting: the fused step ops, or the composed steps."""
    return request.param


CELLS = [
    (se.nn.SparseLSTMCell, {}),
    (se.nn.SparseGRUCell, {}),
    (se.nn.SparseRNNCell, {"nonlinearity": "tanh"}),
    (se.nn.SparseRNNCell, {"nonlinearity": "relu"}),
]


@pytest.mark.parametrize("cls,kw", CELLS, ids=["lstm", "gru", "tanh", "relu"])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("given", [True, False])
def test_cells_match_torch(cls, kw, batched, given, fused, rng):
    cell = cls(4, 11, density=0.4, dtype=torch.float64, fused=fused, **kw)
    ref = cell.to_dense()
    is_lstm = cls is se.nn.SparseLSTMCell
    lead = (3,) if batched else ()
    x = torch.randn(*lead, 4, generator=rng, dtype=torch.float64)
    states = [torch.randn(*lead, 11, generator=rng, dtype=torch.float64) for _ in range(2 if is_lstm else 1)]
    ins = [[t.clone().requires_grad_(True) for t in [x, *states]] for _ in range(2)]

    def call(c, a):
        if not given:
            return c(a[0])
        return c(a[0], (a[1], a[2]) if is_lstm else a[1])

    outs = [call(cell, ins[0]), call(ref, ins[1])]
    outs = [o if isinstance(o, tuple) else (o,) for o in outs]
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    w = [torch.randn(o.shape, generator=rng, dtype=torch.float64) for o in outs[0]]
    for o in outs:
        sum((t * wi).sum() for t, wi in zip(o, w)).backward()
    for a, b in zip(ins[0], ins[1]):
        if a.grad is not None or b.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10)
    row, col, _ = cell.weight_hh.coo()
    torch.testing.assert_close(cell.weight_hh.values.grad, ref.weight_hh.grad[row, col], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(cell.bias_hh.grad, ref.bias_hh.grad, rtol=1e-10, atol=1e-10)


def test_cell_from_dense_and_errors(rng):
    d = nn.GRUCell(3, 5)
    s = se.nn.SparseGRUCell.from_dense(d, density=0.5)
    assert s.weight_hh.nnz == round(0.5 * 15 * 5)
    with pytest.raises(TypeError, match="GRUCell"):
        se.nn.SparseGRUCell.from_dense(nn.LSTMCell(3, 5))
    c = se.nn.SparseLSTMCell(3, 5, density=0.5)
    with pytest.raises(ValueError, match=r"input must have shape"):
        c(torch.randn(2, 4, generator=rng))
    with pytest.raises(ValueError, match="c must have shape"):
        c(torch.randn(2, 3, generator=rng), (torch.zeros(2, 5), torch.zeros(1, 5)))
    with pytest.raises(TypeError, match="tuple"):
        c(torch.randn(2, 3, generator=rng), torch.zeros(2, 5))


# ----------------------------------------------------------------------------------------- CT-RNN
def ctrnn_reference(x, h0, W_in, W_rec, b, dt, tau, unfolds):
    """Dense CT-RNN written out as in Zhang et al. 2023 (batch-major)."""
    h, outs = h0, []
    for t in range(x.shape[0]):
        for _ in range(unfolds):
            h = h + dt * (-h / tau + torch.tanh(x[t] @ W_in.t() + h @ W_rec.t() + b))
        outs.append(h)
    return torch.stack(outs), h


@pytest.mark.parametrize("sparse", ["both", "recurrent"])
def test_ctrnn_matches_dense_reference(sparse, fused, rng):
    layer = se.nn.SparseCTRNN(3, 13, density=0.3, sparse=sparse, dt=0.05, tau=0.7, unfolds=4,
                              dtype=torch.float64, fused=fused)
    W_in = layer.weight_ih.to_dense() if sparse == "both" else layer.weight_ih.detach()
    W_rec = layer.weight_hh.to_dense().requires_grad_(True)
    x = torch.randn(5, 2, 3, generator=rng, dtype=torch.float64)
    h0 = torch.randn(1, 2, 13, generator=rng, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    h1, h2 = h0.clone().requires_grad_(True), h0.clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    y, hn = layer(x1, h1)
    y_ref, hn_ref = ctrnn_reference(x2, h2[0], W_in, W_rec, b, 0.05, 0.7, 4)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(hn[0], hn_ref, rtol=1e-10, atol=1e-10)
    w = torch.randn(y.shape, generator=rng, dtype=torch.float64)
    (y * w).sum().backward()
    (y_ref * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(layer.bias.grad, b.grad, rtol=1e-10, atol=1e-10)
    row, col, _ = layer.weight_hh.coo()
    torch.testing.assert_close(layer.weight_hh.values.grad, W_rec.grad[row, col], rtol=1e-10, atol=1e-10)


def test_ctrnn_cell_is_one_layer_step_and_defaults(rng):
    cell = se.nn.SparseCTRNNCell(2, 6, density=0.5, dtype=torch.float64)
    assert (cell.dt, cell.tau, cell.unfolds) == (0.1, 0.5, 6)
    x = torch.randn(3, 2, generator=rng, dtype=torch.float64)
    h0 = torch.randn(3, 6, generator=rng, dtype=torch.float64)
    _, h_ref = ctrnn_reference(x[None], h0, cell.weight_ih.to_dense(), cell.weight_hh.to_dense(),
                               cell.bias.detach(), 0.1, 0.5, 6)
    torch.testing.assert_close(cell(x, h0), h_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(cell(x[0], h0[0]), h_ref[0], rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="tau"):
        se.nn.SparseCTRNNCell(2, 6, tau=0)
    with pytest.raises(ValueError, match="unfolds"):
        se.nn.SparseCTRNN(2, 6, unfolds=0)


@pytest.mark.parametrize("bias", [True, False])
def test_ctrnn_bias_flag_and_parameter(bias):
    """The CT-RNN's one bias Parameter is named ``bias`` (the paper's name), so the flag is kept
    apart: the weight names, the repr and the parameter list follow the constructor argument."""
    for cell in (se.nn.SparseCTRNNCell(2, 6, bias=bias), se.nn.SparseCTRNN(2, 6, bias=bias)):
        names = ["weight_ih", "weight_hh"] + (["bias"] if bias else [])
        assert cell._flat_weights_names == names
        assert f"bias={bias}," in repr(cell)
        assert (cell.bias is not None) == bias
        assert ("bias" in dict(cell.named_parameters())) == bias


# -------------------------------------------------------------------------------------- gradcheck
# The composed path is checked on sparse-sparse only: its dense products are torch's own.
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU", "CTRNN"])
@pytest.mark.parametrize("kinds,reverse,fused", [
    ("sparse-sparse", False, True), ("sparse-sparse", True, True), ("dense-sparse", True, True),
    ("sparse-dense", False, True), ("sparse-sparse", False, False), ("sparse-sparse", True, False)])
def test_gradcheck_recurrence(mode, reverse, kinds, fused, rng, gradcheck_recurrence):
    """Recurrence.apply against finite differences, every input needing grad and then only some (the
    check itself: the fixture gradcheck_recurrence of tests/conftest.py)."""
    gradcheck_recurrence(mode, reverse, kinds, fused, rng)


# ------------------------------------------------------------------ fused or composed, per module
def test_fused_and_composed_agree_float32(rng):
    m = se.nn.SparseLSTM(8, 45, density=0.2)
    x = torch.randn(6, 3, 8, generator=rng)
    outs = []
    for flag in (True, False):
        m.fused = flag
        m.zero_grad()
        y, (h, c) = m(x)
        (y.square().sum() + c.sum()).backward()
        outs.append([y, h, c] + [p.grad.clone() for p in m.parameters()])
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "composed"])
def test_fused_setting_is_per_module(fused, monkeypatch, rng):
    """A module's ``fused`` setting (constructor argument and attribute) picks the step of its own
    recurrence: fused=False runs the composed step every step, fused=True (a sparse float64 W_hh
    on the CPU, which has the kernels) never; a module beside it keeps the default."""
    cell = cell_table.CELLS["GRU"]
    calls = []

    def spy(*args):
        calls.append(1)
        return cell.step(*args)

    monkeypatch.setitem(cell_table.CELLS, "GRU", dataclasses.replace(cell, step=spy))
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    m = se.nn.SparseGRU(3, 5, num_layers=2, density=0.5, dtype=torch.float64, fused=fused)
    other = se.nn.SparseGRU(3, 5, density=0.5, dtype=torch.float64)
    assert m.fused is fused and other.fused is True
    assert ("fused=False" in repr(m)) is not fused
    m(x)
    assert len(calls) == (0 if fused else 2 * 4)
    other(x)
    assert len(calls) == (0 if fused else 2 * 4)
    c = se.nn.SparseGRUCell(3, 5, density=0.5, dtype=torch.float64, fused=fused)
    c(x[0])
    assert len(calls) == (0 if fused else 2 * 4 + 1)
    m.fused = not fused  # the attribute is read at each forward
    m(x)
    assert len(calls) == (2 * 4 if fused else 2 * 4 + 1)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "composed"])
def test_per_step_backward_takes_w_hh_gradient_from_the_step(fused, monkeypatch, rng):
    """Per step (large runs), a fused step backward adds W_hh's gradient itself: no sddmm for W_hh
    (one per step composed), the same gradient within rounding."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from sparse_engine.recurrent import sequence as recurrence

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.sddmm = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.sddmm += func.__name__.startswith("sddmm")
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(recurrence, "STACK_BYTES", 0)
    torch.manual_seed(0)
    grads = {}
    for f in (fused, not fused):
        torch.manual_seed(0)
        m = se.nn.SparseLSTM(4, 9, density=0.4, sparse="recurrent", compute="sparse", fused=f)
        x = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(1))
        count = Count()
        with count:
            m(x)[0].pow(2).sum().backward()
        grads[f] = m.weight_hh_l0.values.grad
        if f == fused:
            assert count.sddmm == (0 if fused else 6)
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------- the weights as the module holds them
def test_recurrence_takes_the_weights_as_the_module_holds_them(rng):
    """recurrence() given SparseWeights (split there, the index filled into the Config) computes
    exactly what Recurrence.apply computes on their values with the index in the Config, and a
    sink gets the weight-gradient factors (dL/dW = G X^T at the stored entries)."""
    from sparse_engine.recurrent.sequence import recurrence

    mode, I, H, B, T = "GRU", 3, 4, 2, 3
    W_ih, W_hh = (random_weight(3 * H, n, 0.6, generator=rng) for n in (I, H))
    x = torch.randn(T, I, B, generator=rng, dtype=torch.float64)
    h0 = torch.randn(H, B, generator=rng, dtype=torch.float64)
    b_ih, b_hh = (torch.randn(3 * H, generator=rng, dtype=torch.float64) for _ in range(2))
    sink = {}
    y, h, _ = recurrence(Config(mode, H, B, T), x, h0, None, W_ih, W_hh, b_ih, b_hh, sink)
    (y.square().sum() + h.sum()).backward()
    v_ih, v_hh = (W.values.detach().clone().requires_grad_() for W in (W_ih, W_hh))
    y2, h2, _ = Recurrence.apply(Config(mode, H, B, T, False, W_ih.index, W_hh.index), x, h0, None, v_ih, v_hh,
                                 b_ih, b_hh)
    (y2.square().sum() + h2.sum()).backward()
    assert torch.equal(y, y2) and torch.equal(h, h2)
    assert torch.equal(W_ih.values.grad, v_ih.grad) and torch.equal(W_hh.values.grad, v_hh.grad)
    for kind, W in (("ih", W_ih), ("hh", W_hh)):
        G, X = sink[kind]
        row, col, _ = W.coo()
        torch.testing.assert_close((G @ X.t())[row, col], W.values.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [se.nn.SparseLSTMCell, se.nn.SparseCTRNNCell], ids=["lstm", "ctrnn"])
def test_a_cell_reads_each_weight_once_per_step(cls, rng):
    """A cell hands its weights to the recurrence as they are, which reads each one's values once
    per step: a parametrization (weight drop draws a mask at each read) runs once for W_hh."""
    from torch.nn.utils import parametrize

    class Counted(torch.nn.Module):
        calls = 0

        def forward(self, v):
            Counted.calls += 1
            return v

    cell = cls(3, 5, density=0.5, dtype=torch.float64)
    parametrize.register_parametrization(cell.weight_hh, "values", Counted())
    Counted.calls = 0  # (registering evaluated it once, to check its output)
    cell(torch.randn(2, 3, generator=rng, dtype=torch.float64))
    assert Counted.calls == 1
