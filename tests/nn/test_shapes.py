"""Every recurrent module against its torch.nn equivalent on every input layout: batched and
unbatched input, batch_first True/False, 1 and 2 layers, one and two directions, given and
default initial states (unbatched states with unbatched input). Values, shapes and gradients
must agree (float64). PackedSequence input: the layers against torch on random, equal and
single lengths (one of length 1), enforce_sorted True/False; SparseCTRNN and the cells refuse
it with a TypeError naming it, as torch's cells do.

The CT-RNN has no torch twin in general, but with dt = tau = 1 and one unfold its step is
h' = tanh(W_ih x + W_hh h + b), torch's tanh RNN with bias_ih = b and bias_hh = 0.
"""
import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence

import sparse_engine as se
from sparse_engine import SparseWeight

TOL = dict(rtol=1e-10, atol=1e-10)
F32, F64 = torch.float32, torch.float64

LAYERS = {
    "tanh": (se.nn.SparseRNN, {"nonlinearity": "tanh"}),
    "relu": (se.nn.SparseRNN, {"nonlinearity": "relu"}),
    "lstm": (se.nn.SparseLSTM, {}),
    "gru": (se.nn.SparseGRU, {}),
}
# (num_layers, bidirectional, batch_first, batched, given state)
LAYOUTS = list(itertools.product([1, 2], [False, True], [False, True], [False, True], [False, True]))


def layout_id(c):
    return "L{}-bi{:d}-bf{:d}-batched{:d}-h0{:d}".format(*c)


def as_tuple(s):
    return tuple(s) if isinstance(s, tuple) else (s,)


def flat(out):
    """A module's result as a flat tuple of tensors: (output, h_n[, c_n]) of a layer, (h'[, c'])
    of a cell."""
    return tuple(t for part in as_tuple(out) for t in as_tuple(part))


def run_both(ours, ref, x, hx, g):
    """Runs both modules on copies of (x, hx), compares every result (values and shapes),
    backpropagates one random loss through both and compares the gradients of the input and
    the initial states. Returns our results as a flat tuple."""
    def leaf(t):
        return t.clone().requires_grad_(True)

    x1, x2 = leaf(x), leaf(x)
    h1 = h2 = None
    if hx is not None:
        h1 = tuple(leaf(t) for t in hx) if isinstance(hx, tuple) else leaf(hx)
        h2 = tuple(leaf(t) for t in hx) if isinstance(hx, tuple) else leaf(hx)
    r1, r2 = flat(ours(x1, h1)), flat(ref(x2, h2))
    assert [t.shape for t in r1] == [t.shape for t in r2]
    for a, b in zip(r1, r2):
        torch.testing.assert_close(a, b, **TOL)
    weights = [torch.randn(t.shape, generator=g, dtype=F64) for t in r1]
    for outs in (r1, r2):
        sum((t * w).sum() for t, w in zip(outs, weights)).backward()
    torch.testing.assert_close(x1.grad, x2.grad, **TOL)
    if hx is not None:
        for a, b in zip(as_tuple(h1), as_tuple(h2)):
            torch.testing.assert_close(a.grad, b.grad, **TOL)
    return r1


def param_grads_agree(ours, ref, names):
    for name in names:
        mine, theirs = getattr(ours, name), getattr(ref, name)
        if isinstance(mine, SparseWeight):
            row, col, _ = mine.coo()
            torch.testing.assert_close(mine.values.grad, theirs.grad[row, col], **TOL)
        else:
            torch.testing.assert_close(mine.grad, theirs.grad, **TOL)


def sequence(T, B, I, batch_first, batched, g):
    shape = ((B, T) if batch_first else (T, B)) if batched else (T,)
    return torch.randn(*shape, I, generator=g, dtype=F64)


@pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
@pytest.mark.parametrize("kind", list(LAYERS))
def test_layers_match_torch_on_every_layout(kind, layout, rng):
    L, bi, bf, batched, given = layout
    cls, kw = LAYERS[kind]
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    T, B, I, H = 4, 3, 3, 5
    D = 2 if bi else 1
    m = cls(I, H, num_layers=L, bidirectional=bi, batch_first=bf, density=0.5, dtype=F64, **kw)
    ref = m.to_dense()
    x = sequence(T, B, I, bf, batched, rng)
    hx = None
    if given:
        shape = (L * D, B, H) if batched else (L * D, H)
        hx = torch.randn(shape, generator=rng, dtype=F64)
        if kind == "lstm":
            hx = (hx, torch.randn(shape, generator=rng, dtype=F64))
    y, *states = run_both(m, ref, x, hx, rng)
    # the shapes torch documents, spelled out
    assert y.shape == (((B, T) if bf else (T, B)) if batched else (T,)) + (D * H,)
    for s in states:
        assert s.shape == ((L * D, B, H) if batched else (L * D, H))
    param_grads_agree(m, ref, m._flat_weights_names)


