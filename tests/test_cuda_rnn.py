"""The fused recurrent step ops on CUDA (csrc/cuda/rnn_step_cuda.cu) against the composed path
(spmm/spmm_t + torch elementwise) on CUDA and the CPU ops, raw and through the modules.

Skipped unless a CUDA device is present and sparse_engine._C has the CUDA step kernels.
SPARSE_ENGINE_RNN_TEST_DEVICE=cpu runs the same tests on the CPU (the fused CPU ops in place of
the CUDA ones): a check of the tests themselves on a machine without a GPU.
The path selection (fused_ok) is tested everywhere.
"""
from __future__ import annotations

import copy
import dataclasses
import os

import pytest
import torch

import sparse_engine as se
from sparse_engine import SparseWeight
from sparse_engine.kernels import has_kernel
from sparse_engine.kernels.constants import GATES
from sparse_engine.recurrent.cell_steps import CELLS, has_fused_kernels
from sparse_engine.recurrent.cell_steps import fused_ok
from sparse_engine.recurrent.sequence import Config, Recurrence

DEV = os.environ.get("SPARSE_ENGINE_RNN_TEST_DEVICE", "cuda")
RAW = torch.ops.sparse_engine
MODES = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU", "CTRNN"]
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}
DT, TAU = 0.1, 0.5


def _has_device_kernels() -> bool:
    return DEV == "cpu" or has_kernel("lstm_step", "cuda")


gpu = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEV == "cuda" and not torch.cuda.is_available(),
                       reason="no CUDA device (torch.cuda.is_available() is False)"),
    pytest.mark.skipif(not _has_device_kernels(), reason="sparse_engine._C was built without the CUDA step kernels "
                       "(build with a CUDA torch and nvcc, or SPARSE_ENGINE_CUDA=1)"),
]


def _gpu(f):
    for m in gpu:
        f = m(f)
    return f


# ------------------------------------------------------------------ path selection (no GPU)
def test_fused_path_selection():
    """Fused only for a sparse W_hh in float32/float64 on a device with the kernels; fp16/bf16
    (spmm's reduced-precision storage) and dense W_hh take the composed path."""
    W = SparseWeight.random(8, 2, density=0.5)
    cfg = Config("LSTM", 2, 3, 4, idx_hh=W.index)
    for dtype in (torch.float32, torch.float64):
        assert fused_ok(cfg, torch.zeros(3, dtype=dtype))
    for dtype in (torch.float16, torch.bfloat16):
        assert not fused_ok(cfg, torch.zeros(3, dtype=dtype))
    assert not fused_ok(Config("LSTM", 2, 3, 4), torch.zeros(3))  # dense W_hh
    assert not fused_ok(cfg, torch.zeros(3, device="meta"))  # no kernels for that key
    assert not fused_ok(dataclasses.replace(cfg, fused=False), torch.zeros(3))  # the module's fused=False
    has_cuda = has_kernel("lstm_step", "cuda")
    assert has_fused_kernels("cuda") == has_cuda


# ---------------------------------------------------------------------------- raw ops
def _weight(rows, cols, pattern, dtype, g) -> SparseWeight:
    """A W_hh (rows = gates*H, cols = H) with the given row-length pattern, built on the CPU."""
    if pattern == "uniform":
        mask = torch.rand(rows, cols, generator=g) < 0.1
    elif pattern == "empty_rows":
        mask = (torch.rand(rows, cols, generator=g) < 0.2) & (torch.rand(rows, 1, generator=g) < 0.3)
    elif pattern == "zero":
        mask = torch.zeros(rows, cols, dtype=torch.bool)
    elif pattern == "skewed":  # full rows (many 32-entry chunks) and 5 columns of all rows (> 1024)
        mask = torch.rand(rows, cols, generator=g) < 0.02
        mask[::7] = True
        mask[:, :5] = True
    else:
        raise ValueError(pattern)
    scale = 1.0 / (1.0 + mask.sum(1, keepdim=True).double()).sqrt()
    dense = torch.randn(rows, cols, generator=g, dtype=torch.float64) * scale
    return SparseWeight.from_dense(dense.to(dtype), mask)


