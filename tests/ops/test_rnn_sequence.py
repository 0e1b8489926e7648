"""The whole-sequence recurrence ops (rnn_sequence, rnn_sequence_backward: csrc/cpu/rnn_sequence_cpu.cpp,
csrc/cuda/rnn_sequence_cuda.cu + rnn_sequence_glue.cpp, arguments in csrc/rnn_sequence_ops.h) on every
device:

* against float64 torch on the dense W_hh, autograd through the whole sequence giving the gate
  gradients of every step, dh_0 and dc_0: every mode, both directions, both dtypes, empty rows, an
  empty matrix, one hidden unit, batch 1, one step and none, non-contiguous operands, with and
  without dy, values_t and GRU's b_hh;
* the CPU op is its contract, the fused step ops in a loop: the same bits as calling them;
* 1 vs 2 threads, argument checks (one line naming the argument), opcheck (schemas, fake kernels);
* CUDA (marked ``cuda``): the same references on the GPU, every output written, the same bits with
  W_hh staged in shared memory, in part or not at all;
* the persistent CUDA kernels on the emulator (tests/cuda_emu/seq_driver.cpp, marked ``slow``);
  the emulator catching their planted bugs is tests/kernels/test_cuda_emulator.py's.
"""
from __future__ import annotations

import pytest
import torch

from sparse_engine.kernels.constants import GATES, SAVED_ACTS
from sparse_engine.testing import copy_weight, random_weight
from cuda_emu.emu_testing import assert_every_kernel_ran, assert_orders_vary_and_outputs_do_not, assert_passed

OPS = torch.ops.sparse_engine
MODES = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]
F32, F64 = torch.float32, torch.float64


# --------------------------------------------------------------------------------- the reference
def reference(mode, W, gx, h0, c0, b_hh, reverse, dy, dh, dc):
    """float64 torch on the dense W (G*H x H): the forward's (y, cs, acts) and, by autograd of
    sum(y * dy) + sum(h_T * dh) (+ sum(c_T * dc)), the backward's (dG, dgx, dh0, dc0)."""
    d = lambda t: None if t is None else t.detach().double().cpu().requires_grad_()  # noqa: E731
    W, gx, h0, c0, b_hh = W.to_dense().detach().double().cpu(), d(gx), d(h0), d(c0), d(b_hh)
    G, T, B = gx.shape
    H = h0.shape[0]
    h, c = h0, c0
    ys, cs, acts, ghs = [None] * T, [None] * T, [None] * T, [None] * T
    for k in range(T):
        t = T - 1 - k if reverse else k
        gh = W @ h
        gh.retain_grad()
        ghs[t] = gh
        x = gx[:, t]
        if mode == "LSTM":
            i, f, g, o = (x + gh).chunk(4)
            i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
            c = f * c + i * g
            h = o * c.tanh()
            cs[t], acts[t] = c, torch.cat([i, f, g, o])
        elif mode == "GRU":
            ghb = gh if b_hh is None else gh + b_hh[:, None]
            r = (x[:H] + ghb[:H]).sigmoid()
            z = (x[H:2 * H] + ghb[H:2 * H]).sigmoid()
            n = (x[2 * H:] + r * ghb[2 * H:]).tanh()
            h = n + z * (h - n)
            acts[t] = torch.cat([r, z, n, ghb[2 * H:]])
        else:
            h = (x + gh).tanh() if mode == "RNN_TANH" else (x + gh).relu()
        ys[t] = h
    empty = h0.new_empty((0,))
    y = torch.stack(ys) if T else h0.new_empty((0, H, B))
    loss = (h * dh.double().cpu()).sum()
    if dy is not None and T:
        loss = loss + (y * dy.double().cpu()).sum()
    if mode == "LSTM":
        loss = loss + (c * dc.double().cpu()).sum()
    loss.backward()
    dG = torch.stack([g.grad for g in ghs], 1) if T else h0.new_empty((G, 0, B))
    fwd = (y, torch.stack(cs) if mode == "LSTM" and T else (h0.new_empty((0, H, B)) if mode == "LSTM" else empty),
           torch.stack(acts) if SAVED_ACTS[mode] and T else (h0.new_empty((0, 4 * H, B)) if SAVED_ACTS[mode] else empty))
    grad = lambda t: torch.zeros_like(t) if t.grad is None else t.grad  # noqa: E731  (no steps: gx unused)
    bwd = (dG, grad(gx) if mode == "GRU" else empty, h0.grad, c0.grad if mode == "LSTM" else empty)
    return [t.detach() for t in fwd], [t.detach() for t in bwd]


