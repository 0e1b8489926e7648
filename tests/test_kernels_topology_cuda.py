"""The CUDA kernels of the topology ops, written with torch primitives
(sparse_engine.kernels.topology_torch): run on CPU tensors against the C++ kernels bit for bit
(deterministic ops), invariants, determinism and uniformity of random growth, the same errors,
the whole controller path routed through them; and a CUDA class (skipped without a GPU) that runs
the controllers on a CUDA model and checks that nothing leaves the device."""
import contextlib
import math
from types import SimpleNamespace

import numpy as np

import pytest
import torch
from scipy import stats
from torch import nn

from sparse_engine import SparseWeight
from sparse_engine.nn import SparseLinear
from sparse_engine.training import SET, DeepR, GradualMagnitudePruning, RigL, SelfishRNN, sparse_weights, topology
from sparse_engine.training.controllers import base
from sparse_engine.kernels import densify_torch, has_kernel, topology_torch
from sparse_engine.testing import check_invariants, entry_keys, num_threads, random_weight, value_by_key

ops = torch.ops.sparse_engine
tt = SimpleNamespace(**topology_torch.OPS, **densify_torch.OPS)  # the kernels by operator name, like ops


def same(a, b):
    """Bit-for-bit equal results (tuples of tensors, same dtype and shape)."""
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        if x.is_floating_point():
            x, y = x.view(torch.int64 if x.dtype == torch.float64 else torch.int32), \
                y.view(torch.int64 if y.dtype == torch.float64 else torch.int32)
        assert torch.equal(x, y)


SHAPES = [(0, 5, 0.5), (6, 0, 0.5), (7, 9, 0.0), (7, 9, 1.0), (40, 1, 0.5), (1, 50, 0.3), (30, 40, 0.2),
          (400, 500, 0.05)]


# ------------------------------------------------------------------ selections, bit for bit
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


# ------------------------------------------------------------------ compact, merge, remap
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


# ------------------------------------------------------------------ CSR <-> dense
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows,cols,density", SHAPES + [(1024, 1100, 0.95)])  # the last: a parallel copy
def test_scatter_gather_csr_equal_cpu_kernels_and_the_dense_matrix(rng, rows, cols, density, threads):
    """scatter_csr writes exactly the stored entries (the other entries of dense are kept),
    gather_csr reads them back, against the float64 dense matrix; any dtype, dense row- or
    column-major, values not contiguous, one or two threads."""
    w = random_weight(rows, cols, density, empty_rows=(rows + 2) // 3, generator=rng)
    rp, ci, v = w.row_ptr, w.col_idx, w.values.detach()
    ref = w.to_dense()
    stored = torch.zeros(rows, cols, dtype=torch.bool)
    for r in range(rows):
        stored[r, ci[rp[r]:rp[r + 1]].long()] = True
    for dtype in (torch.float64, torch.float32, torch.float16, torch.int16, torch.bool):
        values = torch.stack([v, -v], 1)[:, 0].to(dtype)  # strided
        fill = torch.randn(rows, cols, generator=rng, dtype=torch.float64).mul(7).to(dtype)
        expect = torch.where(stored, ref.to(dtype), fill)
        for layout in (lambda t: t.clone(), lambda t: t.t().contiguous().t()):
            for impl in (ops, tt):
                dense = layout(fill)
                with num_threads(threads):
                    assert impl.scatter_csr(rp, ci, values, dense) is None
                    assert torch.equal(dense, expect), (dtype, impl)
                    assert torch.equal(impl.gather_csr(rp, ci, dense), values), (dtype, impl)


# ------------------------------------------------------------------ RigL growth
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


# ------------------------------------------------------------------ random growth
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


# ------------------------------------------------------------------ errors like the CPU kernels
def _bad_inputs():
    w = SparseWeight.from_dense(torch.eye(4, dtype=torch.float64))
    rp, ci, v = w.row_ptr, w.col_idx, w.values.detach()
    e64, e32 = torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int32)
    g = torch.Generator().manual_seed(0)  # the values do not matter, only shapes and dtypes
    G, X = torch.randn(4, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64)
    yes = torch.ones(4, dtype=torch.bool)
    d4 = torch.zeros(4, 4, dtype=torch.float64)
    return [
        ("scatter_csr", (rp, ci, v[:3], d4), ValueError, "values"),
        ("scatter_csr", (rp, ci, v.float(), d4), TypeError, "dtype"),
        ("scatter_csr", (rp, ci, v, d4[:3]), ValueError, "dense"),
        ("scatter_csr", (rp, ci.long(), v, d4), TypeError, "col_idx"),
        ("gather_csr", (rp, ci, d4[:, :3]), ValueError, "col_idx"),
        ("gather_csr", (rp, ci, d4[0]), ValueError, "dense"),
        ("gather_csr", (rp.int(), ci, d4), TypeError, "row_ptr"),
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


# ------------------------------------------------------------------ registration
def test_registered_as_the_kernels_of_every_device_but_the_cpu():
    """The Python kernels are the operators' CUDA kernels on any torch and, under
    CompositeExplicitAutograd, the one fallback of every other device without a kernel of its own
    (the CPU keeps its C++ kernels), so the operator is the only way to call them."""
    for name, fn in {**topology_torch.OPS, **densify_torch.OPS}.items():
        assert has_kernel(name, "cuda") and has_kernel(name, "cpu"), name
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"sparse_engine::{name}", "CompositeExplicitAutograd")
        assert fn.__name__ == f"{name}_cuda"  # the twin of <op>_cpu in csrc/cpu/<family>_cpu.cpp
    assert set(topology_torch.OPS) == {"select_smallest", "set_prune", "compact", "random_empty", "merge",
                                      "remap_index", "gather_or_zero", "coo_dot", "grad_topk", "rewire"}
    assert set(densify_torch.OPS) == {"scatter_csr", "gather_csr"}
    assert not torch._C._dispatch_has_kernel_for_dispatch_key("sparse_engine::spmm", "CompositeExplicitAutograd")
    # a device without a kernel of its own (meta; remap_index has no fake kernel) runs the Python one
    e = torch.empty(0, dtype=torch.int64, device="meta")
    out = ops.remap_index(e, e, 5)
    assert out.device.type == "meta" and out.shape == (5,) and out.dtype == torch.int64
    with pytest.raises(TypeError, match="int64"):  # with its checks
        ops.remap_index(e, torch.empty(0, dtype=torch.int32, device="meta"), 5)