def _inputs(mode, H, B, dtype, g):
    G = GATES[mode]
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    return dict(gx=r(G * H, B), h=0.5 * r(H, B), c=r(H, B), b_hh=0.3 * r(3 * H), dh=r(H, B), dc=r(H, B))


def _to(d, dev):
    return {k: v.to(dev) for k, v in d.items()}


def _fused_fwd(mode, W, x):
    idx, v = W.index, W.values.detach()
    if mode == "LSTM":
        return RAW.lstm_step(*idx, v, x["gx"], x["h"], x["c"])
    if mode == "GRU":
        return RAW.gru_step(*idx, v, x["gx"], x["h"], x["b_hh"])
    if mode == "CTRNN":
        return RAW.ctrnn_step(*idx, v, x["gx"], x["h"], DT, TAU)
    return (RAW.rnn_step(*idx, v, x["gx"], x["h"], mode == "RNN_RELU"),)


def _composed_fwd(mode, W, x):
    idx, v, step = W.index, W.values.detach(), CELLS[mode].step
    if mode == "LSTM":
        return step(v, idx, x["gx"], x["h"], x["c"])
    if mode == "GRU":
        return step(v, idx, x["gx"], x["h"], x["b_hh"])
    if mode == "CTRNN":
        return step(v, idx, x["gx"], x["h"], DT, TAU)
    return (step(v, idx, x["gx"], x["h"], mode == "RNN_RELU"),)


def _bwd(mode, W, x, fwd, fused: bool):
    """Backward of one step from the forward outputs `fwd` (the same tensors for every path)."""
    idx, v, composed = W.index, W.values.detach(), CELLS[mode].step_backward
    if mode == "LSTM":
        f = RAW.lstm_step_backward if fused else (lambda *a: composed(a[5], a[:5], *a[6:]))
        return f(*idx, v, fwd[2], x["c"], fwd[1], x["dh"], x["dc"])
    if mode == "GRU":
        f = RAW.gru_step_backward if fused else (lambda *a: composed(a[5], a[:5], *a[6:]))
        return f(*idx, v, fwd[1], x["h"], x["dh"])
    if mode == "CTRNN":
        f = RAW.ctrnn_step_backward if fused else (lambda *a: composed(a[5], a[:5], *a[6:]))
        return f(*idx, v, fwd[1], x["dh"], DT, TAU)
    f = RAW.rnn_step_backward if fused else (lambda *a: composed(a[5], a[:5], *a[6:]))
    return f(*idx, v, fwd[0], x["dh"], mode == "RNN_RELU")


def _close(got, want, dtype, what):
    got = [t for t in got if t is not None and t.numel() > 0]
    want = [t for t in want if t is not None and t.numel() > 0]
    assert len(got) == len(want), what
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a.cpu(), b.cpu(), **TOL[dtype], msg=lambda s: f"{what}[{i}]: {s}")


# (pattern, H, batches): odd H, B=1, B not a multiple of 4, several batch tiles, long rows/columns
SHAPES = [("uniform", 37, [1, 3, 20, 33, 256]), ("uniform", 1, [4]), ("empty_rows", 45, [8, 2]),
          ("zero", 13, [1, 4]), ("skewed", 300, [1, 20])]


