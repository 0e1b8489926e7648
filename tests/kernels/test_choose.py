"""choose_fused: the measured fused-vs-composed rule for the CPU recurrent steps, and the
recurrence taking it for each direction of the step."""
import dataclasses

import pytest
import torch

import sparse_engine as se
from sparse_engine.kernels import choose
from sparse_engine.kernels.constants import GATES
from sparse_engine.kernels.choose import choose_fused
from sparse_engine.recurrent import cell_steps as cell_table
from sparse_engine.testing import num_threads


@pytest.mark.parametrize("mode,gates", [("LSTM", 4), ("GRU", 3), ("RNN_TANH", 1)])
def test_forward_switches_at_the_row_length_batch_and_size_thresholds(mode, gates):
    """One thread: fused at any row length up to B = 8, below 200 a row up to B = 20, composed past it;
    several threads: fused at any row length and batch; either way composed past 3 MiB of pre-activations."""
    H = 1000
    at = choose.FUSED_FORWARD_MAX_ROW_NNZ * gates * H
    for B in (9, 20):
        assert choose_fused(mode, H, at - 1, B, threads=1) is True
        assert choose_fused(mode, H, at, B, threads=1) is False
        assert choose_fused(mode, H, at, B, threads=2) is True
    assert choose_fused(mode, H, 10**6, 8, threads=1) is True  # any row at B = 8
    assert choose_fused(mode, 100, 0, 21, threads=1) is False and choose_fused(mode, 100, 0, 21, threads=2) is True
    for threads in (1, 2):
        B = 8
        biggest = choose.FUSED_FORWARD_MAX_GATE_BYTES // (4 * gates * B)  # hidden whose pre-activations fit
        assert choose_fused(mode, biggest, 0, B, threads=threads) is True
        assert choose_fused(mode, biggest + 1, 0, B, threads=threads) is False
    with num_threads(1):  # None: torch's threads
        assert choose_fused(mode, H, at, 20) is False
    with num_threads(2):
        assert choose_fused(mode, H, at, 20) is True


def test_the_measured_cells():
    """rnn_step_cpu_batches.md's cells (the fused forward's side of each, where it was at least 5% from a
    draw) and the B = 20 table's 16,384 units (pre-activations of megabytes)."""
    def fused(mode, hidden, density, batch, threads):
        return choose_fused(mode, hidden, round(density * GATES[mode] * hidden * hidden), batch, threads=threads)
    for mode in ("LSTM", "GRU"):
        for batch in (1, 2, 4, 8):
            assert fused(mode, 512, 0.33, batch, 1) and fused(mode, 1000, 0.33, batch, 1)  # 169, 330 a row
        assert fused(mode, 512, 0.2, 20, 1) and fused(mode, 1500, 0.1, 20, 2)  # 102, 150 a row
        assert not fused(mode, 4096, 0.05, 20, 1) and fused(mode, 4096, 0.05, 20, 2)  # 205 a row: 0.86x / 1.15-1.42x
        assert not fused(mode, 1000, 0.33, 50, 1) and fused(mode, 1000, 0.33, 50, 2)  # 0.85-0.89x / 1.23-1.51x
        assert not fused(mode, 4096, 0.05, 128, 2)  # 8 MB of pre-activations: 0.77-0.84x
        assert not fused(mode, 16384, 0.001, 20, 2)  # 5 MB (LSTM), 3.9 MB (GRU)


