"""Property-based tests (hypothesis) of checkpoints: any sparse model (linear, LSTM, GRU, RNN, CT-RNN),
dtype and optimizer, after a topology change (SET-like prune and regrow, another nnz per matrix),
saved and loaded into a fresh model is bit for bit the same (weights, transposed index, optimizer
state) and trains on identically.

The example budget comes from the hypothesis profile loaded in ``tests/conftest.py``
(``HYPOTHESIS_PROFILE=dev|ci|thorough``); a test's share of it is set by :func:`budget`. Random
numbers are drawn from generators seeded by integers hypothesis draws (so a failure prints
everything needed to replay it); hypothesis itself picks its seed.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sparse_engine as se
from sparse_engine import SparseWeight
from sparse_engine.io.checkpoint import load_checkpoint, save_checkpoint
from sparse_engine.testing import check_structure
from sparse_engine.training import topology

F32, F64 = torch.float32, torch.float64
EXAMPLES = settings().max_examples  # of the profile conftest.py loaded
seeds = st.integers(0, 2**32 - 1)


def budget(share: float = 1.0, **kw) -> settings:
    """``share`` of the profile's examples for one test (at least 5)."""
    return settings(max_examples=max(5, int(EXAMPLES * share)), **kw)


# ------------------------------------------------------------------------- checkpoint round trips
def make_model(kind: str, dtype):
    if kind == "linear":
        return se.nn.SparseLinear(7, 5, density=0.4, dtype=dtype)
    if kind == "ctrnn":
        return se.nn.SparseCTRNN(3, 6, density=0.4, dtype=dtype, unfolds=2)
    cls = {"lstm": se.nn.SparseLSTM, "gru": se.nn.SparseGRU, "rnn": se.nn.SparseRNN}[kind]
    return cls(3, 6, num_layers=2, bidirectional=True, density=0.4, dtype=dtype)


def model_input(kind: str, g, dtype):
    return torch.randn(4, 7, generator=g, dtype=dtype) if kind == "linear" else torch.randn(4, 2, 3, generator=g,
                                                                                            dtype=dtype)


def train_step(model, opt, x):
    opt.zero_grad()
    out = model(x)
    (out if isinstance(out, torch.Tensor) else out[0]).square().mean().backward()
    opt.step()


def sparse_weights(model):
    return [m for m in model.modules() if isinstance(m, SparseWeight)]


@budget(0.75)
@given(kind=st.sampled_from(["linear", "lstm", "gru", "rnn", "ctrnn"]), dtype=st.sampled_from([F32, F64]),
       optimizer=st.sampled_from(["adam", "sgd"]), zeta=st.floats(0.0, 1.0), grow_share=st.floats(0.0, 1.0),
       seed=seeds)
def test_checkpoint_round_trip_after_topology_change_is_bit_exact(kind, dtype, optimizer, zeta, grow_share, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, fresh = make_model(kind, dtype), make_model(kind, dtype)

    def make_opt(m):
        return (torch.optim.Adam(m.parameters(), lr=1e-2) if optimizer == "adam"
                else torch.optim.SGD(m.parameters(), lr=1e-2, momentum=0.9))

    opt = make_opt(model)
    train_step(model, opt, model_input(kind, g, dtype))
    for i, W in enumerate(sparse_weights(model)):  # SET-like prune and regrow, another nnz per matrix
        keep = topology.set_keep(W.values, zeta)
        n_free = W.shape[0] * W.shape[1] - int(keep.sum())
        n = int(grow_share * n_free)
        topology.rewire(W, keep, lambda rp, ci: topology.random_empty(rp, ci, W.shape[1], n, seed + i),
                        init="normal", generator=g, optimizer=opt)
    train_step(model, opt, model_input(kind, g, dtype))
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "ckpt.pt", model, opt, epoch=3)
        fresh_opt = make_opt(fresh)
        payload = load_checkpoint(path, fresh, fresh_opt)
    assert payload["extra"] == {"epoch": 3}
    a, b = model.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key
    for W, V in zip(sparse_weights(model), sparse_weights(fresh)):
        check_structure(V)
        for x, y in zip(W.index, V.index):
            assert torch.equal(x, y)
    for p, q in zip(model.parameters(), fresh.parameters()):
        for name, t in opt.state[p].items():
            assert torch.equal(t, fresh_opt.state[q][name]), name
    # training resumes identically
    x = model_input(kind, g, dtype)
    train_step(model, opt, x)
    train_step(fresh, fresh_opt, x)
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)