@_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pattern,H,batches", SHAPES, ids=[f"{p}-H{h}" for p, h, _ in SHAPES])
def test_fused_step_matches_composed_and_cpu(pattern, H, batches, mode, dtype):
    g = torch.Generator().manual_seed(H * 31 + MODES.index(mode))
    W = _weight(GATES[mode] * H, H, pattern, dtype, g)
    Wd = copy.deepcopy(W).to(DEV)
    for B in batches:
        x = _inputs(mode, H, B, dtype, g)
        xd = _to(x, DEV)
        fwd_cpu = _fused_fwd(mode, W, x)
        fwd_dev = _fused_fwd(mode, Wd, xd)
        _close(fwd_dev, fwd_cpu, dtype, f"forward vs CPU B={B}")
        _close(fwd_dev, _composed_fwd(mode, Wd, xd), dtype, f"forward vs composed B={B}")
        fwd_in = [t.to(DEV) for t in fwd_cpu]  # identical inputs to the three backwards
        bwd_cpu = _bwd(mode, W, x, fwd_cpu, True)
        bwd_dev = _bwd(mode, Wd, xd, fwd_in, True)
        _close(bwd_dev, bwd_cpu, dtype, f"backward vs CPU B={B}")
        _close(bwd_dev, _bwd(mode, Wd, xd, fwd_in, False), dtype, f"backward vs composed B={B}")
        for t in (*fwd_dev, *bwd_dev):
            assert t.device.type == torch.device(DEV).type


@_gpu
@pytest.mark.parametrize("mode", MODES)
def test_deterministic_and_misaligned(mode):
    """Same inputs, same bits; a state one element off 16-byte alignment (scalar loads) agrees."""
    g = torch.Generator().manual_seed(5)
    H, B = 64, 20
    W = _weight(GATES[mode] * H, H, "skewed", torch.float32, g).to(DEV)
    x = _to(_inputs(mode, H, B, torch.float32, g), DEV)
    a, b = _fused_fwd(mode, W, x), _fused_fwd(mode, W, x)
    for s, t in zip(a, b):
        assert s is None or torch.equal(s, t)
    base = torch.empty(H * B + 1, device=DEV)
    h_mis = base[1:].view(H, B)
    h_mis.copy_(x["h"])
    c = _fused_fwd(mode, W, {**x, "h": h_mis})
    _close(c, a, torch.float32, "misaligned h")


@_gpu
def test_zero_batch_and_zero_hidden():
    g = torch.Generator().manual_seed(1)
    W = _weight(4 * 6, 6, "uniform", torch.float32, g).to(DEV)
    z = torch.zeros(6, 0, device=DEV)
    h2, c2, acts = RAW.lstm_step(*W.index, W.values.detach(), torch.zeros(24, 0, device=DEV), z, z)
    assert h2.shape == (6, 0) and c2.shape == (6, 0) and acts.shape == (24, 0)
    W0 = SparseWeight.from_dense(torch.zeros(0, 0)).to(DEV)
    e = torch.zeros(0, 3, device=DEV)
    assert RAW.rnn_step(*W0.index, W0.values.detach(), e, e, False).shape == (0, 3)
    dG, dh = RAW.rnn_step_backward(*W0.index, W0.values.detach(), e, e, False)
    assert dG.shape == (0, 3) and dh.shape == (0, 3)


@_gpu
def test_bad_arguments_are_rejected():
    g = torch.Generator().manual_seed(2)
    W = _weight(4 * 5, 5, "uniform", torch.float64, g).to(DEV)
    v = W.values.detach()
    h = torch.randn(5, 3, generator=g, dtype=torch.float64).to(DEV)
    gx = torch.randn(20, 3, generator=g, dtype=torch.float64).to(DEV)
    RAW.lstm_step(*W.index, v, gx, h, h)  # fine
    with pytest.raises(ValueError, match="gx must have 20 rows"):
        RAW.lstm_step(*W.index, v, gx[:19], h, h)
    with pytest.raises(ValueError, match="batch size"):
        RAW.lstm_step(*W.index, v, gx, h, h[:, :2])
    with pytest.raises(TypeError, match="dtype"):
        RAW.lstm_step(*W.index, v, gx.float(), h, h)
    with pytest.raises(ValueError, match="W_hh must have 3"):
        RAW.gru_step(*W.index, v, gx, h, None)
    if DEV != "cpu":
        with pytest.raises(ValueError, match="must be on"):
            RAW.lstm_step(*W.index, v, gx, h.cpu(), h)


# ---------------------------------------------------------------------------- modules
SPARSE = {"LSTM": se.nn.SparseLSTM, "GRU": se.nn.SparseGRU, "RNN_TANH": se.nn.SparseRNN, "RNN_RELU": se.nn.SparseRNN}


