"""transpose_index (csrc/cpu/transpose_cpu.cpp, csrc/cuda/transpose_cuda.cu): a CSR pattern's
transposed index (csc_ptr, csc_row, csc_perm), the CSC of the same matrix. On the CPU: the parallel
counting sort equals one thread and scipy's CSC, and on any pattern hypothesis draws; on CUDA
(marked ``cuda``, skipped without a CUDA device or the CUDA kernels): the CPU's index on every
pattern of the CUDA tests; and its kernels on the CUDA emulator."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_engine import SparseWeight
from sparse_engine.testing import check_structure, num_threads, random_weight
from sparse_engine.testing import weight_strategy as weights
from cuda_emu.emu_testing import assert_every_kernel_ran, assert_passed

RAW = torch.ops.sparse_engine
DEV = "cuda"
PATTERNS = ["uniform", "power_rows", "power_cols", "empty_rows", "zero_nnz", "one_col", "no_rows", "no_cols", "wide"]


# -------------------------------------------------------------------------------------------- CPU
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


def test_transpose_index_on_1_and_2_threads(same_on_1_and_2_threads):
    g = torch.Generator().manual_seed(1)
    W = random_weight(900, 800, 0.2, empty_rows=30, generator=g)
    csc = same_on_1_and_2_threads(lambda: RAW.transpose_index(W.row_ptr, W.col_idx, 800))
    for a, b in zip(csc, (W.csc_ptr, W.csc_row, W.csc_perm)):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------ properties (hypothesis)
EXAMPLES = settings().max_examples  # of the profile tests/conftest.py loaded
threads = st.sampled_from([1, 2])
# mostly small sizes, sometimes over 4 * PARALLEL_WORK entries (the threshold of the parallel transpose_index)
big_dims = st.one_of(st.integers(0, 24), st.integers(100, 220), st.integers(380, 460))


def budget(share: float = 1.0, **kw) -> settings:
    """``share`` of the profile's examples for one test (at least 5)."""
    return settings(max_examples=max(5, int(EXAMPLES * share)), **kw)


@budget()
@given(W=weights(rows=big_dims, cols=big_dims), n_threads=threads)
def test_transposed_index_is_the_csc_of_the_pattern(W, n_threads):
    check_structure(W)  # built by the constructor
    with num_threads(n_threads):
        csc = RAW.transpose_index(W.row_ptr, W.col_idx, W.shape[1])
    for a, b in zip(csc, (W.csc_ptr, W.csc_row, W.csc_perm)):
        assert torch.equal(a, b)
    # W^T through the transposed index is the transpose of W
    WT = SparseWeight(W.csc_ptr, W.csc_row, W.values.detach()[W.csc_perm], W.shape[::-1])
    assert torch.equal(WT.to_dense(), W.to_dense().T)


# ------------------------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
@pytest.mark.parametrize("name", PATTERNS)
def test_transpose_index_matches_cpu(name, pattern):
    rp, ci, (rows, cols) = pattern(name)
    cpu = RAW.transpose_index(torch.from_numpy(rp), torch.from_numpy(ci), cols)
    gpu = RAW.transpose_index(torch.from_numpy(rp).to(DEV), torch.from_numpy(ci).to(DEV), cols)
    for a, b, what in zip(cpu, gpu, ("csc_ptr", "csc_row", "csc_perm")):
        assert b.device.type == "cuda" and b.dtype == a.dtype, what
        assert torch.equal(a, b.cpu()), what


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
def test_weight_built_on_gpu_has_the_cpu_index(rng, pattern):
    rp, ci, shape = pattern("power_rows", seed=3)
    values = torch.randn(ci.size, generator=rng)
    on_cpu = SparseWeight(torch.from_numpy(rp), torch.from_numpy(ci), values, shape)
    on_gpu = SparseWeight(torch.from_numpy(rp).to(DEV), torch.from_numpy(ci).to(DEV), values.to(DEV), shape)
    for a, b in zip(on_cpu.index, on_gpu.index):
        assert b.is_cuda and torch.equal(a, b.cpu())


@pytest.mark.cuda
@pytest.mark.usefixtures("cuda_device")
def test_transpose_index_rejects_out_of_range_columns():
    rp = torch.tensor([0, 2, 3], device=DEV)
    for bad in ([0, 5, 1], [0, -1, 1]):
        ci = torch.tensor(bad, dtype=torch.int32, device=DEV)
        with pytest.raises(ValueError, match="col_idx"):
            RAW.transpose_index(rp, ci, 5)


# ---------------------------------------------- the CUDA kernels on the emulator (tests/cuda_emu)
@pytest.mark.slow
def test_transpose_kernels_match_the_host_index_on_the_emulator(driver_runs):
    """transpose_cuda.cu's kernels (the radix sort by column and its scatter) give the host's
    transposed index on every pattern the driver runs (a mismatch is a FAIL line)."""
    for proc in driver_runs.values():
        lines = assert_passed(proc)
        assert not [line for line in lines if "FAIL transpose_index" in line]
        assert_every_kernel_ran(proc, ["transpose_cuda"])
