"""sddmm (csrc/cpu/sddmm_cpu.cpp, csrc/cuda/sddmm_cuda.cu) on every device and dtype: the products of
two dense matrices at a pattern's stored entries. Most tests here check sddmm on the inputs of the test
of the same name in test_spmm.py, which checks spmm and spmm_t on them (the fixtures of
tests/ops/conftest.py build them for both files). sddmm as spmm's backward (spmm's gradients, the
launches of the CUDA long-row kernels counted with spmm's in one profile) is checked in test_spmm.py.

* CPU, float32/float64: within rounding of the float64 dense reference on the awkward shapes and
  batches, tall and wide dense weights, batches wider than the CPU kernel's tiles, an empty batch,
  non-contiguous inputs, skewed rows, gradcheck and gradgradcheck, torch.compile, 1 vs 2 threads,
  bad input;
* float16/bfloat16 storage with float32 accumulation, within sparse_engine.testing.rounding_bound
  (test_spmm.py's docstring explains it), gradients against float32 autograd;
* hypothesis properties: any shape, density, dtype, layout and thread count;
* torch.autocast: sddmm runs in the autocast dtype;
* CUDA (marked ``cuda``): the patterns, batch widths and seeds of test_spmm.py's CUDA tests, every
  output element written, gradcheck, torch.compile, mixed devices;
* the CUDA kernels on the CPU emulator (tests/cuda_emu, marked ``slow``).

The tiled gathers are in test_tiling.py; malformed input in test_malformed_input.py and
test_index_check.py.
"""
from __future__ import annotations

import re
from functools import partial

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_engine import SparseWeight, ops
from sparse_engine import testing
from sparse_engine.testing import (AWKWARD_SHAPES, LAYOUTS, assert_within_rounding, copy_weight, num_threads,
                                   power_law_weight, random_weight, references, rounding_bound)
from sparse_engine.testing import weight_strategy as weights
from cuda_emu.emu_testing import assert_every_kernel_ran, assert_passed

F32, F64, F16, BF16 = torch.float32, torch.float64, torch.float16, torch.bfloat16
HALF = [torch.float16, torch.bfloat16]  # 2-byte storage, float32 accumulation


# ------------------------------------------------------------------------- CPU: float32 / float64
# test_spmm.py's batches: 20: three float vectors, the last read to its 4th lane; 30 (double) and
# 60 (float): a last full block read with masked loads
BATCHES = [1, 3, 20, 30, 60, 64, 67]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", AWKWARD_SHAPES, ids=str)
@pytest.mark.parametrize("B", BATCHES)
def test_kernels_match_dense_reference(shape, B, dtype, rng, batches):
    assert_sddmm_matches_reference(random_weight(*shape, dtype=dtype, generator=rng), B, rng, batches)


