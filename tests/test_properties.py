"""Property-based tests (hypothesis): every operator, the topology kernels, the SparseWeight
invariants under any sequence of updates, and checkpoint round trips, on shapes hypothesis
draws (0 rows or columns, one column, empty and full rows, densities 0..1), each against a
float64 dense reference or a plain numpy/python model of the documented contract.

The example budget comes from the hypothesis profile loaded in ``tests/conftest.py``
(``HYPOTHESIS_PROFILE=dev|ci|thorough``); a test's share of it is set by :func:`budget`. Random
numbers are drawn from generators seeded by integers hypothesis draws (so a failure prints
everything needed to replay it); hypothesis itself picks its seed.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import sparse_engine as se
from sparse_engine import SparseWeight, ops
from sparse_engine.io.checkpoint import load_checkpoint, save_checkpoint
from sparse_engine.kernels import topology_torch
from sparse_engine.recurrent.cell_steps import CELLS
from sparse_engine.testing import (LAYOUTS, copy_weight, num_threads, random_weight, references, set_keep_reference,
                                   smallest_reference, with_layout)
from sparse_engine.training import topology

_ops = torch.ops.sparse_engine
F32, F64, F16, BF16 = torch.float32, torch.float64, torch.float16, torch.bfloat16
U32 = 2.0 ** -24
EXAMPLES = settings().max_examples  # of the profile conftest.py loaded


def budget(share: float = 1.0, **kw) -> settings:
    """``share`` of the profile's examples for one test (at least 5)."""
    return settings(max_examples=max(5, int(EXAMPLES * share)), **kw)



# ------------------------------------------------------------------------------ strategies
seeds = st.integers(0, 2**32 - 1)
threads = st.sampled_from([1, 2])
# mostly small sizes, sometimes enough work to cross constants.PARALLEL_WORK on two threads
dims = st.one_of(st.integers(0, 24), st.integers(100, 220))
# and sometimes over 4 * PARALLEL_WORK entries (the threshold of the parallel transpose_index)
big_dims = st.one_of(st.integers(0, 24), st.integers(100, 220), st.integers(380, 460))
densities = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))


@st.composite
def weights(draw, dtypes=st.sampled_from([F32, F64]), rows=dims, cols=dims):
    """A SparseWeight of ``testing.random_weight``: Bernoulli(density) entries, then some rows
    emptied and some filled."""
    r, c = draw(rows), draw(cols)
    empty = draw(st.integers(0, r))
    full = draw(st.integers(0, r - empty))
    W = random_weight(r, c, draw(densities), empty, full, dtype=draw(dtypes), seed=draw(seeds))
    note(f"W: {r} x {c}, nnz {W.nnz}, {empty} empty and {full} full rows, {W.values.dtype}")
    return W


def stored(W: SparseWeight):
    """(row, col, value as float64) of every stored entry, in CSR order, as numpy arrays."""
    row, col, v = W.coo()
    return row.numpy(), col.numpy(), v.detach().double().numpy()


def keys_of(W: SparseWeight) -> np.ndarray:
    row, col, _ = stored(W)
    return row * W.shape[1] + col


def check_structure(W: SparseWeight) -> None:
    """The CSR and transposed-index invariants, checked with numpy (not with W.validate)."""
    rows, cols = W.shape
    rp, ci = W.row_ptr.numpy(), W.col_idx.numpy()
    assert W.row_ptr.dtype == torch.int64 and W.col_idx.dtype == torch.int32
    assert rp.shape == (rows + 1,) and rp[0] == 0 and rp[-1] == ci.size == W.values.numel()
    assert (np.diff(rp) >= 0).all()
    assert ((ci >= 0) & (ci < cols)).all()
    row = np.repeat(np.arange(rows), np.diff(rp))
    # strictly increasing columns inside every row: sorted and unique
    same_row = row[1:] == row[:-1]
    assert (ci[1:][same_row] > ci[:-1][same_row]).all()
    # the transposed index is the CSC of the same matrix, rows ascending within a column
    cp, cr, perm = W.csc_ptr.numpy(), W.csc_row.numpy(), W.csc_perm.numpy()
    assert W.csc_ptr.dtype == torch.int64 and W.csc_row.dtype == torch.int32 and W.csc_perm.dtype == torch.int32
    assert np.array_equal(cp, np.concatenate([[0], np.cumsum(np.bincount(ci, minlength=cols))]).astype(np.int64))
    assert np.array_equal(np.sort(perm), np.arange(ci.size))  # a permutation of the CSR positions
    order = np.lexsort((row, ci))  # by column, then row
    assert np.array_equal(perm, order)
    assert np.array_equal(cr, row[perm])
    # reading the values through csc_perm gives the CSC order of scipy's conversion
    if rows and cols:
        csc = W.to_scipy().tocsc()
        csc.sort_indices()
        v = W.values.detach()
        v = v.float() if v.element_size() == 2 else v
        assert np.array_equal(v.numpy()[perm], csc.data)
        assert np.array_equal(cr, csc.indices) and np.array_equal(cp, csc.indptr)


