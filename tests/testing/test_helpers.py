"""sparse_engine.testing: the factories honour their options and build valid CSR, the
references agree with scipy, and AWKWARD_SHAPES holds the cases its documentation names."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sparse_engine.kernels.constants import PARALLEL_WORK
from sparse_engine import SparseWeight
from sparse_engine.testing import (AWKWARD_SHAPES, LAYOUTS, Shape, assert_bit_equal, check_invariants, copy_weight,
                                   dense, entry_keys, power_law_weight, randn, random_scipy, random_weight, references,
                                   sddmm_reference, set_keep_reference, smallest_reference, spmm_reference,
                                   spmm_t_reference, value_by_key, weight_with_row_lengths, with_layout)


def row_lengths(W):
    return W.row_ptr.diff()


def same_weight(a, b):
    return (a.shape == b.shape and torch.equal(a.row_ptr, b.row_ptr) and torch.equal(a.col_idx, b.col_idx)
            and torch.equal(a.values.detach(), b.values.detach()))


# ----------------------------------------------------------------------- random_weight
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_random_weight_rows_density_and_dtype(dtype):
    rows, cols, density, empty, full = 60, 400, 0.3, 7, 5
    W = random_weight(rows, cols, density, empty, full, dtype=dtype, seed=3)
    check_invariants(W)
    assert W.shape == (rows, cols) and W.values.dtype == dtype and W.values.requires_grad
    n = row_lengths(W)
    # a Bernoulli(0.3) row of 400 is empty or full with probability < 1e-60: these are the forced ones
    assert int((n == 0).sum()) == empty and int((n == cols).sum()) == full
    rest = n[(n != 0) & (n != cols)]
    trials = rest.numel() * cols
    assert abs(int(rest.sum()) - density * trials) < 5 * math.sqrt(trials * density * (1 - density))
    assert bool((W.values.detach() != 0).all())  # standard normal values: no accidental zeros


def test_random_weight_is_determined_by_its_seed():
    a = random_weight(30, 20, 0.3, 2, 1, seed=11)
    assert same_weight(a, random_weight(30, 20, 0.3, 2, 1, seed=11))
    assert same_weight(a, random_weight(30, 20, 0.3, 2, 1, generator=torch.Generator().manual_seed(11)))
    assert not same_weight(a, random_weight(30, 20, 0.3, 2, 1, seed=12))
    g = torch.Generator().manual_seed(5)
    assert not same_weight(random_weight(30, 20, 0.3, generator=g), random_weight(30, 20, 0.3, generator=g))


def test_density_extremes_and_empty_sizes():
    assert random_weight(9, 7, 0.0, seed=0).nnz == 0
    assert random_weight(9, 7, 1.0, seed=0).nnz == 63
    for rows, cols in ((0, 0), (0, 4), (4, 0)):
        W = random_weight(rows, cols, 0.5, seed=0)
        assert W.shape == (rows, cols) and W.nnz == 0
        check_invariants(W)


def test_every_random_helper_wants_exactly_one_seed():
    calls = [lambda **k: random_weight(3, 3, 0.5, **k), lambda **k: weight_with_row_lengths([1, 2], 3, **k),
             lambda **k: power_law_weight(4, 4, **k), lambda **k: randn(2, 2, **k)]
    for call in calls:
        with pytest.raises(TypeError, match="exactly one of seed"):
            call()
        with pytest.raises(TypeError, match="exactly one of seed"):
            call(seed=1, generator=torch.Generator())
        with pytest.raises(TypeError, match="torch.Generator"):
            call(generator=np.random.default_rng(0))
    with pytest.raises(TypeError, match="exactly one of seed"):
        random_scipy(3, 3, 0.5)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        random_scipy(3, 3, 0.5, generator=torch.Generator())


def test_random_weight_rejects_impossible_options():
    with pytest.raises(ValueError, match="empty_rows"):
        random_weight(5, 5, 0.5, 4, 2, seed=0)
    with pytest.raises(ValueError, match="empty_rows"):
        random_weight(5, 5, 0.5, -1, seed=0)
    with pytest.raises(ValueError, match="density"):
        random_weight(5, 5, 1.5, seed=0)


# ------------------------------------------------------------- row lengths, power law
def test_weight_with_row_lengths_holds_those_lengths():
    lengths = [0, 5, 1, 0, 40, 40, 3]
    W = weight_with_row_lengths(lengths, 40, dtype=torch.float32, seed=2)
    check_invariants(W)
    assert W.shape == (7, 40) and W.values.dtype == torch.float32
    assert row_lengths(W).tolist() == lengths
    again = weight_with_row_lengths(np.array(lengths), 40, dtype=torch.float32, seed=2)
    assert same_weight(W, again)
    # 2000 rows of 1 entry: every one of 10 columns is drawn (P(one never drawn) < 1e-90)
    one = weight_with_row_lengths([1] * 2000, 10, seed=0)
    assert torch.equal(torch.bincount(one.col_idx.long(), minlength=10) > 0, torch.ones(10, dtype=torch.bool))
    assert weight_with_row_lengths([], 5, seed=0).shape == (0, 5)
    with pytest.raises(ValueError, match="row lengths"):
        weight_with_row_lengths([1, 6], 5, seed=0)
    with pytest.raises(ValueError, match="row lengths"):
        weight_with_row_lengths([-1], 5, seed=0)


def test_power_law_weight_is_skewed():
    W = power_law_weight(3000, 2000, empty_rows=100, seed=4)
    check_invariants(W)
    n = row_lengths(W).double()
    assert int((n == 0).sum()) >= 100
    # floor(u^-1.5): P(length >= L) = L^(-2/3); half the rows hold 1 entry, some hold them all
    assert float(n.median()) <= 2 and int(n.max()) == 2000
    top = n.sort(descending=True).values[:30].sum()  # 1 % of the rows hold most of the entries
    assert float(top) > 0.5 * float(n.sum())
    assert same_weight(W, power_law_weight(3000, 2000, empty_rows=100, seed=4))


# ----------------------------------------------------------------------- random_scipy
def test_random_scipy_options():
    A = random_scipy(200, 200, 0.1, seed=1)
    assert sp.isspmatrix_csr(A) and A.shape == (200, 200)
    assert abs(A.nnz - 4000) < 1 and A.diagonal().any()  # scipy's random draws exactly round(density * size)
    assert (A.data > 0).any() and (A.data < 0).any()
    no_loops = random_scipy(200, 200, 0.1, seed=1, diagonal=False)
    assert not no_loops.diagonal().any() and no_loops.nnz == A.nnz - np.count_nonzero(A.diagonal())
    zeros = random_scipy(200, 200, 0.1, seed=1, explicit_zeros=0.2)
    assert zeros.nnz == A.nnz and abs(np.count_nonzero(zeros.data == 0) - 800) < 5 * math.sqrt(640)
    again = random_scipy(200, 200, 0.1, generator=np.random.default_rng(1))
    assert (again != A).nnz == 0
    assert (random_scipy(200, 200, 0.1, seed=2) != A).nnz > 0


# ---------------------------------------------------------------- randn, copy, layouts
def test_randn_is_seeded_and_typed():
    a = randn(4, 3, seed=7)
    assert a.dtype == torch.float64 and a.shape == (4, 3)
    assert torch.equal(a, torch.randn(4, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64))
    assert randn(4, 3, dtype=torch.bfloat16, seed=7).dtype == torch.bfloat16
    assert not torch.equal(a, randn(4, 3, seed=8))


def test_copy_weight_copies_without_sharing():
    W = random_weight(12, 9, 0.4, 2, seed=0)
    C = copy_weight(W)
    assert C is not W and same_weight(C, W) and all(torch.equal(a, b) for a, b in zip(C.index, W.index))
    with torch.no_grad():
        C.values.mul_(2)
    assert not torch.equal(C.values, W.values)  # a copy, not a view
    H = copy_weight(W, dtype=torch.float16)
    assert H.values.dtype == torch.float16 and torch.equal(H.values.detach(), W.values.detach().half())
    A = copy_weight(W, values=W.values.abs())
    assert torch.equal(A.values.detach(), W.values.detach().abs()) and torch.equal(A.col_idx, W.col_idx)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int64])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_with_layout_keeps_values_and_changes_layout(layout, dtype):
    t = (torch.arange(35) - 17).reshape(7, 5).to(dtype)
    out = with_layout(t, layout)
    assert out.shape == t.shape and out.dtype == t.dtype and torch.equal(out, t)
    if layout == "misaligned":
        assert out.is_contiguous() and out.data_ptr() % 16 != 0 and out.storage_offset() == 1
    else:
        assert not out.is_contiguous()
    if layout == "strided" and dtype.is_floating_point:
        assert bool(out._base[:, 1::2].isnan().all())  # the gaps read as NaN
    t[0, 0] = 99
    assert out[0, 0] != 99  # a copy
    with pytest.raises(ValueError, match="layout"):
        with_layout(t, "diagonal")


# ------------------------------------------------------------------------ references
def scipy_refs(W, X, G):
    """An independent float64 computation: scipy's CSR products and numpy."""
    S = W.to_scipy().astype(np.float64)
    Xn, Gn = X.double().numpy(), G.double().numpy()
    row, col, _ = W.coo()
    sddmm = np.einsum("kb,kb->k", Gn[row.numpy()], Xn[col.numpy()])
    return S @ Xn, S.T @ Gn, sddmm, abs(S) @ abs(Xn), abs(S).T @ abs(Gn), np.einsum(
        "kb,kb->k", abs(Gn[row.numpy()]), abs(Xn[col.numpy()]))