def _run(m, x, hx, wy, ws):
    """Output, final states and every gradient of a loss touching them (random weights wy, ws)."""
    m.zero_grad()
    x = x.clone().requires_grad_(True)
    y, s = m(x, hx)
    states = s if isinstance(s, tuple) else (s,)
    (((y * wy).sum() + sum((t * w).sum() for t, w in zip(states, ws)))).backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    return [y, *states, x.grad], grads


@_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", list(SPARSE))
@pytest.mark.parametrize("L,bi,T,B,I,H", [(1, False, 5, 1, 4, 37), (2, True, 4, 3, 3, 33)])
def test_modules_on_device_match_torch_and_cpu(L, bi, T, B, I, H, mode, dtype):
    g = torch.Generator().manual_seed(H + L)
    torch.manual_seed(H * 7 + L)
    kw = {"nonlinearity": mode[4:].lower()} if mode.startswith("RNN_") else {}
    m_cpu = SPARSE[mode](I, H, num_layers=L, bidirectional=bi, density=0.3, dtype=dtype, **kw)
    m_dev = copy.deepcopy(m_cpu).to(DEV)
    # torch.nn on the device (cuDNN on a GPU) in float64, the exact reference: on the H200 run cuDNN's
    # float32 RNN was off by up to 3.6e-5 (with torch.backends.cudnn.allow_tf32 off) where ours
    # matched the CPU within 1e-5
    ref = m_cpu.to_dense().to(DEV, torch.float64)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64).to(dtype)
    y_shape = (T, B, H * (2 if bi else 1))
    s_shape = (L * (2 if bi else 1), B, H)
    wy = torch.randn(y_shape, generator=g, dtype=torch.float64).to(dtype)
    ws = [torch.randn(s_shape, generator=g, dtype=torch.float64).to(dtype) for _ in range(2 if mode == "LSTM" else 1)]
    dev = lambda ts: [t.to(DEV) for t in ts]  # noqa: E731
    out_cpu, gr_cpu = _run(m_cpu, x, None, wy, ws)
    out_dev, gr_dev = _run(m_dev, x.to(DEV), None, wy.to(DEV), dev(ws))
    out_ref, _ = _run(ref, x.to(DEV, torch.float64), None, wy.to(DEV, torch.float64),
                      [w.to(DEV, torch.float64) for w in ws])
    out_ref = [t.to(dtype) for t in out_ref]
    m_dev.fused = False
    out_cmp, gr_cmp = _run(m_dev, x.to(DEV), None, wy.to(DEV), dev(ws))
    _close(out_dev, out_cpu, dtype, "module vs CPU")
    _close(out_dev, out_ref, dtype, "module vs torch.nn")
    _close(out_dev, out_cmp, dtype, "module fused vs composed")
    for name, gd in gr_dev.items():
        _close([gd], [gr_cpu[name]], dtype, f"grad {name} vs CPU")
        _close([gd], [gr_cmp[name]], dtype, f"grad {name} vs composed")
    for name in ref._flat_weights_names:  # torch's gradients at our nonzeros
        ours = getattr(m_dev, name)
        rg = getattr(ref, name).grad.to(dtype)
        if isinstance(ours, SparseWeight):
            row, col, _ = ours.coo()
            _close([ours.values.grad], [rg[row, col]], dtype, f"{name} vs torch.nn")
        else:
            _close([ours.grad], [rg], dtype, f"{name} vs torch.nn")