def test_backward_is_always_fused():
    assert choose_fused("LSTM", 4096, 0, 1, backward=True) is True
    assert choose_fused("GRU", 16384, 10**6, 32, backward=True) is True


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_the_recurrence_takes_the_rule_per_direction(mode, monkeypatch, rng):
    """With a row-length threshold below the weight's rows the recurrence runs the composed
    forward and the fused backward (the rule's choice for each direction), with the gradients of
    the all-fused run; with the measured thresholds (a small weight, short rows), both fused."""
    cell = cell_table.CELLS[mode]
    calls = {"composed forward": 0, "fused backward": 0}
    backward_op = f"{cell.kernel}_step_backward"

    def spy_step(*args):
        calls["composed forward"] += 1
        return cell.step(*args)

    class SpyOps:  # torch.ops.sparse_engine, counting the fused backward's calls
        def __getattr__(self, name):
            op = getattr(torch.ops.sparse_engine, name)
            if name != backward_op:
                return op

            def counted(*args, **kwargs):
                calls["fused backward"] += 1
                return op(*args, **kwargs)
            return counted

    monkeypatch.setitem(cell_table.CELLS, mode, dataclasses.replace(cell, step=spy_step))
    monkeypatch.setattr(cell_table, "_ops", SpyOps())
    monkeypatch.setattr(choose, "_torch_threads", lambda: 1)  # the rule's one-thread side
    Module = se.nn.SparseLSTM if mode == "LSTM" else se.nn.SparseGRU
    m = Module(5, 9, density=0.4, dtype=torch.float64, compute="sparse")
    x = torch.randn(6, 3, 5, generator=rng, dtype=torch.float64)

    def run():
        m.zero_grad()
        y, _ = m(x)
        y.square().sum().backward()
        return [y.detach()] + [p.grad.clone() for p in m.parameters()]

    both_fused = run()
    assert calls == {"composed forward": 0, "fused backward": 6}
    monkeypatch.setattr(choose, "FUSED_FORWARD_MAX_ROW_NNZ", 0)
    monkeypatch.setattr(choose, "FUSED_FORWARD_ANY_ROW_BATCH", 0)
    mixed = run()
    assert calls == {"composed forward": 6, "fused backward": 12}
    for a, b in zip(both_fused, mixed):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("args,exc,match", [
    (("LSTMX", 10, 5, 1), ValueError, "mode"),
    (("LSTM", 0, 5, 1), ValueError, "hidden"),
    (("LSTM", 10, -1, 1), ValueError, "nnz"),
    (("LSTM", 10, 5, 0), ValueError, "batch"),
    (("LSTM", 10.0, 5, 1), TypeError, "hidden"),
    (("LSTM", 10, True, 1), TypeError, "nnz"),
])
def test_bad_arguments(args, exc, match):
    with pytest.raises(exc, match=match):
        choose_fused(*args)


def test_fused_steps_is_the_one_decision(rng):
    """nn.cell_table.fused_steps answers, per run, which step each direction takes: composed
    both ways when the fused ops do not apply (fused=False, a dense W_hh, fp16 values, a device
    without the kernels), else on the CPU the measured rule's choice; the recurrence's and the
    benchmarks' ``fused_steps`` is this function."""
    from sparse_engine.recurrent import sequence as recurrence
    from sparse_engine.recurrent.sequence import Config

    assert recurrence.fused_steps is cell_table.fused_steps
    H, B = 6, 3
    short = se.SparseWeight.random(4 * H, H, 0.5, generator=rng, dtype=torch.float64)
    cfg = Config("LSTM", H, B, 2, idx_hh=short.index)
    values = short.values.detach()
    assert cell_table.fused_steps(cfg, values) == (True, True)
    assert cell_table.fused_steps(dataclasses.replace(cfg, fused=False), values) == (False, False)
    assert cell_table.fused_steps(dataclasses.replace(cfg, idx_hh=None), values) == (False, False)
    assert cell_table.fused_steps(cfg, values.half()) == (False, False)
    assert cell_table.fused_steps(cfg, values.to("meta")) == (False, False)  # no kernels for that key
    # one thread, rows longer than the measured bound past B = 8: the composed forward, the fused backward
    dense_rows = se.SparseWeight.random(4 * 200, 200, 1.0, generator=rng, dtype=torch.float64)
    long_cfg = Config("LSTM", 200, 9, 2, idx_hh=dense_rows.index)
    with num_threads(1):
        assert choose_fused("LSTM", 200, dense_rows.nnz, 9) is False
        assert cell_table.fused_steps(long_cfg, dense_rows.values.detach()) == (False, True)
