"""spmm, spmm_t and sddmm against a float64 dense reference, gradcheck and torch.compile."""
import pytest
import torch

from sparse_engine import SparseWeight, ops
from sparse_engine.kernels.constants import SCATTER_FROM_BYTES
from sparse_engine.testing import (AWKWARD_SHAPES, copy_weight, dense, num_threads, power_law_weight, random_weight,
                                   references, with_layout)

# 20: three float vectors, the last read to its 4th lane; 30 (double) and 60 (float): a last full
# block read with masked loads
BATCHES = [1, 3, 20, 30, 60, 64, 67]


def assert_within_rounding(out, ref, abs_ref, terms, dtype):
    """|out - ref| <= terms * eps * (sum of |products|) elementwise: the standard error bound
    of a floating-point sum of ``terms`` products, so long float32 rows are judged fairly."""
    eps = torch.finfo(dtype).eps
    bound = 2 * max(terms, 1) * eps * abs_ref + 1e-300
    err = (out.double() - ref).abs()
    assert out.dtype == dtype and out.shape == ref.shape
    assert bool((err <= bound).all()), f"max error/bound {float((err / bound).max()):.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", AWKWARD_SHAPES, ids=str)
@pytest.mark.parametrize("B", BATCHES)
def test_kernels_match_dense_reference(shape, B, dtype, rng):
    assert_ops_match_reference(random_weight(*shape, dtype=dtype, generator=rng), B, rng)


