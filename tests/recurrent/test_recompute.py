"""Recomputed recurrence (``recompute_every=k``): the forward keeps the state every k steps, the
backward recomputes each segment from it. Checked: outputs and every gradient identical bit for
bit to the run that keeps every step (each cell, both schedules, fused and composed, reverse and
stacked layers, every k from 1 past T), what is kept (exactly the states every k steps), the peak
memory of a large step, gradcheck, training with topology updates, autocast and low precision,
torch.compile, and the argument checks."""
import pytest
import torch

import sparse_engine as se
from sparse_engine.kernels.constants import GATES
from sparse_engine.recurrent import recompute, sequence
from sparse_engine.recurrent.cell_steps import CELLS
from sparse_engine.recurrent.recompute import recomputes, step_tensors
from sparse_engine.recurrent.sequence import Config, Recurrence
from sparse_engine.testing import assert_bit_equal, num_threads, peak_rss_growth, random_weight

CLASSES = {"LSTM": se.nn.SparseLSTM, "GRU": se.nn.SparseGRU, "RNN_TANH": se.nn.SparseRNN,
           "RNN_RELU": se.nn.SparseRNN, "CTRNN": se.nn.SparseCTRNN}


def build(mode, seed=0, **kw):
    torch.manual_seed(seed)
    cls = CLASSES[mode]
    if mode == "CTRNN":
        return cls(4, 9, density=0.4, unfolds=3, **kw)
    extra = {"nonlinearity": "relu"} if mode == "RNN_RELU" else {}
    return cls(4, 9, density=0.4, compute="sparse", **extra, **kw)


def outputs_and_grads(m, x, k, loss="all"):
    """(output, h_n, [c_n], x.grad, every parameter's grad) of one forward and backward with
    ``recompute_every=k``; ``loss``: read every output ("all") or the final states only ("final")."""
    m.recompute_every = k
    m.zero_grad()
    x = x.detach().clone().requires_grad_()
    out, h = m(x)
    states = list(h) if isinstance(h, tuple) else [h]
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)
    total = sum((s * s.flip(-1)).sum() for s in states)
    if loss == "all":
        total = total + (out * w).sum()
    total.backward()
    return [out.detach(), *[s.detach() for s in states], x.grad] + [p.grad for p in m.parameters()]


@pytest.mark.parametrize("mode", list(CLASSES))
@pytest.mark.parametrize("schedule", ["stacked", "per-step"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "composed"])
def test_bit_identical_to_the_stored_run(mode, schedule, fused, monkeypatch):
    if schedule == "per-step":
        monkeypatch.setattr(sequence, "STACK_BYTES", 0)
    kw = {} if mode == "CTRNN" else dict(num_layers=2, bidirectional=True)
    m = build(mode, fused=fused, **kw)
    torch.manual_seed(1)
    for T in (1, 7):
        x = torch.randn(T, 3, 4)
        ref = outputs_and_grads(m, x, None)
        for k in (1, 2, 3, 6, 7, 50):
            assert_bit_equal(outputs_and_grads(m, x, k), ref, f"T={T} k={k}")


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_bit_identical_when_only_the_final_state_is_read(mode):
    """The output Y unread: the backward starts from dh_T (and dc_T) alone."""
    m = build(mode)
    x = torch.randn(9, 1, 4, generator=torch.Generator().manual_seed(2))
    assert_bit_equal(outputs_and_grads(m, x, 4, loss="final"), outputs_and_grads(m, x, None, loss="final"))


def test_batch_first_and_unbatched_input():
    m = build("LSTM", batch_first=True)
    g = torch.Generator().manual_seed(3)
    for x in (torch.randn(2, 6, 4, generator=g), torch.randn(6, 4, generator=g)):
        assert_bit_equal(outputs_and_grads(m, x, 2), outputs_and_grads(m, x, None))


