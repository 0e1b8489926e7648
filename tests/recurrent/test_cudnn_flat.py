"""The dense path's weights written into one buffer in cuDNN's layout (sparse_engine.recurrent.cudnn_flat):
the same numbers and gradients as separate matrices, every weight an alias of its place in the buffer,
and on CUDA the layout torch's own nn.LSTM has, so cuDNN reads the weights without copying them."""
import warnings

import pytest
import torch

import sparse_engine as se
from sparse_engine.recurrent import compute_paths as compute
from sparse_engine.recurrent import cudnn_flat
from sparse_engine.testing import random_states, random_weight, sparse_and_dense_paths

MODES = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]

# (num_layers, bidirectional, bias, which matrices are sparse, proj_size)
CASES = [(1, False, True, "both", 0), (2, True, True, "recurrent", 0), (2, False, False, "input", 0),
         (1, True, True, "both", 3)]


def scrambled_layout(monkeypatch, gap: int = 5):
    """cudnn_flat.layout on any device: the weights in reverse order with ``gap`` unused entries
    before each (not cuDNN's order: the test then sees that each weight lands where the layout says)."""
    made = []

    def layout(mode, shapes, dtype, device, *args):
        offsets, end = [], 0
        for s in reversed(shapes):
            end += gap
            offsets.append(end)
            end += s[0] * s[1] if len(s) == 2 else s[0]
        made.append((end + gap, tuple(reversed(offsets))))
        return made[-1]
    monkeypatch.setattr(cudnn_flat, "layout", layout)
    return made


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "L{}-bi{}-bias{}-{}-proj{}".format(*c))
def test_flat_buffer_path_equals_the_sparse_path(case, mode, rng, build_rnn, monkeypatch):
    """float64 on the CPU with a made-up layout: outputs, states and every gradient (values, dense
    weights, biases, input) equal the sparse path's; what reaches torch's recurrence is one
    storage, each weight at its layout's offset."""
    L, bi, bias, sparse, proj = case
    if proj and mode != "LSTM":
        pytest.skip("proj_size is the LSTM's only")
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    made = scrambled_layout(monkeypatch)
    kw = {"proj_size": proj} if proj else {}
    m = build_rnn(mode, 3, 7, torch.float64, sparse=sparse, num_layers=L, bidirectional=bi, bias=bias,
                  density=0.4, **kw)
    if mode == "GRU":
        m.fused = False  # torch.gru itself (the CPU's fused GRU takes the same weights)
    given = []
    run = compute._DENSE_FUNCTIONS[mode]

    def spy(x, hx, weights, *args):
        given.append(list(weights))
        return run(x, hx, weights, *args)
    monkeypatch.setitem(compute._DENSE_FUNCTIONS, mode, spy)
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    hx = random_states(mode, L * (2 if bi else 1), 2, 7, rng, proj=proj)
    (ys, gs), (yd, gd) = sparse_and_dense_paths(m, x, hx)
    assert len(given) == 1 and len(made) == 1
    numel, offsets = made[0]
    weights = given[0]
    storage = weights[0].untyped_storage().data_ptr()
    assert all(w.untyped_storage().data_ptr() == storage for w in weights)
    assert [w.storage_offset() for w in weights] == list(offsets)
    assert weights[0].untyped_storage().nbytes() == numel * 8
    for a, b in zip(ys + gs, yd + gd):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_into_holds_each_matrix_and_differentiates_twice(rng):
    """materialize_all(weights, into): a sparse and a dense weight written into their views of one
    buffer, returned as aliases of them; gradcheck and gradgradcheck through both."""
    w = random_weight(6, 5, 0.4, empty_rows=2, generator=rng)
    bias = torch.randn(6, generator=rng, dtype=torch.float64)
    G = torch.randn(6, 5, generator=rng, dtype=torch.float64)

    def f(values, b):
        buf = torch.zeros(50, dtype=torch.float64)
        into = [buf[10:40].view(6, 5), buf[2:8]]
        d, db = compute.materialize_all([_Values(w, values), b], into)
        assert d.data_ptr() == into[0].data_ptr() and db.data_ptr() == into[1].data_ptr()
        return (d ** 2 * G).sum(0) + (db ** 3).sum()
    values = w.values.detach().clone().requires_grad_(True)
    b = bias.clone().requires_grad_(True)
    with torch.no_grad():
        d, db = compute.materialize_all([w, bias], [torch.zeros(6, 5, dtype=torch.float64),
                                                    torch.zeros(6, dtype=torch.float64)])
    assert torch.equal(d, w.to_dense()) and torch.equal(db, bias)
    assert torch.autograd.gradcheck(f, (values, b))
    assert torch.autograd.gradgradcheck(f, (values, b))


class _Values(se.SparseWeight):
    """A SparseWeight whose ``parts`` give the pattern of ``w`` with other values (a differentiable
    input of the checks above)."""

    def __init__(self, w, values):
        super().__init__(w.row_ptr, w.col_idx, values.detach(), w.shape, validate=False)
        self._given = values

    def parts(self):
        return self._given, self._buffers["row_ptr"], self._buffers["col_idx"]


