"""choose_fused: the measured fused-vs-composed rule for the CPU recurrent steps, and the
recurrence taking it for each direction of the step."""
import dataclasses

import pytest
import torch

import sparse_engine as se
from sparse_engine.kernels import choose
from sparse_engine.kernels.choose import FUSED_FORWARD_MIN_ROW_NNZ, choose_fused
from sparse_engine.nn import cell_table


@pytest.mark.parametrize("mode,gates", [("LSTM", 4), ("GRU", 3), ("RNN_TANH", 1)])
def test_forward_switches_at_the_row_length_threshold(mode, gates, monkeypatch):
    H = 1000
    # the measured cells, all fused since the fused forward's fixes (kernels/choose.py)
    for hidden, density in ((1500, 0.33), (4096, 0.01), (16384, 0.001), (256, 0.1)):
        nnz = round(density * gates * hidden * hidden)
        assert choose_fused(mode, hidden, nnz, 20) is (nnz >= FUSED_FORWARD_MIN_ROW_NNZ * gates * hidden)
    assert choose_fused(mode, H, 0, 20) is (FUSED_FORWARD_MIN_ROW_NNZ == 0)
    monkeypatch.setattr(choose, "FUSED_FORWARD_MIN_ROW_NNZ", 50)
    assert choose_fused(mode, H, 50 * gates * H, 20) is True
    assert choose_fused(mode, H, 50 * gates * H - 1, 20) is False


def test_backward_is_always_fused():
    assert choose_fused("LSTM", 4096, 0, 1, backward=True) is True
    assert choose_fused("GRU", 16384, 10**6, 32, backward=True) is True


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_the_recurrence_takes_the_rule_per_direction(mode, monkeypatch, rng):
    """With a threshold above the weight's row length the recurrence runs the composed forward
    and the fused backward (the rule's choice for each direction), with the gradients of the
    all-fused run; with the measured threshold, both fused."""
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
    monkeypatch.setattr(choose, "FUSED_FORWARD_MIN_ROW_NNZ", 10**6)
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