def test_growth_by_gradient_factors_are_the_stored_runs():
    """A run recording RigL's gradient factors stacks every step's (G, X) either way: the same factors."""
    m = build("LSTM")
    x = torch.randn(8, 3, 4, generator=torch.Generator().manual_seed(4))
    got = []
    for k in (None, 3):
        m.record_grad_factors = True
        outputs_and_grads(m, x, k)
        got.append([t.clone() for name in ("weight_ih_l0", "weight_hh_l0") for t in m.dense_grad_factors(name)])
    assert_bit_equal(got[0], got[1])


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "CTRNN"])
@pytest.mark.parametrize("k", [1, 2])
def test_gradcheck(mode, k, rng, monkeypatch):
    """Float64 gradients of the recomputed Function against finite differences, per-step schedule."""
    monkeypatch.setattr(sequence, "STACK_BYTES", 0)
    I, H, B, T = 3, 4, 2, 3
    G = GATES[mode] * H
    W_ih, W_hh = (random_weight(G, n, 0.6, empty_rows=1, generator=rng) for n in (I, H))
    cfg = Config(mode, H, B, T, False, W_ih.index, W_hh.index, dt=0.2, tau=0.6, unfolds=2, recompute_every=k)
    rnd = lambda *shape: torch.randn(*shape, generator=rng, dtype=torch.float64)  # noqa: E731
    args = [rnd(T, I, B), rnd(H, B), rnd(H, B) if mode == "LSTM" else None, W_ih.values.detach().clone(),
            W_hh.values.detach().clone(), rnd(G), None if mode == "CTRNN" else rnd(G)]
    for a in args:
        if a is not None:
            a.requires_grad_(True)

    def f(*a):
        y, h, c = Recurrence.apply(cfg, *a)
        return (y, h, c) if mode == "LSTM" else (y, h)

    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "CTRNN"])