@pytest.mark.parametrize("shape", AWKWARD_SHAPES, ids=str)
@pytest.mark.parametrize("B", [1, 7, 4000])  # 4000: sddmm goes through the dense product G X^T
def test_references_agree_with_scipy(shape, B):
    W = random_weight(*shape, seed=B)
    X, G = randn(shape.cols, B, seed=1), randn(shape.rows, B, seed=2)
    want = scipy_refs(W, X, G)
    refs = references(W, X, G)
    got = [refs[op].value for op in ("spmm", "spmm_t", "sddmm")] + [refs[op].abs_value for op in ("spmm", "spmm_t", "sddmm")]
    for g, w in zip(got, want):
        assert g.dtype == torch.float64 and g.device.type == "cpu"
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-12, atol=1e-12)
    assert [refs[op].terms for op in ("spmm", "spmm_t", "sddmm")] == [shape.cols, shape.rows, B]
    assert set(references(W, X=X)) == {"spmm"} and set(references(W, G=G)) == {"spmm_t"}


def test_references_use_the_stored_values_of_any_dtype_and_layout():
    W = random_weight(20, 30, 0.3, 2, 1, dtype=torch.bfloat16, seed=0)
    D = dense(W)
    assert D.dtype == torch.float64 and np.array_equal(D.numpy(), W.to_scipy().toarray())
    X = with_layout(randn(30, 5, dtype=torch.bfloat16, seed=1), "transposed")
    G = with_layout(randn(20, 5, dtype=torch.bfloat16, seed=2), "strided")
    Xd, Gd = X.double(), G.double()
    torch.testing.assert_close(spmm_reference(W, X), D @ Xd, rtol=1e-14, atol=0)
    torch.testing.assert_close(spmm_t_reference(W, G), D.T @ Gd, rtol=1e-14, atol=0)
    row, col, _ = W.coo()
    torch.testing.assert_close(sddmm_reference(W, G, X), (Gd @ Xd.T)[row, col], rtol=1e-14, atol=0)
    torch.testing.assert_close(spmm_reference(W, -X, absolute=True), D.abs() @ Xd.abs(), rtol=1e-14, atol=0)


