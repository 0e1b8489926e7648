"""Cells against torch's cells, the CT-RNN against a dense reference, gradcheck of the Function."""
import dataclasses

import pytest
import torch
from torch import nn

import sparse_engine as se
from sparse_engine.kernels.constants import GATES
from sparse_engine.recurrent import cell_steps as cell_table
from sparse_engine.recurrent.sequence import Config, Recurrence
from sparse_engine.testing import copy_weight, random_weight


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


# ------------------------------------------------------------------------------- CT-RNN
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


# ----------------------------------------------------------------------------- gradcheck
# The composed path is checked on sparse-sparse only: its dense products are torch's own.
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU", "CTRNN"])
@pytest.mark.parametrize("kinds,reverse,fused", [
    ("sparse-sparse", False, True), ("sparse-sparse", True, True), ("dense-sparse", True, True),
    ("sparse-dense", False, True), ("sparse-sparse", False, False), ("sparse-sparse", True, False)])
def test_gradcheck_recurrence(mode, reverse, kinds, fused, rng):
    I, H, B, T = 3, 4, 2, 3
    G = GATES[mode] * H
    sp_ih, sp_hh = (k == "sparse" for k in kinds.split("-"))
    W_ih = random_weight(G, I, 0.6, empty_rows=1, generator=rng) if sp_ih else None
    W_hh = random_weight(G, H, 0.6, empty_rows=1, generator=rng) if sp_hh else None
    w_ih = W_ih.values.detach().clone() if sp_ih else torch.randn(G, I, generator=rng, dtype=torch.float64)
    w_hh = W_hh.values.detach().clone() if sp_hh else torch.randn(G, H, generator=rng, dtype=torch.float64)
    cfg = Config(mode, H, B, T, reverse, W_ih.index if sp_ih else None, W_hh.index if sp_hh else None,
                 dt=0.2, tau=0.6, unfolds=2, fused=fused)
    x = torch.randn(T, I, B, generator=rng, dtype=torch.float64)
    h0 = torch.randn(H, B, generator=rng, dtype=torch.float64)
    c0 = torch.randn(H, B, generator=rng, dtype=torch.float64) if mode == "LSTM" else None
    b_ih = torch.randn(G, generator=rng, dtype=torch.float64)
    b_hh = None if mode == "CTRNN" else torch.randn(G, generator=rng, dtype=torch.float64)
    if mode == "RNN_RELU":  # keep pre-activations away from the kink
        b_ih = b_ih.abs() + 3
    args = [x, h0, c0, w_ih, w_hh, b_ih, b_hh]
    for a in args:
        if a is not None:
            a.requires_grad_(True)

    def f(*a):
        y, h, c = Recurrence.apply(cfg, *a)
        return (y, h, c) if mode == "LSTM" else (y, h)

    assert torch.autograd.gradcheck(f, args)
    # only some inputs needing grad
    for a in args:
        if a is not None:
            a.requires_grad_(False)
    w_hh.requires_grad_(True)
    assert torch.autograd.gradcheck(f, args, fast_mode=True)
    w_hh.requires_grad_(False)
    x.requires_grad_(True)
    y = f(*args)[0]
    (gx,) = torch.autograd.grad(y.sum(), x)
    assert gx.shape == x.shape


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


def test_fused_ops_reject_bad_arguments(rng):
    ops = torch.ops.sparse_engine
    W = random_weight(4 * 5, 5, 0.5, empty_rows=1, generator=rng)  # an LSTM W_hh for hidden 5
    v = W.values.detach()
    h = torch.randn(5, 3, generator=rng, dtype=torch.float64)
    gx = torch.randn(20, 3, generator=rng, dtype=torch.float64)
    ops.lstm_step(*W.index, v, gx, h, h)  # fine
    with pytest.raises(ValueError, match="gx must have 20 rows"):
        ops.lstm_step(*W.index, v, gx[:19], h, h)
    with pytest.raises(ValueError, match="batch size"):
        ops.lstm_step(*W.index, v, gx[:, :2], h, h)
    with pytest.raises(TypeError, match="dtype"):
        ops.lstm_step(*W.index, v, gx.float(), h, h)
    with pytest.raises(ValueError, match="W_hh must have 3"):
        ops.gru_step(*W.index, v, gx[:15], h, None)
    with pytest.raises(ValueError, match="b_hh"):
        G = random_weight(15, 5, 0.5, empty_rows=1, generator=rng)
        ops.gru_step(*G.index, G.values.detach(), gx[:15], h, torch.zeros(7, dtype=torch.float64))