@pytest.mark.parametrize("schedule", ["stacked", "per-step"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_only_the_states_every_k_steps_are_kept(mode, schedule, k, rng, monkeypatch):
    """Besides its inputs and weights the recomputed run saves the state h (and c) after every
    k-th step (not the last: that is h_T), the summed bias and, stacked, the input part of all
    steps; no output Y, no activations (the last segment's, kept for its backward, are not saved
    tensors: test_the_last_segment_is_not_run_again)."""
    if schedule == "per-step":
        monkeypatch.setattr(sequence, "STACK_BYTES", 0)
    I, H, B, T = 5, 7, 3, 7
    U = 2 if mode == "CTRNN" else 1
    G = GATES[mode]
    W_ih, W_hh = (random_weight(G * H, n, 0.5, generator=rng) for n in (I, H))
    cfg = Config(mode, H, B, T, False, W_ih.index, W_hh.index, unfolds=U, recompute_every=k)
    rnd = lambda *shape: torch.randn(*shape, generator=rng, dtype=torch.float64)  # noqa: E731
    x, h0 = rnd(T, I, B).requires_grad_(), rnd(H, B)
    c0 = rnd(H, B) if mode == "LSTM" else None
    w_ih, w_hh = (W.values.detach().clone().requires_grad_() for W in (W_ih, W_hh))
    b_ih, b_hh = rnd(G * H), (None if mode == "CTRNN" else rnd(G * H))
    y, h, c = Recurrence.apply(cfg, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    given = {t.untyped_storage().data_ptr() for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh) if t is not None}
    kept = sorted(t.untyped_storage().nbytes() for t in y.grad_fn.saved_tensors
                  if t is not None and t.untyped_storage().data_ptr() not in given)
    HB, S = H * B * 8, T * U
    states = (S - 1) // k  # after steps k, 2k, ... below S
    expected = [HB] * states * (2 if mode == "LSTM" else 1)
    if mode not in ("GRU", "CTRNN"):  # GRU keeps b_hh apart (its n gate); CT-RNN has one bias
        expected.append(G * H * 8)  # b_ih + b_hh
    if schedule == "stacked":
        expected.append(G * H * T * B * 8)
    assert kept == sorted(expected)
    assert recomputes(cfg, CELLS[mode]) == k


def _function_run(mode, T, k, rng):
    """The inputs of one Recurrence.apply (float64, per-step schedule) and a loss of its outputs."""
    I, H, B = 3, 5, 2
    G = GATES[mode] * H
    W_ih, W_hh = (random_weight(G, n, 0.5, generator=rng) for n in (I, H))
    cfg = Config(mode, H, B, T, True, W_ih.index, W_hh.index, recompute_every=k)
    rnd = lambda *shape: torch.randn(*shape, generator=rng, dtype=torch.float64)  # noqa: E731
    args = [rnd(T, I, B), rnd(H, B), rnd(H, B) if mode == "LSTM" else None, W_ih.values.detach().clone(),
            W_hh.values.detach().clone(), rnd(G), rnd(G)]
    for a in args:
        if a is not None:
            a.requires_grad_(True)
    return cfg, args, (rnd(T, H, B), rnd(H, B))


def _count_steps(monkeypatch) -> list:
    """Counts the steps every _Run runs (the forward's and the backward's recomputed ones)."""
    count, steps = [0], recompute.StepRunner.steps

    def counted(self, lo, hi, h, c):
        for out in steps(self, lo, hi, h, c):
            count[0] += 1
            yield out
    monkeypatch.setattr(recompute.StepRunner, "steps", counted)
    return count


@pytest.mark.parametrize("mode", ["LSTM", "RNN_TANH"])
@pytest.mark.parametrize("T, k", [(7, 3), (6, 3), (5, 4)])
def test_the_last_segment_is_not_run_again(mode, T, k, rng, monkeypatch):
    """The forward keeps the last segment's L steps (held apart from the saved tensors, so they go
    when its backward is done) and the backward recomputes only the S - L steps before it; a second
    backward (retain_graph) finds them gone and recomputes them: twice the first's gradients."""
    monkeypatch.setattr(sequence, "STACK_BYTES", 0)
    count = _count_steps(monkeypatch)
    cfg, args, (wy, wh) = _function_run(mode, T, k, rng)
    y, h, _ = Recurrence.apply(cfg, *args)
    L = T - (T - 1) // k * k
    assert count[0] == T and len(y.grad_fn.last_segment) == L
    loss = (y * wy).sum() + (h * wh).sum()
    loss.backward(retain_graph=True)
    assert count[0] == T + (T - L) and y.grad_fn.last_segment is None
    first = [a.grad.clone() for a in args if a is not None]
    loss.backward()
    assert count[0] == 2 * T + (T - L)
    assert_bit_equal([a.grad for a in args if a is not None], [g + g for g in first])


def test_an_output_changed_in_place_is_recomputed(monkeypatch):
    """h_T is the last segment's last state: changed in place after the forward, the backward
    recomputes the segment instead of reading it (as the stored run reads its states from Y)."""
    monkeypatch.setattr(sequence, "STACK_BYTES", 0)
    grads = []
    for k in (None, 2):
        cfg, args, (wy, wh) = _function_run("RNN_TANH", 5, k, torch.Generator().manual_seed(11))
        y, h, _ = Recurrence.apply(cfg, *args)
        h.mul_(3.0)
        ((y * wy).sum() + (h * wh).sum()).backward()
        grads.append([a.grad for a in args if a is not None])
    assert_bit_equal(grads[1], grads[0])


@pytest.mark.parametrize("k", [None, 2])
def test_nothing_is_kept_for_a_backward_under_no_grad(k, rng, monkeypatch):
    """Under torch.no_grad (an evaluation) neither run keeps states, c's, activations or the last
    segment (2-D tensors) beyond its inputs and outputs; with grad the same call keeps them. The
    outputs agree."""
    monkeypatch.setattr(sequence, "STACK_BYTES", 0)
    cfg, args, _ = _function_run("LSTM", 5, k, rng)
    kept, forward = [], Recurrence.forward

    def spy(ctx, *a):
        out = forward(ctx, *a)
        mine = {t.untyped_storage().data_ptr() for t in (*a[1:], *out) if isinstance(t, torch.Tensor)}
        kept.append([t for t in (*ctx.to_save, *step_tensors(getattr(ctx, "last_segment", None) or []))
                     if t is not None and t.dim() == 2 and t.untyped_storage().data_ptr() not in mine])
        return out
    monkeypatch.setattr(Recurrence, "forward", staticmethod(spy))
    with torch.no_grad():
        evaluated = sequence.recurrence(cfg, *args)
    trained = sequence.recurrence(cfg, *args)
    assert kept[0] == [] and len(kept[1]) > 0
    assert_bit_equal([t.detach() for t in trained], list(evaluated))


SETUP = """
    import torch
    from sparse_engine.models import SequenceModel
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SequenceModel("lstm", 8, 10, {H}, 1, 1e-4, "recurrent", "classify")
    model.rnn.recompute_every = {k}
    x, y = torch.randn({B}, {T}, 8), torch.randint(0, 10, ({B},))
    torch.nn.functional.cross_entropy(model(x[:2, :2]), y[:2]).backward()  # allocator and kernels warm
    model.zero_grad()
"""


def _peak_in_states(k) -> float:
    # every block from 128 KiB on its own mapping, given back when freed: the resident peak is the
    # peak of live tensors (glibc's heap would keep freed states of a few MB resident and reuse
    # them in another order: about 50 states more either way, measured)
    H, T, B = 10_000, 30, 32
    env = dict(OMP_NUM_THREADS="1", GLIBC_TUNABLES="glibc.malloc.mmap_threshold=131072")
    step = "torch.nn.functional.cross_entropy(model(x), y).backward()"
    grew = peak_rss_growth(SETUP.format(H=H, T=T, B=B, k=k), step, env=env)
    return grew / (H * B * 4)


def test_peak_memory_of_a_large_step_falls_to_a_segment():
    """An LSTM classifier step at hidden 10,000 (T=30, B=32), peak growth in units of one state
    (H x B floats): keeping every step holds Y, c and the 4 gates of each step (6 T = 180 states);
    with k=5, in the backward 2 states every 5 steps (12) and one segment's 6 k (30) at a time, and
    in the forward Y (30) beside the kept states; plus per-step temporaries (the backward's dG, its
    products, the kernels' scratch: measured about 20). Measured: 199 and 60."""
    stored, recomputed = _peak_in_states(None), _peak_in_states(5)
    assert 180 < stored < 230, stored
    assert 42 < recomputed < 75, recomputed


# ------------------------------------------------------------------ training
def _train(algo, k, steps=6):
    """A few Adam steps of an LSTM classifier with a topology update every 2 steps: its parameters."""
    from sparse_engine.models import SequenceModel
    from sparse_engine.training import SET, SelfishRNN

    torch.manual_seed(0)
    model = SequenceModel("lstm", 4, 3, 16, 1, 0.3, "both", "classify")
    model.rnn.compute = "sparse"
    model.rnn.recompute_every = k
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ctl = (SET(model.rnn, opt, zeta=0.3, seed=0) if algo == "set"
           else SelfishRNN(model.rnn, opt, total_steps=steps, death_rate=0.3, seed=0))
    g = torch.Generator().manual_seed(5)
    for step in range(steps):
        x, y = torch.randn(6, 8, 4, generator=g), torch.randint(0, 3, (6,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if step % 2 == 1:
            ctl.end_epoch()
    return [p.detach().clone() for p in model.parameters()] + [b.clone() for b in model.buffers()]


@pytest.mark.parametrize("algo", ["set", "selfish"])
def test_training_with_topology_updates_is_the_stored_runs(algo):
    stored = _train(algo, None)
    assert_bit_equal(_train(algo, 3), stored)
    assert not all(torch.equal(a, b) for a, b in zip(_train(algo, None, steps=2), stored))  # it trained


# ------------------------------------------------------------ precision, compile
def test_autocast_bit_identical():
    m = build("LSTM")
    x = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, ref = outputs_and_grads(m, x, 2), outputs_and_grads(m, x, None)
    assert_bit_equal(got, ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_other_parameter_dtypes_bit_identical(dtype):
    """bfloat16 values compose the step from spmm and torch's ops; float64 takes the fused ops."""
    m = build("GRU").to(dtype)
    x = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(7)).to(dtype)
    assert_bit_equal(outputs_and_grads(m, x, 2), outputs_and_grads(m, x, None))


def test_compile_matches_eager_stored():
    torch._dynamo.reset()
    m, ref = build("LSTM", 1, dtype=torch.float64), build("LSTM", 1, dtype=torch.float64)
    m.recompute_every = 2
    x = torch.randn(5, 2, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    compiled(x)[0].pow(2).sum().backward()
    ref(x)[0].pow(2).sum().backward()
    for (name, p), q in zip(m.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-12, msg=lambda s: f"{name}: {s}")


@pytest.mark.skipif(not se.kernels.HAS_CUDA_KERNELS or not torch.cuda.is_available(),
                    reason="needs a CUDA device and the CUDA kernels")
def test_cuda_bit_identical():
    m = build("LSTM", num_layers=2).cuda()
    x = torch.randn(9, 3, 4, device="cuda", generator=torch.Generator("cuda").manual_seed(9))
    assert_bit_equal(outputs_and_grads(m, x, 2), outputs_and_grads(m, x, None))


# ------------------------------------------------------------------ arguments
@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "2"])
def test_bad_recompute_every(bad):
    with pytest.raises(ValueError, match="recompute_every must be a positive int"):
        se.nn.SparseLSTM(3, 4, recompute_every=bad)
    with pytest.raises(ValueError, match="recompute_every must be a positive int"):
        se.nn.SparseCTRNN(3, 4, recompute_every=bad)
    m = se.nn.SparseGRU(3, 4, compute="sparse")
    m.recompute_every = bad
    with pytest.raises(ValueError, match="recompute_every must be a positive int"):
        m(torch.randn(2, 1, 3))


def test_refused_with_dense_compute_and_projection():
    for compute in ("dense", "persistent"):
        with pytest.raises(ValueError, match=f"recompute_every needs the per-step sparse compute path: "
                                             f"compute='{compute}'"):
            se.nn.SparseLSTM(3, 4, recompute_every=2, compute=compute)
    with pytest.raises(ValueError, match="recompute_every is not available with proj_size"):
        se.nn.SparseLSTM(3, 4, proj_size=2, recompute_every=2)


def test_keeps_auto_compute_on_the_sparse_path():
    """A small dense-ish layer that 'auto' would run dense runs sparse when recomputing."""
    m = se.nn.SparseLSTM(3, 4, density=0.9, compute="auto")
    x = torch.randn(5, 2, 3)
    with num_threads(1):  # where 'auto' goes dense at this size (compute_paths.auto_min_density)
        assert m._dense_now(x)
        m.recompute_every = 2
        assert not m._dense_now(x)
    assert "recompute_every=2" in repr(m)


def test_segments_cover_every_step_once():
    """recomputes: 0 (nothing recomputed) from k >= the run's steps, counted in CT-RNN sub-steps."""
    cells = CELLS
    assert recomputes(Config("LSTM", 4, 2, 5, recompute_every=5), cells["LSTM"]) == 0
    assert recomputes(Config("LSTM", 4, 2, 5, recompute_every=4), cells["LSTM"]) == 4
    assert recomputes(Config("CTRNN", 4, 2, 5, unfolds=3, recompute_every=14), cells["CTRNN"]) == 14
    assert recomputes(Config("CTRNN", 4, 2, 5, unfolds=3, recompute_every=15), cells["CTRNN"]) == 0
    assert recomputes(Config("GRU", 4, 2, 5), cells["GRU"]) == 0


# ------------------------------------------------------------- final state only
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
@pytest.mark.parametrize("k", [None, 2])
def test_final_state_is_forwards_without_the_output(mode, k):
    """``final_state`` gives forward's final states and the same gradients (two layers, both
    directions), and a recomputed run then makes no output sequence at all."""
    m = build(mode, num_layers=2, bidirectional=True, recompute_every=k)
    g = torch.Generator().manual_seed(10)
    x = torch.randn(7, 3, 4, generator=g)
    w = torch.randn(4, 3, 9, generator=g)

    def run(final):
        m.zero_grad()
        xx = x.clone().requires_grad_()
        h = m.final_state(xx) if final else m(xx)[1]
        states = list(h) if isinstance(h, tuple) else [h]
        sum((s * w).sum() for s in states).backward()
        return [s.detach() for s in states] + [xx.grad] + [p.grad for p in m.parameters()]

    assert_bit_equal(run(True), run(False))
    made = []
    real = torch.Tensor.new_empty
    T, H, B = 7, 9, 3

    def spy(t, *size, **kw):
        made.append(tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size)
        return real(t, *size, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.Tensor, "new_empty", spy)
        m.final_state(x)
    # the first layer's outputs feed the second (both directions); the second makes none when recomputing
    assert made.count((T, H, B)) == (2 if k else 4)
