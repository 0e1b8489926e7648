"""sparse_engine.memory: the predicted peak of a training step against the one measured.

The measure is torch's own allocator seen through the profiler's allocation events
(``sparse_engine.testing.TensorMemoryTrace``: every CPU tensor, the kernels' temporaries
included, a free matched to its allocation by address), so it does not depend on glibc's malloc.
Each case builds its module inside the trace, runs a warm-up step (the transposed index and the
optimizer state are made by the first step) and measures the second, phase by phase. The model
replays the allocations and lands within 2.5% on all of these; the bound is the issue's 15%.
``test_a_wrong_prediction_fails`` shows the check can fail."""
import types

import pytest
import torch
from torch import nn

import sparse_engine.recurrent.sequence as recurrence
from sparse_engine import SparseWeight, ops
from sparse_engine.models import SequenceModel
from sparse_engine.nn import SparseGRU, SparseLSTM, SparseRNN
from sparse_engine.recurrent.compute_paths import default_compute
from sparse_engine.memory import (KINDS, PHASES, MemoryBudgetError, RecurrentSizes, format_size, parse_size,
                                     predict, recompute_for_budget, sizes_of)
from sparse_engine.memory.recurrence_replay import Run
from sparse_engine.runs.train_run import sequence_loss
from sparse_engine.testing import TensorMemoryTrace, num_threads
from sparse_engine.training import CompactAdam

TOLERANCE = 0.15
CELLS = {"lstm": SparseLSTM, "gru": SparseGRU, "rnn": SparseRNN}
SEED = 0


def optimizer_of(kind: str, params):
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-3)
    if kind == "adam-bf16":
        return CompactAdam(params, lr=1e-3)
    return torch.optim.SGD(params, lr=0.1, momentum=0.9 if kind == "sgd-momentum" else 0.0)


def traced_steps(build, batch_of, loss_of, optimizer: str) -> tuple[dict, nn.Module]:
    """The peak of each phase of a model's second training step (bytes of tensors made in the trace).
    ``loss_of(model, *batch)``: (loss, what the caller holds until the step ends)."""
    data = torch.Generator().manual_seed(SEED)
    with TensorMemoryTrace() as trace:
        torch.manual_seed(SEED)
        model = build()
        opt = optimizer_of(optimizer, model.parameters())
        for tag in ("warm-", ""):
            opt.zero_grad()
            with trace.phase(tag + "forward"):
                inputs = batch_of(data)
                loss, held = loss_of(model, *inputs)
            with trace.phase(tag + "backward"):
                loss.backward()
            with trace.phase(tag + "optimizer"):
                opt.step()
            del inputs, loss, held
    return {phase: trace.peak(phase) for phase in PHASES}, model


def module_step(cell, hidden, steps, batch, optimizer, input_size=16, dtype=torch.float32, compute="sparse", **kwargs):
    """A bare module's step as the model defines it: (T, B, I) input, the output's sum as the loss,
    the output held through the step."""
    def loss_of(model, x):
        out = model(x)[0]
        return out.sum(), out

    return traced_steps(lambda: CELLS[cell](input_size, hidden, compute=compute, dtype=dtype, **kwargs),
                        lambda g: (torch.randn(steps, batch, input_size, generator=g, dtype=dtype),), loss_of,
                        optimizer)


def assert_close(predicted, measured: dict, what: str = "") -> None:
    """Each phase's predicted peak within TOLERANCE of the measured one."""
    for phase in PHASES:
        got, want = predicted.phases[phase], measured[phase]
        assert abs(got / want - 1) <= TOLERANCE, (f"{what} {phase}: predicted {format_size(got)}, measured "
                                                  f"{format_size(want)} ({got / want - 1:+.1%})")
    assert predicted.peak == max(predicted.phases.values())


# every cell, stored and recomputed, both sparse settings, Adam and SGD (with and without momentum)
CASES = [
    ("lstm", None, "both", "adam"), ("lstm", None, "recurrent", "sgd"),
    ("lstm", 4, "both", "sgd-momentum"), ("lstm", 3, "recurrent", "adam"),
    ("gru", None, "both", "sgd"), ("gru", None, "recurrent", "adam"),
    ("gru", 4, "both", "adam"), ("gru", 5, "recurrent", "sgd"),
    ("rnn", None, "both", "adam"), ("rnn", None, "recurrent", "sgd-momentum"),
    ("rnn", 4, "both", "sgd"), ("rnn", 2, "recurrent", "adam"),
    ("lstm", None, "both", "adam-bf16"), ("gru", 4, "recurrent", "adam-bf16"),
]