# ------------------------------------------------------------------- spmm, spmm_t, sddmm
def half_bound(ref, abs_ref, terms, dtype):
    """float32 accumulation, one rounding to the 2-byte type (see tests/test_ops_half.py)."""
    fi = torch.finfo(dtype)
    return fi.eps / 2 * ref.abs() + 2 * (max(terms, 1) + 1) * U32 * abs_ref + fi.smallest_normal * fi.eps / 2


def assert_within_rounding(out, reference, dtype):
    """|out - ref| within the error bound of a floating-point sum of ``terms`` products."""
    ref, abs_ref, terms = reference
    assert out.dtype == dtype and out.shape == ref.shape
    if dtype in (F16, BF16):
        bound = half_bound(ref, abs_ref, terms, dtype)
    else:
        bound = 2 * max(terms, 1) * torch.finfo(dtype).eps * abs_ref + 1e-300
    err = (out.double() - ref).abs()
    assert bool((err <= bound).all()), f"max error/bound {float((err / bound).max()):.3g}"


def arranged(t: torch.Tensor, layout: str) -> torch.Tensor:
    return t if layout == "contiguous" else with_layout(t, layout)


@budget(1.5)
@given(W=weights(dtypes=st.sampled_from([F32, F64, F16, BF16])), B=st.one_of(st.integers(0, 8), st.integers(9, 80)),
       layout=st.sampled_from(("contiguous",) + LAYOUTS), n_threads=threads, seed=seeds)
def test_spmm_spmm_t_sddmm_match_float64(W, B, layout, n_threads, seed):
    rows, cols = W.shape
    dtype = W.values.dtype
    g = torch.Generator().manual_seed(seed)
    X = arranged(torch.randn(cols, B, generator=g).to(dtype), layout)
    G = arranged(torch.randn(rows, B, generator=g).to(dtype), layout)
    refs = references(W, X, G)
    with num_threads(n_threads):
        got = {"spmm": ops.spmm(W, X), "spmm_t": ops.spmm_t(W, G), "sddmm": ops.sddmm(W, G, X)}
    for name, out in got.items():
        assert_within_rounding(out, refs[name], dtype)
    # each output element is summed in one order, whatever the thread count
    with num_threads(3 - n_threads):
        again = (ops.spmm(W, X), ops.spmm_t(W, G), ops.sddmm(W, G, X))
    for a, b in zip(got.values(), again):
        assert torch.equal(a, b)


@budget()
@given(W=weights(rows=big_dims, cols=big_dims), n_threads=threads)
def test_transposed_index_is_the_csc_of_the_pattern(W, n_threads):
    check_structure(W)  # built by the constructor
    with num_threads(n_threads):
        csc = _ops.transpose_index(W.row_ptr, W.col_idx, W.shape[1])
    for a, b in zip(csc, (W.csc_ptr, W.csc_row, W.csc_perm)):
        assert torch.equal(a, b)
    # W^T through the transposed index is the transpose of W
    WT = SparseWeight(W.csc_ptr, W.csc_row, W.values.detach()[W.csc_perm], W.shape[::-1])
    assert torch.equal(WT.to_dense(), W.to_dense().T)


# ------------------------------------------------------------------ fused recurrent steps
MODES = list(CELLS)
STEP_TOL = {F32: dict(rtol=2e-4, atol=2e-4), F64: dict(rtol=1e-9, atol=1e-9)}