def case(mode, H, B, T, dtype, device, seed, *, density=0.4, empty_rows=0, bias=True, with_dy=True, gain=None):
    """A W_hh of the mode and random operands: (W, gx, h0, c0, b_hh, dy, dh, dc). With ``gain``,
    W_hh's standard normal values are scaled to a row-sum spread of ``gain`` (gain / sqrt(H * density)):
    a float32 case of many entries a row whose RNN_RELU/RNN_TANH states and gradients do not grow
    step by step (at gain None and 35 entries a row they reach 10^4, and float32's own rounding
    against float64 passes the tolerance on the CPU as on the GPU)."""
    G = GATES[mode] * H
    W = random_weight(G, H, density, min(empty_rows, G), dtype=dtype, seed=seed, device=device)
    if gain is not None:
        with torch.no_grad():
            W.values.mul_(gain / (H * density) ** 0.5)
    g = torch.Generator().manual_seed(seed + 1)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype).to(device)  # noqa: E731
    gx, h0, dh = rnd(G, T, B), rnd(H, B), rnd(H, B)
    lstm = mode == "LSTM"
    c0, dc = (rnd(H, B), rnd(H, B)) if lstm else (None, None)
    b_hh = rnd(G) if mode == "GRU" and bias else None
    dy = rnd(T, H, B) if with_dy else None
    return W, gx, h0, c0, b_hh, dy, dh, dc


def run_op(mode, W, gx, h0, c0, b_hh, reverse, dy, dh, dc, values_t=None):
    v = W.values.detach()
    y, cs, acts = OPS.rnn_sequence(*W.index, v, mode, gx, h0, c0, b_hh, reverse)
    lstm, saved = mode == "LSTM", SAVED_ACTS[mode] > 0
    back = OPS.rnn_sequence_backward(*W.index, v, mode, y, h0, c0, cs if lstm else None, acts if saved else None, dy,
                                     dh, dc, reverse, values_t)
    return [y, cs, acts], list(back)


TOL = {F64: dict(rtol=1e-9, atol=1e-9), F32: dict(rtol=2e-4, atol=2e-4)}
NAMES = ("y", "cs", "acts", "dG", "dgx", "dh0", "dc0")


def assert_matches_reference(mode, args, reverse, dtype, values_t=None):
    W, gx, h0, c0, b_hh, dy, dh, dc = args
    got = run_op(mode, W, gx, h0, c0, b_hh, reverse, dy, dh, dc, values_t)
    want = reference(mode, W, gx, h0, c0, b_hh, reverse, dy, dh, dc)
    for name, a, b in zip(NAMES, got[0] + got[1], want[0] + want[1]):
        assert a.dtype == dtype and a.device == W.values.device, name
        assert a.shape == b.shape, (name, a.shape, b.shape)
        torch.testing.assert_close(a.double().cpu(), b, **TOL[dtype], msg=lambda m: f"{mode} {name}: {m}")


# ------------------------------------------------------------------------- against the reference
SHAPES = [  # (H, B, T, density, empty rows)
    (7, 3, 4, 0.4, 2),     # empty rows
    (1, 1, 3, 1.0, 0),     # one hidden unit, batch 1
    (9, 2, 1, 0.5, 0),     # one step
    (6, 4, 0, 0.5, 0),     # no steps: y empty, dh_0 = dh_T
    (5, 3, 3, 0.0, 0),     # an empty matrix
    (40, 35, 5, 0.1, 5),   # two batch tiles on a GPU, several units per warp
]


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("H,B,T,density,empty", SHAPES, ids=[f"H{s[0]}-B{s[1]}-T{s[2]}-d{s[3]}" for s in SHAPES])
def test_matches_float64_reference(H, B, T, density, empty, mode, reverse, dtype, device):
    args = case(mode, H, B, T, dtype, device, seed=H * 100 + B * 10 + T, density=density, empty_rows=empty)
    assert_matches_reference(mode, args, reverse, dtype)


@pytest.mark.parametrize("mode", MODES)
def test_without_dy_bias_and_with_values_t(mode, device):
    """dy None (only h_T read), GRU without b_hh, the values in column order given."""
    args = case(mode, 11, 5, 4, F64, device, seed=3, empty_rows=3, bias=False, with_dy=False)
    W = args[0]
    assert_matches_reference(mode, args, True, F64, values_t=W.values.detach()[W.csc_perm.long()])


