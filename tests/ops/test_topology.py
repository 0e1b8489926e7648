"""The topology ops (csrc/cpu/topology_cpu.cpp; their CUDA kernels, and the fallback of every other
device, are written with torch primitives in sparse_engine.kernels.topology_torch): select_smallest,
set_prune, compact, random_empty, merge, remap_index, gather_or_zero, coo_dot, grad_topk, rewire.

* the C++ kernels against numpy: exact selections with ties and signed zeros, and hypothesis
  properties of every op against a plain numpy model of its contract;
* the torch-primitive kernels run on CPU tensors against the C++ kernels bit for bit (deterministic
  ops), invariants, determinism and uniformity of random growth, the same errors;
* 1 vs 2 threads, and on CUDA (skipped without a GPU) against the CPU kernels.

What the training code builds on them (rewire(), keep masks, growth, the controllers through these
ops) is tested in tests/training/test_topology_updates.py.
"""
import math
from types import SimpleNamespace

import numpy as np

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from sparse_engine import SparseWeight
from sparse_engine.kernels import densify_torch, topology_torch
from sparse_engine.testing import (check_structure, entry_keys, num_threads, random_weight, set_keep_reference,
                                   smallest_reference)
from sparse_engine.testing import assert_same_bits as same
from sparse_engine.testing import weight_strategy as weights
from sparse_engine.training import random_empty

ops = torch.ops.sparse_engine
_ops = ops
tt = SimpleNamespace(**topology_torch.OPS, **densify_torch.OPS)  # the kernels by operator name, like ops


SHAPES = [(0, 5, 0.5), (6, 0, 0.5), (7, 9, 0.0), (7, 9, 1.0), (40, 1, 0.5), (1, 50, 0.3), (30, 40, 0.2),
          (400, 500, 0.05)]