# -------------------------------------------------------------------------- shapes
def test_awkward_shapes_hold_the_documented_cases():
    built = [(s, random_weight(*s, seed=0)) for s in AWKWARD_SHAPES]
    has = lambda pred: any(pred(s, W) for s, W in built)  # noqa: E731
    assert all(isinstance(s, Shape) and W.shape == (s.rows, s.cols) for s, W in built)
    assert has(lambda s, W: W.shape == (1, 1) and W.nnz == 1)
    assert has(lambda s, W: W.shape == (1, 1) and W.nnz == 0)
    assert has(lambda s, W: s.cols == 1 and s.rows > 1 and s.empty_rows and s.full_rows)
    assert has(lambda s, W: s.rows == 1 and s.cols > 1 and W.nnz == s.cols)
    assert has(lambda s, W: W.shape == (0, 0))
    assert has(lambda s, W: s.rows == 0 and s.cols > 0)
    assert has(lambda s, W: s.cols == 0 and s.rows > 0)
    assert has(lambda s, W: s.rows > 1 and s.cols > 1 and W.nnz == 0)
    odd = lambda n: n > 32 and all(n % w for w in (2, 4, 8, 16, 32))  # noqa: E731
    assert has(lambda s, W: odd(s.rows) and odd(s.cols) and s.empty_rows and s.full_rows)
    parallel = [s for s, W in built if W.nnz * 64 > PARALLEL_WORK and s.empty_rows >= 20]
    assert len(parallel) >= 2 and any(s.full_rows and s.cols > 1024 for s in parallel)  # CUDA long rows
    for s, W in built:  # the forced rows are there
        n = row_lengths(W)
        assert int((n == 0).sum()) >= s.empty_rows and int((n == s.cols).sum()) >= s.full_rows
    assert len({str(s) for s in AWKWARD_SHAPES}) == len(AWKWARD_SHAPES)  # usable as pytest ids