@pytest.mark.parametrize("mode", MODES)
def test_non_contiguous_operands(mode, device):
    """gx, h0, c0, dy, dh and dc as transposed or sliced views: read where they are, same results."""
    W, gx, h0, c0, b_hh, dy, dh, dc = case(mode, 8, 3, 4, F64, device, seed=5)

    def strided(t):
        return None if t is None else t.transpose(0, -1).contiguous().transpose(0, -1)

    views = [strided(t) for t in (gx, h0, c0, dy, dh, dc)]
    assert not views[0].is_contiguous() and not views[1].is_contiguous()
    got = run_op(mode, W, views[0], views[1], views[2], b_hh, False, views[3], views[4], views[5])
    want = run_op(mode, W, gx, h0, c0, b_hh, False, dy, dh, dc)
    for name, a, b in zip(NAMES, got[0] + got[1], want[0] + want[1]):
        assert torch.equal(a, b), name


# ---------------------------------------------------------- the CPU op is the step ops in a loop
def step_loop(mode, W, gx, h0, c0, b_hh, reverse, dy, dh, dc):
    """The contract written out: the fused step ops called step by step (rnn_step.py's ops)."""
    v, T = W.values.detach(), gx.shape[1]
    order = list(range(T - 1, -1, -1)) if reverse else list(range(T))
    h, c, ys, cs, acts = h0, c0, {}, {}, {}
    for t in order:
        if mode == "LSTM":
            h, c, acts[t] = OPS.lstm_step(*W.index, v, gx[:, t], h, c)
            cs[t] = c
        elif mode == "GRU":
            h, acts[t] = OPS.gru_step(*W.index, v, gx[:, t], h, b_hh)
        else:
            h = OPS.rnn_step(*W.index, v, gx[:, t], h, mode == "RNN_RELU")
        ys[t] = h
    dG, dgx, v_t = {}, {}, v[W.csc_perm.long()]
    for k, t in reversed(list(enumerate(order))):
        d = dh + dy[t]
        prev = order[k - 1] if k else None
        if mode == "LSTM":
            dG[t], dh, dc = OPS.lstm_step_backward(*W.index, v, acts[t], cs[prev] if k else c0, cs[t], d, dc, v_t)
        elif mode == "GRU":
            dgx[t], dG[t], dh = OPS.gru_step_backward(*W.index, v, acts[t], ys[prev] if k else h0, d, v_t)
        else:
            dG[t], dh = OPS.rnn_step_backward(*W.index, v, ys[t], d, mode == "RNN_RELU", v_t)
    stack = lambda m, dim=0: torch.stack([m[t] for t in range(T)], dim)  # noqa: E731
    return ([stack(ys)] + ([stack(cs)] if mode == "LSTM" else []) + ([stack(acts)] if acts else []),
            [stack(dG, 1)] + ([stack(dgx, 1)] if mode == "GRU" else []) + [dh] + ([dc] if mode == "LSTM" else []))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("mode", MODES)
def test_cpu_op_is_the_step_ops_in_a_loop(mode, reverse):
    W, gx, h0, c0, b_hh, dy, dh, dc = case(mode, 30, 6, 5, F32, "cpu", seed=7, empty_rows=4)
    (y, cs, acts), (dG, dgx, dh0, dc0) = run_op(mode, W, gx, h0, c0, b_hh, reverse, dy, dh, dc)
    fwd, bwd = step_loop(mode, W, gx, h0, c0, b_hh, reverse, dy, dh, dc)
    got_fwd = [y] + ([cs] if mode == "LSTM" else []) + ([acts] if SAVED_ACTS[mode] else [])
    got_bwd = [dG] + ([dgx] if mode == "GRU" else []) + [dh0] + ([dc0] if mode == "LSTM" else [])
    assert len(got_fwd) == len(fwd) and len(got_bwd) == len(bwd)
    for a, b in zip(got_fwd + got_bwd, fwd + bwd):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mode", MODES)
def test_on_1_and_2_threads(mode, same_on_1_and_2_threads):
    args = case(mode, 120, 20, 4, F64, "cpu", seed=11, density=0.1, empty_rows=6)
    W, gx, h0, c0, b_hh, dy, dh, dc = args
    same_on_1_and_2_threads(lambda: tuple(sum(run_op(mode, W, gx, h0, c0, b_hh, True, dy, dh, dc), [])))