def run_step(cell, fused: bool, W: SparseWeight, gx, h, c, b_hh, params, dh, dc):
    """One step forward and back through the fused ops or the composed steps:
    (h', c', saved activations, input-side gate gradient, hidden-side one, dh_prev, dc_prev)."""
    step, step_backward = cell.steps(fused)
    w = W.values.detach()
    tail = ((b_hh,) if cell.hidden_bias else ()) + params
    h2, c2, acts = cell.forward_step(step, w, W.index, gx, h, c, tail)
    saved = cell.saved_at(0, {"h": [h, h2], "c": [c, c2], "acts": [acts]})
    back = cell.backward_step(step_backward, w, W.index, saved, dh, dc, params)
    return (h2, c2, acts, *back)


@budget(2)
@given(mode=st.sampled_from(MODES), H=st.one_of(st.integers(0, 12), st.integers(13, 130)), B=st.one_of(st.integers(0, 4), st.integers(5, 70)),
       density=densities, empty=st.integers(0, 12), dtype=st.sampled_from([F32, F64]), hidden_bias=st.booleans(),
       dt=st.floats(0.01, 1.0), tau=st.floats(0.05, 2.0), n_threads=threads, seed=seeds)
def test_fused_steps_match_composed_float64(mode, H, B, density, empty, dtype, hidden_bias, dt, tau, n_threads, seed):
    """The fused step ops (forward and backward) against the composed steps of cell_table run in
    float64 on the same stored values."""
    cell = CELLS[mode]
    G = cell.gates * H
    W = random_weight(G, H, density, min(empty, G), dtype=dtype, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)

    def draw(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    gx, h, dh = draw(G, B), draw(H, B), draw(H, B)
    c, dc = (draw(H, B), draw(H, B)) if cell.cell_state else (None, None)
    b_hh = draw(G) if cell.hidden_bias and hidden_bias else None
    params = cell.params(SimpleNamespace(dt=dt, tau=tau))
    with num_threads(n_threads):
        fused = run_step(cell, True, W, gx, h, c, b_hh, params, dh, dc)

    def f64(t):
        return None if t is None else t.double()

    ref = run_step(cell, False, copy_weight(W, dtype=F64), f64(gx), f64(h), f64(c), f64(b_hh), params, f64(dh),
                   f64(dc))
    names = ("h'", "c'", "acts", "input-side dG", "dG", "dh_prev", "dc_prev")
    for name, a, b in zip(names, fused, ref):
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == dtype, name
            torch.testing.assert_close(a.double(), b, **STEP_TOL[dtype], msg=lambda m: f"{mode} {name}: {m}")


# ---------------------------------------------------------------- modules against torch
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


# ------------------------------------------------------------------ topology: selections
# the CPU kernels, and the torch-primitive kernels (the CUDA ones) run on CPU tensors
IMPLS = {"cpu": _ops, "torch": SimpleNamespace(**topology_torch.OPS)}
impls = st.sampled_from(sorted(IMPLS))
TIES = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 1e-30, -1e30, 3.25, float("inf"), -float("inf")]


@st.composite
def score_vectors(draw, dtype):
    """1-D float tensors with many ties (and signed zeros): drawn element by element when short,
    from a seeded pool when long enough for the multi-threaded kernels."""
    if draw(st.booleans()):
        vals = draw(st.lists(st.one_of(st.sampled_from(TIES), st.floats(-1e6, 1e6, width=32)), max_size=64))
        return torch.tensor(vals, dtype=dtype)
    n = draw(st.integers(40_000, 90_000))
    rng = np.random.default_rng(draw(seeds))
    pool = np.concatenate([TIES, rng.standard_normal(draw(st.integers(1, 50)))])
    return torch.from_numpy(rng.choice(pool, n)).to(dtype)


@budget()
@given(data=st.data(), dtype=st.sampled_from([F32, F64]), impl=impls, n_threads=threads)
def test_select_smallest_is_a_stable_sort(data, dtype, impl, n_threads):
    scores = data.draw(score_vectors(dtype))
    k = data.draw(st.integers(0, scores.numel()))
    with num_threads(n_threads):
        got = IMPLS[impl].select_smallest(scores, k)
    assert got.dtype == torch.bool and got.shape == scores.shape
    assert np.array_equal(got.numpy(), smallest_reference(scores.numpy(), k))


