"""The fused recurrent step ops (lstm_step, gru_step, rnn_step, ctrnn_step and their backwards:
csrc/cpu/rnn_step_cpu.cpp, csrc/cuda/rnn_step_cuda.cu, written once over a device in
csrc/rnn_step_ops.h) on every device.

* CPU: the forward ops against float64 torch on the dense W_hh, the backward's weight gradient
  (h_in, dw_t) and values_t, argument checks and opcheck, 1 vs 2 threads, and hypothesis properties
  (the fused steps against the composed ones in float64);
* CUDA (marked ``cuda``): against the composed path (spmm/spmm_t + torch elementwise) on CUDA and
  the CPU ops, raw and through the modules, every output written. Skipped unless a CUDA device is
  present and sparse_engine._C has the CUDA step kernels. SPARSE_ENGINE_RNN_TEST_DEVICE=cpu runs
  the tests of the CUDA step kernels (those marked ``cuda`` that come from the CUDA step file) on the
  CPU (the fused CPU ops in place of the CUDA ones): a check of the tests themselves on a machine
  without a GPU (tests/kernels/test_gpu_tests_on_cpu.py does it in every run). The path selection
  (fused_ok) is tested everywhere;
* the CUDA kernels on the CPU emulator (tests/cuda_emu/rnn_driver.cpp, marked ``slow``).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sparse_engine as se
from sparse_engine import SparseWeight
from sparse_engine.kernels import has_kernel
from sparse_engine.kernels.constants import GATES, MODE_IDS
from sparse_engine.recurrent.cell_steps import CELLS, has_fused_kernels
from sparse_engine.recurrent.cell_steps import fused_ok
from sparse_engine.recurrent.sequence import Config, Recurrence
from sparse_engine.testing import assert_within_rounding, copy_weight, num_threads, random_weight
from cuda_emu.emu_testing import assert_every_kernel_ran, assert_orders_vary_and_outputs_do_not, assert_passed

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


# ------------------------------------------------------------------------ path selection (no GPU)
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


# ------------------------------ raw ops (CUDA, or the CPU with SPARSE_ENGINE_RNN_TEST_DEVICE=cpu)
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


# ------------------------------ modules (CUDA, or the CPU with SPARSE_ENGINE_RNN_TEST_DEVICE=cpu)
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
    transposed index's order (CUDA: an accumulating sddmm on the transposed index, the same dot
    products; the CPU fuses it into its W^T dG pass): against sddmm on the same device, added to
    what dw_t held; on CUDA bit for bit, and the step's other outputs those of the backward without
    dw_t, bit for bit (float32 at B = 20 takes the one pass that gathers dG once for W^T dG and the
    gradient, float64 the two kernels: launchers.h, launch_rnn_step_backward_wgrad)."""
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
        start = rnd(W.nnz)
        dw = start.clone()
        out = call(W, v, h_in=h_in, dw_t=dw)
        dG = out[1] if gates == 3 else out[0]
        want = start + RAW.sddmm(*W.index, dG, h_in)[W.csc_perm.long()]
        if DEV == "cuda":
            assert torch.equal(dw, want)
            for got, plain in zip(out, call(W, v)):
                assert (got is None and plain is None) or torch.equal(got, plain)
        torch.testing.assert_close(dw, want, **TOL[dtype])


# ------------------------------------------------------------ every output element written (CUDA)
def _from_pool(t: torch.Tensor, span) -> bool:
    return span[0] <= t.data_ptr() < span[1]


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "CTRNN"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_every_fused_step_output_is_written(mode, dtype, nan_filled_pool):
    H, B = 600, 500
    g = torch.Generator().manual_seed(61)
    W = _weight(se.constants.GATES[mode] * H, H, "uniform", dtype, g)
    x = _inputs(mode, H, B, dtype, g)
    want_f = _fused_fwd(mode, W, x)
    want_b = _bwd(mode, W, x, want_f, fused=True)
    Wd, xd = W.to("cuda"), {k: v.to("cuda") for k, v in x.items()}
    Wd.index  # noqa: B018
    torch.cuda.synchronize()
    got_f = _fused_fwd(mode, Wd, xd)
    got_b = _bwd(mode, Wd, xd, got_f, fused=True)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for i, (a, b) in enumerate(zip([*got_f, *got_b], [*want_f, *want_b])):
        if a is None or not a.numel():
            continue
        if a.numel() * a.element_size() > 1 << 20:
            assert _from_pool(a, nan_filled_pool), f"output {i} did not come from the NaN-filled memory"
        assert not bool(a.isnan().any()), f"output {i} has unwritten elements"
        torch.testing.assert_close(a.cpu(), b, **tol)