def assert_sddmm_matches_reference(W, B, rng, batches):
    """sddmm of W on fresh random batches of B columns, within rounding of the float64 reference."""
    X, G = batches(W, B, rng)
    assert_within_rounding(ops.sddmm(W, G, X), *references(W, X, G)["sddmm"], W.values.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B", [20, 67])
def test_sources_with_many_entries_per_row_read_from_a_padded_copy(B, dtype, rng, batches):
    """The tall and the wide dense weight (400 entries per row or column) on which test_spmm.py's test
    of this name makes spmm and spmm_t read a padded copy: sddmm reads float32 unpadded on AVX2 builds."""
    for rows, cols in ((400, 3), (3, 400)):
        assert_sddmm_matches_reference(random_weight(rows, cols, 1.0, dtype=dtype, generator=rng), B, rng, batches)


@pytest.mark.parametrize("density", [0.5, 0.1], ids=["tiled", "untiled"])
def test_wide_batches_cross_the_sddmm_tiles(rng, density):
    """Batches wider than one tile (128 float / 64 double / 256 two-byte columns) and not a multiple of
    it, where the CPU kernel tiles the batch (16 or more entries per row on average: 25 here) and where
    it reads each row whole (5 per row)."""
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        W = random_weight(60, 50, density, empty_rows=3, full_rows=1, dtype=dtype, generator=rng)
        assert (W.nnz >= 16 * 60) == (density == 0.5)  # csrc/cpu/sddmm_cpu.cpp, kSddmmTileFromRowMean
        for B in (129, 300, 600):
            G = torch.randn(60, B, generator=rng).to(dtype)
            X = torch.randn(50, B, generator=rng).to(dtype)
            row, col, _ = W.coo()
            Gd, Xd = G.double(), X.double()
            assert_within_rounding(ops.sddmm(W, G, X), (Gd @ Xd.T)[row, col], (Gd.abs() @ Xd.abs().T)[row, col],
                                   B, dtype)


def test_an_empty_batch_gives_zeros_and_empty_products(rng):
    """B = 0: sddmm gives a zero per entry (empty sums)."""
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        W = random_weight(9, 7, 0.4, dtype=dtype, generator=rng)
        X, G = torch.randn(7, 0, dtype=dtype), torch.randn(9, 0, dtype=dtype)
        out = ops.sddmm(W, G, X)
        assert out.shape == (W.nnz,) and W.nnz > 0 and not out.any()


def test_outputs_have_expected_shapes_and_dtypes(rng):
    W = random_weight(4, 6, 0.5, dtype=torch.float32, generator=rng)
    out = ops.sddmm(W, torch.randn(4, 2, generator=rng), torch.randn(6, 2, generator=rng))
    assert out.shape == (W.nnz,) and out.dtype == torch.float32


def test_non_contiguous_inputs(rng, batches):
    W = random_weight(40, 30, 0.2, empty_rows=3, generator=rng)
    X, G = batches(W, 9, rng, layout=("transposed", "strided"))
    assert not X.is_contiguous() and not G.is_contiguous()
    row, col, _ = W.coo()
    torch.testing.assert_close(ops.sddmm(W, G, X), (G @ X.T)[row, col])


def test_power_law_rows_large(rng, batches):
    """Skewed row lengths (a few rows hold most entries), as in trained networks."""
    W = power_law_weight(3000, 2000, empty_rows=100, generator=rng)
    X, G = batches(W, 32, rng)
    row, col, _ = W.coo()
    torch.testing.assert_close(ops.sddmm(W, G, X), (G @ X.T)[row, col])


def test_thread_count_does_not_change_results(rng, batches):
    W = random_weight(300, 200, 0.1, empty_rows=10, full_rows=2, dtype=torch.float32, generator=rng)
    X, G = batches(W, 33, rng)
    with num_threads(1):
        single = ops.sddmm(W, G, X)
    with num_threads(max(2, torch.get_num_threads())):
        multi = ops.sddmm(W, G, X)
    assert torch.equal(single, multi)  # each output element is summed in the same order


# --------------------------------------------------------------------------------------- autograd
@pytest.mark.parametrize("shape", [(5, 4, 0.5, 1, 1), (1, 1, 1.0, 0, 0), (6, 3, 0.0, 0, 0), (12, 9, 0.3, 2, 1)])
@pytest.mark.parametrize("B", [1, 4])
def test_gradcheck_sddmm(shape, B, rng, gradcheck_inputs):
    """The inputs of test_spmm.py::test_gradcheck_spmm_and_spmm_t."""
    idx, _, X, G = gradcheck_inputs(shape, B, rng)
    sp = torch.ops.sparse_engine
    assert torch.autograd.gradcheck(lambda G, X: sp.sddmm(*idx, G, X), (G, X))
    assert torch.autograd.gradgradcheck(lambda G, X: sp.sddmm(*idx, G, X), (G, X))
    # the C++ autograd (csrc/autograd.cpp), not a Python one
    name = sp.sddmm(*idx, G, X).grad_fn.name()
    assert name.rsplit("::", 1)[-1] == "SddmmFn>", name


# ---------------------------------------------------------------------------------------- compile
def test_torch_compile_fullgraph_forward_and_backward(rng, batches, eager_and_compiled):
    W = random_weight(50, 40, 0.2, empty_rows=4, dtype=torch.float32, generator=rng)

    def f(v, X, G):
        s = torch.ops.sparse_engine.sddmm(*W.index, G, X)
        return (s * v).sum()

    X, G = batches(W, 7, rng)
    eager, compiled, eager_grad, compiled_grad = eager_and_compiled(f, W.values, X, G)
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(compiled_grad, eager_grad)


# -------------------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors(rng):
    W = random_weight(4, 6, 0.5, dtype=torch.float32, generator=rng)
    with pytest.raises(ValueError, match="same batch size"):
        ops.sddmm(W, torch.randn(4, 2, generator=rng), torch.randn(6, 3, generator=rng))


# ------------------------------------------ CPU: float16 / bfloat16 storage, float32 accumulation
# test_spmm.py's batches: 1 and 3: the narrow tail; 16/32/64: each compile-time block of a 2-byte
# type; 67: a block plus a tail; 300: several blocks and more than one sddmm batch tile (256
# two-byte values)
HALF_CPU_BATCHES = [1, 3, 16, 67, 300]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("shape", AWKWARD_SHAPES, ids=str)
@pytest.mark.parametrize("B", HALF_CPU_BATCHES)
def test_kernels_match_float64_reference(shape, B, dtype, rng, batches):
    W = random_weight(*shape, generator=rng).to(dtype)
    X, G = batches(W, B, rng, draw=torch.float32)
    refs = references(W, X, G)  # float64 math on the stored (rounded) values
    assert_within_rounding(ops.sddmm(W, G, X), *refs["sddmm"], dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_non_contiguous_inputs_half(dtype, rng, batches):
    W = random_weight(40, 30, 0.2, empty_rows=3, generator=rng).to(dtype)
    X, G = batches(W, 9, rng, draw=torch.float32, layout=("transposed", "strided"))
    assert not X.is_contiguous() and not G.is_contiguous()
    Xd, Gd = X.double(), G.double()
    row, col, _ = W.coo()
    assert_within_rounding(ops.sddmm(W, G, X), (Gd @ Xd.T)[row, col], (Gd.abs() @ Xd.abs().T)[row, col], 9, dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_accumulation_is_float32_and_rounded_once(dtype):
    """n = 3001 products 1 * 1 in one batch (read whole, and in batch tiles): float32 holds 3001 exactly, rounded
    once to the storage type, where a float16 running sum stops at 2048 and a bfloat16 one at 256
    (test_spmm.py's test of this name: the same in one row of spmm and one column of spmm_t)."""
    n = 3001
    expected = torch.tensor(float(n), dtype=torch.float64).to(dtype)  # exact sum, one rounding
    one = SparseWeight(torch.tensor([0, 1]), torch.tensor([0], dtype=torch.int32), torch.ones(1, dtype=dtype), (1, 1))
    s = ops.sddmm(one, torch.ones(1, n, dtype=dtype), torch.ones(1, n, dtype=dtype))  # one row read whole
    assert torch.equal(s, expected.reshape(1))
    # a row of 16 entries: the batch in tiles, the partial sums carried in float32 between them
    row = SparseWeight(torch.tensor([0, 16]), torch.arange(16, dtype=torch.int32), torch.ones(16, dtype=dtype), (1, 16))
    s = ops.sddmm(row, torch.ones(1, n, dtype=dtype), torch.ones(16, n, dtype=dtype))
    assert torch.equal(s, expected.expand(16))


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("B", [2, 16, 24])
def test_two_byte_sums_round_to_nearest_even_once(B, dtype):
    """Sums exact in float32 that fall between two values of the storage type, ties among them,
    rounded once to the nearest (ties to even), as a float64 sum converted by torch: the kernel rounds
    8 entries at a time (a row of 8 or more), or one at a time (the rest). A NaN operand gives NaN.
    Rows of 11 entries: a group of 8, then 2 and 1."""
    tiny = 2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11  # half the spacing at 1: 1 + tiny is a tie
    firsts = torch.tensor([1.0, 1.0 + 2 * tiny, 1.0 + 4 * tiny, 2.0, -1.0, 0.5, 3.0, 1.0, 1.0, -2.0, 1.0])
    seconds = torch.tensor([1, 1, 1, 2, -1, 1 / 4, 3, 1 / 2, 1.5, -4, 0.0]) * tiny
    X = torch.zeros(11, B, dtype=torch.float64)
    X[:, 0], X[:, 1] = firsts, seconds  # X[k] . (1, 1, 0, ...) = firsts[k] + seconds[k]
    G = torch.zeros(2, B, dtype=torch.float64)
    G[:, :2] = 1.0
    assert torch.equal(X.to(dtype).double(), X) and torch.equal(G.to(dtype).double(), G)  # inputs stored exactly
    W = SparseWeight(torch.tensor([0, 11, 22]), torch.arange(11, dtype=torch.int32).repeat(2),
                     torch.ones(22, dtype=dtype), (2, 11))
    want = (firsts + seconds).double().to(dtype).repeat(2)
    assert not torch.equal(want.double(), (firsts + seconds).double().repeat(2))  # some sums do round
    assert torch.equal(ops.sddmm(W, G.to(dtype), X.to(dtype)), want)
    X[3, 1] = float("nan")
    got = ops.sddmm(W, G.to(dtype), X.to(dtype))
    assert got[3].isnan() and got[14].isnan() and torch.equal(got[:3], want[:3])


# ------------------------------------------------------------------- float16 / bfloat16 gradients
@pytest.mark.parametrize("dtype", HALF)
def test_gradients_match_float32_autograd(dtype, rng, half_gradient_case):
    """d_G = S(R) X and d_X = S(R)^T G (S(R): the pattern holding the upstream gradient R) in
    float16/bfloat16 against float32 autograd on the same stored inputs."""
    half, single, abs_refs, terms = half_gradient_case("sddmm", dtype, rng)
    for h, s, a, n in zip(half, single, abs_refs, terms):
        assert h.dtype == dtype and s.dtype == torch.float32 and h.shape == s.shape
        # both are float32 sums of the same products: the float32 result's own error is
        # within the same accumulation term, hence the factor 2 on it
        b = rounding_bound(s.double(), 2 * a, n, dtype)
        err = (h.double() - s.double()).abs()
        assert bool((err <= b).all()), f"sddmm: max error/bound {float((err / b).max()):.3g}"


# --------------------------------------------------------------------- float16 / bfloat16 compile
@pytest.mark.parametrize("dtype", HALF)
def test_torch_compile_fullgraph_forward_and_backward_half(dtype, rng, batches, eager_and_compiled):
    W = random_weight(50, 40, 0.2, empty_rows=4, generator=rng).to(dtype)

    def f(v, X, G):
        s = torch.ops.sparse_engine.sddmm(*W.index, G, X)
        return (s.float() * v.float()).sum()

    X, G = batches(W, 7, rng, draw=torch.float32)
    eager, compiled, eager_grad, compiled_grad = eager_and_compiled(f, W.values, X, G)
    assert compiled_grad.dtype == dtype
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)  # the same kernels, deterministic
    torch.testing.assert_close(compiled_grad, eager_grad, rtol=0, atol=0)


def test_mixed_dtypes_raise_clear_errors(rng):
    W = random_weight(4, 6, 0.5, generator=rng).to(torch.bfloat16)
    with pytest.raises(TypeError, match="X must have dtype Half, got BFloat16"):
        torch.ops.sparse_engine.sddmm(*W.index, torch.randn(4, 2, generator=rng).half(),
                                      torch.randn(6, 2, generator=rng).bfloat16())


# --------------------------------------------------------------------------------- 1 vs 2 threads
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("B", [1, 20, 33])
def test_sddmm_on_1_and_2_threads(dtype, B, same_on_1_and_2_threads, batches):
    """The inputs of test_spmm.py::test_spmm_and_spmm_t_on_1_and_2_threads."""
    g = torch.Generator().manual_seed(B)
    W = random_weight(700, 500, 0.1, empty_rows=20, full_rows=2, dtype=dtype, generator=g)
    X, G = batches(W, B, g, draw=torch.float32)
    assert (W.nnz + 700) * B >= 2**15 or B == 1
    same_on_1_and_2_threads(lambda: ops.sddmm(W, G, X))


# ------------------------------------------------------------------------ properties (hypothesis)
@settings(max_examples=max(5, int(settings().max_examples * 1.5)))  # test_spmm.py's budget(1.5)
@given(W=weights(dtypes=st.sampled_from([F32, F64, F16, BF16])), B=st.one_of(st.integers(0, 8), st.integers(9, 80)),
       layout=st.sampled_from(("contiguous",) + LAYOUTS), n_threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**32 - 1))
def test_sddmm_matches_float64(batches, W, B, layout, n_threads, seed):
    """The inputs of test_spmm.py::test_spmm_and_spmm_t_match_float64."""
    X, G = batches(W, B, torch.Generator().manual_seed(seed), draw=torch.float32, layout=layout)
    with num_threads(n_threads):
        got = ops.sddmm(W, G, X)
    assert_within_rounding(got, *references(W, X, G)["sddmm"], W.values.dtype)
    # each output element is summed in one order, whatever the thread count
    with num_threads(3 - n_threads):
        assert torch.equal(got, ops.sddmm(W, G, X))


# --------------------------------------------------------------------------------- torch.autocast
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ops_run_in_the_autocast_dtype(device, dtype, rng, batches):
    W = random_weight(37, 29, 0.2, dtype=torch.float32, generator=rng, device=device)
    X, G = batches(W, 5, rng)
    want = torch.ops.sparse_engine.sddmm(*W.index, G.to(dtype), X.to(dtype))
    with torch.autocast(device, dtype=dtype):
        got = ops.sddmm(W, G, X)
    assert got.dtype == dtype and torch.equal(got, want)


# ------------------------------------------------------------------------------------------- CUDA
# The patterns, batch widths and tolerance of the CUDA tests are fixtures of conftest.py (pattern_case,
# pattern_weight, assert_close_to), shared with test_spmm.py: sddmm on the inputs of its tests.
DEV = "cuda"
RAW = torch.ops.sparse_engine
randn = partial(testing.randn, dtype=torch.float32, device=DEV)  # seeded, drawn on the CPU, then on the GPU


# ------------------------------------------------------------------------------ the kernel
@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
def test_ops_match_dense_reference(pattern_case, pattern_weight, seeded_batches, assert_close_to):
    """sddmm on each pattern at each dtype and batch width (the fixture pattern_case)."""
    name, dtype, B = pattern_case
    W = pattern_weight(name, dtype, seed=B)
    X, G = seeded_batches(W, B, seeds=(10 * B + 1, 10 * B + 2))
    assert_close_to(ops.sddmm(W, G, X), *references(W, X, G)["sddmm"], dtype)


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
def test_zero_batch(pattern_weight):
    W = pattern_weight("uniform")
    X = torch.zeros(W.shape[1], 0, device=DEV)
    G = torch.zeros(W.shape[0], 0, device=DEV)
    out = ops.sddmm(W, G, X)
    assert out.shape == (W.nnz,) and bool((out == 0).all())  # empty sums


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, *HALF])
def test_non_contiguous_and_misaligned_inputs(dtype, pattern_weight, layout_batches, assert_close_to):
    W = pattern_weight("power_rows", dtype)
    views, G = layout_batches(W, 32)
    for X in views.values():
        assert_close_to(ops.sddmm(W, G, X), *references(W, X, G)["sddmm"], dtype)


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
def test_more_long_rows_than_the_long_kernel_grid(many_long_rows, cpu_f64_references, assert_close_to):
    """700 rows of 2048 entries among 20,000 short ones: the long-row list outgrows the
    block-per-row kernel's grid, so its grid-stride loop is exercised."""
    for dtype, W, X, G in many_long_rows():
        assert_close_to(ops.sddmm(W, G, X), *cpu_f64_references(W, X, G)["sddmm"], dtype)


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.slow
@pytest.mark.parametrize("B", [20, 128])
def test_large_random_weight(B, seeded_batches, cpu_f64_references, assert_close_to):
    """The weight of test_spmm.py's test of this name, built on the GPU."""
    g = torch.Generator().manual_seed(B)
    W = copy_weight(SparseWeight.random(30_000, 25_000, 0.005, generator=g, dtype=torch.float64), device=DEV)
    X, G = seeded_batches(W, B)
    assert_close_to(ops.sddmm(W, G, X), *cpu_f64_references(W, X, G)["sddmm"], torch.float64)


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.parametrize("name", ["uniform", "power_rows", "power_cols"])
def test_float32_agrees_with_cpu_kernels(name, pattern_weight, seeded_batches):
    W = pattern_weight(name, torch.float32, seed=11)
    X, G = seeded_batches(W, 48, seeds=(5, 6))
    Wc = copy_weight(W, device="cpu")
    torch.testing.assert_close(ops.sddmm(W, G, X).cpu(), ops.sddmm(Wc, G.cpu(), X.cpu()), rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["power_rows", "power_cols"])
