"""The dense-compute path's fused GRU on the CPU (sparse_engine/recurrent/dense_gru.py, the ops
gru_sequence/gru_sequence_backward of csrc/cpu/dense_rnn_cpu.cpp): torch's GRU, values and every
gradient, over the configurations of nn.GRU; which forwards take it; double backward; the ops'
refusals."""
from __future__ import annotations

import pytest
import torch

import sparse_engine as se
from sparse_engine.recurrent import dense_gru as dense_rnn
from sparse_engine.testing import check_against_torch, param_grad_pairs

ops = torch.ops.sparse_engine


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts the calls of the fused GRU."""
    calls = []
    orig = dense_rnn.gru

    def spy(*args):
        calls.append(args[0].shape)
        return orig(*args)
    monkeypatch.setattr(dense_rnn, "gru", spy)
    return calls


# (num_layers, bidirectional, batch_first, bias, given state, T, B, I, H)
CASES = [
    (1, False, False, True, False, 6, 3, 4, 5),
    (2, True, True, True, True, 5, 2, 3, 6),
    (3, False, False, False, True, 4, 1, 2, 7),
    (1, True, False, False, False, 1, 4, 5, 3),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "L{}-bi{}-bf{}-bias{}-h0{}-T{}-B{}-I{}-H{}".format(*c))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_gru_equals_torch(case, dtype, rng, fused_calls, build_rnn):
    L, bi, bf, bias, given, T, B, I, H = case
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    m = build_rnn("GRU", I, H, dtype, num_layers=L, bidirectional=bi, batch_first=bf, bias=bias, compute="dense")
    x = torch.randn((B, T, I) if bf else (T, B, I), generator=rng, dtype=dtype)
    hx = torch.randn(L * (2 if bi else 1), B, H, generator=rng, dtype=dtype) if given else None
    check_against_torch(m, x, hx, dtype, rng)  # values, input/state/bias/weight gradients
    assert len(fused_calls) == 1
    xu = x[0] if bf else x[:, 0]  # unbatched: (T, I) whatever batch_first says
    hu = None if hx is None else hx[:, 0]
    with torch.no_grad():
        torch.testing.assert_close(m(xu, hu), m.to_dense()(xu, hu))
    assert len(fused_calls) == 2


def test_fused_gru_dropout_is_torchs_and_which_forwards_take_it(rng, fused_calls, monkeypatch, build_rnn):
    """Between layers the fused GRU drops out what torch's drops (same seed, same masks); with
    fused=False, a PackedSequence or a float16 module the dense path calls torch.gru."""
    m = build_rnn("GRU", 4, 6, torch.float64, num_layers=3, dropout=0.5, compute="dense")
    d = m.to_dense()
    x = torch.randn(5, 2, 4, generator=rng, dtype=torch.float64)
    torch.manual_seed(3)
    y1 = m(x)[0]
    torch.manual_seed(3)
    y2 = d(x)[0]
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    (y1 * y1).sum().backward()
    (y2 * y2).sum().backward()
    for name, ours, ref in param_grad_pairs(m, d):
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10, msg=lambda s: f"{name}: {s}")
    assert len(fused_calls) == 1
    torch_calls = []
    real = torch.gru
    monkeypatch.setattr(torch, "gru", lambda *a: (torch_calls.append(1), real(*a))[1])
    from sparse_engine.recurrent import compute_paths
    monkeypatch.setitem(compute_paths._DENSE_FUNCTIONS, "GRU", torch.gru)
    m.fused = False
    torch.testing.assert_close(m.eval()(x)[0], d.eval()(x)[0], rtol=1e-12, atol=1e-12)
    assert len(fused_calls) == 1 and len(torch_calls) == 1
    m.fused = True
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, [5, 3], enforce_sorted=False)
    torch.testing.assert_close(m(packed)[0].data, d(packed)[0].data, rtol=1e-12, atol=1e-12)
    assert len(fused_calls) == 1 and len(torch_calls) == 2
    m.half()
    m(x.half())
    assert len(fused_calls) == 1 and len(torch_calls) == 3


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_gru_sequence_gradcheck_and_gradgradcheck(reverse, bias, rng):
    T, B, H = 4, 2, 3
    gx = torch.randn(T, B, 3 * H, generator=rng, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, H, generator=rng, dtype=torch.float64, requires_grad=True)
    w_hh = torch.randn(3 * H, H, generator=rng, dtype=torch.float64, requires_grad=True)
    b_hh = torch.randn(3 * H, generator=rng, dtype=torch.float64, requires_grad=True) if bias else None

    def f(gx, h0, w_hh, *b):
        return dense_rnn._GruSequence.apply(gx, h0, w_hh, b[0] if b else None, reverse)
    args = (gx, h0, w_hh) + ((b_hh,) if bias else ())
    torch.testing.assert_close(f(*args), dense_rnn._gru_steps(gx, h0, w_hh, b_hh, reverse), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


def test_double_backward_through_a_module(rng, build_rnn):
    """A gradient penalty through SparseGRU on the dense path equals torch's module's."""
    m = build_rnn("GRU", 3, 4, torch.float64, num_layers=2, compute="dense")
    d = m.to_dense()
    x = torch.randn(5, 2, 3, generator=rng, dtype=torch.float64)
    for mod in (m, d):
        xi = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(mod(xi)[0].square().sum(), xi, create_graph=True)
        gx.square().sum().backward()
    for name, ours, ref in param_grad_pairs(m, d):
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-10, msg=lambda s: f"{name}: {s}")


def test_gru_sequence_refuses_what_does_not_fit():
    gx, h0, w = torch.zeros(3, 2, 12), torch.zeros(2, 4), torch.zeros(12, 4)
    with pytest.raises(ValueError, match="gx must have shape"):
        ops.gru_sequence(gx[:, :, :9], h0, w, None, False)
    with pytest.raises(ValueError, match="w_hh must have shape"):
        ops.gru_sequence(gx, h0, w[:, :3], None, False)
    with pytest.raises(ValueError, match="at least one step"):
        ops.gru_sequence(gx[:0], h0, w, None, False)
    with pytest.raises(TypeError, match="dtype"):
        ops.gru_sequence(gx, h0.double(), w, None, False)
    with pytest.raises(TypeError, match="float32 or float64"):
        ops.gru_sequence(gx.half(), h0.half(), w.half(), None, False)
    with pytest.raises(ValueError, match="b_hh"):
        ops.gru_sequence(gx, h0, w, torch.zeros(11), False)
    y, acts = ops.gru_sequence(gx, h0, w, None, False)
    with pytest.raises(ValueError, match="acts must have shape"):
        ops.gru_sequence_backward(torch.zeros_like(y), acts[:, :, :4], y, h0, w, False, False)
    with pytest.raises(ValueError, match="dy must have"):
        ops.gru_sequence_backward(y[:2], acts, y, h0, w, False, False)


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_gru_parallel_gate_math_equals_torch(threads, rng, build_rnn):
    """A batch large enough for the gate math to go parallel (B * H * 8 >= kParallelWork), float32,
    one and two threads: torch's values and gradients."""
    from sparse_engine.testing import num_threads
    m = build_rnn("GRU", 16, 96, torch.float32, num_layers=2, bidirectional=True, density=0.5, compute="dense")
    x = torch.randn(7, 48, 16, generator=rng)
    with num_threads(threads):
        check_against_torch(m, x, None, torch.float32, rng)


