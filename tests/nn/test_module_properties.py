"""Property-based tests (hypothesis) of the modules: any configuration of a sparse RNN, LSTM or GRU
layer and cell computes what torch's does with its dense weights (outputs, final states, input and
state gradients, float64), and SparseCTRNN its definition, on shapes hypothesis draws.

The example budget comes from the hypothesis profile loaded in ``tests/conftest.py``
(``HYPOTHESIS_PROFILE=dev|ci|thorough``); a test's share of it is set by :func:`budget`. Random
numbers are drawn from generators seeded by integers hypothesis draws (so a failure prints
everything needed to replay it); hypothesis itself picks its seed.
"""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sparse_engine as se

F64 = torch.float64
EXAMPLES = settings().max_examples  # of the profile conftest.py loaded
seeds = st.integers(0, 2**32 - 1)


def budget(share: float = 1.0, **kw) -> settings:
    """``share`` of the profile's examples for one test (at least 5)."""
    return settings(max_examples=max(5, int(EXAMPLES * share)), **kw)


# -------------------------------------------------------------------------- modules against torch
LAYER_KINDS = {"tanh": (se.nn.SparseRNN, {"nonlinearity": "tanh"}), "relu": (se.nn.SparseRNN, {"nonlinearity": "relu"}),
               "lstm": (se.nn.SparseLSTM, {}), "gru": (se.nn.SparseGRU, {})}


@budget(0.5)
@given(kind=st.sampled_from(sorted(LAYER_KINDS)), I=st.integers(1, 6), H=st.integers(1, 9), T=st.integers(1, 5),
       B=st.integers(0, 4), L=st.integers(1, 3), bi=st.booleans(), bf=st.booleans(), batched=st.booleans(),
       given_state=st.booleans(), bias=st.booleans(), sparse=st.sampled_from(["both", "recurrent", "input"]),
       fused=st.booleans(), density=st.floats(0.05, 1.0), seed=seeds)
def test_layers_match_torch(kind, I, H, T, B, L, bi, bf, batched, given_state, bias, sparse, fused, density, seed):
    """Any configuration of a sparse layer computes what torch's layer with its dense weights
    does: outputs, final states and the input and state gradients (float64)."""
    cls, kw = LAYER_KINDS[kind]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = cls(I, H, num_layers=L, bias=bias, batch_first=bf, bidirectional=bi, density=density, sparse=sparse,
                fused=fused, dtype=F64, **kw)
    ref = m.to_dense()
    g = torch.Generator().manual_seed(seed)
    D = 2 if bi else 1
    x = torch.randn(*(((B, T) if bf else (T, B)) if batched else (T,)), I, generator=g, dtype=F64)
    hx = None
    if given_state:
        shape = (L * D, B, H) if batched else (L * D, H)
        hx = torch.randn(shape, generator=g, dtype=F64)
        hx = (hx, torch.randn(shape, generator=g, dtype=F64)) if kind == "lstm" else hx
    leaves = [[t.clone().requires_grad_(True) for t in ([x] + ([] if hx is None else list(
        hx if isinstance(hx, tuple) else (hx,))))] for _ in range(2)]
    results = []
    for module, (xi, *hi) in zip((m, ref), leaves):
        state = None if not hi else (tuple(hi) if kind == "lstm" else hi[0])
        y, s = module(xi, state)
        results.append((y, *(s if isinstance(s, tuple) else (s,))))
    w = [torch.randn(t.shape, generator=g, dtype=F64) for t in results[0]]
    for res in results:
        assert len(res) == len(w)
        sum((t * wi).sum() for t, wi in zip(res, w)).backward()
    for a, b in zip(*results):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    for a, b in zip(*leaves):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-9)


CELL_KINDS = {"tanh": (se.nn.SparseRNNCell, {"nonlinearity": "tanh"}),
              "relu": (se.nn.SparseRNNCell, {"nonlinearity": "relu"}),
              "lstm": (se.nn.SparseLSTMCell, {}), "gru": (se.nn.SparseGRUCell, {})}