# ------------------------------------------------------------------ controllers through the generic ops
def mlp(seed=0, density=0.3, hidden=48, device="cpu"):
    torch.manual_seed(seed)
    return nn.Sequential(SparseLinear(12, hidden, density=density), nn.Tanh(),
                         SparseLinear(hidden, 3, density=min(1.0, density * 2))).to(device)


CONTROLLERS = {
    "SET": lambda m, o: SET(m, o, zeta=0.3, init="normal", seed=1),
    "RigL": lambda m, o: RigL(m, o, end_step=20, update_every=2, grad_method="exact", seed=1),
    "RigL-sample": lambda m, o: RigL(m, o, end_step=20, update_every=2, grad_method="sample", seed=1),
    "GMP": lambda m, o: GradualMagnitudePruning(m, o, final_density=0.1, end_step=12, frequency=2),
    "GMP-global": lambda m, o: GradualMagnitudePruning(m, o, final_density=0.1, end_step=12, frequency=2,
                                                       scope="global"),
    "DeepR": lambda m, o: DeepR(m, o, l1=1e-3, temperature=1e-3, rewire_every=2, seed=1),
    "SelfishRNN": lambda m, o: SelfishRNN(m, o, total_steps=30, death_rate=0.4, redistribution="magnitude",
                                          growth="gradient", seed=1),
    "SelfishRNN-random": lambda m, o: SelfishRNN(m, o, total_steps=30, death="SET", redistribution="nonzeros",
                                                 seed=1),
}
DETERMINISTIC = {"RigL", "GMP", "GMP-global", "SelfishRNN"}  # no random growth: equal to the C++ run


