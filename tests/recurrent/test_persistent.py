"""compute="persistent": each layer-direction's whole sequence in one op each way
(sparse_engine/recurrent/persistent.py; the ops are tests/ops/test_rnn_sequence.py's). On the CPU the
op is the fused step ops in a loop, so the modules give the per-step sparse path's bits (a reverse
direction's W_hh and b_hh gradients add the steps' columns in another order: close, not equal);
where the ops do not apply the run takes the per-step path; the choice is a compute setting like the
others; gradcheck, growth by gradient and torch.compile go through it."""
from __future__ import annotations

import pytest
import torch

import sparse_engine as se
from sparse_engine.recurrent import compute_paths, persistent, sequence
from sparse_engine.recurrent.config import Config
from sparse_engine.testing import num_threads

MODULES = [se.nn.SparseLSTM, se.nn.SparseGRU, se.nn.SparseRNN]


def build(cls, seed, **kw):
    torch.manual_seed(seed)
    kw.setdefault("density", 0.5)
    kw.setdefault("dtype", torch.float64)
    return cls(5, 7, **kw)


def forward_backward(m, x, compute, hx=None):
    """Outputs and every gradient (input's, parameters') of one forward and backward."""
    m.compute = compute
    m.zero_grad()
    x = x.detach().requires_grad_()
    y, h = m(x, hx)
    hs = h if isinstance(h, tuple) else (h,)
    g = torch.Generator().manual_seed(5)
    (y * torch.randn(y.shape, generator=g, dtype=y.dtype).to(y.device)).sum().backward(retain_graph=True)
    sum(s.sum() for s in hs).backward()
    return {"y": y.detach(), **{f"h{k}": s.detach() for k, s in enumerate(hs)}, "x": x.grad,
            **{n: p.grad for n, p in m.named_parameters()}}


@pytest.fixture
def op_calls(monkeypatch):
    """The runs that took the sequence op (a list, one entry per layer-direction)."""
    calls, real = [], persistent.forward

    def counted(cfg, *args):
        calls.append(cfg)
        return real(cfg, *args)

    monkeypatch.setattr(persistent, "forward", counted)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_same_bits_as_the_per_step_path_on_the_cpu(cls, dtype, op_calls, rng):
    m = build(cls, 1, num_layers=2, bidirectional=True, dtype=dtype)
    x = torch.randn(6, 3, 5, generator=rng, dtype=dtype)
    want = forward_backward(m, x, "sparse")
    assert not op_calls
    got = forward_backward(m, x, "persistent")
    assert len(op_calls) == 4  # 2 layers x 2 directions
    for name in want:
        if "reverse" in name and ("weight_hh" in name or "bias_hh" in name):
            torch.testing.assert_close(got[name], want[name], msg=lambda s: f"{name}: {s}")
        else:
            assert torch.equal(got[name], want[name]), name


@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_initial_state_batch_first_and_final_state(cls, op_calls, rng):
    m = build(cls, 2, batch_first=True)
    x = torch.randn(3, 4, 5, generator=rng, dtype=torch.float64)  # (B, T, I)
    h0 = torch.randn(1, 3, 7, generator=rng, dtype=torch.float64)
    hx = (h0, torch.randn(1, 3, 7, generator=rng, dtype=torch.float64)) if cls is se.nn.SparseLSTM else h0
    want, got = forward_backward(m, x, "sparse", hx), forward_backward(m, x, "persistent", hx)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    m.compute = "persistent"
    final = m.final_state(x, hx)
    assert torch.equal(final[0] if isinstance(final, tuple) else final, got["h0"])
    assert op_calls and not op_calls[-1].output  # final_state asked for no output sequence