@budget()
@given(data=st.data(), dtype=st.sampled_from([F32, F64]), zeta=st.one_of(st.sampled_from([0.0, 0.5, 1.0]),
                                                                           st.floats(0.0, 1.0)),
       impl=impls, n_threads=threads)
def test_set_prune_follows_its_contract(data, dtype, zeta, impl, n_threads):
    v = data.draw(score_vectors(dtype))
    with num_threads(n_threads):
        keep = IMPLS[impl].set_prune(v, zeta)
    assert np.array_equal(keep.numpy(), set_keep_reference(v.numpy(), zeta))


@budget(0.25)
@given(n=st.integers(1, 50), at=st.data(), impl=impls, seed=seeds)
def test_selections_refuse_nan(n, at, impl, seed):
    v = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    v[at.draw(st.integers(0, n - 1))] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        IMPLS[impl].select_smallest(v, 0)
    with pytest.raises(ValueError, match="NaN"):
        IMPLS[impl].set_prune(v, 0.5)


# ------------------------------------------------------------- topology: CSR updates
@budget()
@given(W=weights(rows=big_dims, cols=big_dims), p_keep=densities, impl=impls, n_threads=threads, seed=seeds)
def test_compact_keeps_exactly_the_kept_entries(W, p_keep, impl, n_threads, seed):
    keep = torch.rand(W.nnz, generator=torch.Generator().manual_seed(seed)) < p_keep
    with num_threads(n_threads):
        rp, ci, v, kept_pos = IMPLS[impl].compact(W.row_ptr, W.col_idx, W.values.detach(), keep)
    row, col, val = stored(W)
    k = keep.numpy()
    assert np.array_equal(kept_pos.numpy(), np.flatnonzero(k))
    assert np.array_equal(ci.numpy(), col[k]) and np.array_equal(v.double().numpy(), val[k])
    assert np.array_equal(rp.numpy(), np.concatenate([[0], np.cumsum(np.bincount(row[k], minlength=W.shape[0]))]))
    assert v.dtype == W.values.dtype


def empty_keys(W: SparseWeight) -> np.ndarray:
    rows, cols = W.shape
    return np.setdiff1d(np.arange(rows * cols), keys_of(W))


@budget()
@given(W=weights(dtypes=st.just(F64), rows=big_dims, cols=big_dims), share=st.floats(0.0, 1.0), impl=impls,
       seed=seeds)
def test_random_empty_draws_distinct_sorted_empty_positions(W, share, impl, seed):
    rows, cols = W.shape
    free = rows * cols - W.nnz
    n = int(share * free)  # both paths: enumeration when fewer than 4n are empty, rejection otherwise
    draw_ = IMPLS[impl].random_empty
    with num_threads(1):
        r, c = draw_(W.row_ptr, W.col_idx, cols, n, seed)
    assert r.dtype == torch.int64 and c.dtype == torch.int32 and r.numel() == c.numel() == n
    got = r.numpy() * cols + c.numpy()
    assert ((c.numpy() >= 0) & (c.numpy() < cols)).all() and ((r.numpy() >= 0) & (r.numpy() < rows)).all()
    assert (np.diff(got) > 0).all()  # sorted by (row, col), distinct
    assert np.isin(got, empty_keys(W)).all()
    # deterministic per seed, and the same on two threads
    with num_threads(2):
        r2, c2 = draw_(W.row_ptr, W.col_idx, cols, n, seed)
    assert torch.equal(r, r2) and torch.equal(c, c2)
    with pytest.raises(ValueError, match="cannot grow"):
        draw_(W.row_ptr, W.col_idx, cols, free + 1, seed)


@budget()
@given(W=weights(), M=st.integers(0, 6), share=st.floats(0.0, 1.0), tile_rows=st.integers(1, 40),
       tile_cols=st.integers(1, 40), impl=impls, seed=seeds)
