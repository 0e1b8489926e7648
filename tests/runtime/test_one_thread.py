"""runtime.one_thread.on_one_thread: a module of torch's run on one thread, its forward and the backward of the
nodes it records (and only those), with torch's numbers, the thread count restored after, also when the
forward raises; the handles undo it."""
import pytest
import torch
from torch import nn

from sparse_engine.runtime import one_thread
from sparse_engine.testing import num_threads


class Spy(nn.Module):
    """An nn.LSTM that notes the thread count its forward ran on."""

    def __init__(self, fail=False):
        super().__init__()
        torch.manual_seed(0)
        self.lstm, self.seen, self.fail = nn.LSTM(6, 8, num_layers=2), [], fail

    def forward(self, x, hx=None):
        self.seen.append(("forward", torch.get_num_threads()))
        if self.fail:
            raise RuntimeError("the forward failed")
        return self.lstm(x, hx)


def _step(m, x0):
    x = x0.clone().requires_grad_()
    x.register_hook(lambda g: m.seen.append(("input", torch.get_num_threads())))
    y, (h, c) = m(x)
    y.grad_fn.register_prehook(lambda g: m.seen.append(("recurrence", torch.get_num_threads())))
    (y.square().sum() + h.sum()).backward()
    return [x.grad] + [p.grad.clone() for p in m.parameters()]


def test_on_one_thread_runs_the_forward_and_its_backward_on_one_thread(rng):
    x0 = torch.randn(5, 3, 6, generator=rng)
    with num_threads(2):
        plain = Spy()
        ref = _step(plain, x0)
        assert plain.seen == [("forward", 2), ("recurrence", 2), ("input", 2)]
        m = Spy()
        handles = one_thread.on_one_thread(m)
        got = _step(m, x0)
        assert m.seen == [("forward", 1), ("recurrence", 1), ("input", 2)] and torch.get_num_threads() == 2
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        m.seen.clear()
        with torch.no_grad():  # no graph: nothing hooked, the forward on one thread
            torch.testing.assert_close(m(x0)[0], plain(x0)[0], rtol=1e-5, atol=1e-6)
        assert m.seen[0] == ("forward", 1) and torch.get_num_threads() == 2
        for h in handles:
            h.remove()
        m.seen.clear()
        _step(m, x0)
        assert m.seen == [("forward", 2), ("recurrence", 2), ("input", 2)]


def test_a_forward_that_raises_restores_the_threads(rng):
    m = Spy(fail=True)
    one_thread.on_one_thread(m)
    with num_threads(2):
        with pytest.raises(RuntimeError, match="the forward failed"):
            m(torch.randn(5, 3, 6, generator=rng))
        assert m.seen == [("forward", 1)] and torch.get_num_threads() == 2


def test_a_backward_that_raises_leaves_a_scope_the_next_forward_closes(rng):
    m = Spy()
    one_thread.on_one_thread(m)
    x = torch.randn(5, 3, 6, generator=rng)

    def fail(g):
        raise RuntimeError("a node failed")
    with num_threads(2):
        y = m(x)[0]
        y.grad_fn.register_prehook(fail)
        with pytest.raises(RuntimeError, match="a node failed"):
            y.sum().backward()
        assert torch.get_num_threads() == 1  # the hooked node's post-hook never ran
        m(x)
        assert torch.get_num_threads() == 2
        assert one_thread.close_left_scopes() == 0


def test_recorded_nodes_stop_at_the_inputs_and_at_max_nodes(rng, monkeypatch):
    lstm = nn.LSTM(4, 5)
    x = (torch.randn(3, 2, 4, generator=rng, requires_grad=True) * 2)  # an input with a node of its own
    y = lstm(x)[0]
    nodes = one_thread.recorded_nodes([y], [x])
    assert nodes and x.grad_fn not in nodes and all(type(n).__name__ != "AccumulateGrad" for n in nodes)
    monkeypatch.setattr(one_thread, "MAX_NODES", len(nodes) - 1)
    assert one_thread.recorded_nodes([y], [x]) is None and not one_thread.backward_on_one_thread([y], [x])


def test_a_forward_inside_a_backward_keeps_the_running_nodes_scope(rng):
    """A forward recomputed inside a backward (a checkpoint, a hook) closes no scope: the node still running
    keeps its one thread; its post-hook then restores the count."""
    m = Spy()
    one_thread.on_one_thread(m)
    x = torch.randn(5, 3, 6, generator=rng)
    inside = []

    def recompute(g):
        inside.append((one_thread.close_left_scopes(), torch.get_num_threads()))
        with torch.no_grad():
            m(x)
        inside.append(torch.get_num_threads())
    with num_threads(2):
        y = m(x)[0]
        y.grad_fn.register_prehook(recompute)
        y.sum().backward()
        assert inside == [(0, 1), 1] and torch.get_num_threads() == 2