@pytest.mark.parametrize("per_step", [False, True], ids=["stacked", "per-step"])
@pytest.mark.parametrize("cell, k, sparse, optimizer", CASES, ids=lambda v: str(v))
def test_prediction_matches_the_measured_peak(cell, k, sparse, optimizer, per_step, monkeypatch):
    """Small runs take the stacked products (recurrence.STACK_BYTES); with the bound at 0 the same
    sizes take the per-step schedule of large runs, which the model reads from the same rule."""
    if per_step:
        monkeypatch.setattr(recurrence, "STACK_BYTES", 0)
    measured, model = module_step(cell, 300, 14, 8, optimizer, sparse=sparse, density=0.05, recompute_every=k)
    predicted = predict(model, 14, 8, optimizer)
    assert predicted.stacked == (not per_step,)
    assert predicted.recompute_every == k
    assert_close(predicted, measured, f"{cell} k={k} {sparse} {optimizer}")


@pytest.mark.parametrize("per_step", [False, True], ids=["stacked", "per-step"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_prediction_with_bfloat16_saved_activations(cell, per_step, monkeypatch):
    """saved_dtype=bfloat16: the kept c's and activations at half the bytes, beside each step's own
    in float32 and the backward's copies back (measured within 1.6% stacked, 4.1% per step, over)."""
    if per_step:
        monkeypatch.setattr(recurrence, "STACK_BYTES", 0)
    measured, model = module_step(cell, 300, 14, 8, "adam", density=0.05, saved_dtype=torch.bfloat16)
    predicted = predict(model, 14, 8, "adam")
    assert_close(predicted, measured, f"{cell} saved bfloat16")
    wide = predict(model, 14, 8, "adam", saved_dtype=None)
    assert predicted.activations < wide.activations  # the model knows the option


@pytest.mark.parametrize("kwargs", [{}, dict(num_layers=2, bidirectional=True)], ids=["one", "2-layers-bidi"])
@pytest.mark.parametrize("batch", [8, 1])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_prediction_for_the_persistent_path(cell, batch, kwargs):
    """compute='persistent' (on the CPU the sequence ops loop over the fused steps; on a GPU
    ``auto`` takes it where W_hh fits on chip): the model replays the sequence ops' buffers."""
    measured, model = module_step(cell, 300, 14, batch, "adam", density=0.05, compute="persistent", **kwargs)
    predicted = predict(model, 14, batch, "adam")
    assert_close(predicted, measured, f"{cell} B={batch} {kwargs}")


def test_the_model_follows_auto_to_the_persistent_path():
    """The replay takes the persistent path where the module would: compute='auto' on a GPU with
    W_hh on chip (not at a million units, not when recomputing), on the CPU where the run's stacked
    products are small (AUTO_PERSISTENT_CPU_BYTES: 2,000 units x 5 x 20 x 8 columns fit, x 200 do not)."""
    from sparse_engine.memory.step_replay import runs_of

    def persistent(batch=8, **kw):
        s = RecurrentSizes.build("lstm", 16, kw.pop("hidden", 2000), density=kw.pop("density", 0.01), **kw)
        return [r.persistent for r in runs_of(s, 20, batch, s.recompute_every)]

    assert persistent(compute="auto", device="cuda") == [True]
    assert persistent(compute="auto", device="cuda", layers=2, bidirectional=True) == [True] * 4
    assert persistent(compute="auto", device="cpu") == [True]
    assert persistent(compute="auto", device="cpu", batch=200) == [False]
    assert persistent(compute="auto", device="cpu", recompute_every=4) == [False]
    assert persistent(compute="sparse", device="cuda") == [False]
    assert persistent(compute="auto", device="cuda", recompute_every=4) == [False]
    assert persistent(compute="auto", device="cuda", hidden=2**20, density=32 / 2**20) == [False]
    assert persistent(compute="persistent", device="cpu") == [True]


@pytest.mark.parametrize("kwargs", [
    dict(num_layers=2, bidirectional=True, recompute_every=3),
    dict(num_layers=3, dropout=0.3),
    dict(num_layers=2, dropout=0.3, recompute_every=4),
    dict(fused=False, recompute_every=5),
    dict(dtype=torch.float64),
    dict(dtype=torch.bfloat16),  # 2-byte values: the kernels pad the batch of 6 to 8 (gather.h pad_unit)
], ids=lambda v: ",".join(f"{k}={v}" for k, v in v.items()))
def test_prediction_for_stacks_and_settings(kwargs):
    measured, model = module_step("lstm", 200, 12, 6, "adam", density=0.05, **kwargs)
    assert_close(predict(model, 12, 6, "adam"), measured, str(kwargs))


@pytest.mark.parametrize("model, kind, vocab, readout, k", [
    ("lstm", "classify", None, None, None), ("lstm", "classify", 300, None, 3),
    ("gru", "regress", None, None, 4), ("rnn", "classify", None, "steps", None),
    ("ctrnn", "classify", None, None, 5),
])
def test_prediction_for_the_command_lines_model(model, kind, vocab, readout, k):
    """SequenceModel as sparse-engine train builds and steps it (cross-entropy or MSE)."""
    T, B, n_in, n_out = 10, 8, 12, 4
    steps = (readout or ("last" if kind == "classify" else "steps")) == "steps"

    def batch_of(g):
        x = torch.randint(1, vocab, (B, T), generator=g) if vocab else torch.randn(B, T, n_in, generator=g)
        if kind == "classify":
            return x, torch.randint(n_out, (B, T) if steps else (B,), generator=g)
        return x, torch.randn(B, T, n_out, generator=g)

    loss = sequence_loss if kind == "classify" else nn.functional.mse_loss
    with default_compute("sparse"):
        measured, seq = traced_steps(
            lambda: SequenceModel(model, n_in, n_out, 250, 1, 0.05, "both", kind, vocab, readout, recompute_every=k),
            batch_of, lambda m, x, y: (loss(m(x), y), None), "adam")
        predicted = predict(seq, T, B, "adam")
    assert sizes_of(seq).head is not None
    assert_close(predicted, measured, f"SequenceModel {model} {kind} vocab={vocab} readout={readout} k={k}")


def test_a_wrong_prediction_fails():
    """The check is not loose: the prediction for half the sequence (or without the recomputation
    the module does) is refused against the same measurement."""
    measured, model = module_step("lstm", 300, 14, 8, "adam", density=0.05)
    assert_close(predict(model, 14, 8, "adam"), measured)
    with pytest.raises(AssertionError, match="predicted"):
        assert_close(predict(model, 7, 8, "adam"), measured)
    measured_k, model_k = module_step("lstm", 300, 14, 8, "adam", density=0.05, recompute_every=2)
    with pytest.raises(AssertionError, match="forward"):
        assert_close(predict(model_k, 14, 8, "adam", recompute_every=None), measured_k)


def test_the_kinds_add_up_and_sizes_equal_modules():
    s = RecurrentSizes.build("lstm", 16, 300, density=0.05, sparse="recurrent", layers=2)
    torch.manual_seed(SEED)
    module = SparseLSTM(16, 300, 2, density=0.05, sparse="recurrent", compute="sparse")
    assert sizes_of(module) == s
    b = predict(s, 20, 4)
    assert b == predict(module, 20, 4)
    assert sum(getattr(b, kind) for kind in KINDS) == b.peak
    assert [kind for kind, _ in b.rows()][:-1] == list(KINDS)


def test_a_million_units_are_predicted_from_sizes_alone():
    """No allocation: the 128M-weight LSTM of issue #30 is a dataclass and a few arithmetic steps."""
    s = RecurrentSizes.build("lstm", 28, 1_000_000, row_nnz=32, sparse="recurrent")
    assert s.nnz_hh == (128_000_000,)
    b = predict(s, 35, 20)
    assert b.weights == (128_000_000 + 4_000_000 * 28 + 2 * 4_000_000) * 4
    assert 8 * 2**30 < b.peak < 64 * 2**30 and b.phase == "backward"
    # recomputation keeps O(T/k + k) steps of activations instead of T
    assert predict(s, 35, 20, recompute_every=6).activations < b.activations / 2


def test_the_budget_pick_fits_and_is_the_smallest():
    s = RecurrentSizes.build("gru", 8, 2000, density=0.01)
    T, B = 40, 16
    stored = predict(s, T, B)
    assert recompute_for_budget(s, T, B, stored.peak) == (None, stored)  # storing fits: no recomputation
    k, got = recompute_for_budget(s, T, B, stored.peak - 1)
    peaks = {j: predict(s, T, B, recompute_every=j).peak for j in range(1, T + 1)}
    assert k is not None and got.recompute_every == k
    assert got.peak == peaks[k] == min(peaks.values()) <= stored.peak - 1
    assert k == max(j for j, p in peaks.items() if p == got.peak)  # the largest k on a tie


def test_the_budget_refusal_says_what_would_fit():
    s = RecurrentSizes.build("lstm", 8, 2000, density=0.01)
    least = min(predict(s, 30, 8, recompute_every=j).peak for j in range(1, 31))
    assert recompute_for_budget(s, 30, 8, least)[1].peak == least
    with pytest.raises(MemoryBudgetError, match="does not fit even with recomputation") as err:
        recompute_for_budget(s, 30, 8, least - 1)
    assert err.value.minimum == least and format_size(least) in str(err.value)
    assert format_size(least - 1) in str(err.value)


def test_bad_arguments_name_themselves():
    s = RecurrentSizes.build("rnn", 8, 100, density=0.1)
    for call, words in [(lambda: predict(s, 0, 4), "steps"), (lambda: predict(s, 5, 4, "adagrad"), "optimizer"),
                        (lambda: predict(s, 5, 4, recompute_every=0), "recompute_every"),
                        (lambda: RecurrentSizes.build("lstm", 8, 100), "density"),
                        (lambda: recompute_for_budget(s, 5, 4, 0), "budget"),
                        (lambda: parse_size("lots"), "expected a size")]:
        with pytest.raises(ValueError, match=words):
            call()
    with pytest.raises(ValueError, match="dense path"), num_threads(1):  # small and dense: 'auto' goes dense
        predict(SparseLSTM(8, 64, density=0.5, compute="auto"), 5, 4)
    with num_threads(1):  # too few steps for the dense path (compute_paths.AUTO_MIN_STEPS: 4 at B = 4)
        assert predict(SparseLSTM(8, 64, density=0.5, compute="auto"), 3, 4).peak > 0
    assert predict(SparseLSTM(8, 64, density=0.5, compute="auto", recompute_every=2), 5, 4).peak > 0  # sparse


def test_sizes_parse_and_print():
    assert parse_size("16G") == 16 * 2**30 == parse_size("16GiB") == parse_size("16 gb")
    assert parse_size("1.5M") == 3 * 2**19 and parse_size("1000") == 1000
    assert format_size(3 * 2**29) == "1.5 GiB" and format_size(100) == "100 B"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cell, k, optimizer", [("lstm", None, "adam"), ("lstm", 4, "adam"), ("lstm", 4, "adam-bf16"),
                                                 ("gru", None, "adam"), ("gru", 3, "adam-bf16")])