def test_grad_topk_is_the_dense_top_k_at_empty_positions(W, M, share, tile_rows, tile_cols, impl, seed):
    """Small integers in G and X make every gradient exact, so ties are real and the tie rule
    (larger |grad| first, then the lower linear key) decides."""
    rows, cols = W.shape
    g = torch.Generator().manual_seed(seed)
    G = torch.randint(-2, 3, (rows, M), generator=g).to(W.values.dtype)
    X = torch.randint(-2, 3, (cols, M), generator=g).to(W.values.dtype)
    free = empty_keys(W)
    k = int(share * free.size)
    r, c, grads = IMPLS[impl].grad_topk(W.row_ptr, W.col_idx, G, X, k, tile_rows, tile_cols)
    full = (G.double() @ X.double().T).numpy().ravel()
    best = np.sort(free[np.argsort(-np.abs(full[free]), kind="stable")[:k]])
    assert np.array_equal(r.numpy() * cols + c.numpy(), best)
    assert np.array_equal(grads.double().numpy(), full[best])
    # coo_dot at the same positions is the same gradient
    assert np.array_equal(IMPLS[impl].coo_dot(r, c, G, X).double().numpy(), full[best])


def ref_merge(W: SparseWeight, new_keys: np.ndarray, new_vals: np.ndarray):
    """(row_ptr, col_idx, values, old_pos, new_pos) of the union, from sorted linear keys."""
    rows, cols = W.shape
    old_keys = keys_of(W)
    all_keys = np.concatenate([old_keys, new_keys])
    order = np.argsort(all_keys, kind="stable")
    where = np.empty(all_keys.size, np.int64)
    where[order] = np.arange(all_keys.size)
    merged = all_keys[order]
    row_ptr = np.concatenate([[0], np.cumsum(np.bincount(merged // max(cols, 1), minlength=rows))]) \
        if merged.size else np.zeros(rows + 1, np.int64)
    values = np.concatenate([stored(W)[2], new_vals])[order]
    return row_ptr, merged % max(cols, 1), values, where[:old_keys.size], where[old_keys.size:]


@budget()
@given(W=weights(rows=big_dims, cols=big_dims), share=st.floats(0.0, 1.0), impl=impls, n_threads=threads,
       seed=seeds)
def test_merge_inserts_new_entries_in_order(W, share, impl, n_threads, seed):
    rows, cols = W.shape
    rng = np.random.default_rng(seed)
    free = empty_keys(W)
    new = np.sort(rng.choice(free, int(share * free.size), replace=False)) if free.size else free
    nv = torch.from_numpy(rng.standard_normal(new.size)).to(W.values.dtype)
    nr = torch.from_numpy(new // max(cols, 1)).long()
    nc = torch.from_numpy(new % max(cols, 1)).int()
    merge = IMPLS[impl].merge
    with num_threads(n_threads):
        rp, ci, v, old_pos, new_pos = merge(W.row_ptr, W.col_idx, W.values.detach(), cols, nr, nc, nv)
    want = ref_merge(W, new, nv.double().numpy())
    for name, a, b in zip(("row_ptr", "col_idx", "values", "old_pos", "new_pos"), (rp, ci, v, old_pos, new_pos), want):
        assert np.array_equal(a.double().numpy() if a.is_floating_point() else a.numpy(), b), name
    merged = SparseWeight(rp, ci, v, W.shape)  # a valid CSR
    check_structure(merged)
    # anything but sorted, unique, empty, in-range positions is refused
    if W.nnz:
        k = int(rng.integers(W.nnz))
        clash = (torch.tensor([int(W.coo()[0][k])]), W.col_idx[k:k + 1].clone(), torch.zeros(1, dtype=W.values.dtype))
        with pytest.raises(ValueError):
            merge(W.row_ptr, W.col_idx, W.values.detach(), cols, *clash)
    if new.size >= 2:
        with pytest.raises(ValueError):
            merge(W.row_ptr, W.col_idx, W.values.detach(), cols, nr.flip(0), nc.flip(0), nv)
    if rows:
        with pytest.raises(ValueError):
            merge(W.row_ptr, W.col_idx, W.values.detach(), cols, torch.tensor([0]), torch.tensor([cols], dtype=torch.int32),
                  torch.zeros(1, dtype=W.values.dtype))


@budget()
@given(W=weights(dtypes=st.sampled_from([F32, F64, BF16])), p_keep=densities, grow_share=st.floats(0.0, 1.0),
       init=st.sampled_from(["given", "zero", "normal"]), seed=seeds)
def test_rewire_matches_a_dictionary_model(W, p_keep, grow_share, init, seed):
    """rewire = prune the unkept entries, grow at empty positions of the pruned pattern: the
    result, the optimizer state and the gradient follow a {position: value} model."""
    rows, cols = W.shape
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    keep = torch.rand(W.nnz, generator=g) < p_keep
    W.values.grad = torch.randn(W.nnz, generator=g).to(W.values.dtype)
    opt = torch.optim.SGD([W.values], lr=0.1, momentum=0.9)
    opt.state[W.values]["momentum_buffer"] = torch.randn(W.nnz, generator=g).to(W.values.dtype)
    keys_of_before = keys_of(W)
    old_v, old_g = W.values.detach().double().numpy().copy(), W.values.grad.double().numpy().copy()
    old_m = opt.state[W.values]["momentum_buffer"].double().numpy().copy()
    kept_keys = keys_of(W)[keep.numpy()]
    free = np.setdiff1d(np.arange(rows * cols), kept_keys)  # pruned positions may be regrown
    new = np.sort(rng.choice(free, int(grow_share * free.size), replace=False)) if free.size else free
    seen = {}

    def grow(rp, ci):
        seen["pattern"] = (rp.clone(), ci.clone())
        return torch.from_numpy(new // max(cols, 1)).long(), torch.from_numpy(new % max(cols, 1)).int()

    values = torch.randn(new.size, generator=g).to(W.values.dtype) if init == "given" else None
    remap = topology.rewire(W, keep, grow, init="zero" if init == "given" else init, values=values,
                            generator=torch.Generator().manual_seed(seed), optimizer=opt)
    check_structure(W)
    # grow saw the pruned pattern
    rp, ci = seen["pattern"]
    assert np.array_equal(ci.numpy(), kept_keys % max(cols, 1))
    assert np.array_equal(rp.numpy(), np.concatenate([[0], np.cumsum(np.bincount(kept_keys // max(cols, 1),
                                                                                 minlength=rows))]))
    assert W.nnz == kept_keys.size + new.size == remap.new_nnz
    after = keys_of(W)
    assert np.array_equal(after, np.union1d(kept_keys, new))
    v, gr = W.values.detach().double().numpy(), W.values.grad.double().numpy()
    mom = opt.state[W.values]["momentum_buffer"].double().numpy()
    is_new = np.isin(after, new)
    assert not gr[is_new].any() and not mom[is_new].any()  # new entries start afresh
    if init == "zero":
        assert not v[is_new].any()
    if init == "given":
        assert np.array_equal(v[is_new], values.double().numpy())
    src = np.searchsorted(keys_of_before, after[~is_new])  # kept entries keep value, gradient and state
    for now, then in ((v, old_v), (gr, old_g), (mom, old_m)):
        assert np.array_equal(now[~is_new], then[src])
    # the Remap says the same: origin[p] is the old position of the entry now at p, -1 if new
    origin = np.full(after.size, -1)
    origin[~is_new] = src
    assert np.array_equal(remap.origin().numpy(), origin)
    assert remap.n_grown == new.size and remap.n_removed == keys_of_before.size - kept_keys.size


@pytest.mark.filterwarnings("ignore:Sparse:UserWarning")  # torch's beta notice for sparse CSR tensors
@budget(0.5)
@given(W=weights(dtypes=st.sampled_from([F32, F64, F16, BF16])))
def test_sparse_weight_conversions_round_trip(W):
    check_structure(W)
    rows, cols = W.shape
    dense = W.to_dense()
    mask = torch.zeros(W.shape, dtype=torch.bool)
    mask[W.coo()[0], W.coo()[1]] = True
    back = SparseWeight.from_dense(dense, mask)  # keeps stored zeros too
    csr = W.to_torch_sparse_csr()
    assert torch.equal(csr.crow_indices(), W.row_ptr) and torch.equal(csr.col_indices(), W.col_idx.long())
    from_csr = SparseWeight.from_csr(W.row_ptr, W.col_idx, W.values.detach(), W.shape)
    sc = SparseWeight.from_scipy(W.to_scipy(), dtype=W.values.dtype)
    for V in (back, from_csr, sc):
        assert V.shape == W.shape and V.values.dtype == W.values.dtype
        for a, b in zip(V.index, W.index):
            assert torch.equal(a, b)
        assert torch.equal(V.values.detach(), W.values.detach())


@budget(0.5)
@given(rows=dims, cols=dims, share=st.floats(0.0, 1.0), seed=seeds)
def test_random_pattern_has_exactly_nnz_entries(rows, cols, share, seed):
    nnz = int(share * rows * cols)
    W = SparseWeight.random(rows, cols, nnz=nnz, generator=torch.Generator().manual_seed(seed), dtype=F64)
    assert W.nnz == nnz
    W.validate()
    check_structure(W)


# ----------------------------------------------- SparseWeight invariants under any updates
class SparseWeightUpdates(RuleBasedStateMachine):
    """Any sequence of prunes, regrowths, pattern loads and dtype changes keeps a SparseWeight a
    valid CSR with a consistent transposed index, holding what a {position: value} model says."""

    @initialize(W=weights(rows=st.integers(0, 16), cols=st.integers(0, 16)))
    def start(self, W):
        self.W = W
        self.model = self.as_dict(W)

    @staticmethod
    def as_dict(W):
        return dict(zip(keys_of(W).tolist(), stored(W)[2].tolist()))

    def rewired(self, keep, new_keys=(), new_values=None):
        """Applies rewire and the same change to the model."""
        W, cols = self.W, self.W.shape[1]
        new_keys = np.asarray(new_keys, np.int64)
        kept = keys_of(W)[keep.numpy()]
        model = {k: self.model[k] for k in kept.tolist()}
        grow = None
        if new_keys.size:
            def grow(rp, ci):
                return torch.from_numpy(new_keys // cols).long(), torch.from_numpy(new_keys % cols).int()
        topology.rewire(W, keep, grow, values=new_values)
        if new_values is not None:  # the values as stored in the weight's dtype
            model.update(zip(new_keys.tolist(), new_values.to(W.values.dtype).double().tolist()))
        self.model = model

    @rule(share=st.floats(0.0, 1.0))
    def prune_smallest(self, share):
        self.rewired(topology.magnitude_keep(self.W.values, int(share * self.W.nnz)))

    @rule(zeta=st.floats(0.0, 1.0))
    def prune_set(self, zeta):
        self.rewired(topology.set_keep(self.W.values, zeta))

    @rule(share=st.floats(0.0, 1.0), seed=seeds)
    def regrow_random(self, share, seed):
        W = self.W
        rows, cols = W.shape
        n = int(share * (rows * cols - W.nnz))
        r, c = topology.random_empty(W.row_ptr, W.col_idx, cols, n, seed)
        vals = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=F64)
        self.rewired(torch.ones(W.nnz, dtype=torch.bool), (r * cols + c).numpy(), vals)

    @rule(p_keep=densities, share=st.floats(0.0, 1.0), seed=seeds)
    def prune_and_regrow(self, p_keep, share, seed):
        W = self.W
        rows, cols = W.shape
        g = torch.Generator().manual_seed(seed)
        keep = torch.rand(W.nnz, generator=g) < p_keep
        free = np.setdiff1d(np.arange(rows * cols), keys_of(W)[keep.numpy()])
        new = np.sort(np.random.default_rng(seed).choice(free, int(share * free.size), replace=False))
        self.rewired(keep, new, torch.randn(new.size, generator=g, dtype=F64))

    @rule(density=densities, dtype=st.sampled_from([F32, F64, BF16]), seed=seeds)
    def load_state_dict(self, density, dtype, seed):
        """A state_dict of the same shape and another pattern (another nnz), maybe saved in
        another dtype: loaded in place, the values converted to this weight's dtype."""
        other = random_weight(*self.W.shape, density, dtype=dtype, seed=seed)
        param, mine = self.W.values, self.W.values.dtype
        self.W.load_state_dict(other.state_dict())
        assert self.W.values is param and param.dtype == mine  # optimizers keep working
        self.model = {k: float(torch.tensor(v, dtype=F64).to(mine).double()) for k, v in self.as_dict(other).items()}

    @rule(dtype=st.sampled_from([F32, F64, BF16]))
    def convert(self, dtype):
        self.W.to(dtype)
        self.model = {k: float(torch.tensor(v, dtype=F64).to(dtype).double()) for k, v in self.model.items()}

    @invariant()
    def structure_and_values(self):
        W = getattr(self, "W", None)
        if W is None:
            return
        W.validate()
        check_structure(W)
        assert self.as_dict(W) == self.model


TestSparseWeightUpdates = SparseWeightUpdates.TestCase
TestSparseWeightUpdates.settings = budget(0.5, stateful_step_count=12)


# ------------------------------------------------------------------- checkpoint round trips
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