# ------------------------ CPU ops: float64 references, weight gradient, values_t, argument checks
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
    C = random_weight(5, 5, 0.5, empty_rows=1, generator=rng)  # a CT-RNN's dt and tau (before: 1 - dt/tau
    for dt, tau in ((0.1, 0.0), (0.1, -0.5), (math.nan, 0.5), (0.1, math.inf)):  # unchecked, inf or NaN states)
        with pytest.raises(ValueError, match="dt and tau must be finite numbers > 0"):
            ops.ctrnn_step(*C.index, C.values.detach(), gx[:5], h, dt, tau)
        with pytest.raises(ValueError, match="dt and tau must be finite numbers > 0"):
            ops.ctrnn_step_backward(*C.index, C.values.detach(), h, h, dt, tau, None)


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


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
                    reason="the shared row kernel is the AVX2 build's (elsewhere the fused dots sum their own way)")
@pytest.mark.parametrize("B", [2, 3, 8, 20, 67])
def test_fused_weight_gradient_is_sddmms_bit_for_bit(B, rng):
    """float32 on AVX2: the fused step backward's W_hh gradient (the rows of dG it gathered for
    W_hh^T dG, dotted with h's row) takes sddmm's row kernel, so what it adds to dw_t is sddmm's
    dG h_in^T at the nonzeros, the same bits (in the transposed order), on 1 and 2 threads: the
    fused and composed backwards give W_hh the same gradient. Rows of 0-7 entries and of more than
    8 (the groups of 8, 4, 2, 1), B whole units of 8 and not."""
    H = 40
    for gates, call in _backward_calls(H, B, rng, torch.float32).items():
        W = random_weight(abs(gates) * H, H, 0.3, empty_rows=3, full_rows=2, dtype=torch.float32, generator=rng)
        v = W.values.detach()
        perm = W.csc_perm.long()
        h_in = torch.randn(H, B, generator=rng)
        start = torch.randn(W.nnz, generator=rng)
        plain = call(W, v, v[perm])
        dG = plain[1] if gates == 3 else plain[0]
        sddmm = se.ops.sddmm(W, dG, h_in)[perm]  # the composed backward's gradient, transposed order
        for threads in (1, 2):
            dw = start.clone()
            with num_threads(threads):
                call(W, v, v[perm], h_in=h_in, dw_t=dw)
            assert torch.equal(dw, start + sddmm)


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


# --------------------------------------------------------------------------------- 1 vs 2 threads
H_STEP, B_STEP = 300, 20


def step_weight(gates: int, seed: int) -> SparseWeight:
    return SparseWeight.random(gates * H_STEP, H_STEP, 0.1, generator=torch.Generator().manual_seed(seed)).double()


@pytest.mark.parametrize("B", [1, B_STEP])
def test_steps_forward_and_backward_on_1_and_2_threads(B, same_on_1_and_2_threads):
    g = torch.Generator().manual_seed(2)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    h, c, dh, dc = rnd(H_STEP, B), rnd(H_STEP, B), rnd(H_STEP, B), rnd(H_STEP, B)
    lstm, gru, rnn = step_weight(4, 0), step_weight(3, 1), step_weight(1, 2)
    acts4 = torch.rand(4 * H_STEP, B, generator=g, dtype=torch.float64)
    cases = {
        "lstm": lambda: RAW.lstm_step(*lstm.index, lstm.values.detach(), rnd(4 * H_STEP, B), h, c),
        "lstm_backward": lambda *t: RAW.lstm_step_backward(*lstm.index, lstm.values.detach(), acts4, c, c, dh, dc, *t),
        "gru": lambda: RAW.gru_step(*gru.index, gru.values.detach(), rnd(3 * H_STEP, B), h, rnd(3 * H_STEP)),
        "gru_backward": lambda *t: RAW.gru_step_backward(*gru.index, gru.values.detach(), acts4, h, dh, *t),
        "rnn": lambda: RAW.rnn_step(*rnn.index, rnn.values.detach(), rnd(H_STEP, B), h, False),
        "rnn_backward": lambda *t: RAW.rnn_step_backward(*rnn.index, rnn.values.detach(), torch.tanh(h), dh, True,
                                                          *t),
        "ctrnn": lambda: RAW.ctrnn_step(*rnn.index, rnn.values.detach(), rnd(H_STEP, B), h, 0.1, 1.0),
        "ctrnn_backward": lambda *t: RAW.ctrnn_step_backward(*rnn.index, rnn.values.detach(), acts4[:H_STEP], dh, 0.1,
                                                              1.0, *t),
    }
    for name, W in (("lstm", lstm), ("gru", gru), ("rnn", rnn), ("ctrnn", rnn)):  # values in column order
        v_t = W.values.detach()[W.csc_perm.long()]
        cases[f"{name}_backward_values_t"] = lambda f=cases[f"{name}_backward"], v_t=v_t: f(v_t)
    for name, fn in cases.items():
        state = g.get_state()

        def reseeded(fn=fn):
            g.set_state(state)
            return fn()

        same_on_1_and_2_threads(reseeded)