@budget(0.5)
@given(kind=st.sampled_from(sorted(CELL_KINDS)), I=st.integers(1, 6), H=st.integers(1, 9), B=st.integers(0, 5),
       batched=st.booleans(), given_state=st.booleans(), bias=st.booleans(),
       sparse=st.sampled_from(["both", "recurrent", "input"]), fused=st.booleans(), density=st.floats(0.05, 1.0),
       seed=seeds)
def test_cells_match_torch(kind, I, H, B, batched, given_state, bias, sparse, fused, density, seed):
    cls, kw = CELL_KINDS[kind]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cell = cls(I, H, bias=bias, density=density, sparse=sparse, fused=fused, dtype=F64, **kw)
    ref = cell.to_dense()
    g = torch.Generator().manual_seed(seed)
    lead = (B,) if batched else ()
    x = torch.randn(*lead, I, generator=g, dtype=F64)
    hx = None
    if given_state:
        hx = torch.randn(*lead, H, generator=g, dtype=F64)
        hx = (hx, torch.randn(*lead, H, generator=g, dtype=F64)) if kind == "lstm" else hx
    outs = [cell(x, hx), ref(x, hx)]
    outs = [o if isinstance(o, tuple) else (o,) for o in outs]
    for a, b in zip(*outs):
        assert a.shape == b.shape == lead + (H,)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@budget(0.5)
@given(I=st.integers(1, 5), H=st.integers(1, 8), T=st.integers(1, 4), B=st.integers(0, 4), batched=st.booleans(),
       bf=st.booleans(), given_state=st.booleans(), bias=st.booleans(), fused=st.booleans(),
       dt=st.floats(0.01, 1.0), tau=st.floats(0.05, 2.0), unfolds=st.integers(1, 4), density=st.floats(0.05, 1.0),
       seed=seeds)
def test_ctrnn_matches_its_definition(I, H, T, B, batched, bf, given_state, bias, fused, dt, tau, unfolds, density,
                                      seed):
    """SparseCTRNN = ``unfolds`` Euler steps h += dt (-h / tau + tanh(W_ih x + W_hh h + b)) per
    input step, in float64, in every input layout; gradients against autograd through that loop."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = se.nn.SparseCTRNN(I, H, bias=bias, batch_first=bf, dt=dt, tau=tau, unfolds=unfolds, density=density,
                              fused=fused, dtype=F64)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*(((B, T) if bf else (T, B)) if batched else (T,)), I, generator=g, dtype=F64)
    h0 = torch.randn((1, B, H) if batched else (1, H), generator=g, dtype=F64) if given_state else None
    y, h = m(x, h0)
    # the definition, on (T, B, I) / (B, H)
    xt = (x.transpose(0, 1) if bf else x) if batched else x.unsqueeze(1)
    Wi, Wh = (m.weight_ih.to_dense().requires_grad_(True), m.weight_hh.to_dense().requires_grad_(True))
    b = m.bias if bias else torch.zeros(H, dtype=F64)
    s = torch.zeros(xt.shape[1], H, dtype=F64) if h0 is None else (h0[0] if batched else h0)
    ref = []
    for t in range(T):
        for _ in range(unfolds):
            s = s + dt * (-s / tau + torch.tanh(xt[t] @ Wi.T + s @ Wh.T + b))
        ref.append(s)
    ry = torch.stack(ref)
    ry = (ry.transpose(0, 1) if bf else ry) if batched else ry[:, 0]
    rh = s.unsqueeze(0) if batched else s
    assert y.shape == ry.shape and h.shape == rh.shape
    torch.testing.assert_close(y, ry, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(h, rh, rtol=1e-9, atol=1e-9)
    w = torch.randn(y.shape, generator=g, dtype=F64)
    (y * w).sum().backward()
    (ry * w).sum().backward()
    row, col, _ = m.weight_hh.coo()
    torch.testing.assert_close(m.weight_hh.values.grad, Wh.grad[row, col], rtol=1e-9, atol=1e-9)
    row, col, _ = m.weight_ih.coo()
    torch.testing.assert_close(m.weight_ih.values.grad, Wi.grad[row, col], rtol=1e-9, atol=1e-9)