@pytest.mark.parametrize("T,B", [(1, 1), (4, 1), (1, 3), (4, 3)])
@pytest.mark.parametrize("layout", [(1, False, False), (2, True, True)], ids=["L1", "L2-bi-bf"])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_layers_under_no_grad_match_torch(kind, layout, T, B, rng):
    """Without gradient mode (an evaluation, a sampler's step) the recurrence runs outside autograd
    and the layout copy takes its one-column shortcut: the same results as torch's module, bit for
    bit those of the same call with gradient mode on, none requiring grad; the output owns its memory."""
    L, bi, bf = layout
    cls, kw = LAYERS[kind]
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    m = cls(3, 5, num_layers=L, bidirectional=bi, batch_first=bf, density=0.5, dtype=F64, **kw)
    ref = m.to_dense()
    x = sequence(T, B, 3, bf, True, rng)
    with torch.no_grad():
        ours, theirs = flat(m(x)), flat(ref(x))
    with_grad = flat(m(x))
    for a, b, c in zip(ours, theirs, with_grad):
        assert not a.requires_grad and a.grad_fn is None
        torch.testing.assert_close(a, b, **TOL)
        assert torch.equal(a, c.detach())
    out = ours[0]
    out.add_(1.0)  # written in place: nothing of the module's (a second call) sees it
    with torch.no_grad():
        assert torch.equal(flat(m(x))[0], with_grad[0].detach())


