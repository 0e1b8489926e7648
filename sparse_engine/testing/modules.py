"""A sparse recurrent module against torch's holding the same weights: packed inputs, outputs,
states and every gradient."""
from __future__ import annotations

import torch

from ..sparse import SparseWeight
from .checks import _check
from .factories import _generator


# ---------------------------------------------------------------------------- modules
def random_packed(lengths, size: int, *, dtype: torch.dtype = torch.float64, seed: int | None = None,
                  generator: torch.Generator | None = None, enforce_sorted: bool = False):
    """A PackedSequence of ``len(lengths)`` random sequences, sequence ``i`` of ``lengths[i]``
    steps of ``size`` standard normal features (``pack_sequence``, unsorted unless told)."""
    from torch.nn.utils.rnn import pack_sequence

    g = _generator(seed, generator)
    return pack_sequence([torch.randn(n, size, generator=g, dtype=dtype) for n in lengths],
                         enforce_sorted=enforce_sorted)


def param_grad_pairs(sparse_mod, dense_mod):
    """``(name, our gradient, torch's gradient at our stored entries)`` for every weight and bias
    of a sparse RNN module and of its ``to_dense()`` copy, after a backward through both."""
    for name in sparse_mod._flat_weights_names:
        ours, ref = getattr(sparse_mod, name), getattr(dense_mod, name)
        if isinstance(ours, SparseWeight):
            row, col, _ = ours.coo()
            yield name, ours.values.grad, ref.grad[row, col]
        else:
            yield name, ours.grad, ref.grad


def random_states(mode: str, L: int, B: int, H: int, generator: torch.Generator, proj: int = 0):
    """Initial states of a recurrent module of torch's ``mode`` name (float64): h0 (L, B, proj or H),
    and for an LSTM (h0, c0) with c0 (L, B, H)."""
    h = torch.randn(L, B, proj or H, generator=generator, dtype=torch.float64)
    return (h, torch.randn(L, B, H, generator=generator, dtype=torch.float64)) if mode == "LSTM" else h


def sparse_and_dense_paths(m, x, hx):
    """[(outputs, gradients)] of module ``m`` on its sparse and on its dense path (``m.compute`` set
    to each), one loss: the output and final states each weighted by fixed random numbers.
    outputs: [y (a PackedSequence's data), *states]; gradients: [input's, *each parameter's]."""
    from torch.nn.utils.rnn import PackedSequence

    results = []
    for path in ("sparse", "dense"):
        m.compute = path
        m.zero_grad()
        xi = (x.data if isinstance(x, PackedSequence) else x).clone().requires_grad_(True)
        y, s = m(PackedSequence(xi, *x[1:]) if isinstance(x, PackedSequence) else xi, hx)
        y = y.data if isinstance(y, PackedSequence) else y
        flat = [y, *(s if isinstance(s, tuple) else (s,))]
        g = torch.Generator().manual_seed(7)
        loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in flat)
        loss.backward()
        results.append((flat, [xi.grad] + [p.grad.clone() for p in m.parameters()]))
    return results


_MODULE_TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def check_against_torch(m, x, hx, dtype: torch.dtype, generator: torch.Generator) -> None:
    """A SparseRNN/LSTM/GRU ``m`` against torch's module with the same weights (``m.to_dense()``):
    outputs, final states and every gradient (input, given states, weights at ``m``'s stored
    entries, biases) agree (float64: 1e-10, float32: 1e-5), under a loss that reads the output
    and every final state with random weights drawn from ``generator``. ``x``: a tensor or a
    PackedSequence (whose data gets the gradient); ``hx``: None, a tensor, or LSTM's ``(h, c)``."""
    from torch.nn.utils.rnn import PackedSequence

    d = m.to_dense()
    tol = _MODULE_TOL[dtype]
    is_lstm = isinstance(d, torch.nn.LSTM)
    packed = isinstance(x, PackedSequence)
    x1 = (x.data if packed else x).clone().requires_grad_(True)
    x2 = (x.data if packed else x).clone().requires_grad_(True)
    if hx is not None:
        hx1 = tuple(t.clone().requires_grad_(True) for t in hx) if is_lstm else hx.clone().requires_grad_(True)
        hx2 = tuple(t.clone().requires_grad_(True) for t in hx) if is_lstm else hx.clone().requires_grad_(True)
    else:
        hx1 = hx2 = None
    if packed:
        y1, s1 = m(PackedSequence(x1, *x[1:]), hx1)
        y2, s2 = d(PackedSequence(x2, *x[1:]), hx2)
        _check(isinstance(y1, PackedSequence) and torch.equal(y1.batch_sizes, y2.batch_sizes),
               "packed input: the output is not a PackedSequence of torch's batch sizes")
        y1, y2 = y1.data, y2.data
    else:
        y1, s1 = m(x1, hx1)
        y2, s2 = d(x2, hx2)
    torch.testing.assert_close(y1, y2, **tol)
    states1 = s1 if is_lstm else (s1,)
    states2 = s2 if is_lstm else (s2,)
    for a, b in zip(states1, states2):
        torch.testing.assert_close(a, b, **tol)
    # a loss that touches the output and every final state with random weights
    wy = torch.randn(y1.shape, generator=generator, dtype=dtype)
    ws = [torch.randn(s.shape, generator=generator, dtype=dtype) for s in states1]
    loss1 = (y1 * wy).sum() + sum((s * w).sum() for s, w in zip(states1, ws))
    loss2 = (y2 * wy).sum() + sum((s * w).sum() for s, w in zip(states2, ws))
    loss1.backward()
    loss2.backward()
    torch.testing.assert_close(x1.grad, x2.grad, **tol)
    if hx is not None:
        for a, b in zip(hx1 if is_lstm else (hx1,), hx2 if is_lstm else (hx2,)):
            torch.testing.assert_close(a.grad, b.grad, **tol)
    for name, ours, ref in param_grad_pairs(m, d):
        torch.testing.assert_close(ours, ref, **tol, msg=lambda s: f"{name}: {s}")