def train(name, device="cpu", steps=12, epochs=2, on_update=None):
    model = mlp(device=device)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    ctl = CONTROLLERS[name](model, opt)
    if on_update is not None:
        ctl.callbacks.append(on_update)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 12, generator=g).to(device)
    y = torch.randint(0, 3, (64,), generator=g).to(device)
    for _ in range(epochs):
        for b in range(steps // epochs):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b::4]), y[b::4]).backward()
            opt.step()
            ctl.step()
        ctl.end_epoch()
    return model, opt, ctl


def state_of(model, opt):
    out = {}
    for n, w in sparse_weights(model).items():
        out[n] = (w.row_ptr.cpu(), w.col_idx.cpu(), w.values.detach().cpu(),
                  *(t.cpu() for k, t in sorted(opt.state[w.values].items()) if t.dim()))
    return out


@pytest.mark.parametrize("name", list(CONTROLLERS))
def test_controllers_through_the_generic_ops(monkeypatch, name):
    """The CUDA code path, on the CPU: every topology op of every controller runs the
    device-generic functions. Deterministic algorithms give the C++ run's result bit for bit;
    the others keep every invariant."""
    updates = []

    def check(step, weights):
        updates.append(step)
        for w in weights.values():
            check_invariants(w)

    ref = state_of(*train(name)[:2])
    monkeypatch.setattr(topology, "_ops", tt)  # the one place the training code calls the operators from
    model, opt, ctl = train(name, on_update=check)
    assert updates
    got = state_of(model, opt)
    if name in DETERMINISTIC:
        for n in ref:
            same(tuple(got[n]), tuple(ref[n]))
    else:
        for n in ref:  # same nnz where the algorithm fixes it
            if not name.startswith("SelfishRNN"):
                assert got[n][1].numel() == ref[n][1].numel()


# ------------------------------------------------------------------ CUDA
@contextlib.contextmanager
def no_host_copies(limit=64):
    """Records every copy of more than ``limit`` elements from a CUDA tensor to the host made
    through the Tensor methods (.cpu(), .to(), .numpy(), .tolist(), copy_)."""
    seen = []
    orig = {n: getattr(torch.Tensor, n) for n in ("cpu", "to", "tolist", "numpy", "copy_")}

    def big(t):
        return isinstance(t, torch.Tensor) and t.is_cuda and t.numel() > limit

    def wrap(n):
        f = orig[n]

        def method(self, *a, **k):
            out = f(self, *a, **k)
            if n == "copy_":
                src = a[0] if a else k.get("src")
                if big(src) and self.device.type == "cpu":
                    seen.append((n, src.numel()))
            elif big(self) and not (isinstance(out, torch.Tensor) and out.is_cuda):
                seen.append((n, self.numel()))
            return out
        return method

    for n in orig:
        setattr(torch.Tensor, n, wrap(n))
    try:
        yield seen
    finally:
        for n, f in orig.items():
            setattr(torch.Tensor, n, f)


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

    @pytest.mark.parametrize("name", list(CONTROLLERS))
    def test_controllers_stay_on_the_device(self, name):
        updates = []

        def check(step, weights):
            updates.append(step)
            for w in weights.values():
                for t in (w.values, w.row_ptr, w.col_idx, w.csc_ptr, w.csc_row, w.csc_perm):
                    assert t.is_cuda
                w.validate()

        with no_host_copies() as copies:
            model, opt, ctl = train(name, device="cuda", on_update=check)
        assert updates
        assert not copies, f"nnz-sized host copies during training: {copies}"
        for w in sparse_weights(model).values():
            check_invariants(SparseWeight(w.row_ptr.cpu(), w.col_idx.cpu(), w.values.detach().cpu(), w.shape))
            for t in opt.state[w.values].values():
                assert t.is_cuda or t.dim() == 0
        for per_entry in (getattr(ctl, "sign", {}), getattr(getattr(ctl, "averager", None), "ax", {})):
            assert all(t.is_cuda for t in per_entry.values())

    @pytest.mark.parametrize("name", ["SET", "GMP", "GMP-global", "RigL", "SelfishRNN", "SelfishRNN-random"])
    def test_one_update_equals_the_cpu_run(self, name, monkeypatch):
        """From the same state (weights, exact integer-valued data and gradients), one update on
        CUDA prunes exactly what the CPU prunes (the keep mask each rewire is given, as the positions
        kept), and keeps their values; with gradient growth it also grows the same, so the whole
        weight agrees. Random growth draws other positions on each device, and Selfish-RNN's regrowth
        at a just-pruned position keeps the old value there (first H200 run: 11 such entries), so
        there the kept entries and the entry count are what must agree."""
        kept = []  # per rewire call: the positions the pruning keeps
        real = base.rewire

        def recording(weight, keep, *args, **kwargs):
            kept.append(frozenset(entry_keys(weight)[keep.cpu().numpy()].tolist()))
            return real(weight, keep, *args, **kwargs)

        monkeypatch.setattr(base, "rewire", recording)

        def build(device):
            torch.manual_seed(0)
            model = nn.Sequential(SparseLinear(16, 24, density=0.3, bias=False))
            with torch.no_grad():
                w = model[0].weight
                w.values.copy_(torch.randint(-8, 9, (w.nnz,), generator=torch.Generator().manual_seed(1)).float())
            model = model.to(device)
            opt = torch.optim.SGD(model.parameters(), lr=0.5)
            ctl = {"SET": lambda: SET(model, opt, zeta=0.3, seed=1),
                   "GMP": lambda: GradualMagnitudePruning(model, opt, final_density=0.1, end_step=2, frequency=1),
                   "GMP-global": lambda: GradualMagnitudePruning(model, opt, final_density=0.1, end_step=2,
                                                                 frequency=1, scope="global"),
                   "RigL": lambda: RigL(model, opt, end_step=10, update_every=1, grad_method="exact", seed=1),
                   "SelfishRNN": lambda: SelfishRNN(model, opt, total_steps=10, growth="gradient", seed=1),
                   "SelfishRNN-random": lambda: SelfishRNN(model, opt, total_steps=10, seed=1)}[name]()
            g = torch.Generator().manual_seed(2)
            x = torch.randint(-2, 3, (8, 16), generator=g).float().to(device)
            c = torch.randint(-2, 3, (8, 24), generator=g).float().to(device)
            opt.zero_grad()
            (model(x) * c).sum().backward()  # exact small integers: G = c, X = x
            opt.step()
            kept.clear()
            ctl.step()
            ctl.end_epoch()
            assert kept, "no topology update ran"
            return value_by_key(model[0].weight), list(kept)

        (cpu, cpu_kept), (cuda, cuda_kept) = build("cpu"), build("cuda")
        assert cuda_kept == cpu_kept
        if name in ("SET", "SelfishRNN-random"):  # random growth: the kept entries and the count agree
            assert len(cuda) == len(cpu)
            cpu = {k: v for k, v in cpu.items() if k in cpu_kept[-1]}
            cuda = {k: v for k, v in cuda.items() if k in cuda_kept[-1]}
        assert cuda == cpu