@_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_ctrnn_module_on_device(dtype):
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    m_cpu = se.nn.SparseCTRNN(3, 21, density=0.3, dt=0.05, tau=0.7, unfolds=3, dtype=dtype)
    m_dev = copy.deepcopy(m_cpu).to(DEV)
    x = torch.randn(5, 2, 3, generator=g, dtype=torch.float64).to(dtype)
    wy = torch.randn(5, 2, 21, generator=g, dtype=torch.float64).to(dtype)
    ws = [torch.randn(1, 2, 21, generator=g, dtype=torch.float64).to(dtype)]
    out_cpu, gr_cpu = _run(m_cpu, x, None, wy, ws)
    out_dev, gr_dev = _run(m_dev, x.to(DEV), None, wy.to(DEV), [ws[0].to(DEV)])
    m_dev.fused = False
    out_cmp, gr_cmp = _run(m_dev, x.to(DEV), None, wy.to(DEV), [ws[0].to(DEV)])
    _close(out_dev, out_cpu, dtype, "CT-RNN vs CPU")
    _close(out_dev, out_cmp, dtype, "CT-RNN fused vs composed")
    for name, gd in gr_dev.items():
        _close([gd], [gr_cpu[name]], dtype, f"grad {name} vs CPU")
        _close([gd], [gr_cmp[name]], dtype, f"grad {name} vs composed")


@_gpu
def test_fused_path_is_taken_on_device():
    W = SparseWeight.random(8, 2, density=0.5).to(DEV)
    assert fused_ok(Config("LSTM", 2, 3, 4, idx_hh=W.index), W.values)


@_gpu
@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_gradcheck_fused_on_device(mode):
    g = torch.Generator().manual_seed(11)
    I, H, B, T = 3, 5, 2, 3
    G = GATES[mode] * H
    W_ih = SparseWeight.from_dense(torch.randn(G, I, generator=g, dtype=torch.float64),
                                   torch.rand(G, I, generator=g) < 0.6).to(DEV)
    W_hh = SparseWeight.from_dense(torch.randn(G, H, generator=g, dtype=torch.float64),
                                   torch.rand(G, H, generator=g) < 0.6).to(DEV)
    cfg = Config(mode, H, B, T, False, W_ih.index, W_hh.index)
    assert fused_ok(cfg, W_hh.values)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(DEV).requires_grad_(True)  # noqa: E731
    args = [r(T, I, B), r(H, B), r(H, B) if mode == "LSTM" else None,
            W_ih.values.detach().clone().requires_grad_(True), W_hh.values.detach().clone().requires_grad_(True),
            r(G), r(G)]

    def f(*a):
        y, h, c = Recurrence.apply(cfg, *a)
        return (y, h, c) if mode == "LSTM" else (y, h)

    assert torch.autograd.gradcheck(f, args)


@_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_backward_adds_the_weight_gradient(dtype):
    """Each step backward given h_in and dw_t adds dG h_in^T at W_hh's nonzeros to dw_t in the
    transposed index's order (CUDA: sddmm then the permutation, csrc/rnn_step_ops.h; the CPU
    fuses it into its W^T dG pass): against sddmm on the same device."""
    g = torch.Generator().manual_seed(11)
    H, B = 33, 20
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype).to(DEV)  # noqa: E731
    acts = torch.rand(4 * H, B, generator=g, dtype=dtype).to(DEV)
    h, c, dh, dc, h_in = rnd(H, B), rnd(H, B), rnd(H, B), rnd(H, B), rnd(H, B)
    calls = {
        4: lambda W, v, **kw: RAW.lstm_step_backward(*W.index, v, acts, c, c, dh, dc, None, **kw),
        3: lambda W, v, **kw: RAW.gru_step_backward(*W.index, v, acts, h, dh, None, **kw),
        1: lambda W, v, **kw: RAW.rnn_step_backward(*W.index, v, torch.tanh(h), dh, False, None, **kw),
        -1: lambda W, v, **kw: RAW.ctrnn_step_backward(*W.index, v, acts[:H], dh, DT, TAU, None, **kw),
    }
    for gates, call in calls.items():
        W = SparseWeight.random(abs(gates) * H, H, density=0.3, generator=g, dtype=dtype).to(DEV)
        v = W.values.detach()
        dw = torch.zeros(W.nnz, dtype=dtype, device=DEV)
        out = call(W, v, h_in=h_in, dw_t=dw)
        dG = out[1] if gates == 3 else out[0]
        want = RAW.sddmm(*W.index, dG, h_in)[W.csc_perm.long()]
        torch.testing.assert_close(dw, want, **TOL[dtype])