def test_deterministic(name, dtype, pattern_weight, seeded_batches):
    """Same input, same bits: no atomics in any sum (long rows included)."""
    W = pattern_weight(name, dtype, seed=2)
    X, G = seeded_batches(W, 32)
    first = ops.sddmm(W, G, X)
    for _ in range(3):
        assert torch.equal(ops.sddmm(W, G, X), first)


# ----------------------------------------------------------------------- autograd, bad input (CUDA)
@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
def test_gradcheck():
    """The inputs of test_spmm.py's CUDA test_gradcheck."""
    W = testing.random_weight(13, 9, 0.35, seed=0, device=DEV)
    X = randn(9, 5, dtype=torch.float64, seed=1).requires_grad_(True)
    G = randn(13, 5, dtype=torch.float64, seed=2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda G, X: RAW.sddmm(*W.index, G, X), (G, X))


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
def test_mixed_devices_are_rejected(pattern_weight):
    W = pattern_weight("uniform")
    X = randn(W.shape[1], 4, seed=0)
    cpu_index = [t.cpu() for t in W.index]
    with pytest.raises(ValueError, match="must be on"):
        RAW.sddmm(*W.index[:4], cpu_index[4], randn(W.shape[0], 4, seed=0), X)


# ------------------------------------------------------------ every output element written (CUDA)
def _from_pool(t: torch.Tensor, span) -> bool:
    return span[0] <= t.data_ptr() < span[1]


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, *HALF], ids=str)
def test_every_output_element_is_written(dtype, nan_filled_pool, nan_pool_inputs, assert_close_to):
    Wd, Xd, Gd, refs = nan_pool_inputs(dtype)
    out = ops.sddmm(Wd, Gd, Xd)
    assert _from_pool(out, nan_filled_pool), "sddmm's output did not come from the NaN-filled memory"
    assert not bool(out.isnan().any()), "sddmm left elements unwritten"
    assert_close_to(out, *refs["sddmm"], dtype)