def test_no_layout_off_cuda():
    """On the CPU the weights go to torch's recurrence as they are (no buffer to lay out)."""
    x = torch.zeros(2, 1, 3)
    assert cudnn_flat.layout("LSTM", [(28, 3), (28, 7)], torch.float32, x.device, 3, 7, 0, 1, False) is None
    assert cudnn_flat.views("LSTM", [torch.zeros(28, 3), torch.zeros(28, 7)], x, torch.zeros(1, 1, 7),
                            torch.zeros(1, 1, 7), 1, False) is None


def test_the_layout_is_read_from_torchs_flatten_once_per_shape(monkeypatch):
    """What layout() reads from torch's flatten (stubbed on the CPU: each weight set to a view of the
    buffer it returns, in reverse order with gaps): the buffer's size and each weight's offset, asked
    once per key; a flatten that fails, or leaves a weight outside its buffer, gives None (kept too)."""
    calls = []

    def flatten(weights, stride0, input_size, mode, hidden, proj, layers, batch_first, bidirectional):
        calls.append((stride0, input_size, mode, hidden, proj, layers, bidirectional))
        sizes = [w.numel() for w in weights]
        buf = torch.zeros(sum(sizes) + 3 * len(sizes) + 5, dtype=weights[0].dtype)
        at = 5
        for w, n in reversed(list(zip(weights, sizes))):
            w.set_(buf.untyped_storage(), at, w.shape, w.stride())
            at += n + 3
        return buf
    monkeypatch.setattr(torch, "_cudnn_rnn_flatten_weight", flatten)
    monkeypatch.setattr(cudnn_flat, "_layouts", {})  # this test's keys, gone after it
    shapes = [(28, 3), (28, 7), (28,), (28,)]
    args = ("LSTM", shapes, torch.float64, torch.device("cpu"), 3, 7, 0, 1, False)
    got = cudnn_flat._learned(*args)
    # reversed: b_hh at 5, b_ih at 5 + 28 + 3 = 36, w_hh at 67, w_ih at 67 + 196 + 3 = 266; 266 + 84 + 3 = 353
    assert got == (353, (266, 67, 36, 5)) and calls == [(4, 3, 2, 7, 0, 1, False)]
    assert cudnn_flat._learned(*args) == got and len(calls) == 1  # kept
    gru = ("GRU", [(21, 3), (21, 7)], torch.float64, torch.device("cpu"), 3, 7, 0, 1, True)
    monkeypatch.setattr(torch, "_cudnn_rnn_flatten_weight", lambda *a: (_ for _ in ()).throw(RuntimeError("no")))
    assert cudnn_flat._learned(*gru) is None and cudnn_flat._learned(*gru) is None
    monkeypatch.setattr(torch, "_cudnn_rnn_flatten_weight", lambda weights, *a: torch.zeros(100))  # nothing set
    assert cudnn_flat._learned("RNN_TANH", [(7, 3), (7, 7)], torch.float32, torch.device("cpu"), 3, 7, 0, 1,
                               False) is None


@pytest.mark.cuda
@pytest.mark.parametrize("mode, L, bi, bias, proj", [("LSTM", 1, False, True, 0), ("LSTM", 2, True, True, 0),
                                                     ("GRU", 2, False, False, 0), ("LSTM", 1, False, True, 8),
                                                     ("RNN_TANH", 1, True, True, 0)])
def test_cuda_layout_is_nn_lstms_and_cudnn_copies_nothing(mode, L, bi, bias, proj, rng):
    """On CUDA the layout is the one nn.LSTM/GRU/RNN's flatten_parameters gives its own weights,
    and a dense-path training step draws no "not part of single contiguous chunk" warning (cuDNN
    raises it at each call where it copies the weights); gradients equal the sparse path's (float64)."""
    if not (torch.cuda.is_available() and torch.backends.cudnn.is_available() and se.kernels.HAS_CUDA_KERNELS):
        pytest.skip("needs a CUDA device with cuDNN and the CUDA kernels")
    torch.manual_seed(0)
    cls = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN_TANH": torch.nn.RNN}[mode]
    kw = {"proj_size": proj} if proj else {}
    ref = cls(12, 16, num_layers=L, bidirectional=bi, bias=bias, **kw).cuda()
    ref.flatten_parameters()
    flat = ref._flat_weights
    want = (flat[0].untyped_storage().nbytes() // 4, tuple(w.storage_offset() for w in flat))
    got = cudnn_flat.layout(mode, [w.shape for w in flat], torch.float32, flat[0].device, 12, 16, proj, L, bi)
    assert got == want
    sparse_cls = {"LSTM": se.nn.SparseLSTM, "GRU": se.nn.SparseGRU, "RNN_TANH": se.nn.SparseRNN}[mode]
    f64 = {"dtype": torch.float64, "density": 0.3, "num_layers": L, "bidirectional": bi, "bias": bias, **kw}
    m = sparse_cls(12, 16, compute="dense", **f64).cuda()
    sp = sparse_cls(12, 16, compute="sparse", **f64).cuda()
    sp.load_state_dict(m.state_dict())
    x = torch.randn(5, 3, 12, generator=rng, dtype=torch.float64).cuda()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # cuDNN warns at each call where it copies the weights
        for _ in range(2):
            m.zero_grad()
            m(x)[0].pow(2).sum().backward()
    copies = [str(w.message) for w in caught if "contiguous chunk" in str(w.message)]
    assert not copies, copies[0]
    sp(x)[0].pow(2).sum().backward()
    for (name, ours), theirs in zip(m.named_parameters(), sp.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-9, atol=1e-11, msg=lambda s: f"{name}: {s}")