# -------------------------------------------------------------------------- arguments, schemas
def test_bad_arguments_name_the_argument():
    W, gx, h0, c0, b_hh, dy, dh, dc = case("LSTM", 5, 3, 4, F64, "cpu", seed=1)
    v = W.values.detach()
    y, cs, acts = OPS.rnn_sequence(*W.index, v, "LSTM", gx, h0, c0, None, False)
    bad_forward = {
        "mode must be one of 'LSTM', 'GRU', 'RNN_TANH', 'RNN_RELU', got 'CTRNN'": ("CTRNN", gx, h0, c0, None),
        "mode must be one of": ("lstm", gx, h0, c0, None),
        r"gx must have shape \(20, 4, 3\)": ("LSTM", gx[:19], h0, c0, None),
        "gx must be 3-D": ("LSTM", gx[:, 0], h0, c0, None),
        "c0 is required for mode 'LSTM'": ("LSTM", gx, h0, None, None),
        "c0 must have batch size 3": ("LSTM", gx, h0, c0[:, :2], None),
        "b_hh is taken only by mode 'GRU'": ("LSTM", gx, h0, c0, torch.zeros(20, dtype=F64)),
        "W_hh must have 3": ("GRU", gx[:15], h0, None, None),
        "gx must have the dtype of values": ("LSTM", gx.float(), h0, c0, None),
        "h0 must have 5 rows": ("LSTM", gx, h0[:4], c0, None),
    }
    for message, (mode, *rest) in bad_forward.items():
        with pytest.raises((ValueError, TypeError), match=message):
            OPS.rnn_sequence(*W.index, v, mode, *rest, False)
    ok = dict(y=y, h0=h0, c0=c0, cs=cs, acts=acts, dy=dy, dh=dh, dc=dc)
    bad_backward = {
        r"y must have shape \(4, 5, 3\)": dict(y=y[:, :, :2], dh=dh),
        "cs is required for mode 'LSTM'": dict(cs=None),
        r"acts must have shape \(4, 20, 3\)": dict(acts=acts[:, :19]),
        r"dy must have shape \(4, 5, 3\)": dict(dy=dy[:3]),
        "dc must have 5 rows": dict(dc=dc[:4]),
    }
    for message, change in bad_backward.items():
        a = {**ok, **change}
        with pytest.raises(ValueError, match=message):
            OPS.rnn_sequence_backward(*W.index, v, "LSTM", a["y"], a["h0"], a["c0"], a["cs"], a["acts"], a["dy"],
                                      a["dh"], a["dc"], False)
    with pytest.raises(ValueError, match="values_t must be 1-D with nnz"):
        OPS.rnn_sequence_backward(*W.index, v, "LSTM", y, h0, c0, cs, acts, dy, dh, dc, False, v[:-1])
    R = random_weight(5, 5, 0.5, seed=2)
    with pytest.raises(ValueError, match="cs is taken only by mode 'LSTM'"):
        OPS.rnn_sequence_backward(*R.index, R.values.detach(), "RNN_TANH", y, h0, None, cs, None, None, dh, None,
                                  False)


def test_opcheck():
    """Schemas, fake kernels (torch.compile) and dispatch agree, every mode."""
    for mode in MODES:
        W, gx, h0, c0, b_hh, dy, dh, dc = case(mode, 5, 3, 3, F64, "cpu", seed=4, empty_rows=1)
        v = W.values.detach()
        y, cs, acts = OPS.rnn_sequence(*W.index, v, mode, gx, h0, c0, b_hh, True)
        lstm, saved = mode == "LSTM", SAVED_ACTS[mode] > 0
        torch.library.opcheck(OPS.rnn_sequence.default, (*W.index, v, mode, gx, h0, c0, b_hh, True),
                              test_utils=("test_schema", "test_faketensor"))
        torch.library.opcheck(OPS.rnn_sequence_backward.default,
                              (*W.index, v, mode, y, h0, c0, cs if lstm else None, acts if saved else None, dy, dh,
                               dc, True), test_utils=("test_schema", "test_faketensor"))


# ------------------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.parametrize("mode", MODES)
def test_every_output_is_written_on_cuda(mode, nan_filled_pool):
    """Outputs over 1 MB come from memory full of NaN: the kernels write every element."""
    args = case(mode, 600, 40, 6, F32, "cuda", seed=9, density=0.02, empty_rows=30, gain=1.0)
    W, gx, h0, c0, b_hh, dy, dh, dc = args
    fwd, bwd = run_op(mode, W, gx, h0, c0, b_hh, False, dy, dh, dc)
    for name, t in zip(NAMES, fwd + bwd):
        assert not bool(t.isnan().any()), name
    cpu = lambda t: None if t is None else t.cpu()  # noqa: E731
    want = run_op(mode, copy_weight(W, device="cpu"), *map(cpu, (gx, h0, c0, b_hh)), False, *map(cpu, (dy, dh, dc)))
    for name, a, b in zip(NAMES, fwd + bwd, want[0] + want[1]):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.parametrize("mode", MODES)