def _mkl_packs(fn) -> int:
    """How many times ``fn()`` packed a weight for MKL's packed GEMM (torch's op, seen by the profiler)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key == "mkl::_mkl_reorder_linear_weight")


@pytest.mark.parametrize("T, B, H, packs", [(1, 1, 24, False), (35, 1, 24, False), (35, 2, 200, False),
                                            (12, 4, 24, False), (4, 20, 24, False), (1, 128, 512, False),
                                            (32, 4, 192, True), (31, 4, 192, False), (8, 4, 512, True),
                                            (35, 20, 191, False)])
def test_gru_sequence_float32_equals_the_float64_recurrence(T, B, H, packs, rng):
    """float32 from one column and one step to wide batches, with MKL's packed W_hh in the forward where the
    sequence repays the pack (from hidden 192 and 128 columns x steps, from 512 and 32; at least 4 columns and
    2 steps; never in the backward) and without: y and every gradient are the float64 recurrence's (torch's
    ops, ``_gru_steps``)."""
    from sparse_engine.recurrent.dense_gru import _gru_steps, _GruSequence
    args = [(torch.randn(s, generator=rng, dtype=torch.float64) * scale).requires_grad_()
            for s, scale in (((T, B, 3 * H), 1.0), ((B, H), 1.0), ((3 * H, H), H ** -0.5), ((3 * H,), 0.1))]
    dy = torch.randn(T, B, H, generator=rng, dtype=torch.float64)
    want = _gru_steps(*args, False)
    want_grads = torch.autograd.grad(want, args, dy)
    f32 = [a.detach().float().requires_grad_() for a in args]
    got = []
    forward_packs = _mkl_packs(lambda: got.append(_GruSequence.apply(*f32, False)))
    backward_packs = _mkl_packs(lambda: got[0].backward(dy.float()))
    if hasattr(torch.ops.mkl, "_mkl_reorder_linear_weight"):  # a torch with MKL's packed GEMM
        assert (forward_packs, backward_packs) == (int(packs), 0)
    torch.testing.assert_close(got[0].double(), want, rtol=1e-5, atol=1e-5)
    for a, g in zip(f32, want_grads):
        torch.testing.assert_close(a.grad.double(), g, rtol=1e-5, atol=1e-5 * T * B)