# ------------------------------------------------------------- checks and topology references
def test_check_invariants_catches_a_wrong_count_and_a_stale_transposed_index():
    W = random_weight(9, 7, 0.4, seed=4)
    check_invariants(W, nnz=W.nnz)
    with pytest.raises(AssertionError, match="nnz is"):
        check_invariants(W, nnz=W.nnz + 1)
    perm = W.csc_perm
    perm[[0, 1]] = perm[[1, 0]]  # two entries' values now in the wrong column order
    with pytest.raises(AssertionError, match="csc_perm"):
        check_invariants(W)


def test_assert_bit_equal_names_the_first_difference():
    state = {"a": [torch.tensor([1.0, 2.0]), 3], "b": (float("nan"), "x")}
    assert_bit_equal(state, {"a": [torch.tensor([1.0, 2.0]), 3], "b": (float("nan"), "x")})
    for other, where in (({"a": [torch.tensor([1.0, 2.5]), 3], "b": (float("nan"), "x")}, r"state\['a'\]\[0\]"),
                         ({"a": [torch.tensor([1.0, 2.0], dtype=torch.float64), 3], "b": (float("nan"), "x")},
                          r"state\['a'\]\[0\]: tensor torch.float32"),
                         ({"a": [torch.tensor([1.0, 2.0]), 3.0], "b": (float("nan"), "x")}, r"state\['a'\]\[1\]"),
                         ({"a": [torch.tensor([1.0, 2.0]), 3], "b": [float("nan"), "x"]}, r"state\['b'\]"),
                         ({"b": (float("nan"), "x"), "a": [torch.tensor([1.0, 2.0]), 3]}, "state: keys")):
        with pytest.raises(AssertionError, match=where):
            assert_bit_equal(state, other)


def test_entry_keys_and_values_by_position():
    W = SparseWeight(torch.tensor([0, 2, 2, 3]), torch.tensor([1, 3, 0], dtype=torch.int32),
                     torch.tensor([0.5, -1.0, 2.0]), (3, 4))
    assert entry_keys(W).tolist() == [1, 3, 8]  # row * 4 + col
    assert value_by_key(W) == {1: 0.5, 3: -1.0, 8: 2.0}


def test_topology_references_hand_computed():
    scores = np.array([0.3, -0.0, 0.1, 0.0, 0.1])
    assert smallest_reference(scores, 3).tolist() == [False, True, True, True, False]  # ties: lower index
    v = np.array([0.5, -0.1, 0.2, -0.3, 0.0, 0.4])
    # 3 positives, round(0.5 * 3) = 2 of them dropped (halves away from zero); 2 negatives, 1 dropped; the zero
    assert set_keep_reference(v, 0.5).tolist() == [True, False, False, True, False, False]