def test_staging_w_hh_in_shared_memory_changes_no_bit_on_cuda(mode):
    """W_hh staged in shared memory whole (the default, a 16-bit index), in part (a few hundred bytes
    a block, so rows straddle the stage's end), not at all, and with a 32-bit index: the same bits,
    and the float64 reference."""
    from sparse_engine import _C
    args = case(mode, 700, 20, 5, F32, "cuda", seed=13, density=0.05, empty_rows=20, gain=1.0)
    W, gx, h0, c0, b_hh, dy, dh, dc = args
    runs = {}
    for cap, compact in ((-1, True), (0, True), (1000, True), (-1, False)):
        old, old_compact = _C._set_sequence_stage_bytes(cap), _C._set_sequence_compact_index(compact)
        try:
            fwd, bwd = run_op(mode, W, gx, h0, c0, b_hh, False, dy, dh, dc)
        finally:
            _C._set_sequence_stage_bytes(old), _C._set_sequence_compact_index(old_compact)
        runs[cap, compact] = [t.cpu() for t in fwd + bwd]
    for key in ((0, True), (1000, True), (-1, False)):
        for name, a, b in zip(NAMES, runs[-1, True], runs[key]):
            assert torch.equal(a, b), (key, name)
    assert_matches_reference(mode, args, False, F32)


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.parametrize("split", [2, 4, 8, 0])
@pytest.mark.parametrize("mode", MODES)
def test_split_rows_match_float64_and_do_not_depend_on_staging_on_cuda(mode, split):
    """A row's entries split across a warp's lanes (S at a time; 0: the rule, here S = 8 forward):
    the float64 reference, at B = 20 (a tile partly filled) and 35 (two tiles); the same bits run
    twice and with W_hh staged whole, in part, or not at all."""
    from sparse_engine import _C
    old_split = _C._set_sequence_split(split)
    try:
        for B in (20, 35):
            args = case(mode, 300, B, 4, F32, "cuda", seed=17 + B, density=0.5, empty_rows=7, gain=1.0)
            assert_matches_reference(mode, args, B == 35, F32)
            W, gx, h0, c0, b_hh, dy, dh, dc = args
            runs = []
            for cap in (-1, -1, 0, 3000):
                old = _C._set_sequence_stage_bytes(cap)
                try:
                    fwd, bwd = run_op(mode, W, gx, h0, c0, b_hh, False, dy, dh, dc)
                finally:
                    _C._set_sequence_stage_bytes(old)
                runs.append([t.cpu() for t in fwd + bwd])
            for other in runs[1:]:
                for name, a, b in zip(NAMES, runs[0], other):
                    assert torch.equal(a, b), (B, name)
    finally:
        _C._set_sequence_split(old_split)


def test_split_setting_refuses_other_values_on_cuda_builds():
    _C = pytest.importorskip("sparse_engine._C")
    if not hasattr(_C, "_set_sequence_split"):
        pytest.skip("a build without the CUDA kernels")
    with pytest.raises(ValueError, match="split must be 0, 1, 2, 4 or 8, got 3"):
        _C._set_sequence_split(3)


# ------------------------------------------------------------ the CUDA kernels on the emulator
@pytest.mark.slow
def test_persistent_kernels_match_float64_references_on_the_emulator(seq_driver_runs):
    for proc in seq_driver_runs.values():
        lines = assert_passed(proc)
        for mode in MODES:  # every mode, both dtypes, both directions, with and without dy
            for prefix in ("f32", "f64"):
                assert any(line.startswith(f"{prefix} {mode} ") for line in lines), (prefix, mode)
            assert any(line.startswith(f"f32 {mode} ") and "reverse" in line for line in lines), mode
            assert any(line.startswith(f"f32 {mode} ") and "(no dy)" in line for line in lines), mode
        assert any(" B=67 " in line for line in lines)  # three batch tiles of 32 lanes
        assert any(" H=1 " in line for line in lines) and any(" T=1 " in line for line in lines)
        assert_every_kernel_ran(proc, ["rnn_sequence_cuda"])
    assert_orders_vary_and_outputs_do_not(seq_driver_runs)
