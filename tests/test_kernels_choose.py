"""choose_fused: the measured fused-vs-composed rule for the CPU recurrent steps."""
import pytest

from sparse_engine.kernels.choose import FUSED_FORWARD_MIN_ROW_NNZ, choose_fused


@pytest.mark.parametrize("mode,gates", [("LSTM", 4), ("GRU", 3), ("RNN_TANH", 1)])
def test_forward_switches_at_the_row_length_threshold(mode, gates):
    H = 1000
    at = FUSED_FORWARD_MIN_ROW_NNZ * gates * H
    assert choose_fused(mode, H, at, 20) is True
    assert choose_fused(mode, H, at - 1, 20) is False
    # the measured cells: Selfish-RNN's 1,500 / 33% fused, 4,096 / 1% composed
    assert choose_fused(mode, 1500, round(0.33 * gates * 1500 * 1500), 20) is True
    assert choose_fused(mode, 4096, round(0.01 * gates * 4096 * 4096), 20) is False


def test_backward_is_always_fused():
    assert choose_fused("LSTM", 4096, 0, 1, backward=True) is True
    assert choose_fused("GRU", 16384, 10**6, 32, backward=True) is True


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