def test_fused_ops_opcheck(rng):
    """Schemas, fake kernels (torch.compile) and dispatch of the fused ops are consistent."""
    ops = torch.ops.sparse_engine
    h = torch.randn(5, 3, generator=rng, dtype=torch.float64)
    g = torch.randn(20, 3, generator=rng, dtype=torch.float64)
    W4, W3, W1 = (random_weight(k * 5, 5, 0.5, empty_rows=1, generator=rng) for k in (4, 3, 1))
    v4, v3, v1 = (w.values.detach() for w in (W4, W3, W1))
    acts = torch.rand(20, 3, generator=rng, dtype=torch.float64)
    cases = [
        (ops.lstm_step, (*W4.index, v4, g, h, h)),
        (ops.lstm_step_backward, (*W4.index, v4, acts, h, h, h, h)),
        (ops.gru_step, (*W3.index, v3, g[:15], h, torch.randn(15, generator=rng, dtype=torch.float64))),
        (ops.gru_step, (*W3.index, v3, g[:15], h, None)),
        (ops.gru_step_backward, (*W3.index, v3, acts, h, h)),
        (ops.rnn_step, (*W1.index, v1, g[:5], h, True)),
        (ops.rnn_step_backward, (*W1.index, v1, h, h, False)),
        (ops.ctrnn_step, (*W1.index, v1, g[:5], h, 0.1, 0.5)),
        (ops.ctrnn_step_backward, (*W1.index, v1, h, h, 0.1, 0.5)),
    ]
    vt = {id(v): v[W.csc_perm.long()] for W, v in ((W4, v4), (W3, v3), (W1, v1))}
    cases += [(op, args + (vt[id(args[5])],)) for op, args in cases if op._qualified_op_name.endswith("_backward")]
    for op, args in cases:
        torch.library.opcheck(op.default, args, test_utils=("test_schema", "test_faketensor"))


def test_fused_backward_ops_with_values_t(rng):
    """Each step backward given W_hh's values in column order (values_t, made once per sequence by
    the recurrence) gives bitwise what it gives gathering values[csc_perm] itself, and reads
    values_t: one made from other values gives dh_prev of those values."""
    ops = torch.ops.sparse_engine
    H, B = 6, 5
    rnd = lambda *s: torch.randn(*s, generator=rng, dtype=torch.float64)  # noqa: E731
    acts = torch.rand(4 * H, B, generator=rng, dtype=torch.float64)
    h, c, dh, dc = rnd(H, B), rnd(H, B), rnd(H, B), rnd(H, B)
    calls = {
        4: lambda W, v, *t: ops.lstm_step_backward(*W.index, v, acts, c, c, dh, dc, *t),
        3: lambda W, v, *t: ops.gru_step_backward(*W.index, v, acts, h, dh, *t),
        1: lambda W, v, *t: ops.rnn_step_backward(*W.index, v, torch.tanh(h), dh, False, *t),
        -1: lambda W, v, *t: ops.ctrnn_step_backward(*W.index, v, acts[:H], dh, 0.1, 0.5, *t),
    }
    for gates, call in calls.items():
        W = random_weight(abs(gates) * H, H, 0.4, empty_rows=2, full_rows=1, generator=rng)
        v = W.values.detach()
        v_t = v[W.csc_perm.long()]
        for a, b in zip(call(W, v), call(W, v, v_t)):
            assert torch.equal(a, b)
        other = -2.0 * v + 0.25
        W_other = copy_weight(W, values=other)
        for a, b in zip(call(W_other, other), call(W, v, other[W.csc_perm.long()])):
            assert torch.equal(a, b)
        with pytest.raises(ValueError, match="values_t must be 1-D with nnz"):
            call(W, v, v_t[:-1])