def assert_ops_match_reference(W, B, rng):
    """spmm, spmm_t and sddmm of W on fresh random batches of B columns, within rounding of the
    float64 reference."""
    rows, cols = W.shape
    dtype = W.values.dtype
    X = torch.randn(cols, B, generator=rng, dtype=dtype)
    G = torch.randn(rows, B, generator=rng, dtype=dtype)
    refs = references(W, X, G)
    assert_within_rounding(ops.spmm(W, X), *refs["spmm"], dtype)
    assert_within_rounding(ops.spmm_t(W, G), *refs["spmm_t"], dtype)
    assert_within_rounding(ops.sddmm(W, G, X), *refs["sddmm"], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B", [20, 67])
def test_sources_with_many_entries_per_row_read_from_a_padded_copy(B, dtype, rng):
    """spmm and spmm_t read their gathered operand from a copy padded to whole 32-byte units once it
    has 192 entries or more per row (gather.h, kUnpaddedBelow), and as it is below that: a tall
    dense weight's spmm (400 entries per row of X) and a wide one's spmm_t (of G) take the copy,
    the other product of each the masked reads. sddmm reads float32 unpadded on AVX2 builds."""
    for rows, cols in ((400, 3), (3, 400)):
        assert_ops_match_reference(random_weight(rows, cols, 1.0, dtype=dtype, generator=rng), B, rng)


def test_an_empty_batch_gives_zeros_and_empty_products(rng):
    """B = 0: spmm and spmm_t return (rows x 0) and (cols x 0), sddmm a zero per entry."""
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        W = random_weight(9, 7, 0.4, dtype=dtype, generator=rng)
        X, G = torch.randn(7, 0, dtype=dtype), torch.randn(9, 0, dtype=dtype)
        assert ops.spmm(W, X).shape == (9, 0) and ops.spmm_t(W, G).shape == (7, 0)
        out = ops.sddmm(W, G, X)
        assert out.shape == (W.nnz,) and W.nnz > 0 and not out.any()


# ----------------------------------------------------- spmm_t with the values in column order
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", AWKWARD_SHAPES, ids=str)
@pytest.mark.parametrize("B", [1, 3, 67])
def test_spmm_t_with_values_t_matches_reference_and_the_gather(shape, B, dtype, rng):
    """spmm_t given values_t = values[csc_perm] (made once, csrc/values_t.h): within rounding of the
    float64 reference, and bitwise the result of the per-call gather (same summation order) where
    spmm_t without values_t gathers (B > 1 and values below SCATTER_FROM_BYTES; B = 1 scatters)."""
    W = random_weight(*shape, dtype=dtype, generator=rng)
    G = torch.randn(shape.rows, B, generator=rng, dtype=torch.float64).to(dtype)
    values_t = ops.transposed_values(W)
    assert values_t.shape == (W.nnz,) and not values_t.requires_grad
    out = ops.spmm_t(W, G, values_t)
    if dtype != torch.bfloat16:
        assert_within_rounding(out, *references(W, G=G)["spmm_t"], dtype)
    if B > 1:
        assert torch.equal(out, ops.spmm_t(W, G))


# ------------------------------------------- spmm_t scattering the CSR's rows (csrc/cpu/scatter.h)
# Without values_t, spmm_t scatters the rows of the CSR once the values take SCATTER_FROM_BYTES
# (below, it gathers them through csc_perm, as the tests above use). These weights are above it.
SCATTER_CASES = {  # dtype: (rows, cols, density), enough entries for SCATTER_FROM_BYTES
    torch.float64: (1100, 700, 0.75),
    torch.float32: (1500, 800, 0.9),
    torch.bfloat16: (2200, 1100, 0.9),
    torch.float16: (2200, 1100, 0.9),
}


def scatter_weight(dtype, generator, rows=None, cols=None, density=None) -> SparseWeight:
    r, c, d = SCATTER_CASES[dtype]
    W = random_weight(rows or r, cols or c, density or d, empty_rows=25, full_rows=2, dtype=dtype,
                      generator=generator)
    assert W.nnz * W.values.element_size() >= SCATTER_FROM_BYTES  # the scatter path runs
    return W


@pytest.mark.parametrize("dtype", list(SCATTER_CASES), ids=str)
@pytest.mark.parametrize("B", [1, 3, 20, 67])
def test_spmm_t_scatter_matches_reference(dtype, B, rng):
    """Large values: W^T G within rounding of the float64 reference (float16/bfloat16: of the
    reference on the rounded inputs, at their output precision), batches of one, a few, one
    padded block and more than one block (67 > 64 columns), empty and full rows."""
    W = scatter_weight(dtype, rng)
    G = torch.randn(W.shape[0], B, generator=rng, dtype=torch.float64).to(dtype)
    out = ops.spmm_t(W, G)
    ref = references(W, G=G)["spmm_t"]
    # sums in float32 for float16/bfloat16, rounded to the storage type once at the end
    sum_eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    bound = 2 * ref.terms * sum_eps * ref.abs_value + torch.finfo(dtype).eps * ref.value.abs() + 1e-300
    assert out.dtype == dtype and out.shape == ref.value.shape
    assert bool(((out.double() - ref.value).abs() <= bound).all())
    # the gather through the transposed values (values_t) sums in another order: both are
    # within the bound of the reference, so within twice the bound of each other
    gathered = ops.spmm_t(W, G, ops.transposed_values(W))
    assert bool(((out.double() - gathered.double()).abs() <= 2 * bound).all())


def test_spmm_t_gathers_where_the_scatter_accumulators_outweigh_the_values(rng):
    """Values above SCATTER_FROM_BYTES, but 8 accumulators of cols x 72 floats (11.5 MB) over twice
    the values' 4.4 MB (scatter.h, kScatterAccPerValue): spmm_t gathers, bitwise the values_t
    product (same summation order), within rounding of the reference."""
    W = random_weight(300, 5000, 0.733, dtype=torch.float32, generator=rng)
    assert W.nnz * 4 >= SCATTER_FROM_BYTES and 8 * 5000 * 72 * 4 > 2 * W.nnz * 4
    G = torch.randn(300, 67, generator=rng)
    out = ops.spmm_t(W, G)
    assert torch.equal(out, ops.spmm_t(W, G, ops.transposed_values(W)))
    assert_within_rounding(out, *references(W, G=G)["spmm_t"], torch.float32)


def test_spmm_t_scatter_one_column_and_non_contiguous_batches(rng):
    """A single column (every entry into one output row) and G given transposed or strided."""
    W = random_weight(600_000, 1, 0.95, empty_rows=1000, dtype=torch.float64, generator=rng)
    assert W.nnz * 8 >= SCATTER_FROM_BYTES
    G = torch.randn(600_000, 3, generator=rng, dtype=torch.float64)
    assert_within_rounding(ops.spmm_t(W, G), *references(W, G=G)["spmm_t"], torch.float64)
    W = scatter_weight(torch.float32, rng)
    for layout in ("transposed", "strided"):
        G = with_layout(torch.randn(W.shape[0], 21, generator=rng), layout)
        assert not G.is_contiguous()
        assert_within_rounding(ops.spmm_t(W, G), *references(W, G=G)["spmm_t"], torch.float32)


def test_spmm_t_gathers_where_the_scatter_accumulators_would_be_too_large():
    """Wide outputs (8 accumulators of cols x padded B floats over 64 MiB, as SET-MLP's 333,333-unit
    layers) keep the gather, so all threads stay busy: the same bits as with values_t (the
    gather's summation order), and within rounding of the reference."""
    g = torch.Generator().manual_seed(5)
    W = SparseWeight.random(300, 70_000, 0.06, generator=g)
    assert W.nnz * 4 >= SCATTER_FROM_BYTES and 8 * 70_000 * 40 * 4 > 64 << 20
    G = torch.randn(300, 33, generator=g)
    with torch.no_grad():
        out = ops.spmm_t(W, G)
        assert torch.equal(out, ops.spmm_t(W, G, ops.transposed_values(W)))
    torch.testing.assert_close(out.double(), W.to_dense().double().T @ G.double(), rtol=1e-4, atol=1e-4)


def test_spmm_input_gradient_through_the_scatter(rng):
    """spmm's backward computes dX = W^T dY with spmm_t (no values_t): at a size that scatters,
    the gradient is the float64 reference's."""
    W = scatter_weight(torch.float64, rng)
    X = torch.randn(W.shape[1], 5, generator=rng, dtype=torch.float64, requires_grad=True)
    up = torch.randn(W.shape[0], 5, generator=rng, dtype=torch.float64)
    (ops.spmm(W, X) * up).sum().backward()
    assert_within_rounding(X.grad, *references(W, G=up)["spmm_t"], torch.float64)


def test_spmm_t_reads_values_t_not_values(rng):
    """With values_t the product uses it (not values through csc_perm): values_t made from other
    values gives those values' product, so a stale values_t would show (the caller's contract);
    a non-contiguous values_t is read correctly."""
    W = random_weight(40, 30, 0.2, empty_rows=3, full_rows=1, generator=rng)
    G = torch.randn(40, 9, generator=rng, dtype=torch.float64)
    other = copy_weight(W)
    with torch.no_grad():
        other.values.mul_(-2.0).add_(0.5)
    stale = ops.transposed_values(other)
    torch.testing.assert_close(ops.spmm_t(W, G, stale), dense(other).T @ G)
    strided = torch.stack([ops.transposed_values(W), stale], 1)[:, 0]
    assert not strided.is_contiguous()
    torch.testing.assert_close(ops.spmm_t(W, G, strided), dense(W).T @ G)


def test_spmm_t_values_t_gradients_go_to_values(rng):
    W = random_weight(12, 9, 0.3, empty_rows=2, full_rows=1, generator=rng)
    idx = W.index
    v = W.values.detach().clone().requires_grad_()
    G = torch.randn(12, 4, generator=rng, dtype=torch.float64, requires_grad=True)
    sp = torch.ops.sparse_engine
    # values_t made from the values of each call (gradcheck perturbs them), detached
    f = lambda v, G: sp.spmm_t(*idx, v, G, v.detach()[W.csc_perm.long()])  # noqa: E731
    assert torch.autograd.gradcheck(f, (v, G))
    assert torch.autograd.gradgradcheck(f, (v, G))
    # a values_t that requires grad (made without detaching) gets none; values get it once
    v_t2 = v[W.csc_perm.long()]
    up = torch.randn(9, 4, generator=rng, dtype=torch.float64)
    (g_with,) = torch.autograd.grad((sp.spmm_t(*idx, v, G, v_t2) * up).sum(), v)
    (g_without,) = torch.autograd.grad((sp.spmm_t(*idx, v, G) * up).sum(), v)
    torch.testing.assert_close(g_with, g_without)


def test_spmm_t_values_t_bad_arguments(rng):
    W = random_weight(4, 6, 0.5, dtype=torch.float32, generator=rng)
    sp = torch.ops.sparse_engine
    G = torch.randn(4, 2, generator=rng)
    v_t = ops.transposed_values(W)
    with pytest.raises(ValueError, match="values_t must be 1-D with nnz"):
        sp.spmm_t(*W.index, W.values, G, v_t[:-1])
    with pytest.raises(TypeError, match="values_t must have the dtype of values"):
        sp.spmm_t(*W.index, W.values, G, v_t.double())
    torch.library.opcheck(sp.spmm_t.default, (*W.index, W.values.detach(), G, v_t),
                          test_utils=("test_schema", "test_faketensor"))


def test_outputs_have_expected_shapes_and_dtypes(rng):
    W = random_weight(4, 6, 0.5, dtype=torch.float32, generator=rng)
    assert ops.spmm(W, torch.randn(6, 2, generator=rng)).shape == (4, 2)
    assert ops.spmm_t(W, torch.randn(4, 2, generator=rng)).shape == (6, 2)
    out = ops.sddmm(W, torch.randn(4, 2, generator=rng), torch.randn(6, 2, generator=rng))
    assert out.shape == (W.nnz,) and out.dtype == torch.float32


def test_non_contiguous_inputs(rng):
    W = random_weight(40, 30, 0.2, empty_rows=3, generator=rng)
    D = dense(W)
    X = with_layout(torch.randn(30, 9, generator=rng, dtype=torch.float64), "transposed")
    G = with_layout(torch.randn(40, 9, generator=rng, dtype=torch.float64), "strided")
    assert not X.is_contiguous() and not G.is_contiguous()
    torch.testing.assert_close(ops.spmm(W, X), D @ X)
    torch.testing.assert_close(ops.spmm_t(W, G), D.T @ G)
    row, col, _ = W.coo()
    torch.testing.assert_close(ops.sddmm(W, G, X), (G @ X.T)[row, col])


def test_power_law_rows_large(rng):
    """Skewed row lengths (a few rows hold most entries), as in trained networks."""
    rows, cols = 3000, 2000
    W = power_law_weight(rows, cols, empty_rows=100, generator=rng)
    X = torch.randn(cols, 32, generator=rng, dtype=torch.float64)
    G = torch.randn(rows, 32, generator=rng, dtype=torch.float64)
    D = dense(W)
    torch.testing.assert_close(ops.spmm(W, X), D @ X)
    torch.testing.assert_close(ops.spmm_t(W, G), D.T @ G)
    row, col, _ = W.coo()
    torch.testing.assert_close(ops.sddmm(W, G, X), (G @ X.T)[row, col])


def test_thread_count_does_not_change_results(rng):
    W = random_weight(300, 200, 0.1, empty_rows=10, full_rows=2, dtype=torch.float32,
                      generator=rng)
    X = torch.randn(200, 33, generator=rng)
    G = torch.randn(300, 33, generator=rng)
    with num_threads(1):
        single = (ops.spmm(W, X), ops.spmm_t(W, G), ops.sddmm(W, G, X))
    with num_threads(max(2, torch.get_num_threads())):
        multi = (ops.spmm(W, X), ops.spmm_t(W, G), ops.sddmm(W, G, X))
    for a, b in zip(single, multi):
        assert torch.equal(a, b)  # each output element is summed in the same order


# ------------------------------------------------------------------------ autograd
@pytest.mark.parametrize("shape", [(5, 4, 0.5, 1, 1), (1, 1, 1.0, 0, 0), (6, 3, 0.0, 0, 0), (12, 9, 0.3, 2, 1)])
@pytest.mark.parametrize("B", [1, 4])
def test_gradcheck_all_ops(shape, B, rng):
    rows, cols, density, empty, full = shape
    W = random_weight(*shape, generator=rng)
    idx = W.index
    v = W.values.detach().clone().requires_grad_()
    X = torch.randn(cols, B, generator=rng, dtype=torch.float64, requires_grad=True)
    G = torch.randn(rows, B, generator=rng, dtype=torch.float64, requires_grad=True)
    sp = torch.ops.sparse_engine
    assert torch.autograd.gradcheck(lambda v, X: sp.spmm(*idx, v, X), (v, X))
    assert torch.autograd.gradcheck(lambda v, G: sp.spmm_t(*idx, v, G), (v, G))
    assert torch.autograd.gradcheck(lambda G, X: sp.sddmm(*idx, G, X), (G, X))
    assert torch.autograd.gradgradcheck(lambda v, X: sp.spmm(*idx, v, X), (v, X))
    assert torch.autograd.gradgradcheck(lambda v, G: sp.spmm_t(*idx, v, G), (v, G))
    assert torch.autograd.gradgradcheck(lambda G, X: sp.sddmm(*idx, G, X), (G, X))
    # the C++ autograd (csrc/autograd.cpp), not a Python one
    names = [f().grad_fn.name() for f in (lambda: sp.spmm(*idx, v, X), lambda: sp.spmm_t(*idx, v, G),
                                          lambda: sp.sddmm(*idx, G, X))]
    assert [n.rsplit("::", 1)[-1] for n in names] == ["SpmmFn>", "SpmmTFn>", "SddmmFn>"], names


def test_gradients_match_dense_autograd(rng):
    W = random_weight(30, 20, 0.3, empty_rows=3, generator=rng)
    X = torch.randn(20, 5, generator=rng, dtype=torch.float64, requires_grad=True)
    up = torch.randn(30, 5, generator=rng, dtype=torch.float64)
    (ops.spmm(W, X) * up).sum().backward()
    D = dense(W).requires_grad_()
    X2 = X.detach().clone().requires_grad_()
    ((D @ X2) * up).sum().backward()
    row, col, _ = W.coo()
    torch.testing.assert_close(W.values.grad, D.grad[row, col])
    torch.testing.assert_close(X.grad, X2.grad)


def test_only_requested_gradients_are_computed(rng):
    W = random_weight(8, 6, 0.5, generator=rng)
    W.values.requires_grad_(False)
    X = torch.randn(6, 3, generator=rng, dtype=torch.float64, requires_grad=True)
    ops.spmm(W, X).sum().backward()
    assert W.values.grad is None and X.grad is not None


# ----------------------------------------------------------------------- compile
def test_torch_compile_fullgraph_forward_and_backward(rng):
    W = random_weight(50, 40, 0.2, empty_rows=4, dtype=torch.float32, generator=rng)

    def f(v, X, G):
        idx = W.index
        sp = torch.ops.sparse_engine
        y = sp.spmm(*idx, v, X)
        z = sp.spmm_t(*idx, v, G)
        s = sp.sddmm(*idx, G, X)
        return (y * y).sum() + (z * z).sum() + (s * v).sum()

    X = torch.randn(40, 7, generator=rng)
    G = torch.randn(50, 7, generator=rng)
    v1 = W.values.detach().clone().requires_grad_()
    v2 = v1.detach().clone().requires_grad_()
    eager = f(v1, X, G)
    eager.backward()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(v2, X, G)
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(v2.grad, v1.grad)


# --------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors(rng):
    W = random_weight(4, 6, 0.5, dtype=torch.float32, generator=rng)
    with pytest.raises(ValueError, match="X must have 6 rows"):
        ops.spmm(W, torch.randn(5, 2, generator=rng))
    with pytest.raises(ValueError, match="X must be 2-D"):
        ops.spmm(W, torch.randn(6, generator=rng))
    with pytest.raises(TypeError, match="X must have dtype torch.float32"):
        ops.spmm(W, torch.randn(6, 2, generator=rng, dtype=torch.float64))
    with pytest.raises(TypeError, match="X must be a torch.Tensor"):
        ops.spmm(W, [[1.0]])
    with pytest.raises(ValueError, match="G must have 4 rows"):
        ops.spmm_t(W, torch.randn(6, 2, generator=rng))
    with pytest.raises(ValueError, match="same batch size"):
        ops.sddmm(W, torch.randn(4, 2, generator=rng), torch.randn(6, 3, generator=rng))
    with pytest.raises(TypeError, match="W must be a sparse_engine.SparseWeight"):
        ops.spmm(torch.randn(4, 6, generator=rng), torch.randn(6, 2, generator=rng))


def test_raw_operator_checks_reach_python_as_value_and_type_errors(rng):
    W = random_weight(4, 6, 0.5, dtype=torch.float32, generator=rng)
    sp = torch.ops.sparse_engine
    with pytest.raises(ValueError, match="X must have 6 rows"):
        sp.spmm(*W.index, W.values, torch.randn(3, 2, generator=rng))
    with pytest.raises(ValueError, match="values must be 1-D with nnz"):
        sp.spmm(*W.index, W.values[:-1], torch.randn(6, 2, generator=rng))
    with pytest.raises(TypeError, match="col_idx must be int32"):
        sp.spmm(W.row_ptr, W.col_idx.long(), *W.index[2:], W.values, torch.randn(6, 2, generator=rng))
    with pytest.raises(TypeError, match=r"values must be float32 or float64 \(or float16/bfloat16\), got Int"):
        sp.spmm(*W.index, W.values.detach().int(), torch.randn(6, 2, generator=rng).int())
    with pytest.raises(TypeError, match="X must have dtype BFloat16, got Half"):
        sp.spmm(*W.index, W.values.detach().bfloat16(), torch.randn(6, 2, generator=rng).half())
    with pytest.raises(ValueError, match="out of range"):
        sp.transpose_index(W.row_ptr, W.col_idx, 2)
    bad_ptr = W.row_ptr.clone()
    bad_ptr[-1] += 5
    with pytest.raises(ValueError, match="row_ptr must start at 0 and end at nnz"):
        sp.spmm(bad_ptr, *W.index[1:], W.values, torch.randn(6, 2, generator=rng))
    with pytest.raises(ValueError, match="row_ptr must start at 0 and end at nnz"):
        sp.transpose_index(bad_ptr, W.col_idx, 6)


def test_transpose_index_parallel_equals_serial(rng):
    """The parallel counting sort gives the same index as one thread (and as scipy's CSC)."""
    W = SparseWeight.random(3000, 2000, nnz=600_000, generator=rng)
    with num_threads(1):
        single = torch.ops.sparse_engine.transpose_index(W.row_ptr, W.col_idx, 2000)
    with num_threads(max(2, torch.get_num_threads())):
        multi = torch.ops.sparse_engine.transpose_index(W.row_ptr, W.col_idx, 2000)
    for a, b in zip(single, multi):
        assert torch.equal(a, b)
    csc = W.to_scipy().tocsc()
    csc.sort_indices()
    assert torch.equal(single[0], torch.from_numpy(csc.indptr).long())
    assert torch.equal(single[1], torch.from_numpy(csc.indices).int())


def test_wide_batches_cross_the_sddmm_tiles(rng):
    """Batches wider than one tile (128 float / 64 double columns) and not a multiple of it."""
    for dtype in (torch.float32, torch.float64):
        W = random_weight(60, 50, 0.2, empty_rows=3, full_rows=1, dtype=dtype, generator=rng)
        for B in (129, 300):
            G = torch.randn(60, B, generator=rng, dtype=dtype)
            X = torch.randn(50, B, generator=rng, dtype=dtype)
            row, col, _ = W.coo()
            Gd, Xd = G.double(), X.double()
            assert_within_rounding(ops.sddmm(W, G, X), (Gd @ Xd.T)[row, col], (Gd.abs() @ Xd.abs().T)[row, col],
                                   B, dtype)