def test_prediction_on_a_gpu(cell, k, optimizer):
    """CUDA: the caching allocator's own peak (512-byte blocks), foreach Adam or CompactAdam; the GRU
    with recomputation as the capped GRU rows that ran out of memory (benchmarks/results/caps_cuda.md)."""
    dev = torch.device("cuda")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()  # what earlier tests left
    torch.manual_seed(SEED)
    model = CELLS[cell](16, 2000, density=0.01, recompute_every=k, device=dev)
    opt = optimizer_of(optimizer, model.parameters())
    data = torch.Generator(device=dev).manual_seed(SEED)
    for _ in range(2):  # measured: the second step
        opt.zero_grad()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        out = model(torch.randn(20, 8, 16, device=dev, generator=data))[0]
        out.sum().backward()
        opt.step()
        del out
        torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated() - base
    predicted = predict(model, 20, 8, optimizer)
    assert abs(predicted.peak / measured - 1) <= TOLERANCE, (predicted.peak, measured)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("B", [5, 6, 21])
def test_the_replays_padded_stride_is_the_kernels(dtype, B):
    """Run.stride mirrors csrc/cpu/gather.h's padded_stride: spmm allocates its padded copy of X
    (300 x stride values; 2-byte types pad to 8 values, float64 to 4) with exactly that size."""
    g = torch.Generator().manual_seed(B)
    W = SparseWeight.random(500, 300, 0.5, dtype=dtype, generator=g)  # 250 entries per column: padded
    X = torch.randn(300, B, dtype=dtype, generator=g)
    with torch.no_grad(), torch.profiler.profile(profile_memory=True) as prof:
        ops.spmm(W, X)
    allocated = {e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0}
    e = X.element_size()
    assert 300 * Run.stride(types.SimpleNamespace(e=e), B) * e in allocated
