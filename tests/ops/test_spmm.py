"""spmm and spmm_t (csrc/cpu/spmm_cpu.cpp, csrc/cuda/spmm_cuda.cu) on every device and dtype. sddmm's
tests are in test_sddmm.py, most of them on the inputs of the test of the same name here (the fixtures
of tests/ops/conftest.py build them for both files). sddmm runs here only where it is part of what is
checked: spmm's backward (its gradient in the values is an sddmm, in X an spmm_t) and the CUDA
long-row kernels' launches, which one profile counts for both families.

* CPU, float32/float64: against the float64 dense reference within rounding, on the awkward shapes
  and batches of one, a few, one padded block and more (sparse_engine.testing), the padded-copy and
  scatter paths of spmm_t, values_t, non-contiguous inputs, skewed rows, gradcheck, gradients against
  dense autograd, torch.compile, 1 vs 2 threads, bad input;
* float16/bfloat16 storage with float32 accumulation (CPU). The bound is what float32 accumulation
  plus one rounding of the result to the storage type allows (testing.rounding_bound):
  ``|out - ref| <= u |ref| + 2 (n + 1) u32 sum|terms| + (half the smallest subnormal step)`` with u
  the storage type's unit roundoff (2^-11 float16, 2^-8 bfloat16), u32 = 2^-24 and n the number of
  terms. A float16/bfloat16 accumulator (error ~ n u sum|terms|) does not fit in it;
* hypothesis properties: any shape, density, dtype, layout and thread count (the profile of
  tests/conftest.py sets the budget);
* torch.autocast: the ops run in the autocast dtype like torch.mm, gradients reach float32 values;
* CUDA (marked ``cuda``; skipped without a CUDA device or the CUDA kernels): patterns chosen to reach
  every code path (batch widths that select each lane layout: scalar and 16-byte vector loads, 1..32
  lanes per tile, several tiles; rows and columns long enough for the block-per-row kernel, more of
  them than its grid; empty rows, zero nnz, one column, misaligned and non-contiguous inputs), every
  output element written, gradcheck, torch.compile;
* the CUDA kernels on the CPU emulator (tests/cuda_emu, marked ``slow``).
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sparse_engine as se
from sparse_engine import SparseWeight, ops
from sparse_engine import testing
from sparse_engine.kernels.constants import SCATTER_FROM_BYTES
from sparse_engine.testing import (AWKWARD_SHAPES, LAYOUTS, assert_within_rounding, copy_weight, dense, num_threads,
                                   power_law_weight, random_weight, references, rounding_bound, weight_with_row_lengths,
                                   with_layout)
from sparse_engine.testing import weight_strategy as weights
from cuda_emu.emu_testing import assert_every_kernel_ran, assert_passed, driver_run_with

F32, F64, F16, BF16 = torch.float32, torch.float64, torch.float16, torch.bfloat16
HALF = [torch.float16, torch.bfloat16]  # 2-byte storage, float32 accumulation


# ------------------------------------------------------------------------- CPU: float32 / float64
# 20: three float vectors, the last read to its 4th lane; 30 (double) and 60 (float): a last full
# block read with masked loads
BATCHES = [1, 3, 20, 30, 60, 64, 67]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", AWKWARD_SHAPES, ids=str)
@pytest.mark.parametrize("B", BATCHES)
def test_kernels_match_dense_reference(shape, B, dtype, rng, batches):
    assert_ops_match_reference(random_weight(*shape, dtype=dtype, generator=rng), B, rng, batches)


def assert_ops_match_reference(W, B, rng, batches):
    """spmm and spmm_t of W on fresh random batches of B columns, within rounding of the float64
    reference."""
    dtype = W.values.dtype
    X, G = batches(W, B, rng)
    refs = references(W, X, G)
    assert_within_rounding(ops.spmm(W, X), *refs["spmm"], dtype)
    assert_within_rounding(ops.spmm_t(W, G), *refs["spmm_t"], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B", [20, 67])
def test_sources_with_many_entries_per_row_read_from_a_padded_copy(B, dtype, rng, batches):
    """spmm and spmm_t read their gathered operand from a copy padded to whole 32-byte units once it
    has 192 entries or more per row (gather.h, kUnpaddedBelow), and as it is below that: a tall
    dense weight's spmm (400 entries per row of X) and a wide one's spmm_t (of G) take the copy,
    the other product of each the masked reads. (sddmm on the same weights: test_sddmm.py.)"""
    for rows, cols in ((400, 3), (3, 400)):
        assert_ops_match_reference(random_weight(rows, cols, 1.0, dtype=dtype, generator=rng), B, rng, batches)


def test_an_empty_batch_gives_zeros_and_empty_products(rng):
    """B = 0: spmm and spmm_t return (rows x 0) and (cols x 0) (sddmm's zero per entry: test_sddmm.py)."""
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        W = random_weight(9, 7, 0.4, dtype=dtype, generator=rng)
        X, G = torch.randn(7, 0, dtype=dtype), torch.randn(9, 0, dtype=dtype)
        assert ops.spmm(W, X).shape == (9, 0) and ops.spmm_t(W, G).shape == (7, 0)


# --------------------------------------------------------- spmm_t with the values in column order
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


# ------------------------------------------ spmm_t scattering the CSR's rows (csrc/cpu/scatter.h)
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


def test_non_contiguous_inputs(rng, batches):
    W = random_weight(40, 30, 0.2, empty_rows=3, generator=rng)
    X, G = batches(W, 9, rng, layout=("transposed", "strided"))
    assert not X.is_contiguous() and not G.is_contiguous()
    D = dense(W)
    torch.testing.assert_close(ops.spmm(W, X), D @ X)
    torch.testing.assert_close(ops.spmm_t(W, G), D.T @ G)


def test_power_law_rows_large(rng, batches):
    """Skewed row lengths (a few rows hold most entries), as in trained networks. (test_sddmm.py:
    sddmm on the same inputs.)"""
    W = power_law_weight(3000, 2000, empty_rows=100, generator=rng)
    X, G = batches(W, 32, rng)
    D = dense(W)
    torch.testing.assert_close(ops.spmm(W, X), D @ X)
    torch.testing.assert_close(ops.spmm_t(W, G), D.T @ G)


def test_thread_count_does_not_change_results(rng, batches):
    W = random_weight(300, 200, 0.1, empty_rows=10, full_rows=2, dtype=torch.float32, generator=rng)
    X, G = batches(W, 33, rng)
    with num_threads(1):
        single = (ops.spmm(W, X), ops.spmm_t(W, G))
    with num_threads(max(2, torch.get_num_threads())):
        multi = (ops.spmm(W, X), ops.spmm_t(W, G))
    for a, b in zip(single, multi):
        assert torch.equal(a, b)  # each output element is summed in the same order


# --------------------------------------------------------------------------------------- autograd
@pytest.mark.parametrize("shape", [(5, 4, 0.5, 1, 1), (1, 1, 1.0, 0, 0), (6, 3, 0.0, 0, 0), (12, 9, 0.3, 2, 1)])
@pytest.mark.parametrize("B", [1, 4])
def test_gradcheck_spmm_and_spmm_t(shape, B, rng, gradcheck_inputs):
    """Their backward runs sddmm (the gradient in the values) and each other (sddmm's own gradcheck:
    test_sddmm.py::test_gradcheck_sddmm)."""
    idx, v, X, G = gradcheck_inputs(shape, B, rng)
    sp = torch.ops.sparse_engine
    assert torch.autograd.gradcheck(lambda v, X: sp.spmm(*idx, v, X), (v, X))
    assert torch.autograd.gradcheck(lambda v, G: sp.spmm_t(*idx, v, G), (v, G))
    assert torch.autograd.gradgradcheck(lambda v, X: sp.spmm(*idx, v, X), (v, X))
    assert torch.autograd.gradgradcheck(lambda v, G: sp.spmm_t(*idx, v, G), (v, G))
    # the C++ autograd (csrc/autograd.cpp), not a Python one
    names = [f().grad_fn.name() for f in (lambda: sp.spmm(*idx, v, X), lambda: sp.spmm_t(*idx, v, G))]
    assert [n.rsplit("::", 1)[-1] for n in names] == ["SpmmFn>", "SpmmTFn>"], names


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


# ---------------------------------------------------------------------------------------- compile
def test_torch_compile_fullgraph_forward_and_backward(rng, batches, eager_and_compiled):
    W = random_weight(50, 40, 0.2, empty_rows=4, dtype=torch.float32, generator=rng)

    def f(v, X, G):
        idx = W.index
        sp = torch.ops.sparse_engine
        y = sp.spmm(*idx, v, X)
        z = sp.spmm_t(*idx, v, G)
        return (y * y).sum() + (z * z).sum()

    X, G = batches(W, 7, rng)
    eager, compiled, eager_grad, compiled_grad = eager_and_compiled(f, W.values, X, G)
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(compiled_grad, eager_grad)


# -------------------------------------------------------------------------------------- bad input
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


# ------------------------------------------ CPU: float16 / bfloat16 storage, float32 accumulation
# 1 and 3: the narrow tail; 16/32/64: each compile-time block of a 2-byte type; 67: a block
# plus a tail; 300: several blocks (test_sddmm.py: the same batches, more than one sddmm batch tile)
HALF_CPU_BATCHES = [1, 3, 16, 67, 300]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("shape", AWKWARD_SHAPES, ids=str)
@pytest.mark.parametrize("B", HALF_CPU_BATCHES)
def test_kernels_match_float64_reference(shape, B, dtype, rng, batches):
    W = random_weight(*shape, generator=rng).to(dtype)
    assert W.values.dtype == dtype and W.col_idx.dtype == torch.int32 and W.row_ptr.dtype == torch.int64
    X, G = batches(W, B, rng, draw=torch.float32)
    refs = references(W, X, G)  # float64 math on the stored (rounded) values
    assert_within_rounding(ops.spmm(W, X), *refs["spmm"], dtype)
    assert_within_rounding(ops.spmm_t(W, G), *refs["spmm_t"], dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_non_contiguous_inputs_half(dtype, rng, batches):
    W = random_weight(40, 30, 0.2, empty_rows=3, generator=rng).to(dtype)
    X, G = batches(W, 9, rng, draw=torch.float32, layout=("transposed", "strided"))
    assert not X.is_contiguous() and not G.is_contiguous()
    D, Xd, Gd = dense(W), X.double(), G.double()
    assert_within_rounding(ops.spmm(W, X), D @ Xd, D.abs() @ Xd.abs(), 40, dtype)
    assert_within_rounding(ops.spmm_t(W, G), D.T @ Gd, D.abs().T @ Gd.abs(), 40, dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_power_law_rows_large_half(dtype, rng):
    rows, cols, B = 1500, 1200, 40
    W = power_law_weight(rows, cols, generator=rng).to(dtype)
    X = torch.randn(cols, B, generator=rng).to(dtype)
    G = torch.randn(rows, B, generator=rng).to(dtype)
    D, Xd, Gd = dense(W), X.double(), G.double()
    assert_within_rounding(ops.spmm(W, X), D @ Xd, D.abs() @ Xd.abs(), cols, dtype)
    assert_within_rounding(ops.spmm_t(W, G), D.T @ Gd, D.abs().T @ Gd.abs(), rows, dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_two_byte_products_are_the_float32_products_rounded_once(dtype, rng, same_on_1_and_2_threads):
    """float16 / bfloat16 spmm and spmm_t sum each output in the float32 kernel's order (the same
    blocks, accumulator sets and FMAs on the widened values) and round once, 8 at a time (storage.h
    narrow): the same bits as the float32 product of the same numbers, rounded by torch. Every block
    width up to the widest (B 2-72: 1-9 units, the last one partly in the batch), several blocks
    (300), on 1 and 2 threads; empty and full rows."""
    W = random_weight(70, 50, 0.15, empty_rows=4, full_rows=2, generator=rng).to(dtype)
    W32 = SparseWeight(W.row_ptr, W.col_idx, W.values.float(), W.shape)
    for B in [*range(2, 73, 3), 64, 300]:
        X = torch.randn(50, B, generator=rng).to(dtype)
        G = torch.randn(70, B, generator=rng).to(dtype)
        y, z = same_on_1_and_2_threads(lambda: (ops.spmm(W, X), ops.spmm_t(W, G)))
        assert torch.equal(y, ops.spmm(W32, X.float()).to(dtype)), B
        assert torch.equal(z, ops.spmm_t(W32, G.float()).to(dtype)), B


@pytest.mark.parametrize("dtype", HALF)
def test_accumulation_is_float32_and_rounded_once(dtype):
    """n = 3001 products 1 * 1: a float16 running sum stops at 2048 (2048 + 1 rounds back to
    2048), a bfloat16 one at 256; float32 holds 3001 exactly, rounded once to the storage type.
    The n entries are one row (spmm) and one column (spmm_t) (one batch of sddmm: test_sddmm.py)."""
    n = 3001
    assert torch.tensor(2048.0, dtype=torch.float16) + 1 == 2048  # what a half accumulator would do
    assert torch.tensor(256.0, dtype=torch.bfloat16) + 1 == 256
    expected = torch.tensor(float(n), dtype=torch.float64).to(dtype)  # exact sum, one rounding
    row = SparseWeight(torch.tensor([0, n, n]), torch.arange(n, dtype=torch.int32), torch.ones(n, dtype=dtype), (2, n))
    y = ops.spmm(row, torch.ones(n, 5, dtype=dtype))
    assert torch.equal(y[0], expected.expand(5)) and torch.equal(y[1], torch.zeros(5, dtype=dtype))
    col = SparseWeight(torch.arange(n + 1), torch.zeros(n, dtype=torch.int32), torch.ones(n, dtype=dtype), (n, 2))
    z = ops.spmm_t(col, torch.ones(n, 70, dtype=dtype))
    assert torch.equal(z[0], expected.expand(70)) and torch.equal(z[1], torch.zeros(70, dtype=dtype))


# ------------------------------------------------------------------- float16 / bfloat16 gradients
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("op", ["spmm", "spmm_t"])
def test_gradients_match_float32_autograd(op, dtype, rng, half_gradient_case):
    half, single, abs_refs, terms = half_gradient_case(op, dtype, rng)
    for h, s, a, n in zip(half, single, abs_refs, terms):
        assert h.dtype == dtype and s.dtype == torch.float32 and h.shape == s.shape
        # both are float32 sums of the same products: the float32 result's own error is
        # within the same accumulation term, hence the factor 2 on it
        b = rounding_bound(s.double(), 2 * a, n, dtype)
        err = (h.double() - s.double()).abs()
        assert bool((err <= b).all()), f"{op}: max error/bound {float((err / b).max()):.3g}"


# --------------------------------------------------------------------- float16 / bfloat16 compile
@pytest.mark.parametrize("dtype", HALF)
def test_torch_compile_fullgraph_forward_and_backward_half(dtype, rng, batches, eager_and_compiled):
    W = random_weight(50, 40, 0.2, empty_rows=4, generator=rng).to(dtype)

    def f(v, X, G):
        idx = W.index
        sp = torch.ops.sparse_engine
        y = sp.spmm(*idx, v, X)
        z = sp.spmm_t(*idx, v, G)
        return (y.float() ** 2).sum() + (z.float() ** 2).sum()

    X, G = batches(W, 7, rng, draw=torch.float32)
    eager, compiled, eager_grad, compiled_grad = eager_and_compiled(f, W.values, X, G)
    assert compiled_grad.dtype == dtype
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)  # the same kernels, deterministic
    torch.testing.assert_close(compiled_grad, eager_grad, rtol=0, atol=0)


def test_mixed_dtypes_raise_clear_errors(rng):
    W = random_weight(4, 6, 0.5, generator=rng).to(torch.bfloat16)
    with pytest.raises(TypeError, match="X must have dtype torch.bfloat16 like the weight values, got torch.float16"):
        ops.spmm(W, torch.randn(6, 2, generator=rng).half())
    with pytest.raises(TypeError, match="G must have dtype torch.bfloat16 like the weight values, got torch.float32"):
        ops.spmm_t(W, torch.randn(4, 2, generator=rng))
    sp = torch.ops.sparse_engine
    with pytest.raises(TypeError, match="X must have dtype BFloat16, got Half"):
        sp.spmm(*W.index, W.values, torch.randn(6, 2, generator=rng).half())
    with pytest.raises(TypeError, match=r"values must be float32 or float64 \(or float16/bfloat16\)"):
        SparseWeight(W.row_ptr, W.col_idx, W.values.detach().to(torch.int16), W.shape)


# --------------------------------------------------------------------------------- 1 vs 2 threads
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("B", [1, 20, 33])
def test_spmm_and_spmm_t_on_1_and_2_threads(dtype, B, same_on_1_and_2_threads, batches):
    """(sddmm's: test_sddmm.py::test_sddmm_on_1_and_2_threads.)"""
    g = torch.Generator().manual_seed(B)
    W = random_weight(700, 500, 0.1, empty_rows=20, full_rows=2, dtype=dtype, generator=g)
    X, G = batches(W, B, g, draw=torch.float32)
    assert (W.nnz + 700) * B >= 2**15 or B == 1
    v_t = ops.transposed_values(W)
    same_on_1_and_2_threads(lambda: (ops.spmm(W, X), ops.spmm_t(W, G), ops.spmm_t(W, G, v_t)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B", [1, 20])
def test_spmm_t_scatter_on_1_and_2_threads(dtype, B, same_on_1_and_2_threads):
    """spmm_t without values_t at a size where it scatters the CSR's rows (csrc/cpu/scatter.h):
    each thread owns a range of output rows, every sum runs over the rows in order."""
    g = torch.Generator().manual_seed(B)
    W = random_weight(2200, 1100, 0.9, empty_rows=20, full_rows=2, dtype=dtype, generator=g)
    assert W.nnz * W.values.element_size() >= SCATTER_FROM_BYTES
    G = torch.randn(2200, B, generator=g).to(dtype)
    same_on_1_and_2_threads(lambda: ops.spmm_t(W, G))


# ------------------------------------------------------------------------ properties (hypothesis)
EXAMPLES = settings().max_examples  # of the profile tests/conftest.py loaded
seeds = st.integers(0, 2**32 - 1)
threads = st.sampled_from([1, 2])


def budget(share: float = 1.0, **kw) -> settings:
    """``share`` of the profile's examples for one test (at least 5)."""
    return settings(max_examples=max(5, int(EXAMPLES * share)), **kw)


@budget(1.5)
@given(W=weights(dtypes=st.sampled_from([F32, F64, F16, BF16])), B=st.one_of(st.integers(0, 8), st.integers(9, 80)),
       layout=st.sampled_from(("contiguous",) + LAYOUTS), n_threads=threads, seed=seeds)
def test_spmm_and_spmm_t_match_float64(batches, W, B, layout, n_threads, seed):
    """(sddmm's: test_sddmm.py::test_sddmm_matches_float64.)"""
    dtype = W.values.dtype
    X, G = batches(W, B, torch.Generator().manual_seed(seed), draw=torch.float32, layout=layout)
    refs = references(W, X, G)
    with num_threads(n_threads):
        got = {"spmm": ops.spmm(W, X), "spmm_t": ops.spmm_t(W, G)}
    for name, out in got.items():
        assert_within_rounding(out, *refs[name], dtype)
    # each output element is summed in one order, whatever the thread count
    with num_threads(3 - n_threads):
        again = (ops.spmm(W, X), ops.spmm_t(W, G))
    for a, b in zip(got.values(), again):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------- torch.autocast
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ops_run_in_the_autocast_dtype(device, dtype, rng, batches):
    W = random_weight(37, 29, 0.2, dtype=torch.float32, generator=rng, device=device)
    X, G = batches(W, 5, rng)
    raw = torch.ops.sparse_engine
    v = W.values.detach().to(dtype)
    want = [raw.spmm(*W.index, v, X.to(dtype)), raw.spmm_t(*W.index, v, G.to(dtype))]
    with torch.autocast(device, dtype=dtype):
        got = [ops.spmm(W, X), ops.spmm_t(W, G)]
        raw_got = raw.spmm(*W.index, W.values, X)
    for g, w in zip(got + [raw_got], want + want[:1]):
        assert g.dtype == dtype and torch.equal(g, w)


def test_gradients_reach_the_float32_values_through_the_casts(device, rng):
    """Here, not in test_sddmm.py: the gradients are spmm's backward, an sddmm (values) and an spmm_t (X)."""
    dtype = torch.bfloat16
    W = random_weight(23, 31, 0.2, dtype=torch.float32, generator=rng, device=device)
    X = torch.randn(31, 6, generator=rng, device="cpu").to(device).requires_grad_()
    dY = torch.randn(23, 6, generator=rng).to(device)
    with torch.autocast(device, dtype=dtype):
        Y = ops.spmm(W, X)
    Y.backward(dY.to(dtype))
    assert W.values.grad.dtype == torch.float32 and X.grad.dtype == torch.float32
    raw = torch.ops.sparse_engine
    want_v = raw.sddmm(*W.index, dY.to(dtype), X.detach().to(dtype)).float()
    want_x = raw.spmm_t(*W.index, W.values.detach().to(dtype), dY.to(dtype)).float()
    assert torch.equal(W.values.grad, want_v) and torch.equal(X.grad, want_x)


# ------------------------------------------------------------------------------------------- CUDA
# The patterns, batch widths and tolerance of the CUDA tests are fixtures of conftest.py (pattern_case,
# pattern_weight, assert_close_to), shared with test_sddmm.py, which checks sddmm on the same inputs.
DEV = "cuda"
RAW = torch.ops.sparse_engine
randn = partial(testing.randn, dtype=torch.float32, device=DEV)  # seeded, drawn on the CPU, then on the GPU


# ------------------------------------------------------------------------------ the two kernels
@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
def test_ops_match_dense_reference(pattern_case, pattern_weight, seeded_batches, assert_close_to):
    """spmm and spmm_t on each pattern at each dtype and batch width (the fixture pattern_case)."""
    name, dtype, B = pattern_case
    W = pattern_weight(name, dtype, seed=B)
    X, G = seeded_batches(W, B, seeds=(10 * B + 1, 10 * B + 2))
    refs = references(W, X, G)
    assert_close_to(ops.spmm(W, X), *refs["spmm"], dtype)
    assert_close_to(ops.spmm_t(W, G), *refs["spmm_t"], dtype)


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
def test_zero_batch(pattern_weight):
    W = pattern_weight("uniform")
    X = torch.zeros(W.shape[1], 0, device=DEV)
    G = torch.zeros(W.shape[0], 0, device=DEV)
    assert ops.spmm(W, X).shape == (W.shape[0], 0)
    assert ops.spmm_t(W, G).shape == (W.shape[1], 0)


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, *HALF])
def test_non_contiguous_and_misaligned_inputs(dtype, pattern_weight, layout_batches, assert_close_to):
    W = pattern_weight("power_rows", dtype)
    views, G = layout_batches(W, 32)
    for X in views.values():
        assert_close_to(ops.spmm(W, X), *references(W, X)["spmm"], dtype)
    assert_close_to(ops.spmm_t(W, G), *references(W, G=G)["spmm_t"], dtype)


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
def test_more_long_rows_than_the_long_kernel_grid(many_long_rows, cpu_f64_references, assert_close_to):
    """700 rows of 2048 entries among 20,000 short ones: the long-row list outgrows the
    block-per-row kernel's grid, so its grid-stride loop is exercised."""
    for dtype, W, X, G in many_long_rows():
        refs = cpu_f64_references(W, X, G)
        assert_close_to(ops.spmm(W, X), *refs["spmm"], dtype)
        assert_close_to(ops.spmm_t(W, G), *refs["spmm_t"], dtype)


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.parametrize("long_mult, seg_mult", [(1, 2), (2, 8), (8, 32)])
def test_other_long_row_multiples_give_the_same_products(long_mult, seg_mult, cpu_f64_references, assert_close_to):
    """The gather's long-row threshold and segment as other multiples of the mean row (the GPU sweep's
    settings, benchmarks/bench_gather_tuning.py): on Zipf rows (short rows and rows of all columns)
    spmm and spmm_t stay within rounding of float64 at one, 20 and 128 columns (other segments sum in
    another order: not the defaults' bits); the setting before is restored."""
    from sparse_engine import _C
    from sparse_engine.sparse.patterns import row_law_pattern

    g = torch.Generator().manual_seed(11)
    row_ptr, col = row_law_pattern("zipf1.2", 3000, 2000, 150_000, g)
    W = SparseWeight(row_ptr, col, torch.randn(col.numel(), generator=g), (3000, 2000)).to("cuda")
    for B in (1, 20, 128):
        X, Gr = torch.randn(2000, B, generator=g).cuda(), torch.randn(3000, B, generator=g).cuda()
        refs = cpu_f64_references(W, X, Gr)
        old = _C._set_gather_long_rows(long_mult, seg_mult)
        try:
            assert_close_to(ops.spmm(W, X), *refs["spmm"], torch.float32)
            assert_close_to(ops.spmm_t(W, Gr), *refs["spmm_t"], torch.float32)
        finally:
            assert _C._set_gather_long_rows(*old) == (long_mult, seg_mult)
    assert old == (4, 2)


@pytest.mark.cuda
def test_long_row_multiples_outside_their_range_are_one_clear_error():
    from sparse_engine import _C
    if not hasattr(_C, "_set_gather_long_rows"):
        pytest.skip("a build without the CUDA kernels")
    for bad in ((0, 2), (65, 2), (4, 1), (4, 65)):
        with pytest.raises(ValueError, match=r"long_mult must be in \[1, 64\] and seg_mult in \[2, 64\]"):
            _C._set_gather_long_rows(*bad)
    assert _C._set_gather_long_rows(4, 2) == (4, 2)


def _kernels_launched(fn) -> list[str]:
    """Names of the CUDA kernels fn() launches (torch.profiler); skips where no kernel is seen."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm-up: the first call scans the index (csrc/index_check.h)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == DeviceType.CUDA]
    if not any("_kernel" in n for n in names):
        pytest.skip("the profiler recorded no CUDA kernel (no CUPTI?)")
    return names


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
def test_the_long_row_kernels_run_only_when_a_row_is_long(pattern_weight):
    """A checked index's longest row is known on the host (csrc/index_check.h): without a long
    row no long-row kernel is launched (nor its list's memset), where sizing by nnz alone (24,000
    entries > the 1,024 threshold) launched one on every call; with long rows they still run.
    Here, not split: one profile counts the launches of spmm's, spmm_t's and sddmm's kernels together."""
    flat = copy_weight(weight_with_row_lengths(np.full(3000, 8), 2000, seed=1), dtype=torch.float32).to(DEV)
    X, G = randn(2000, 32, seed=1), randn(3000, 32, seed=2)
    names = _kernels_launched(lambda: (ops.spmm(flat, X), ops.spmm_t(flat, G), ops.sddmm(flat, G, X)))
    assert sum("gather_rows_kernel" in n for n in names) == 2 and any("sddmm_rows_kernel" in n for n in names)
    assert not any("_long_kernel" in n or "long_sum_kernel" in n for n in names), names
    assert not any("memset" in n.lower() for n in names), names
    for name in ["power_rows", "power_cols"]:  # long rows of W (spmm, sddmm), of W^T (spmm_t)
        W = pattern_weight(name)
        rows, cols = W.shape
        X, G = randn(cols, 32, seed=3), randn(rows, 32, seed=4)
        names = _kernels_launched(lambda: (ops.spmm(W, X), ops.sddmm(W, G, X)))
        for kernel in ("gather_long_kernel", "sddmm_long_kernel"):
            assert any(kernel in n for n in names) == (name == "power_rows"), (name, kernel, names)
        assert any("long_sum_kernel" in n for n in names) == (name == "power_rows"), (name, names)  # rows split
        names = _kernels_launched(lambda: ops.spmm_t(W, G))
        assert any("gather_long_kernel" in n for n in names) == (name == "power_cols"), (name, names)


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.slow
@pytest.mark.parametrize("B", [20, 128])
def test_large_random_weight(B, seeded_batches, cpu_f64_references, assert_close_to):
    g = torch.Generator().manual_seed(B)
    W = SparseWeight.random(30_000, 25_000, 0.005, generator=g, dtype=torch.float64)
    Wg = copy_weight(W, device=DEV)  # built on the GPU: its transposed index comes from the CUDA kernel
    for a, b in zip(W.index, Wg.index):
        assert torch.equal(a, b.cpu())
    moved = copy_weight(W, device="cpu").to(DEV)  # Module.to moves the CPU-built index unchanged
    for a, b in zip(moved.index, Wg.index):
        assert torch.equal(a.cpu(), b.cpu())
    X, G = seeded_batches(Wg, B)
    refs = cpu_f64_references(Wg, X, G)
    assert_close_to(ops.spmm(Wg, X), *refs["spmm"], torch.float64)
    assert_close_to(ops.spmm_t(Wg, G), *refs["spmm_t"], torch.float64)


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.parametrize("name", ["uniform", "power_rows", "power_cols"])
def test_float32_agrees_with_cpu_kernels(name, pattern_weight, seeded_batches):
    W = pattern_weight(name, torch.float32, seed=11)
    X, G = seeded_batches(W, 48, seeds=(5, 6))
    Wc = copy_weight(W, device="cpu")
    for gpu, cpu in [(ops.spmm(W, X), ops.spmm(Wc, X.cpu())), (ops.spmm_t(W, G), ops.spmm_t(Wc, G.cpu()))]:
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["power_rows", "power_cols"])
def test_deterministic(name, dtype, pattern_weight, seeded_batches):
    """Same input, same bits: no atomics in any sum (long rows included)."""
    W = pattern_weight(name, dtype, seed=2)
    X, G = seeded_batches(W, 32)
    for fn in (lambda: ops.spmm(W, X), lambda: ops.spmm_t(W, G)):
        first = fn()
        for _ in range(3):
            assert torch.equal(fn(), first)


# ----------------------------------------------------------------------- autograd, compile (CUDA)
@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
def test_gradcheck():
    W = testing.random_weight(13, 9, 0.35, seed=0, device=DEV)
    idx = W.index
    v = W.values.detach().clone().requires_grad_(True)
    X = randn(9, 5, dtype=torch.float64, seed=1).requires_grad_(True)
    G = randn(13, 5, dtype=torch.float64, seed=2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, X: RAW.spmm(*idx, v, X), (v, X))
    assert torch.autograd.gradcheck(lambda v, G: RAW.spmm_t(*idx, v, G), (v, G))
    assert torch.autograd.gradgradcheck(lambda v, X: RAW.spmm(*idx, v, X), (v, X))


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.parametrize("dtype", HALF)
def test_half_gradients_match_float32(dtype, pattern_weight):
    """Backward in float16/bfloat16 (sddmm and spmm_t kernels) against float32 autograd on the
    same stored inputs, within the storage-precision bound. Here, not in test_sddmm.py: this is
    spmm's backward."""
    W32 = pattern_weight("power_rows", torch.float32, seed=3)
    rows, cols = W32.shape
    W32 = copy_weight(W32, device=DEV, dtype=dtype)  # values rounded to dtype ...
    W32 = copy_weight(W32, device=DEV, dtype=torch.float32)  # ... and held in float32
    Wh = copy_weight(W32, device=DEV, dtype=dtype)
    X = randn(cols, 24, seed=1).to(dtype)
    R = randn(rows, 24, seed=2).to(dtype)
    x32, xh = X.float().requires_grad_(), X.clone().requires_grad_()
    ops.spmm(W32, x32).backward(R.float())
    ops.spmm(Wh, xh).backward(R)
    D = dense(W32).abs()
    row, col, _ = W32.coo()
    bounds = {"values": ((R.cpu().double().abs() @ X.cpu().double().abs().T)[row.cpu(), col.cpu()], 24),
              "X": (D.T @ R.cpu().double().abs(), rows)}
    for what, h, s in (("values", Wh.values.grad, W32.values.grad), ("X", xh.grad, x32.grad)):
        b, n = bounds[what]
        assert h.dtype == dtype
        err = (h.cpu().double() - s.cpu().double()).abs()
        assert bool((err <= rounding_bound(s.cpu().double(), 2 * b, n, dtype)).all()), what


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_torch_compile_on_cuda(dtype, pattern_weight):
    """spmm and spmm_t in one compiled step (its backward runs sddmm)."""
    W = pattern_weight("power_rows", dtype, seed=4)  # float64: compare without rounding noise
    idx = W.index
    X = randn(W.shape[1], 16, dtype=dtype, seed=1)

    def step(values, X):
        h = RAW.spmm(*idx, values, X).tanh()
        return RAW.spmm_t(*idx, values, h).square().sum()

    v1 = W.values.detach().clone().requires_grad_(True)
    v2 = W.values.detach().clone().requires_grad_(True)
    eager = step(v1, X)
    eager.backward()
    compiled = torch.compile(step, fullgraph=True)(v2, X)
    compiled.backward()
    assert v2.grad.dtype == dtype
    if dtype == torch.float64:
        torch.testing.assert_close(compiled, eager, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(v2.grad, v1.grad, rtol=1e-9, atol=1e-9)
        return
    # bfloat16: inductor fuses tanh/square in float32 where eager rounds to bfloat16 in between, so an
    # entry may move by bfloat16 steps of the largest ones (here up to ~5,600, where a step is 32; eager
    # is itself 37 from the float64 gradient): 2% of the largest entry (the H200 run: 2.0 apart)
    torch.testing.assert_close(compiled, eager, rtol=2e-2, atol=2e-2)
    scale = float(v1.grad.float().abs().max())
    torch.testing.assert_close(v2.grad.float(), v1.grad.float(), rtol=2e-2, atol=2e-2 * scale)


# ------------------------------------------------------------------------------- bad input (CUDA)
@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
def test_mixed_devices_are_rejected(pattern_weight):
    W = pattern_weight("uniform")
    X = randn(W.shape[1], 4, seed=0)
    with pytest.raises(ValueError, match="X must be on"):
        RAW.spmm(*W.index, W.values, X.cpu())
    cpu_index = [t.cpu() for t in W.index]
    with pytest.raises(ValueError, match="must be on"):
        RAW.spmm(*cpu_index[:1], *W.index[1:], W.values, X)


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
def test_wrong_dtype_is_rejected(pattern_weight):
    W = pattern_weight("uniform")
    with pytest.raises(TypeError, match="X must have dtype"):
        RAW.spmm(*W.index, W.values, randn(W.shape[1], 4, dtype=torch.float64, seed=0))
    with pytest.raises(TypeError, match="values must be float32 or float64"):
        RAW.spmm(*W.index, W.values.detach().int(), randn(W.shape[1], 4, seed=0).int())
    with pytest.raises(TypeError, match="X must have dtype"):
        RAW.spmm(*W.index, W.values.detach().bfloat16(), randn(W.shape[1], 4, seed=0).half())


# ------------------------------------------------------------ every output element written (CUDA)
def _from_pool(t: torch.Tensor, span) -> bool:
    return span[0] <= t.data_ptr() < span[1]


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, *HALF], ids=str)
def test_every_output_element_is_written(dtype, nan_filled_pool, nan_pool_inputs, assert_close_to):
    Wd, Xd, Gd, refs = nan_pool_inputs(dtype)
    for name, f in (("spmm", lambda: se.ops.spmm(Wd, Xd)), ("spmm_t", lambda: se.ops.spmm_t(Wd, Gd))):
        out = f()
        assert _from_pool(out, nan_filled_pool), f"{name}'s output did not come from the NaN-filled memory"
        assert not bool(out.isnan().any()), f"{name} left elements unwritten"
        assert_close_to(out, *refs[name], dtype)


# ---------------------------------------------- the CUDA kernels on the emulator (tests/cuda_emu)
@pytest.mark.slow
def test_spmm_kernels_match_float64_references_on_the_emulator(driver_runs):
    """spmm_cuda.cu's kernels (and sddmm's and transpose_index's, run by the same driver: test_sddmm.py
    and test_transpose.py check their lines, test_index_check.py the index scan's) within rounding
    of the float64 references; the long-row kernels run when a row is long, and only then."""
    for seed, proc in driver_runs.items():
        lines = assert_passed(proc)
        # the long-row kernels really ran, for rows (spmm) and for columns (spmm_t); rows of up to
        # 5,000 entries split in segments whose sums a third kernel adds (launches 3)
        assert any("power " in line and "long rows=5" in line for line in lines)
        assert any(line.split()[1:2] == ["long"] and "long rows=5" in line and "launches=3/" in line for line in lines)
        assert any("powerT" in line and "long cols=5" in line for line in lines)
        # with the longest row known (a checked index), a pattern without long rows launches only the
        # row kernels (spmm/spmm_t), where sizing by nnz alone launched the long-row kernels too (and
        # the segments' sum);
        # with long rows, those still run (a line's launches=a/b/c: spmm/spmm_t/sddmm; test_sddmm.py
        # checks c)
        flat = [line for line in lines if line.split()[1:2] == ["flat"]]
        assert flat and all("launches=3/3/" in line for line in flat if "known=0" in line)
        assert any("known=1" in line for line in flat)
        assert all("launches=1/1/" in line for line in flat if "known=1" in line)
        assert any("power " in line and "known=1 launches=3/1/" in line for line in lines)
        # a wide batch lowers the threshold (1,024 / the source row's 16-byte slices, at most 8): the
        # rows of 200-900 entries are long from B = 32 floats (all 4), two of them at B = 8, none at B <= 4;
        # the driver checks each listed count against the rows longer than the threshold
        medium = {line.split()[2]: line for line in lines if line.split()[:2] == ["f32", "medium"] and "known=0" in line}
        assert {B: medium[B].split("long rows=")[1].split()[0] for B in ("B=1", "B=4", "B=8", "B=32", "B=300")} == \
            {"B=1": "0", "B=4": "0", "B=8": "2", "B=32": "4", "B=300": "4"}, medium
        assert_every_kernel_ran(proc, ["spmm_cuda"])
    # at the default multiples the wide rows of "mid" (100-300 entries, mean 200) stay in the row kernel
    mid = [line for line in lines if line.split()[:2] == ["f32", "mid"] and line.split()[2] in ("B=32", "B=300")]
    assert len(mid) == 2 and all("long rows=0 " in line for line in mid), mid


@pytest.mark.slow
def test_spmm_kernels_at_other_long_row_multiples_on_the_emulator(tmp_path_factory):
    """The gather's long-row threshold and segment as other multiples of the mean row (the sweep's
    settings, _set_gather_long_rows): the same references hold, and the lists follow the multiples (the
    driver checks each list against its own threshold and segment): at 1x the mean, the wide rows of
    "mid" over its mean (200) leave the row kernel; at 16x the rows of "long" split in longer segments."""
    proc = driver_run_with(tmp_path_factory, "driver", "small", "2", "1,16")
    lines = assert_passed(proc)
    assert "gather long rows: threshold 1 x the mean, segments 16 x" in lines[0]
    mid = {line.split()[2]: line for line in lines if line.split()[:2] == ["f32", "mid"]}
    assert int(mid["B=32"].split("long rows=")[1].split()[0]) > 0, mid
    assert mid["B=1"].split("long rows=")[1].split()[0] == "0"  # 1,024 entries at one slice: none that long
    assert any(line.split()[1:2] == ["long"] and "launches=3/" in line for line in lines)
    assert_every_kernel_ran(proc, ["spmm_cuda"])
    bad = driver_run_with(tmp_path_factory, "driver", "small", "1", "1,1")
    assert bad.returncode == 2 and "bad long-row multiples 1,1" in bad.stdout