# ------------------------------------------------------------------------ properties (hypothesis)
EXAMPLES = settings().max_examples  # of the profile tests/conftest.py loaded
F32, F64 = torch.float32, torch.float64
seeds = st.integers(0, 2**32 - 1)
threads = st.sampled_from([1, 2])
densities = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))


def budget(share: float = 1.0, **kw) -> settings:
    """``share`` of the profile's examples for one test (at least 5)."""
    return settings(max_examples=max(5, int(EXAMPLES * share)), **kw)


STEP_TOL = {F32: dict(rtol=2e-4, atol=2e-4), F64: dict(rtol=1e-9, atol=1e-9)}


def run_step(cell, fused: bool, W: SparseWeight, gx, h, c, b_hh, params, dh, dc):
    """One step forward and back through the fused ops or the composed steps:
    (h', c', saved activations, input-side gate gradient, hidden-side one, dh_prev, dc_prev)."""
    step, step_backward = cell.steps(fused)
    w = W.values.detach()
    tail = ((b_hh,) if cell.hidden_bias else ()) + params
    h2, c2, acts = cell.forward_step(step, w, W.index, gx, h, c, tail)
    saved = cell.saved_at(0, {"h": [h, h2], "c": [c, c2], "acts": [acts]})
    back = cell.backward_step(step_backward, w, W.index, saved, dh, dc, params)
    return (h2, c2, acts, *back)


@budget(2)
@given(mode=st.sampled_from(MODES), H=st.one_of(st.integers(0, 12), st.integers(13, 130)), B=st.one_of(st.integers(0, 4), st.integers(5, 70)),
       density=densities, empty=st.integers(0, 12), dtype=st.sampled_from([F32, F64]), hidden_bias=st.booleans(),
       dt=st.floats(0.01, 1.0), tau=st.floats(0.05, 2.0), n_threads=threads, seed=seeds)
def test_fused_steps_match_composed_float64(mode, H, B, density, empty, dtype, hidden_bias, dt, tau, n_threads, seed):
    """The fused step ops (forward and backward) against the composed steps of cell_table run in
    float64 on the same stored values."""
    cell = CELLS[mode]
    G = cell.gates * H
    W = random_weight(G, H, density, min(empty, G), dtype=dtype, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)

    def draw(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    gx, h, dh = draw(G, B), draw(H, B), draw(H, B)
    c, dc = (draw(H, B), draw(H, B)) if cell.cell_state else (None, None)
    b_hh = draw(G) if cell.hidden_bias and hidden_bias else None
    params = cell.params(SimpleNamespace(dt=dt, tau=tau))
    with num_threads(n_threads):
        fused = run_step(cell, True, W, gx, h, c, b_hh, params, dh, dc)

    def f64(t):
        return None if t is None else t.double()

    ref = run_step(cell, False, copy_weight(W, dtype=F64), f64(gx), f64(h), f64(c), f64(b_hh), params, f64(dh),
                   f64(dc))
    names = ("h'", "c'", "acts", "input-side dG", "dG", "dh_prev", "dc_prev")
    for name, a, b in zip(names, fused, ref):
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == dtype, name
            torch.testing.assert_close(a.double(), b, **STEP_TOL[dtype], msg=lambda m: f"{mode} {name}: {m}")


# ---------------------------------------------- the CUDA kernels on the emulator (tests/cuda_emu)
@pytest.mark.slow
def test_fused_rnn_step_kernels_match_float64_references_on_the_emulator(rnn_driver_runs):
    for proc in rnn_driver_runs.values():
        lines = assert_passed(proc)
        for mode in MODE_IDS:  # every mode ran, in both dtypes (the driver prints constants.h's mode names)
            assert any(line.startswith(f"f32 {mode} ") for line in lines), mode
            assert any(line.startswith(f"f64 {mode} ") for line in lines), mode
        # the backward's W_hh^T dG really took spmm_cuda.cu's long-row kernel (5 long columns)
        assert any("longcols" in line and "long cols=5" in line for line in lines)
        # three batch tiles: more than the emulated grid.y (2), so the forward's tile loop ran twice
        assert any(" B=67 " in line for line in lines)
        assert_every_kernel_ran(proc, ["rnn_step_cuda", "spmm_cuda"])
        # the backward with W_hh's gradient: one pass (every mode, both dtypes) and the two kernels (wide
        # batches, long columns, misaligned states) both ran, each bit for bit the other's
        for dtype in ("f32", "f64"):
            for mode in MODE_IDS:
                assert any(line.startswith(f"{dtype} {mode} ") and "wgrad=one-pass" in line for line in lines), mode
        assert any("wgrad=two-kernels" in line and "long cols=5" in line for line in lines)
        assert any("wgrad=two-kernels" in line and " B=33 " in line for line in lines)
    assert_orders_vary_and_outputs_do_not(rnn_driver_runs)