# ------------------------------------------------------------------------ selections, bit for bit
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [0, 1, 17, 1000, 300_000])
def test_select_smallest_equals_cpu_kernel(rng, n, dtype):
    for scores in (torch.randint(0, 5, (n,), generator=rng).to(dtype),  # many ties
                   torch.randn(n, generator=rng, dtype=dtype) * torch.exp(torch.randn(n, generator=rng) * 5).to(dtype)):
        if n >= 8:
            scores[:8] = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), -0.0, 1e-30, 0.0, 3.0], dtype=dtype)
        for k in sorted({0, 1 if n else 0, n // 3, n - 1 if n else 0, n}):
            same(tt.select_smallest(scores, k), ops.select_smallest(scores, k))


@pytest.mark.parametrize("zeta", [0.0, 0.1, 0.3, 0.5, 1.0])
def test_set_prune_equals_cpu_kernel(rng, zeta):
    for n in (0, 1, 7, 1001, 200_000):
        v = torch.randn(n, generator=rng)
        v[::5] = v[::5].round()  # exact zeros (and -0.0) and ties
        v[1::7] = -v[1::7].abs()
        for values in (v, v.double(), v.abs(), -v.abs()):
            same(tt.set_prune(values, zeta), ops.set_prune(values, zeta))
    half = torch.tensor([1.0, 2.0, -1.0, -2.0, -3.0])  # round(0.5 * 2) and round(0.5 * 3): halves up
    same(tt.set_prune(half, 0.5), ops.set_prune(half, 0.5))


# ----------------------------------------------------------------------- selections against numpy
@pytest.mark.parametrize("n", [0, 1, 17, 1000])
def test_select_smallest_matches_stable_numpy_with_ties(rng, n):
    scores = torch.randint(0, 5, (n,), generator=rng).double()  # many ties
    for k in sorted({0, n // 3, n}):
        got = ops.select_smallest(scores, k).numpy()
        assert got.sum() == k
        assert np.array_equal(got, smallest_reference(scores.numpy(), k))


def test_select_smallest_signed_zeros_and_wide_range(rng):
    scores = torch.tensor([0.0, -0.0, 1e-30, -1e30, 3.0, -0.0, 0.0, 2.0], dtype=torch.float64)
    for k in range(scores.numel() + 1):
        assert np.array_equal(ops.select_smallest(scores, k).numpy(), smallest_reference(scores.numpy(), k))
    big = torch.randn(300_000, generator=rng) * torch.exp(torch.randn(300_000, generator=rng) * 5)
    big[::3] = big[::3].round()  # ties across the histogram bins
    for k in (1, 123_457, 300_000):
        assert np.array_equal(ops.select_smallest(big, k).numpy(), smallest_reference(big.numpy(), k))


# -------------------------------------------------------------------------- compact, merge, remap
@pytest.mark.parametrize("rows,cols,density", SHAPES)
def test_compact_merge_remap_equal_cpu_kernels(rng, rows, cols, density):
    w = random_weight(rows, cols, density, empty_rows=(rows + 2) // 3, generator=rng)
    rp, ci, v = w.row_ptr, w.col_idx, w.values.detach()
    for keep in (torch.rand(w.nnz, generator=rng) < 0.6, torch.ones(w.nnz, dtype=torch.bool),
                 torch.zeros(w.nnz, dtype=torch.bool)):
        c = ops.compact(rp, ci, v, keep)
        same(tt.compact(rp, ci, v, keep), c)
        empty = rows * cols - c[1].numel()
        for n in sorted({0, min(1, empty), empty // 2, empty}):
            nr, nc = ops.random_empty(c[0], c[1], cols, n, int(torch.randint(0, 2**40, (1,), generator=rng)))
            nv = torch.randn(n, generator=rng, dtype=v.dtype)
            m = ops.merge(c[0], c[1], c[2], cols, nr, nc, nv)
            same(tt.merge(c[0], c[1], c[2], cols, nr, nc, nv), m)
            origin = ops.remap_index(c[3], m[3], m[1].numel())
            same(tt.remap_index(c[3], m[3], m[1].numel()), origin)
            for t in (v, v.float(), torch.randint(-9, 9, (w.nnz, 3), generator=rng), (v > 0).to(torch.int8),
                      v > 0, torch.randn(w.nnz, 2, 2, generator=rng)):
                same(tt.gather_or_zero(t, origin), ops.gather_or_zero(t, origin))


def keys_of(rp, ci, cols):
    return (torch.repeat_interleave(torch.arange(rp.numel() - 1), rp.diff()) * cols + ci.long()).numpy()


def rewire_args(rp, ci, v, cols, keep, given=None, G=None, X=None, n=0, seed=0, tiles=(0, 0), sample=0,
                regrown=False, carry=()):
    return (rp, ci, v, cols, keep, *(given or (None, None)), G, X, n, seed, *tiles, sample, regrown, list(carry))


def composed_rewire(rp, ci, v, cols, keep, nr, nc, regrown, carry):
    """The update as the separate operators compose it (compact, merge, remap) with the grown
    positions known: the reference of the fused operator."""
    if regrown:  # a pruned entry grown again stays
        keys, new_keys = torch.from_numpy(keys_of(rp, ci, cols)), nr * cols + nc.long()
        back = ~keep & torch.isin(keys, new_keys)
        keep, fresh = keep | back, ~torch.isin(new_keys, keys[back])
        nr, nc = nr[fresh], nc[fresh]
    c = ops.compact(rp, ci, v, keep)
    m = ops.merge(c[0], c[1], c[2], cols, nr, nc, torch.zeros(nr.numel(), dtype=v.dtype))
    origin = ops.remap_index(c[3], m[3], m[1].numel())
    return (*m[:3], c[3], m[3], m[4], nr, nc, [ops.gather_or_zero(t, origin) for t in carry])


def same_rewire(a, b):
    same(tuple(a[:8]), tuple(b[:8]))
    assert len(a[8]) == len(b[8])
    for x, y in zip(a[8], b[8]):
        same(x, y)


@pytest.mark.parametrize("rows,cols,density", SHAPES[:-1])
def test_rewire_is_the_composed_update_and_equals_cpu_kernel(rng, rows, cols, density):
    """The fused operator equals compact -> merge -> remap with the positions it grew, and the
    Python kernel equals the C++ one bit for bit, for given positions (with and without keeping
    the regrown entries) and exact gradient growth; random growth keeps the invariants."""
    w = random_weight(rows, cols, density, empty_rows=(rows + 2) // 3, generator=rng)
    rp, ci, v = w.row_ptr, w.col_idx, w.values.detach()
    carry = (v * 3, torch.randint(-9, 9, (w.nnz, 3), generator=rng), (v > 0).to(torch.int8))
    tiles = (7, 9)
    for keep in (torch.rand(w.nnz, generator=rng) < 0.6, torch.ones(w.nnz, dtype=torch.bool),
                 torch.zeros(w.nnz, dtype=torch.bool)):
        c = ops.compact(rp, ci, v, keep)
        empty = rows * cols - c[1].numel()
        for n in sorted({0, min(1, empty), empty // 2, empty}):
            given = ops.random_empty(c[0], c[1], cols, n, int(torch.randint(0, 2**40, (1,), generator=rng)))
            for regrown in (False, True):
                got = ops.rewire(*rewire_args(rp, ci, v, cols, keep, given, regrown=regrown, carry=carry))
                same_rewire(got, composed_rewire(rp, ci, v, cols, keep, *given, regrown, carry))
                same_rewire(tt.rewire(*rewire_args(rp, ci, v, cols, keep, given, regrown=regrown, carry=carry)), got)
            G, X = torch.randn(rows, 3, generator=rng, dtype=v.dtype), torch.randn(cols, 3, generator=rng, dtype=v.dtype)
            got = ops.rewire(*rewire_args(rp, ci, v, cols, keep, G=G, X=X, n=n, tiles=tiles, carry=carry))
            top = ops.grad_topk(c[0], c[1], G, X, n, *tiles)[:2]
            same_rewire(got, composed_rewire(rp, ci, v, cols, keep, *top, False, carry))
            same_rewire(tt.rewire(*rewire_args(rp, ci, v, cols, keep, G=G, X=X, n=n, tiles=tiles, carry=carry)), got)
            for impl in (ops, tt):  # random growth: n new entries at positions empty after the pruning
                r = impl.rewire(*rewire_args(rp, ci, v, cols, keep, n=n, seed=5, carry=carry))
                assert r[0][-1] == c[1].numel() + n and torch.equal(r[2][r[5]], torch.zeros(n, dtype=v.dtype))
                assert not np.isin((r[6] * cols + r[7].long()).numpy(), (keys_of(c[0], c[1], cols))).any()


@pytest.mark.parametrize("threads", [1, 2])
def test_rewire_of_a_large_layer_is_the_composed_update(rng, threads):
    """Above the kernels' parallel threshold (600k entries), one and two threads: the fused
    operator equals the composed update, a fifth of the grown positions just pruned."""
    w = random_weight(1000, 1000, 0.6, generator=rng)
    rp, ci, v = w.row_ptr, w.col_idx, w.values.detach()
    keep = torch.rand(w.nnz, generator=rng) < 0.7
    c = ops.compact(rp, ci, v, keep)
    pruned = torch.nonzero(~keep).squeeze(1)[::5]
    old = torch.from_numpy(keys_of(rp, ci, 1000))[pruned]
    new = torch.from_numpy(np.setdiff1d(np.arange(10**6), keys_of(rp, ci, 1000)))[::7]
    grown = torch.cat([old, new]).sort().values
    given = (grown // 1000, (grown % 1000).int())
    carry = (v, torch.randint(-9, 9, (w.nnz, 2), generator=rng))
    with num_threads(threads):
        for regrown in (False, True):
            got = ops.rewire(*rewire_args(rp, ci, v, 1000, keep, given, regrown=regrown, carry=carry))
            same_rewire(got, composed_rewire(rp, ci, v, 1000, keep, *given, regrown, carry))
    assert got[6].numel() == new.numel() and c[1].numel() + old.numel() + new.numel() == got[1].numel()


def test_rewire_sampled_gradient_growth_is_the_best_of_the_candidates(rng):
    w = random_weight(30, 40, 0.1, generator=rng)
    rp, ci, v = w.row_ptr, w.col_idx, w.values.detach().double()
    G, X = torch.randn(30, 4, generator=rng, dtype=torch.float64), torch.randn(40, 4, generator=rng, dtype=torch.float64)
    keep = torch.rand(w.nnz, generator=rng) < 0.7
    c = ops.compact(rp, ci, v, keep)
    empty = 30 * 40 - c[1].numel()
    for impl in (ops, tt):
        cr, cc = impl.random_empty(c[0], c[1], 40, min(empty, 3 * 25), 11)  # the candidates, as the op draws them
        pick = ops.select_smallest(-ops.coo_dot(cr, cc, G, X).abs(), 25)
        got = impl.rewire(*rewire_args(rp, ci, v, 40, keep, G=G, X=X, n=25, seed=11, sample=3))
        assert torch.equal(got[6], cr[pick]) and torch.equal(got[7], cc[pick])


def test_rewire_refuses_bad_input(rng):
    w = random_weight(6, 5, 0.5, generator=rng)
    rp, ci, v = w.row_ptr, w.col_idx, w.values.detach()
    keep = torch.ones(w.nnz, dtype=torch.bool)
    G, X = torch.randn(6, 2, generator=rng), torch.randn(5, 2, generator=rng)
    r0, c0 = torch.tensor([0]), torch.tensor([0], dtype=torch.int32)
    bad = [(dict(given=(r0, c0), G=G, X=X), ValueError, "not both"),
           (dict(G=G), ValueError, "together"),
           (dict(given=(r0, c0.long())), TypeError, "grow_col"),
           (dict(G=G, X=X[:4], n=1), ValueError, "X must"),
           (dict(G=G, X=X, n=1, sample=-1), ValueError, "sample_factor"),
           (dict(G=G, X=X, n=99, sample=2), ValueError, "empty positions"),
           (dict(n=99), ValueError, "empty positions"),
           (dict(carry=(v[:-1],)), ValueError, "carry"),
           (dict(given=(torch.tensor([1, 0]), torch.tensor([0, 0], dtype=torch.int32)), regrown=True), ValueError,
            "sorted")]
    for kw, exc, match in bad:
        for impl in (ops, tt):
            with pytest.raises(exc, match=match):
                impl.rewire(*rewire_args(rp, ci, v, 5, keep, **kw))


def test_gather_or_zero_edges(rng):
    t = torch.randn(5, 2, generator=rng)
    for origin in (torch.full((4,), -1), torch.empty(0, dtype=torch.int64), torch.tensor([4, -1, 0, 4, -7])):
        same(tt.gather_or_zero(t, origin), ops.gather_or_zero(t, origin))
    same(tt.gather_or_zero(torch.empty(0), torch.full((3,), -1)), ops.gather_or_zero(torch.empty(0), torch.full((3,), -1)))
    nan = torch.tensor([float("nan"), -0.0, 1.0])  # bits are copied, not values
    same(tt.gather_or_zero(nan, torch.tensor([0, 1, -1])), ops.gather_or_zero(nan, torch.tensor([0, 1, -1])))


def test_merge_refuses_existing_unsorted_or_out_of_range(rng):
    w = random_weight(6, 6, 0.5, generator=rng)
    v = w.values.detach()
    row, col, _ = w.coo()
    with pytest.raises(ValueError, match="already stored"):
        ops.merge(w.row_ptr, w.col_idx, v, 6, row[:1].clone(), col[:1].int(), torch.zeros(1, dtype=v.dtype))
    r, c = random_empty(w.row_ptr, w.col_idx, 6, 2, seed=1)
    with pytest.raises(ValueError, match="sorted"):
        ops.merge(w.row_ptr, w.col_idx, v, 6, r.flip(0), c.flip(0), torch.zeros(2, dtype=v.dtype))
    with pytest.raises(ValueError, match="outside"):
        ops.merge(w.row_ptr, w.col_idx, v, 6, torch.tensor([6]), torch.tensor([0], dtype=torch.int32),
                  torch.zeros(1, dtype=v.dtype))
    with pytest.raises(TypeError, match="keep"):
        ops.compact(w.row_ptr, w.col_idx, v, torch.ones(w.nnz, dtype=torch.int32))


# ------------------------------------------------------------------------------------ RigL growth
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows,cols,density", SHAPES)
def test_grad_topk_equals_cpu_kernel(rng, rows, cols, density, dtype):
    w = random_weight(rows, cols, density, empty_rows=(rows + 2) // 3, generator=rng)
    empty = rows * cols - w.nnz
    for M, integer in ((5, False), (3, True), (0, False)):
        if integer:  # many equal |grad|: the tie rule decides
            G = torch.randint(-1, 2, (rows, M), generator=rng).to(dtype)
            X = torch.randint(-1, 2, (cols, M), generator=rng).to(dtype)
        else:
            G, X = torch.randn(rows, M, generator=rng, dtype=dtype), torch.randn(cols, M, generator=rng, dtype=dtype)
        for k in sorted({0, min(1, empty), empty // 3, empty}):
            for tr, tc in ((1, 1), (7, 9), (256, 2**14)):
                if (rows * cols) // (tr * tc) > 1500:
                    continue
                same(tt.grad_topk(w.row_ptr, w.col_idx, G, X, k, tr, tc),
                     ops.grad_topk(w.row_ptr, w.col_idx, G, X, k, tr, tc))


def test_grad_topk_never_selects_nan(rng):
    w = random_weight(20, 30, 0.2, empty_rows=7, generator=rng)
    G, X = torch.randn(20, 4, generator=rng), torch.randn(30, 4, generator=rng)
    G[3, 1] = float("nan")
    same(tt.grad_topk(w.row_ptr, w.col_idx, G, X, 50, 6, 7), ops.grad_topk(w.row_ptr, w.col_idx, G, X, 50, 6, 7))
    r, c, g = tt.grad_topk(w.row_ptr, w.col_idx, G, X, 50, 6, 7)
    assert not torch.isnan(g).any() and not (r == 3).any()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_coo_dot_matches_cpu_kernel_up_to_rounding(rng, dtype, tol):
    for rows, cols, M, n in ((30, 40, 7, 500), (5, 3, 0, 4), (5, 3, 2, 0), (200, 300, 64, 100_000)):
        G, X = torch.randn(rows, M, generator=rng, dtype=dtype), torch.randn(cols, M, generator=rng, dtype=dtype)
        r = torch.randint(0, rows, (n,), generator=rng)
        c = torch.randint(0, cols, (n,), generator=rng).int()
        got, ref = tt.coo_dot(r, c, G, X), ops.coo_dot(r, c, G, X)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        scale = (G.abs()[r] * X.abs()[c.long()]).sum(1)  # rounding bound per dot product
        assert ((got - ref).abs() <= tol * scale + 1e-30).all()


# ---------------------------------------------------------------------------------- random growth
@pytest.mark.parametrize("rows,cols,density,n", [(40, 30, 0.05, 100), (40, 30, 0.9, 100), (1, 1000, 0.5, 499),
                                                 (300, 300, 0.05, 10000), (1, 100000, 0.01, 20000),
                                                 (5, 3, 0.0, 15), (7, 9, 1.0, 0), (40, 1, 0.5, 10), (0, 4, 0.5, 0)])
def test_random_empty_invariants_and_seed(rng, rows, cols, density, n):
    w = random_weight(rows, cols, density, empty_rows=(rows + 2) // 3, generator=rng)
    for n in sorted({min(n, rows * cols - w.nnz), rows * cols - w.nnz}):  # and every empty position
        seed = int(torch.randint(0, 2**62, (1,), generator=rng))
        r, c = tt.random_empty(w.row_ptr, w.col_idx, cols, n, seed)
        assert r.numel() == c.numel() == n and r.dtype == torch.int64 and c.dtype == torch.int32
        k = (r * cols + c.long()).numpy()
        assert np.all(np.diff(k) > 0)  # sorted, unique
        assert ((c >= 0) & (c < cols)).all() and ((r >= 0) & (r < rows)).all()
        assert not np.isin(k, entry_keys(w)).any()  # only positions that were empty
        again = tt.random_empty(w.row_ptr, w.col_idx, cols, n, seed)
        assert torch.equal(r, again[0]) and torch.equal(c, again[1])
    if 0 < n < rows * cols - w.nnz:
        other = tt.random_empty(w.row_ptr, w.col_idx, cols, n, seed + 1)
        assert not (torch.equal(r, other[0]) and torch.equal(c, other[1]))


@pytest.mark.parametrize("n", [1, 2, 5])  # 1: rejection (>= 4n empty); 2, 5: random permutation
def test_random_empty_is_uniform_chi_square(n):
    dense = torch.zeros(3, 4)
    occupied = [(0, 0), (0, 3), (1, 1), (2, 0), (2, 2), (2, 3)]
    for i, j in occupied:
        dense[i, j] = 1.0
    w = SparseWeight.from_dense(dense)
    empty = sorted(set(range(12)) - {i * 4 + j for i, j in occupied})
    trials = 2000
    counts = dict.fromkeys(empty, 0)
    pairs = {}
    for s in range(trials):
        r, c = tt.random_empty(w.row_ptr, w.col_idx, 4, n, seed=s)
        ks = (r * 4 + c.long()).tolist()
        for key in ks:
            counts[key] += 1  # KeyError if a stored position came out
        pairs[tuple(ks)] = pairs.get(tuple(ks), 0) + 1
    # fixed seeds: deterministic, the p-value bound is not a flaky threshold
    assert stats.chisquare(list(counts.values())).pvalue > 1e-3, counts
    # every n-subset equally likely, not only every position
    assert len(pairs) == math.comb(len(empty), n)
    assert stats.chisquare(list(pairs.values())).pvalue > 1e-3, pairs


@pytest.mark.parametrize("rows,cols,n,trials", [(20, 10, 40, 1500), (100, 100, 2000, 400)])
def test_random_empty_uniform_per_position_when_the_surplus_is_dropped(rows, cols, n, trials):
    """Rejection sampling with a surplus removed at random (by a permutation in the first case,
    by the same rejection sampling in the second): every empty position equally likely."""
    g = torch.Generator().manual_seed(11)
    mask = torch.zeros(rows * cols, dtype=torch.bool)
    mask[torch.randperm(rows * cols, generator=g)[:rows * cols // 5]] = True  # 20% stored
    w = SparseWeight.from_dense(torch.ones(rows, cols), mask.view(rows, cols))
    counts = torch.zeros(rows * cols)
    for s in range(trials):
        r, c = tt.random_empty(w.row_ptr, w.col_idx, cols, n, seed=s)
        assert r.numel() == n
        counts += torch.bincount(r * cols + c.long(), minlength=rows * cols)
    assert (counts[torch.from_numpy(entry_keys(w))] == 0).all()
    empty = counts[~mask]
    assert stats.chisquare(empty.numpy()).pvalue > 1e-3


def huge_range_uniform(device):
    """2 x 1.5e9 positions: a range just under 2^32, where reducing a 32-bit draw modulo the
    range would make the first 1.3e9 positions twice as likely as the rest (the reason the
    draws are 63-bit integers; torch's CPU randint is unbiased there, its CUDA one need not be)."""
    rp = torch.zeros(3, dtype=torch.int64, device=device)
    ci = torch.empty(0, dtype=torch.int32, device=device)
    cols = 1_500_000_000
    r, c = tt.random_empty(rp, ci, cols, 100_000, seed=3)
    assert r.device == rp.device
    key = (r * cols + c.long()).double().cpu() / (2 * cols)
    assert stats.kstest(key.numpy(), "uniform").pvalue > 1e-3
    hist = torch.histc(key, bins=20, min=0, max=1)
    assert stats.chisquare(hist.numpy()).pvalue > 1e-3


def test_random_empty_uniform_over_a_huge_range():
    huge_range_uniform("cpu")


# -------------------------------------------------------------------- errors like the CPU kernels
def _bad_inputs():
    """The cases of the topology ops (the densify ops' scatter_csr and gather_csr: test_densify.py)."""
    w = SparseWeight.from_dense(torch.eye(4, dtype=torch.float64))
    rp, ci, v = w.row_ptr, w.col_idx, w.values.detach()
    e64, e32 = torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int32)
    g = torch.Generator().manual_seed(0)  # the values do not matter, only shapes and dtypes
    G, X = torch.randn(4, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64)
    yes = torch.ones(4, dtype=torch.bool)
    return [
        ("select_smallest", (torch.arange(4), 1), TypeError, "scores"),
        ("select_smallest", (torch.randn(2, 2, generator=g), 1), ValueError, "scores"),
        ("select_smallest", (torch.randn(4, generator=g), 5), ValueError, "k must"),
        ("select_smallest", (torch.tensor([1.0, float("nan")]), 1), ValueError, "NaN"),
        ("set_prune", (torch.randn(4, generator=g), 1.5), ValueError, "zeta"),
        ("set_prune", (torch.randn(4, generator=g), float("nan")), ValueError, "zeta"),
        ("set_prune", (torch.arange(4), 0.5), TypeError, "values"),
        ("set_prune", (torch.tensor([float("nan")]), 0.5), ValueError, "NaN"),
        ("compact", (rp, ci, v, yes.int()), TypeError, "keep"),
        ("compact", (rp, ci, v, yes[:3]), ValueError, "keep"),
        ("compact", (rp.int(), ci, v, yes), TypeError, "row_ptr"),
        ("compact", (rp, ci.long(), v, yes), TypeError, "col_idx"),
        ("compact", (rp + 1, ci, v, yes), ValueError, "row_ptr"),
        ("compact", (rp, ci, v[:3], yes), ValueError, "values"),
        ("compact", (rp, ci, v.int(), yes), TypeError, "values"),
        ("random_empty", (rp, ci, 4, 13, 0), ValueError, "empty positions"),
        ("random_empty", (rp, ci, 4, -1, 0), ValueError, "n must"),
        ("random_empty", (rp, ci, -4, 1, 0), ValueError, "n_cols"),
        ("merge", (rp, ci, v, 4, torch.tensor([1]), torch.tensor([1], dtype=torch.int32), v[:1]), ValueError,
         "already stored"),
        ("merge", (rp, ci, v, 4, torch.tensor([1, 0]), torch.tensor([2, 1], dtype=torch.int32), v[:2]), ValueError,
         "sorted"),
        ("merge", (rp, ci, v, 4, torch.tensor([0, 0]), torch.tensor([1, 1], dtype=torch.int32), v[:2]), ValueError,
         "sorted"),
        ("merge", (rp, ci, v, 4, torch.tensor([4]), torch.tensor([0], dtype=torch.int32), v[:1]), ValueError,
         "outside"),
        ("merge", (rp, ci, v, 4, torch.tensor([0]), torch.tensor([-1], dtype=torch.int32), v[:1]), ValueError,
         "outside"),
        ("merge", (rp, ci, v, 4, torch.tensor([0]), torch.tensor([1]), v[:1]), TypeError, "new_col"),
        ("merge", (rp, ci, v, 4, torch.tensor([0], dtype=torch.int32), torch.tensor([1], dtype=torch.int32), v[:1]),
         TypeError, "new_row"),
        ("merge", (rp, ci, v, 4, torch.tensor([0]), torch.tensor([1], dtype=torch.int32), v[:1].float()),
         TypeError, "new_values"),
        ("merge", (rp, ci, v, 4, torch.tensor([0]), torch.tensor([1], dtype=torch.int32), v[:2]), ValueError,
         "same length"),
        ("remap_index", (e64, e32, 3), TypeError, "old_pos"),
        ("remap_index", (torch.tensor([0]), torch.tensor([3]), 3), ValueError, "old_pos"),
        ("remap_index", (torch.tensor([0]), e64, 3), ValueError, "same length"),
        ("gather_or_zero", (v, torch.tensor([0], dtype=torch.int32)), TypeError, "origin"),
        ("gather_or_zero", (v, torch.tensor([4])), ValueError, "origin"),
        ("gather_or_zero", (torch.tensor(1.0), torch.tensor([0])), ValueError, "dimension"),
        ("coo_dot", (torch.tensor([0], dtype=torch.int32), torch.tensor([0], dtype=torch.int32), G, X), TypeError,
         "rows"),
        ("coo_dot", (torch.tensor([0]), torch.tensor([0]), G, X), TypeError, "cols"),
        ("coo_dot", (torch.tensor([4]), torch.tensor([0], dtype=torch.int32), G, X), ValueError, "rows"),
        ("coo_dot", (torch.tensor([0]), torch.tensor([4], dtype=torch.int32), G, X), ValueError, "cols"),
        ("coo_dot", (torch.tensor([0]), torch.tensor([0], dtype=torch.int32), G, X.float()), TypeError, "X"),
        ("coo_dot", (torch.tensor([0]), torch.tensor([0], dtype=torch.int32), G, X[:, :1]), ValueError, "columns"),
        ("grad_topk", (rp, ci, G, X, 13, 2, 2), ValueError, "empty positions"),
        ("grad_topk", (rp, ci, G[:3], X, 1, 2, 2), ValueError, "G must"),
        ("grad_topk", (rp, ci, G, X[:, :1], 1, 2, 2), ValueError, "X must"),
        ("grad_topk", (rp, ci, G, X.float(), 1, 2, 2), TypeError, "X must"),
        ("grad_topk", (rp, ci, G.long(), X, 1, 2, 2), TypeError, "G must"),
        ("grad_topk", (rp, ci, G, X, 1, 0, 2), ValueError, "tile_rows"),
        ("grad_topk", (rp, ci, G, X[:3], 1, 2, 2), ValueError, "col_idx"),
    ]


@pytest.mark.parametrize("name,args,exc,match", _bad_inputs(), ids=lambda x: x if isinstance(x, str) else "")
def test_bad_input_raises_like_the_cpu_kernel(name, args, exc, match):
    with pytest.raises(exc, match=match):
        getattr(tt, name)(*args)
    with pytest.raises(exc):
        getattr(ops, name)(*args)


def test_tensors_on_two_devices_are_refused():
    with pytest.raises(ValueError, match="one device"):
        tt.compact(torch.zeros(2, dtype=torch.int64), torch.empty(0, dtype=torch.int32), torch.empty(0),
                   torch.empty(0, dtype=torch.bool, device="meta"))


# --------------------------------------------------------------------------------- 1 vs 2 threads
def test_topology_kernels_on_1_and_2_threads(same_on_1_and_2_threads):
    g = torch.Generator().manual_seed(3)
    n = 200_000
    scores = torch.randn(n, generator=g)
    W = random_weight(1000, 800, 0.1, empty_rows=10, dtype=torch.float32, generator=g)
    keep = torch.rand(W.nnz, generator=g) < 0.7
    G, X = torch.randn(1000, 16, generator=g), torch.randn(800, 16, generator=g)
    same_on_1_and_2_threads(lambda: _ops.select_smallest(scores, n // 3))
    same_on_1_and_2_threads(lambda: _ops.set_prune(scores, 0.3))
    same_on_1_and_2_threads(lambda: _ops.set_prune((scores * 4).round(), 0.3))  # ties at both cuts, some kept
    row_ptr, col_idx, values, kept_pos = same_on_1_and_2_threads(
        lambda: _ops.compact(W.row_ptr, W.col_idx, W.values.detach(), keep))
    new_row, new_col = same_on_1_and_2_threads(lambda: _ops.random_empty(row_ptr, col_idx, 800, 20_000, 7))
    new_values = torch.randn(new_row.numel(), generator=g)
    merged = same_on_1_and_2_threads(
        lambda: _ops.merge(row_ptr, col_idx, values, 800, new_row, new_col, new_values))
    origin = same_on_1_and_2_threads(lambda: _ops.remap_index(kept_pos, merged[3], merged[1].numel()))
    state = torch.randn(W.nnz, 3, generator=g)
    same_on_1_and_2_threads(lambda: _ops.gather_or_zero(state, origin))

    def rewire():  # its outputs, the carried tensors' list flattened
        out = _ops.rewire(W.row_ptr, W.col_idx, W.values.detach(), 800, keep, None, None, None, None, 20_000, 7,
                          0, 0, 0, False, [state, state[:, 0]])
        return (*out[:8], *out[8])
    same_on_1_and_2_threads(rewire)
    rows = torch.repeat_interleave(torch.arange(1000), W.row_ptr.diff())
    same_on_1_and_2_threads(lambda: _ops.coo_dot(rows, W.col_idx, G, X))
    same_on_1_and_2_threads(lambda: _ops.grad_topk(W.row_ptr, W.col_idx, G, X, 5000, 256, 256))


# ------------------------------------------------------------------------ properties (hypothesis)
EXAMPLES = settings().max_examples  # of the profile tests/conftest.py loaded
F32, F64 = torch.float32, torch.float64
seeds = st.integers(0, 2**32 - 1)
threads = st.sampled_from([1, 2])
# mostly small sizes, sometimes enough work to cross constants.PARALLEL_WORK on two threads, and
# sometimes over 4 * PARALLEL_WORK entries
big_dims = st.one_of(st.integers(0, 24), st.integers(100, 220), st.integers(380, 460))
densities = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))


def budget(share: float = 1.0, **kw) -> settings:
    """``share`` of the profile's examples for one test (at least 5)."""
    return settings(max_examples=max(5, int(EXAMPLES * share)), **kw)


# ------------------------------------------------------------------------- properties: selections
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


# ------------------------------------------------------------------------ properties: CSR updates
def stored(W: SparseWeight):
    """(row, col, value as float64) of every stored entry, in CSR order, as numpy arrays."""
    row, col, v = W.coo()
    return row.numpy(), col.numpy(), v.detach().double().numpy()


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
    return np.setdiff1d(np.arange(rows * cols), entry_keys(W))


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
    old_keys = entry_keys(W)
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


# ------------------------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the topology ops' CUDA kernels)")
class TestCUDA:
    def test_ops_equal_the_cpu_kernels(self):
        rng = torch.Generator().manual_seed(5)
        dev = "cuda"
        for rows, cols, density in SHAPES + [(3000, 2000, 0.02)]:
            w = random_weight(rows, cols, density, empty_rows=(rows + 2) // 3, generator=rng)
            rp, ci, v = w.row_ptr, w.col_idx, w.values.detach()
            d = lambda *ts: tuple(t.to(dev) for t in ts)  # noqa: E731
            for k in sorted({0, w.nnz // 3, w.nnz}):
                same(ops.select_smallest(v.abs().to(dev), k).cpu(), ops.select_smallest(v.abs(), k))
            same(ops.set_prune(v.to(dev), 0.3).cpu(), ops.set_prune(v, 0.3))
            keep = torch.rand(w.nnz, generator=rng) < 0.6
            c = ops.compact(rp, ci, v, keep)
            same(tuple(t.cpu() for t in ops.compact(*d(rp, ci, v, keep))), c)
            n = (rows * cols - c[1].numel()) // 2
            nr, nc = ops.random_empty(c[0], c[1], cols, n, 7)
            nv = torch.randn(n, generator=rng, dtype=v.dtype)
            m = ops.merge(c[0], c[1], c[2], cols, nr, nc, nv)
            same(tuple(t.cpu() for t in ops.merge(*d(c[0], c[1], c[2]), cols, *d(nr, nc, nv))), m)
            origin = ops.remap_index(c[3], m[3], m[1].numel())
            same(ops.remap_index(*d(c[3], m[3]), m[1].numel()).cpu(), origin)
            same(ops.gather_or_zero(*d(v, origin)).cpu(), ops.gather_or_zero(v, origin))
            # integer-valued factors: every product is exact on both devices, so the top-k is too
            G = torch.randint(-2, 3, (rows, 8), generator=rng).double()
            X = torch.randint(-2, 3, (cols, 8), generator=rng).double()
            k = (rows * cols - w.nnz) // 4
            same(tuple(t.cpu() for t in ops.grad_topk(*d(rp, ci, G, X), k, 64, 512)),
                 ops.grad_topk(rp, ci, G, X, k, 64, 512))
            r, c2 = ops.random_empty(*d(rp, ci), cols, n, 11)
            assert r.is_cuda and c2.is_cuda and r.numel() == n
            key = (r * cols + c2.long()).cpu().numpy()
            assert np.all(np.diff(key) > 0) and not np.isin(key, entry_keys(w)).any()
            again = ops.random_empty(*d(rp, ci), cols, n, 11)
            assert torch.equal(r, again[0]) and torch.equal(c2, again[1])

    def test_random_empty_uniform_over_a_huge_range(self):
        huge_range_uniform("cuda")


def test_grad_topk_with_too_few_finite_gradients_says_why(rng):
    """k above the empty positions whose gradient is a number: a ValueError naming the NaNs, from
    both kernels (before: RuntimeError "grad_topk found 2 of 3 entries")."""
    w = random_weight(4, 5, 0.5, generator=rng)
    empty = 20 - w.nnz
    G, X = torch.randn(4, 3, generator=rng), torch.randn(5, 3, generator=rng)
    G[1:, 0] = float("nan")  # every row but the first: NaN gradients
    finite = 5 - (w.row_ptr[1] - w.row_ptr[0]).item()
    for f in (tt.grad_topk, ops.grad_topk):
        assert f(w.row_ptr, w.col_idx, G, X, finite, 2, 2)[0].numel() == finite
        with pytest.raises(ValueError, match=f"NaN in G or X.*only {finite} of the k={finite + 1}"):
            f(w.row_ptr, w.col_idx, G, X, min(empty, finite + 1), 2, 2)


def test_grad_topk_bits_do_not_depend_on_threads_with_long_factors(rng):
    """M = 1,100 columns (T x B of a batch): MKL splits an inner dimension that long across threads,
    which changed 672 of 2,000 gradients' bits between one and two threads; the tiles now sum it
    in chunks of 256 in order. Against float64 within float32's rounding too."""
    from sparse_engine.testing import num_threads

    w = random_weight(300, 400, 0.1, generator=rng)
    G, X = torch.randn(300, 1100, generator=rng), torch.randn(400, 1100, generator=rng)
    got = []
    for n in (1, 2):
        with num_threads(n):
            got.append(ops.grad_topk(w.row_ptr, w.col_idx, G, X, 2000, 256, 2**14))
    for a, b in zip(*got):
        assert torch.equal(a, b)
    r, c, g = got[0]
    ref = (G.double() @ X.double().t())[r, c.long()]
    torch.testing.assert_close(g.double(), ref, rtol=1e-5, atol=1e-4)