def _reference_step(mode, W, gx, h, c, b_hh):
    """One step in float64 from the dense W_hh and torch's functions: (h', c', acts)."""
    D, gx, h = W.to_dense().double(), gx.double(), h.double()
    H = h.shape[0]
    pre = D @ h
    if mode == "LSTM":
        i, f, g, o = (gx + pre).chunk(4)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c2 = f * c.double() + i * g
        return o * torch.tanh(c2), c2, torch.cat([i, f, g, o])
    if mode == "GRU":
        gh = pre + b_hh.double()[:, None]
        r = torch.sigmoid(gx[:H] + gh[:H])
        z = torch.sigmoid(gx[H:2 * H] + gh[H:2 * H])
        n = torch.tanh(gx[2 * H:] + r * gh[2 * H:])
        return n + z * (h - n), None, torch.cat([r, z, n, gh[2 * H:]])
    a = torch.tanh(gx + pre)
    if mode == "CTRNN":
        return h * (1 - 0.1 / 0.5) + 0.1 * a, None, a
    return (torch.relu(gx + pre) if mode == "RNN_RELU" else a), None, None


@pytest.mark.parametrize("gx_layout", ["contiguous", "column block", "transposed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B", [1, 2, 20, 33, 70])
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU", "CTRNN"])
def test_fused_forward_ops_match_float64_reference(mode, B, dtype, gx_layout, rng):
    """The fused forward ops against float64 torch on the dense W_hh: hidden 37 (two blocks of 16
    units and a partial one, an empty row), batches narrower and wider than a register block (32
    float / 16 double columns) and B = 1, pre-activations from about -15 to 15 (tanh and sigmoid
    saturate) and near 0 (tanh's small-argument branch). float32: within 2e-6 absolute (its tanh
    is within 6 ulp, csrc/cpu/rnn_step_cpu.cpp). gx as the recurrence passes it (a block of B
    columns of the input part of all steps: rows far apart, read in place by the CPU kernel),
    contiguous, or transposed (copied first)."""
    ops = torch.ops.sparse_engine
    H, G = 37, GATES[mode]
    W = random_weight(G * H, H, 0.3, empty_rows=1, full_rows=1, dtype=dtype, generator=rng)
    scale = torch.logspace(-6, 1, G * H, dtype=torch.float64)[:, None]  # rows from tiny to large
    gx = (torch.randn(G * H, B, generator=rng, dtype=torch.float64) * scale).to(dtype)
    if gx_layout == "column block":
        wide = torch.randn(G * H, 3 * B + 1, generator=rng, dtype=torch.float64).to(dtype)
        wide[:, B + 1:2 * B + 1] = gx
        gx = wide[:, B + 1:2 * B + 1]
        assert gx.stride() == (3 * B + 1, 1)
    elif gx_layout == "transposed":
        gx = gx.t().contiguous().t()
    h = torch.randn(H, B, generator=rng, dtype=torch.float64).to(dtype)
    c = torch.randn(H, B, generator=rng, dtype=torch.float64).to(dtype)
    b_hh = torch.randn(G * H, generator=rng, dtype=torch.float64).to(dtype)
    v = W.values.detach()
    if mode == "LSTM":
        out = ops.lstm_step(*W.index, v, gx, h, c)
    elif mode == "GRU":
        out = ops.gru_step(*W.index, v, gx, h, b_hh)
    elif mode == "CTRNN":
        out = ops.ctrnn_step(*W.index, v, gx, h, 0.1, 0.5)
    else:
        out = ops.rnn_step(*W.index, v, gx, h, mode == "RNN_RELU")
    out = out if isinstance(out, tuple) else (out,)
    ref = [t for t in _reference_step(mode, W, gx, h, c, b_hh) if t is not None]
    tol = 2e-6 if dtype == torch.float32 else 1e-12
    assert len(out) == len(ref)
    for a, b in zip(out, ref):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol)


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