def test_gradcheck_through_the_module():
    m = build(se.nn.SparseGRU, 3, bidirectional=True)
    m.compute = "persistent"
    x = torch.randn(4, 2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    params = [p for p in m.parameters()]
    assert torch.autograd.gradcheck(lambda x, *p: m(x)[0], (x, *params))


def test_growth_by_gradient_factors_are_the_same(rng):
    m = build(se.nn.SparseLSTM, 4)
    x = torch.randn(5, 2, 5, generator=rng, dtype=torch.float64)
    m.record_grad_factors = True
    factors = {}
    for compute in ("sparse", "persistent"):
        forward_backward(m, x, compute)
        factors[compute] = [m.dense_grad_factors(n) for n in ("weight_ih_l0", "weight_hh_l0")]
    for (g1, x1), (g2, x2) in zip(factors["sparse"], factors["persistent"]):
        assert torch.equal(g1, g2) and torch.equal(x1, x2)


def test_where_it_does_not_apply_the_run_is_per_step(op_calls, rng):
    """A dense W_hh, float16 values, a CT-RNN, recomputation, the composed steps (fused=False):
    the per-step path, same results as compute='sparse'."""
    x = torch.randn(4, 2, 5, generator=rng, dtype=torch.float64)
    for m in (build(se.nn.SparseLSTM, 5, sparse="input"), build(se.nn.SparseGRU, 5, fused=False),
              build(se.nn.SparseCTRNN, 5)):
        want = forward_backward(m, x, "sparse")
        got = forward_backward(m, x, "persistent")
        for name in want:
            assert torch.equal(got[name], want[name]), (type(m).__name__, name)
    m = build(se.nn.SparseRNN, 5)
    m.compute, m.recompute_every = "persistent", 2  # set after construction (the constructor refuses it)
    m(x)
    m = build(se.nn.SparseRNN, 5, dtype=torch.float16)
    m.compute = "persistent"
    m(x.half())
    assert not op_calls


def test_applies_only_where_the_ops_do():
    w = torch.zeros(3, dtype=torch.float32)
    idx = (torch.zeros(2, dtype=torch.int64),) * 5
    cfg = Config("LSTM", 1, 1, 3, idx_hh=idx, persistent=True)
    assert persistent.applies(cfg, w)
    assert not persistent.applies(Config("LSTM", 1, 1, 3, idx_hh=idx), w)  # not asked for
    assert not persistent.applies(Config("CTRNN", 1, 1, 3, idx_hh=idx, persistent=True), w)
    assert not persistent.applies(Config("LSTM", 1, 1, 3, persistent=True), w)  # dense W_hh
    assert not persistent.applies(Config("LSTM", 1, 1, 0, idx_hh=idx, persistent=True), w)  # no steps
    assert not persistent.applies(Config("LSTM", 1, 1, 3, idx_hh=idx, persistent=True, recompute_every=2), w)
    assert not persistent.applies(Config("LSTM", 1, 1, 3, idx_hh=idx, persistent=True, fused=False), w)
    assert not persistent.applies(cfg, w.half())


def test_a_compute_setting_like_the_others(op_calls, rng):
    assert "persistent" in compute_paths.COMPUTE_CHOICES
    x = torch.randn(3, 2, 5, generator=rng, dtype=torch.float64)
    m = build(se.nn.SparseLSTM, 6, density=0.9)  # 'auto' would take the dense path here
    with compute_paths.default_compute("persistent"):
        assert not m._dense_now(x) and compute_paths.use_persistent(None)
        m(x)
    assert len(op_calls) == 1
    assert not compute_paths.use_persistent(None)  # the default is back
    assert build(se.nn.SparseGRU, 6, compute="persistent").compute == "persistent"
    with pytest.raises(ValueError, match=r"compute must be one of \('auto', 'sparse', 'dense', 'persistent'\)"):
        build(se.nn.SparseGRU, 6, compute="persist")


def test_auto_takes_it_on_a_gpu_where_w_hh_fits_on_chip(op_calls, rng):
    """``auto``: on a GPU the persistent kernels where W_hh's values and 16-bit index (32-bit past
    65,536 columns) fill at most 90% of the chip's shared memory (here, without a GPU, an H100's:
    132 SMs x 228 KiB); on the CPU only with the run's sizes (the next test); 'persistent' always,
    'sparse' and 'dense' never."""
    room = 0.9 * 132 * 228 * 1024
    fits, over = int(room // 6), int(room // 6) + 1  # float32 values, 16-bit index: 6 bytes an entry
    by_sizes = compute_paths.persistent_by_sizes
    rows = 4096  # rows of 600+ entries: past the chip only the on-chip rule could take them (AUTO_PERSISTENT_OFF_CHIP)
    assert room // 10 > 170 * rows
    assert by_sizes("auto", fits, 4, 4096, "cuda", rows) and not by_sizes("auto", over, 4, 4096, "cuda", rows)
    assert by_sizes("auto", int(room // 8), 4, 70000, "cuda", rows)
    assert not by_sizes("auto", fits, 4, 70000, "cuda", rows)
    assert not by_sizes("auto", int(room // 10) + 1, 8, 4096, "cuda", rows)  # float64: 10 bytes an entry
    assert not by_sizes("auto", 10, 4, 4096, "cpu", rows) and not by_sizes("auto", None, 4, 4096, "cuda", rows)
    assert by_sizes("persistent", 10**12, 4, 4096, "cpu", rows)
    assert not by_sizes("sparse", 10, 4, 4096, "cuda", rows) and not by_sizes("dense", 10, 4, 4096, "cuda", rows)
    assert not by_sizes("auto", 10, 4, 4096, "mps", rows, 35, 20)
    with compute_paths.default_compute("auto"):
        assert by_sizes(None, fits, 4, 4096, torch.device("cuda", 0), rows)


def test_auto_takes_it_on_the_cpu_where_the_run_stacks_anyway(op_calls, rng):
    """``auto`` on the CPU: the sequence ops where a run of T x B columns stacks products ((G+1) x H x T x B
    values) of at most AUTO_PERSISTENT_CPU_BYTES (sequence.STACK_BYTES: the per-step run stacks them too, the
    sequence ops keep what it keeps), on one thread up to AUTO_PERSISTENT_CPU_HIDDEN_ONE_THREAD (4,096)
    units, per step above it, at one step, without the sizes; without a backward to follow only up to
    AUTO_PERSISTENT_CPU_INFERENCE_BATCH (4) columns, from one step; the module gives the per-step path's bits."""
    by_sizes = compute_paths.persistent_by_sizes
    assert compute_paths.AUTO_PERSISTENT_CPU_BYTES == sequence.STACK_BYTES
    H, G = 4096, 4
    cols = compute_paths.AUTO_PERSISTENT_CPU_BYTES // (4 * (G + 1) * H)  # float32 columns (T x B) that just fit
    for threads in (1, 2):
        with num_threads(threads):
            assert by_sizes("auto", 10, 4, H, "cpu", G * H, cols, 1)
            assert by_sizes("auto", 10, 4, H, "cpu", G * H, 2, cols // 2)
            assert not by_sizes("auto", 10, 4, H, "cpu", G * H, 1, 8)  # one step: per step (nothing to fuse)
            assert not by_sizes("auto", 10, 4, H, "cpu", G * H, cols + 1, 1)
            assert not by_sizes("auto", 10, 8, H, "cpu", G * H, cols, 1)  # float64: twice the bytes
            assert by_sizes("auto", 10, 4, 1000, "cpu", 4 * 1000, 35, 128)  # 90 MB: measured faster on both
            assert not by_sizes("auto", 10, 4, 1500, "cpu", 4 * 1500, 35, 128)  # 134 MB: per step, not stacked
    with num_threads(2):
        assert by_sizes("auto", 10, 4, 8192, "cpu", 4 * 8192, 35, 20)  # 115 MB: measured faster on two threads
    with num_threads(1):
        assert not by_sizes("auto", 10, 4, 8192, "cpu", 4 * 8192, 35, 20)  # and slower on one
        assert not by_sizes("auto", 10, 4, H + 1, "cpu", G * (H + 1), 2, 1)
    assert not by_sizes("auto", 10, 4, H, "cpu", G * H) and not by_sizes("auto", None, 4, H, "cpu", G * H, 3, 2)
    assert by_sizes("auto", 10, 4, H, "cpu", G * H, 1, 4, backward=False)  # inference: narrow batches, any length
    assert not by_sizes("auto", 10, 4, H, "cpu", G * H, 3, 5, backward=False)  # wider: per step
    assert by_sizes("persistent", 10, 4, H, "cpu", G * H, 3, 2, backward=False)
    assert not by_sizes("sparse", 10, 4, H, "cpu", G * H, 3, 2) and not by_sizes("dense", 10, 4, H, "cpu", G * H, 3, 2)
    x = torch.randn(6, 3, 5, generator=rng, dtype=torch.float64)
    compute_paths.set_dense_budget(0)  # so that auto is not dense at this size
    try:
        for cls in MODULES:
            m = build(cls, 2, density=0.2, num_layers=2)
            want = forward_backward(m, x, "sparse")
            assert not op_calls
            got = forward_backward(m, x, "auto")
            assert len(op_calls) == 2, cls  # both layers
            for k in want:
                assert torch.equal(got[k], want[k]), (cls.__name__, k)
            op_calls.clear()
            with torch.no_grad():  # no backward to follow: the sequence ops at 3 columns, per step at 5
                assert torch.equal(m(x)[0], want["y"])
                assert len(op_calls) == 2
                wide = torch.cat([x, x[:, :2]], 1)
                assert torch.equal(m(wide)[0][:, :3], want["y"])
            assert len(op_calls) == 2
            op_calls.clear()
    finally:
        compute_paths.set_dense_budget(None)


def test_auto_takes_it_past_the_chip_only_where_measured():
    """Past the chip's shared memory ``auto`` keeps the persistent kernels for rows of at most 170
    nonzeros on average up to 16,384 units (measured to win there), and goes per step for longer rows or
    larger layers."""
    by_sizes = compute_paths.persistent_by_sizes
    room = 0.9 * 132 * 228 * 1024
    for H, G in ((16384, 4), (16384, 3), (8192, 4)):
        rows = G * H
        short, long_ = 170 * rows, 170 * rows + 1
        assert short * 6 > room  # past the chip
        assert by_sizes("auto", short, 4, H, "cuda", rows) and not by_sizes("auto", long_, 4, H, "cuda", rows)
    assert not by_sizes("auto", 64 * 4 * 32768, 4, 32768, "cuda", 4 * 32768)  # short rows past the chip, a larger layer
    assert not by_sizes("auto", 32 * 4 * 2**20, 4, 2**20, "cuda", 4 * 2**20)
    assert not by_sizes("auto", 170 * 4 * 16384, 4, 16384, "cpu", 4 * 16384)


def test_auto_rule_picks_the_faster_path_in_the_measured_tables():
    """Every H200 table with the per-step path beside the persistent one (T=35, B=20: the first run's
    benchmarks/results/rnn_gpu_persistent.md, where ours ran per step on every cell, and the later runs'
    16,384-unit rows, where auto ran it): where the rule takes the persistent kernels they were not
    slower than the per-step path, and every cell where they were slower is one the rule leaves per step.
    The sixth run's table (gpu_h200_2026-11-28/) is left out: its 'ours' column named the per-step path
    where auto had run the persistent kernels (test_the_path_named_is_the_one_that_runs, since)."""
    import pathlib
    results = pathlib.Path(__file__).parents[2] / "benchmarks" / "results"
    tables = [results / "rnn_gpu_persistent.md"] + [t for t in sorted(results.glob("gpu_h200_*/rnn_gpu_persistent.md"))
                                                    if t.parent.name != "gpu_h200_2026-11-28"]
    cells = []
    for path in tables:
        for line in path.read_text().splitlines():
            cols = [c.strip() for c in line.strip("|").split("|")]
            if len(cols) > 5 and cols[0] in ("LSTM", "GRU") and cols[3].endswith("(fused)"):
                hidden, density, G = int(cols[1].replace(",", "")), float(cols[2]), {"LSTM": 4, "GRU": 3}[cols[0]]
                per_step, one_op = float(cols[3].split()[0]), float(cols[4].split()[0])
                nnz = round(G * hidden * hidden * density)
                cells.append((path.parent.name, cols[0], hidden, density, per_step, one_op,
                              compute_paths.persistent_by_sizes("auto", nnz, 4, hidden, "cuda", G * hidden)))
    assert len(tables) >= 3 and len(cells) >= 16 and sum(c[-1] for c in cells) >= 14, cells
    assert sum(c[-1] and c[2] == 16384 for c in cells) >= 6  # the rows past the chip, every run
    for run, mode, hidden, density, per_step, one_op, chosen in cells:
        if chosen:
            assert one_op <= per_step, (run, mode, hidden, density)
        if one_op > per_step:
            assert not chosen, (run, mode, hidden, density)


def test_compiled_matches_eager(rng):
    torch._dynamo.reset()
    m, ref = build(se.nn.SparseLSTM, 7, compute="persistent"), build(se.nn.SparseLSTM, 7, compute="persistent")
    x = torch.randn(4, 2, 5, generator=rng, dtype=torch.float64)
    y = torch.compile(m, fullgraph=True, backend="aot_eager")(x)[0]
    y.pow(2).sum().backward()
    y_ref = ref(x)[0]
    y_ref.pow(2).sum().backward()
    assert torch.equal(y, y_ref)
    for p, q in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_on_cuda_like_the_per_step_path_and_deterministic(cls, rng):
    """The persistent kernels through the modules (two layers, both directions, several blocks of
    units, two batch tiles): the per-step path's results up to the order of each sum, and the
    same bits run after run."""
    if not (torch.cuda.is_available() and se.kernels.HAS_CUDA_KERNELS):
        pytest.skip("needs a CUDA device and the CUDA kernels")
    torch.manual_seed(8)
    m = cls(40, 300, num_layers=2, bidirectional=True, density=0.05).cuda()
    x = torch.randn(7, 35, 40, generator=rng).cuda()
    want = forward_backward(m, x, "sparse")
    got = forward_backward(m, x, "persistent")
    again = forward_backward(m, x, "persistent")
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=lambda s: f"{name}: {s}")
        assert torch.equal(got[name], again[name]), name


@pytest.mark.cuda
def test_auto_takes_the_persistent_kernels_on_cuda(op_calls, rng):
    """A small W_hh on a GPU: ``auto`` runs each layer-direction in one op each way."""
    if not (torch.cuda.is_available() and se.kernels.HAS_CUDA_KERNELS):
        pytest.skip("needs a CUDA device and the CUDA kernels")
    torch.manual_seed(8)
    m = se.nn.SparseGRU(40, 300, num_layers=2, density=0.02, compute="auto").cuda()  # under auto's dense 5%
    m(torch.randn(7, 5, 40, generator=rng).cuda())
    assert len(op_calls) == 2
