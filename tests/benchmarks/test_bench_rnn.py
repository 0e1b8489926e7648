"""benchmarks/bench_rnn.py's masked-dense baseline without cuDNN where cuDNN's RNN fails (on the first
GPU run, nn.LSTM at hidden 16,384 did, so that size had no masked-dense number)."""
import pytest
import torch


def test_masked_dense_step_runs_without_cudnn_where_cudnn_fails(load_script, capsys):
    bench = load_script("benchmarks/bench_rnn.py")
    p = torch.nn.Parameter(torch.ones(3))
    calls = []

    def cudnn_fails():
        calls.append(torch.backends.cudnn.enabled)
        if torch.backends.cudnn.enabled:
            raise RuntimeError("Storage size calculation overflowed with sizes=[4611686016280035328]\nmore")
        (p * 2).sum().backward()

    step, path = bench._without_cudnn_if_it_fails(cudnn_fails, [p])
    assert path == "cuDNN off: it failed"
    assert "cuDNN failed (Storage size calculation overflowed with sizes=[4611686016280035328])" in capsys.readouterr().err
    assert calls == [True, False] and p.grad is None  # the trial runs leave no gradient behind
    step()
    assert calls[-1] is False and torch.equal(p.grad, torch.full((3,), 2.0))
    assert torch.backends.cudnn.enabled  # only inside the step

    def works():
        (p * 3).sum().backward()

    p.grad = None
    step, path = bench._without_cudnn_if_it_fails(works, [p])
    assert step is works and path is None and p.grad is None

    def always_fails():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        bench._without_cudnn_if_it_fails(always_fails, [p])