def _backward_calls(H, B, rng, dtype=torch.float64):
    """{gates: call(W, v, *optional)} of each step backward op on fresh random operands."""
    ops = torch.ops.sparse_engine
    rnd = lambda *s: torch.randn(*s, generator=rng, dtype=dtype)  # noqa: E731
    acts = torch.rand(4 * H, B, generator=rng, dtype=dtype)
    h, c, dh, dc = rnd(H, B), rnd(H, B), rnd(H, B), rnd(H, B)
    return {
        4: lambda W, v, *t, **kw: ops.lstm_step_backward(*W.index, v, acts, c, c, dh, dc, *t, **kw),
        3: lambda W, v, *t, **kw: ops.gru_step_backward(*W.index, v, acts, h, dh, *t, **kw),
        1: lambda W, v, *t, **kw: ops.rnn_step_backward(*W.index, v, torch.tanh(h), dh, False, *t, **kw),
        -1: lambda W, v, *t, **kw: ops.ctrnn_step_backward(*W.index, v, acts[:H], dh, 0.1, 0.5, *t, **kw),
    }


@pytest.mark.parametrize("B", [1, 3, 20, 67, 130])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_backward_adds_the_weight_gradient(B, dtype, rng):
    """Given h_in and dw_t, each step backward adds dG h_in^T at W_hh's nonzeros to dw_t, in the
    transposed index's order (the CPU in its W^T dG pass): within rounding of the float64
    reference (sddmm's definition), with or without values_t, on 1 and 2 threads the same bits,
    and its other outputs unchanged."""
    from sparse_engine.testing import num_threads
    from test_ops import assert_within_rounding
    H = 7
    for gates, call in _backward_calls(H, B, rng, dtype).items():
        W = random_weight(abs(gates) * H, H, 0.5, empty_rows=2, full_rows=1, dtype=dtype, generator=rng)
        v = W.values.detach()
        perm = W.csc_perm.long()
        h_in = torch.randn(H, B, generator=rng, dtype=dtype)
        start = torch.randn(W.nnz, generator=rng, dtype=dtype)
        plain = call(W, v, v[perm])
        dG = plain[1] if gates == 3 else plain[0]
        row, col, _ = W.coo()
        exact = (dG.double()[row] * h_in.double()[col]).sum(1)[perm]  # per entry, transposed order
        bound = (dG.double()[row].abs() * h_in.double()[col].abs()).sum(1)[perm]
        got = []
        for threads in (1, 2):
            for values_t in ((v[perm],), ()):
                dw = start.clone()
                with num_threads(threads):
                    out = call(W, v, *values_t, h_in=h_in, dw_t=dw)
                for a, b in zip(out, plain):
                    assert torch.equal(a, b)
                got.append(dw)
                assert_within_rounding(dw - start, exact, bound + start.double().abs() / max(B, 1), B + 1, dtype)
        assert all(torch.equal(got[0], g) for g in got[1:])


def test_weight_gradient_arguments_are_checked(rng):
    ops = torch.ops.sparse_engine
    H, B = 5, 3
    W = random_weight(4 * H, H, 0.5, generator=rng)
    v = W.values.detach()
    acts = torch.rand(4 * H, B, generator=rng, dtype=torch.float64)
    h = torch.randn(H, B, generator=rng, dtype=torch.float64)
    dw = torch.zeros(W.nnz, dtype=torch.float64)
    call = lambda **kw: ops.lstm_step_backward(*W.index, v, acts, h, h, h, h, None, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="h_in and dw_t go together"):
        call(h_in=h)
    with pytest.raises(ValueError, match="h_in and dw_t go together"):
        call(dw_t=dw)
    with pytest.raises(ValueError, match="dw_t must be 1-D with one entry per nonzero"):
        call(h_in=h, dw_t=dw[:-1])
    with pytest.raises(TypeError, match="dw_t must have the dtype of values"):
        call(h_in=h, dw_t=dw.float())
    with pytest.raises(ValueError, match="dw_t must be contiguous"):
        call(h_in=h, dw_t=torch.zeros(2 * W.nnz, dtype=torch.float64)[::2])
    with pytest.raises(ValueError, match="h_in"):
        call(h_in=h[:4], dw_t=dw)
    opcheck_args = (*W.index, v, acts, h, h, h, h, v[W.csc_perm.long()], h, dw)
    torch.library.opcheck(ops.lstm_step_backward.default, opcheck_args, test_utils=("test_schema", "test_faketensor"))


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