@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input_ignores_batch_first(batch_first, rng):
    """The reported bug: batch_first=True with a (T, I) input gave a (1, T, H) output."""
    m = se.nn.SparseGRU(3, 4, batch_first=batch_first, density=0.5, dtype=F64)
    x = torch.randn(6, 3, generator=rng, dtype=F64)
    y, h = m(x)
    assert y.shape == (6, 4) and h.shape == (1, 4)
    # the same as the one-sequence batch, in whichever layout
    yb, hb = m(x.unsqueeze(0 if batch_first else 1))
    torch.testing.assert_close(y, yb[0] if batch_first else yb[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(h, hb[:, 0], rtol=0, atol=0)


def ctrnn_twin(m):
    """torch's tanh RNN with the weights of a dt = tau = 1, one-unfold SparseCTRNN(Cell)."""
    layer = isinstance(m, se.nn.SparseCTRNN)
    bias = m.bias is not None
    if layer:
        ref = nn.RNN(m.input_size, m.hidden_size, bias=bias, batch_first=m.batch_first, dtype=F64)
        names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    else:
        ref = nn.RNNCell(m.input_size, m.hidden_size, bias=bias, dtype=F64)
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    with torch.no_grad():
        getattr(ref, names[0]).copy_(m.weight_ih.to_dense())
        getattr(ref, names[1]).copy_(m.weight_hh.to_dense())
        if bias:
            getattr(ref, names[2]).copy_(m.bias)
            getattr(ref, names[3]).zero_()
    return ref, names


@pytest.mark.parametrize("layout", list(itertools.product([False, True], repeat=3)),
                         ids=lambda c: "bf{:d}-batched{:d}-h0{:d}".format(*c))
@pytest.mark.parametrize("bias", [True, False])
def test_ctrnn_layer_matches_torch_rnn_on_every_layout(layout, bias, rng):
    bf, batched, given = layout
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    T, B, I, H = 4, 3, 3, 5
    m = se.nn.SparseCTRNN(I, H, bias=bias, batch_first=bf, dt=1.0, tau=1.0, unfolds=1, density=0.5, dtype=F64)
    ref, names = ctrnn_twin(m)
    x = sequence(T, B, I, bf, batched, rng)
    hx = torch.randn((1, B, H) if batched else (1, H), generator=rng, dtype=F64) if given else None
    y, h = run_both(m, ref, x, hx, rng)
    assert y.shape == (((B, T) if bf else (T, B)) if batched else (T,)) + (H,)
    assert h.shape == ((1, B, H) if batched else (1, H))
    torch.testing.assert_close(m.weight_hh.values.grad, ref.weight_hh_l0.grad[m.weight_hh.coo()[:2]], **TOL)
    if bias:  # bias_ih and bias_hh of torch both see the one bias of the CT-RNN
        torch.testing.assert_close(m.bias.grad, ref.bias_ih_l0.grad, **TOL)


def ctrnn_reference(m, x, h0):
    """float64 loop of the CT-RNN's definition: x (T, B, I), h0 (B, H) -> (T, B, H), (B, H)."""
    Wi, Wh = m.weight_ih.to_dense(), m.weight_hh.to_dense()
    b = m.bias.detach() if m.bias is not None else torch.zeros(m.hidden_size, dtype=F64)
    h, out = h0, []
    for t in range(x.shape[0]):
        for _ in range(m.unfolds):
            h = h + m.dt * (-h / m.tau + torch.tanh(x[t] @ Wi.T + h @ Wh.T + b))
        out.append(h)
    return torch.stack(out), h


@pytest.mark.parametrize("layout", list(itertools.product([False, True], repeat=3)),
                         ids=lambda c: "bf{:d}-batched{:d}-h0{:d}".format(*c))
def test_ctrnn_layer_with_unfolds_on_every_layout(layout, rng):
    bf, batched, given = layout
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    T, B, I, H = 3, 2, 3, 4
    m = se.nn.SparseCTRNN(I, H, batch_first=bf, density=0.5, dtype=F64)  # dt 0.1, tau 0.5, 6 unfolds
    x = sequence(T, B, I, bf, batched, rng)
    hx = torch.randn((1, B, H) if batched else (1, H), generator=rng, dtype=F64) if given else None
    y, h = m(x, hx)
    xt = x if not batched else (x.transpose(0, 1) if bf else x)
    xt = xt if batched else xt.unsqueeze(1)
    h0 = torch.zeros(xt.shape[1], H, dtype=F64) if hx is None else (hx[0] if batched else hx)
    ry, rh = ctrnn_reference(m, xt, h0)
    if batched:
        ry, rh = (ry.transpose(0, 1) if bf else ry), rh.unsqueeze(0)
    else:
        ry = ry[:, 0]
    torch.testing.assert_close(y, ry, **TOL)
    torch.testing.assert_close(h, rh, **TOL)


CELLS = {
    "tanh": (se.nn.SparseRNNCell, {"nonlinearity": "tanh"}),
    "relu": (se.nn.SparseRNNCell, {"nonlinearity": "relu"}),
    "lstm": (se.nn.SparseLSTMCell, {}),
    "gru": (se.nn.SparseGRUCell, {}),
    "ctrnn": (se.nn.SparseCTRNNCell, {"dt": 1.0, "tau": 1.0, "unfolds": 1}),
}


@pytest.mark.parametrize("given", [False, True], ids=["h0-default", "h0-given"])
@pytest.mark.parametrize("batched", [False, True], ids=["unbatched", "batched"])
@pytest.mark.parametrize("kind", list(CELLS))
def test_cells_match_torch_on_every_layout(kind, batched, given, rng):
    cls, kw = CELLS[kind]
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    B, I, H = 3, 4, 5
    cell = cls(I, H, density=0.5, dtype=F64, **kw)
    if kind == "ctrnn":
        ref, _ = ctrnn_twin(cell)
    else:
        ref = cell.to_dense()
    lead = (B,) if batched else ()
    x = torch.randn(*lead, I, generator=rng, dtype=F64)
    hx = None
    if given:
        hx = torch.randn(*lead, H, generator=rng, dtype=F64)
        if kind == "lstm":
            hx = (hx, torch.randn(*lead, H, generator=rng, dtype=F64))

    for t in run_both(cell, ref, x, hx, rng):
        assert t.shape == lead + (H,)
    names = ("weight_ih", "weight_hh") if kind == "ctrnn" else cell._flat_weights_names
    param_grads_agree(cell, ref, names)


# (num_layers, bidirectional, enforce_sorted, given state)
PACKED_LAYOUTS = list(itertools.product([1, 2], [False, True], [True, False], [False, True]))
PACKED_LENGTHS = {
    "random": None,          # 5 lengths drawn from 1..6
    "equal": [3, 3, 3],
    "one": [4],
    "with-1": [2, 1, 5, 2],  # a length-1 sequence, a repeated length, unsorted
}


def packed_input(lengths, I, enforce_sorted, g):
    """A PackedSequence of random float64 sequences of these lengths (sorted longest first when
    enforce_sorted, as pack_sequence then requires)."""
    if enforce_sorted:
        lengths = sorted(lengths, reverse=True)
    return pack_sequence([torch.randn(n, I, generator=g, dtype=F64) for n in lengths],
                         enforce_sorted=enforce_sorted)


def with_leaf_data(p):
    data = p.data.clone().requires_grad_(True)
    return PackedSequence(data, p.batch_sizes, p.sorted_indices, p.unsorted_indices), data


@pytest.mark.parametrize("layout", PACKED_LAYOUTS,
                         ids=lambda c: "L{}-bi{:d}-sorted{:d}-h0{:d}".format(*c))
@pytest.mark.parametrize("lengths", list(PACKED_LENGTHS))
@pytest.mark.parametrize("kind", list(LAYERS))
def test_layers_match_torch_on_packed_sequences(kind, lengths, layout, rng):
    L, bi, enforce_sorted, given = layout
    cls, kw = LAYERS[kind]
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    I, H = 3, 4
    D = 2 if bi else 1
    m = cls(I, H, num_layers=L, bidirectional=bi, density=0.5, dtype=F64, **kw)
    ref = m.to_dense()
    lens = PACKED_LENGTHS[lengths] or torch.randint(1, 7, (5,), generator=rng).tolist()
    p = packed_input(lens, I, enforce_sorted, rng)
    B = len(lens)
    hx = None
    if given:
        hx = tuple(torch.randn(L * D, B, H, generator=rng, dtype=F64) for _ in range(2 if kind == "lstm" else 1))

    p1, x1 = with_leaf_data(p)
    p2, x2 = with_leaf_data(p)
    h1 = None if hx is None else tuple(t.clone().requires_grad_(True) for t in hx)
    h2 = None if hx is None else tuple(t.clone().requires_grad_(True) for t in hx)

    def call(module, packed, h):
        return module(packed, None if h is None else (h if kind == "lstm" else h[0]))

    (y1, s1), (y2, s2) = call(m, p1, h1), call(ref, p2, h2)
    assert isinstance(y1, PackedSequence)
    assert torch.equal(y1.batch_sizes, y2.batch_sizes)
    for a, b in ((y1.sorted_indices, y2.sorted_indices), (y1.unsorted_indices, y2.unsorted_indices)):
        assert (a is None and b is None) or torch.equal(a, b)
    r1, r2 = (y1.data,) + as_tuple(s1), (y2.data,) + as_tuple(s2)
    assert r1[0].shape == (sum(lens), D * H)
    for a, b in zip(r1, r2):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, **TOL)
    weights = [torch.randn(t.shape, generator=rng, dtype=F64) for t in r1]
    for outs in (r1, r2):
        sum((t * w).sum() for t, w in zip(outs, weights)).backward()
    torch.testing.assert_close(x1.grad, x2.grad, **TOL)
    for a, b in zip(h1 or (), h2 or ()):
        torch.testing.assert_close(a.grad, b.grad, **TOL)
    param_grads_agree(m, ref, m._flat_weights_names)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_packed_input_ignores_batch_first(kind, rng):
    cls, kw = LAYERS[kind]
    m = cls(3, 4, num_layers=2, bidirectional=True, density=0.5, dtype=F64, **kw)
    mf = cls(3, 4, num_layers=2, bidirectional=True, batch_first=True, density=0.5, dtype=F64, **kw)
    mf.load_state_dict(m.state_dict())
    p = packed_input([3, 5, 1], 3, False, rng)
    (y, h), (yf, hf) = m(p), mf(p)
    torch.testing.assert_close(yf.data, y.data, rtol=0, atol=0)
    for a, b in zip(as_tuple(hf), as_tuple(h)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_packed_input_errors(rng):
    m = se.nn.SparseLSTM(3, 4, num_layers=2, density=0.5, dtype=F64)
    p = packed_input([3, 2], 3, False, rng)
    with pytest.raises(ValueError, match="h_0 must have shape \\(2, 2, 4\\)"):
        m(p, (torch.zeros(2, 3, 4, dtype=F64), torch.zeros(2, 2, 4, dtype=F64)))
    with pytest.raises(ValueError, match="input_size=3"):
        m(packed_input([3, 2], 5, False, rng))
    with pytest.raises(TypeError, match="dtype"):
        m(PackedSequence(p.data.float(), p.batch_sizes, p.sorted_indices, p.unsorted_indices))


PACKED_REFUSED = [
    lambda: se.nn.SparseCTRNN(3, 4, density=0.5),
    lambda: se.nn.SparseRNNCell(3, 4, density=0.5),
    lambda: se.nn.SparseLSTMCell(3, 4, density=0.5),
    lambda: se.nn.SparseGRUCell(3, 4, density=0.5),
    lambda: se.nn.SparseCTRNNCell(3, 4, density=0.5),
]


@pytest.mark.parametrize("make", PACKED_REFUSED, ids=["ctrnn", "rnn_cell", "lstm_cell", "gru_cell", "ctrnn_cell"])
def test_packed_sequence_is_refused_by_name(make, rng):
    """No torch twin takes a PackedSequence here (torch's cells refuse it; the CT-RNN has none)."""
    m = make()
    packed = pack_sequence([torch.randn(3, 3, generator=rng), torch.randn(2, 3, generator=rng)])
    with pytest.raises(TypeError, match="PackedSequence"):
        m(packed)
    with pytest.raises(TypeError, match="torch.Tensor"):
        m([[0.0, 1.0, 2.0]])


@pytest.mark.parametrize("make", [lambda: se.nn.SparseRNN(3, 4, density=0.5),
                                  lambda: se.nn.SparseGRU(3, 4, density=0.5)], ids=["rnn", "gru"])
def test_layers_refuse_other_non_tensors(make):
    with pytest.raises(TypeError, match="torch.Tensor"):
        make()([[0.0, 1.0, 2.0]])


def test_docstrings_say_how_packed_sequences_are_handled():
    from sparse_engine.nn import cells, rnn

    assert "PackedSequence" in rnn.__doc__ and "distinct length" in rnn.__doc__
    assert "PackedSequence" in cells.__doc__


@pytest.mark.parametrize("kind", list(LAYERS) + ["ctrnn"] + [f"{k}_cell" for k in CELLS])
def test_empty_batch_matches_torch(kind, rng):
    """A batch of 0 sequences (or 0 cell inputs) gives torch's empty results and gradients,
    where it used to fail reshaping the 0-element input part of the gates."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    T, I, H = 3, 3, 4
    if kind.endswith("_cell"):
        cls, kw = CELLS[kind[:-5]]
        m = cls(I, H, density=0.5, dtype=F64, **kw)
        ref = ctrnn_twin(m)[0] if kind == "ctrnn_cell" else m.to_dense()
        x = torch.zeros(0, I, dtype=F64)
    elif kind == "ctrnn":
        m = se.nn.SparseCTRNN(I, H, dt=1.0, tau=1.0, unfolds=1, batch_first=True, density=0.5, dtype=F64)
        ref = ctrnn_twin(m)[0]
        x = torch.zeros(0, T, I, dtype=F64)
    else:
        cls, kw = LAYERS[kind]
        m = cls(I, H, num_layers=2, bidirectional=True, density=0.5, dtype=F64, **kw)
        ref = m.to_dense()
        x = torch.zeros(T, 0, I, dtype=F64)
    results = run_both(m, ref, x, None, rng)
    assert all(t.numel() == 0 for t in results)
    for p in m.parameters():
        assert p.grad is not None and not p.grad.any()


@pytest.mark.parametrize("kind", list(LAYERS) + ["ctrnn"] + [f"{k}_cell" for k in CELLS])
def test_state_of_another_dtype_is_refused_by_name(kind, rng):
    """A float32 state for float64 parameters: a TypeError naming the state (it used to surface
    from a kernel as "h must have dtype" or "X must have dtype"), as for the input."""
    if kind.endswith("_cell"):
        cls, kw = CELLS[kind[:-5]]
        m = cls(3, 4, density=0.5, dtype=F64, **kw)
        x, shape = torch.randn(2, 3, generator=rng, dtype=F64), (2, 4)
        names = ("h", "c") if kind == "lstm_cell" else ("hx",)
    elif kind == "ctrnn":
        m = se.nn.SparseCTRNN(3, 4, density=0.5, dtype=F64)
        x, shape, names = torch.randn(5, 2, 3, generator=rng, dtype=F64), (1, 2, 4), ("hx",)
    else:
        cls, kw = LAYERS[kind]
        m = cls(3, 4, density=0.5, dtype=F64, **kw)
        x, shape = torch.randn(5, 2, 3, generator=rng, dtype=F64), (1, 2, 4)
        names = ("h_0", "c_0") if kind == "lstm" else ("hx",)
    for wrong in range(len(names)):
        states = [torch.zeros(shape, dtype=F32 if i == wrong else F64) for i in range(len(names))]
        with pytest.raises(TypeError, match=f"{names[wrong]} must have dtype torch.float64"):
            m(x, tuple(states) if len(states) == 2 else states[0])