# ---------------------------------------------- the CUDA kernels on the emulator (tests/cuda_emu)
def _sddmm_launches(line: str) -> int:
    """c of a driver line's launches=a/b/c (spmm/spmm_t/sddmm; test_spmm.py checks a and b)."""
    return int(re.search(r"launches=\d+/\d+/(\d+)", line)[1])


@pytest.mark.slow
def test_sddmm_kernels_match_float64_references_on_the_emulator(driver_runs):
    """sddmm_cuda.cu's kernels within rounding of the float64 references on the CUDA emulator (the
    driver runs the three products of each pattern: test_spmm.py checks spmm's and spmm_t's lines);
    the long-row kernel runs when a row is long, and only then."""
    for proc in driver_runs.values():
        lines = assert_passed(proc)
        # with the longest row known (a checked index), a pattern without long rows launches only the
        # row kernel, where sizing by nnz alone launched the long-row kernel too; with long rows, it
        # still runs
        flat = [line for line in lines if line.split()[1:2] == ["flat"]]
        assert flat and all(_sddmm_launches(line) == 2 for line in flat if "known=0" in line)
        assert any("known=1" in line for line in flat)
        assert all(_sddmm_launches(line) == 1 for line in flat if "known=1" in line)
        assert any("power " in line and "known=1" in line and _sddmm_launches(line) == 2 for line in lines)
        assert_every_kernel_ran(proc, ["sddmm_cuda"])
