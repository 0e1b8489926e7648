"""SparseWeight: storage invariants, constructors, conversions, validation, state_dict."""
import io

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import sparse_engine as se
from sparse_engine import SparseWeight
from sparse_engine.init import erdos_renyi_density, random_pattern
from sparse_engine.testing import random_weight


def assert_canonical(W):
    """CSR invariants: row_ptr monotone from 0 to nnz, columns sorted/unique/in range."""
    rows, cols = W.shape
    rp, ci = W.row_ptr, W.col_idx.long()
    assert rp.dtype == torch.int64 and W.col_idx.dtype == torch.int32
    assert rp.numel() == rows + 1 and rp[0] == 0 and rp[-1] == W.nnz
    assert bool((rp.diff() >= 0).all())
    for r in range(rows):
        seg = ci[rp[r]:rp[r + 1]]
        assert bool((seg.diff() > 0).all()) and (seg.numel() == 0 or (0 <= seg.min() and seg.max() < cols))


def assert_transpose_consistent(W):
    """The transposed index lists every entry exactly once, in column order, rows sorted."""
    row, col, _ = W.coo()
    perm = W.csc_perm
    assert torch.equal(torch.sort(perm).values, torch.arange(W.nnz))
    assert torch.equal(col[perm], torch.repeat_interleave(torch.arange(W.shape[1]), W.csc_ptr.diff()))
    assert torch.equal(row[perm], W.csc_row.long())


@pytest.mark.parametrize("rows,cols,density", [(0, 0, 0.5), (1, 1, 1.0), (10, 1, 0.5), (50, 70, 0.1), (30, 30, 1.0)])
def test_from_dense_round_trip_and_invariants(rows, cols, density, rng):
    W = random_weight(rows, cols, density, empty_rows=min(rows, 2), generator=rng)
    assert_canonical(W)
    assert_transpose_consistent(W)
    assert W.shape == (rows, cols)
    assert W.density == pytest.approx(W.nnz / (rows * cols) if rows * cols else 0.0)
    dense = W.to_dense()
    assert torch.equal(SparseWeight.from_dense(dense).to_dense(), dense)


def test_coo_view_matches_dense(rng):
    W = random_weight(20, 15, 0.3, empty_rows=3, generator=rng)
    row, col, v = W.coo()
    dense = torch.zeros(W.shape, dtype=v.dtype)
    dense[row, col] = v.detach()
    assert torch.equal(dense, W.to_dense())


def test_scipy_round_trip_and_canonicalisation(rng):
    W = random_weight(25, 40, 0.2, generator=rng)
    m = W.to_scipy()
    assert isinstance(m, sp.csr_matrix) and m.shape == W.shape
    np.testing.assert_array_equal(m.toarray(), W.to_dense().numpy())
    assert torch.equal(SparseWeight.from_scipy(m).to_dense(), W.to_dense())
    # unsorted COO input with duplicates is summed and sorted, as scipy defines it
    coo = sp.coo_matrix(([1.0, 2.0, 3.0], ([0, 0, 1], [2, 2, 0])), shape=(2, 3))
    W2 = SparseWeight.from_scipy(coo)
    assert W2.nnz == 2
    np.testing.assert_array_equal(W2.to_dense().numpy(), coo.toarray())
    with pytest.raises(TypeError, match="matrix must be a scipy.sparse"):
        SparseWeight.from_scipy(np.eye(3))


def test_torch_sparse_csr_conversion(rng):
    W = random_weight(12, 9, 0.3, generator=rng)
    t = W.to_torch_sparse_csr()
    assert t.layout == torch.sparse_csr
    assert torch.equal(t.to_dense(), W.to_dense())


def test_torch_sparse_conversion_when_installed(rng):
    pytest.importorskip("torch_sparse", reason="optional extra torch-sparse is not installed")
    W = random_weight(12, 9, 0.3, generator=rng)
    back = SparseWeight.from_torch_sparse(W.to_torch_sparse())
    assert torch.equal(back.to_dense(), W.to_dense())


@pytest.mark.parametrize("rows,cols,nnz", [(1, 1, 1), (100, 80, 0), (100, 80, 400), (50, 40, 2000), (30, 20, 500)])
def test_random_pattern_exact_nnz_unique_sorted(rows, cols, nnz, rng):
    row_ptr, col_idx = random_pattern(rows, cols, nnz, rng)
    W = SparseWeight(row_ptr, col_idx, torch.zeros(nnz), (rows, cols))  # validates
    assert W.nnz == nnz
    assert_canonical(W)


def test_random_is_reproducible_with_a_generator():
    a = SparseWeight.random(300, 200, 0.05, generator=torch.Generator().manual_seed(3))
    b = SparseWeight.random(300, 200, 0.05, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.col_idx, b.col_idx) and torch.equal(a.values, b.values)


def test_random_positions_are_uniform(rng):
    """Every position is equally likely: per-row and per-column counts over many draws
    stay within a generous binomial bound."""
    rows, cols, nnz, draws = 8, 8, 16, 2000
    counts = torch.zeros(rows, cols)
    for _ in range(draws):
        counts += SparseWeight.random(rows, cols, nnz=nnz, generator=rng).to_dense().ne(0).float()
    p = nnz / (rows * cols)
    mean, sd = draws * p, (draws * p * (1 - p)) ** 0.5
    assert float((counts - mean).abs().max()) < 5 * sd


def test_random_builds_huge_shapes_in_o_nnz():
    """100k x 100k (10^10 positions) at 10 per row: only O(nnz) work and memory."""
    W = SparseWeight.random(100_000, 100_000, nnz=1_000_000, generator=torch.Generator().manual_seed(0))
    assert W.nnz == 1_000_000 and W.row_ptr.numel() == 100_001
    W.validate()  # sorted, unique, in range


def test_erdos_renyi_density_and_cap():
    assert erdos_renyi_density(1000, 500, 20) == pytest.approx(20 * 1500 / 500_000)
    assert erdos_renyi_density(10, 10, 20) == 1.0
    W = SparseWeight.erdos_renyi(1000, 500, epsilon=20, generator=torch.Generator().manual_seed(0))
    assert W.nnz == round(20 * 1500)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        erdos_renyi_density(10, 10, 0)


def test_default_values_scale_with_fan_in():
    W = SparseWeight.random(1000, 10_000, nnz=100_000, generator=torch.Generator().manual_seed(0))
    bound = 1 / (100_000 / 1000) ** 0.5
    assert float(W.values.detach().abs().max()) <= bound
    assert float(W.values.detach().abs().max()) > 0.9 * bound


# --------------------------------------------------------------------- validation
def make(rp, ci, v=None, shape=(2, 3)):
    v = torch.ones(len(ci)) if v is None else v
    return SparseWeight(torch.tensor(rp), torch.tensor(ci, dtype=torch.int32), v, shape)


@pytest.mark.parametrize("rp,ci,match", [
    ([0, 1], [0], "row_ptr must have rows\\+1=3"),
    ([1, 1, 1], [0], "row_ptr\\[0\\] must be 0"),
    ([0, 1, 3], [0, 1], "row_ptr\\[-1\\] must equal nnz=2"),
    ([0, 2, 2], [0, 3], "col_idx entries must be in \\[0, cols=3\\)"),
    ([0, 2, 2], [0, -1], "col_idx entries must be in"),
    ([0, 2, 2], [2, 1], "unsorted column 1 in row 0"),
    ([0, 1, 3], [0, 2, 2], "duplicate column 2 in row 1"),
])
def test_invalid_structure_raises_value_error(rp, ci, match):
    with pytest.raises(ValueError, match=match):
        make(rp, ci)


def test_non_monotone_row_ptr_is_rejected():
    with pytest.raises(ValueError, match="non-decreasing"):
        make([0, 2, 1, 2], [0, 1], shape=(3, 3))


def test_invalid_dtypes_and_lengths():
    with pytest.raises(ValueError, match="values must have nnz=2"):
        make([0, 1, 2], [0, 1], torch.ones(3))
    with pytest.raises(TypeError, match="values must be float32 or float64"):
        make([0, 1, 2], [0, 1], torch.ones(2, dtype=torch.int64))
    with pytest.raises(TypeError, match="col_idx must be an integer tensor"):
        SparseWeight(torch.tensor([0, 1]), torch.tensor([0.0]), torch.ones(1), (1, 2))
    with pytest.raises(ValueError, match="row_ptr must be 1-D"):
        SparseWeight(torch.zeros(2, 2, dtype=torch.int64), torch.tensor([0], dtype=torch.int32), torch.ones(1), (1, 2))
    with pytest.raises(ValueError, match="shape must be non-negative"):
        make([0], [], shape=(-1, 3))
    with pytest.raises(ValueError, match="give exactly one of density= and nnz="):
        SparseWeight.random(3, 3)
    with pytest.raises(ValueError, match="density must be in \\[0, 1\\]"):
        SparseWeight.random(3, 3, 1.5)
    with pytest.raises(ValueError, match="nnz must be in \\[0, rows\\*cols=9\\]"):
        SparseWeight.random(3, 3, nnz=10)


# --------------------------------------------------------------------- state_dict
def test_state_dict_round_trip_bit_exact_with_other_nnz(rng):
    a = random_weight(30, 20, 0.3, dtype=torch.float32, generator=rng)
    b = random_weight(30, 20, 0.05, dtype=torch.float32, generator=rng)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    param = b.values
    b.load_state_dict(torch.load(buf))
    assert b.values is param  # optimizers holding the Parameter keep working
    assert torch.equal(b.to_dense(), a.to_dense())
    assert torch.equal(b.csc_perm, a.csc_perm) and b.shape == a.shape


def test_loading_a_corrupt_state_dict_raises():
    sd = make([0, 2, 3], [0, 2, 1]).state_dict()
    sd["col_idx"] = torch.tensor([2, 0, 1], dtype=torch.int32)  # row 0 unsorted
    with pytest.raises(ValueError, match="unsorted column 0 in row 0"):
        make([0, 1, 1], [0]).load_state_dict(sd)


def test_to_dtype_moves_values_but_not_indices(rng):
    W = random_weight(6, 4, 0.5, dtype=torch.float32, generator=rng).to(torch.float64)
    assert W.values.dtype == torch.float64 and W.col_idx.dtype == torch.int32 and W.row_ptr.dtype == torch.int64


def test_set_pattern_keeps_parameter_and_rebuilds_transpose(rng):
    W = random_weight(10, 8, 0.3, generator=rng)
    other = random_weight(10, 8, 0.6, generator=rng)
    param = W.values
    W.set_pattern(other.row_ptr, other.col_idx, other.values.detach())
    assert W.values is param and torch.equal(W.to_dense(), other.to_dense())
    assert_transpose_consistent(W)
    with pytest.raises(ValueError):
        W.set_pattern(other.row_ptr, torch.flip(other.col_idx, [0]), other.values.detach())


def test_repr_names_shape_nnz_density(rng):
    W = random_weight(10, 8, 0.3, generator=rng)
    assert f"nnz={W.nnz}" in repr(W) and "shape=(10, 8)" in repr(W) and "density=" in repr(W)


def test_backward_works_after_the_pattern_changes_while_an_old_graph_is_alive(rng):
    """Autograd caches a gradient accumulator sized for the old nnz; set_pattern resets it."""
    from sparse_engine import ops

    W = random_weight(20, 10, 0.3, dtype=torch.float32, generator=rng)
    X = torch.randn(10, 4, generator=rng)
    old_loss = ops.spmm(W, X).sum()
    old_loss.backward(retain_graph=True)
    other = random_weight(20, 10, 0.6, dtype=torch.float32, generator=rng)
    W.set_pattern(other.row_ptr, other.col_idx, other.values.detach())
    W.values.grad = None
    ops.spmm(W, X).sum().backward()
    assert W.values.grad.shape == (other.nnz,)
    assert old_loss is not None  # the old graph was alive throughout


# ------------------------------------------------------------- the transposed index, built lazily
def test_transposed_index_is_built_at_first_use_and_dropped_with_the_pattern(rng):
    W = random_weight(40, 30, 0.2, empty_rows=3, generator=rng)
    assert not W.has_transpose and W._buffers["csc_ptr"] is None
    assert W.csr_index[3].numel() == 0 and W.csr_index[2].numel() == 31  # absent: the column count only
    assert_transpose_consistent(W)  # reading csc_* builds it
    assert W.has_transpose and W.csr_index[3] is W.csc_row
    other = random_weight(40, 30, 0.05, generator=rng)
    W.set_pattern(other.row_ptr, other.col_idx, other.values.detach())
    assert not W.has_transpose
    assert_transpose_consistent(W)
    W.load_state_dict(random_weight(40, 30, 0.3, generator=rng).state_dict())
    assert not W.has_transpose
    assert_transpose_consistent(W)
    assert "csc_ptr" not in W.state_dict()


def test_index_tuple_is_kept_until_a_buffer_is_replaced(rng):
    import gc
    import weakref

    W = random_weight(12, 9, 0.3, generator=rng)
    first = W.index
    assert W.index is first  # kept
    assert [t is W._buffers[n] for t, n in zip(first, ("row_ptr", "col_idx", "csc_ptr", "csc_row", "csc_perm"))] \
        == [True] * 5
    # a new pattern: a new tuple of the new buffers, and the old buffers are not held alive by it
    old = weakref.ref(first[1])
    ref = random_weight(12, 9, 0.5, generator=rng)
    W.set_pattern(ref.row_ptr, ref.col_idx, ref.values.detach())
    del first
    gc.collect()
    assert old() is None
    second = W.index
    assert torch.equal(second[1], ref.col_idx) and torch.equal(second[2], ref.csc_ptr)
    # a move replaces the buffers: the index follows it
    W.to("meta")
    assert all(t.device.type == "meta" for t in W.index)
    # an in-place load keeps the buffers: the kept tuple reads the loaded pattern
    a, b = random_weight(12, 9, 0.3, seed=1), random_weight(12, 9, 0.3, seed=1)
    b.values.data.mul_(2)
    kept = a.index
    a.load_state_dict(b.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.index, b.index)) and torch.equal(a.values, b.values)
    del kept


def test_csr_index_tuple_is_kept_until_the_csr_is_replaced(rng):
    """Without a transposed index, csr_index hands out the same tuple while row_ptr and col_idx are
    the same objects; a new pattern or a move gives a new one of the new buffers."""
    from sparse_engine import ops as sparse_ops

    W = random_weight(12, 9, 0.3, generator=rng)
    first = W.csr_index
    assert W.csr_index is first and first[0] is W.row_ptr and first[1] is W.col_idx
    ref = random_weight(12, 9, 0.5, generator=rng)
    W.set_pattern(ref.row_ptr, ref.col_idx, ref.values.detach())
    second = W.csr_index
    assert second is not first and torch.equal(second[1], ref.col_idx) and second[1] is W.col_idx
    assert torch.equal(sparse_ops.spmm(W, torch.eye(9, dtype=W.values.dtype)), ref.to_dense())
    W.to("meta")
    assert all(t.device.type == "meta" for t in W.csr_index[:3])
    assert not W.has_transpose


def test_parts_are_the_attributes_plain_and_parametrized(rng):
    """parts() reads a plain weight's dicts (the same tensors as the attributes) and a parametrized
    weight's values through its parametrization, so the ops multiply by what ``w.values`` gives."""
    from torch.nn.utils import parametrize

    from sparse_engine import ops

    W = random_weight(12, 9, 0.3, generator=rng)
    values, row_ptr, col_idx = W.parts()
    assert values is W.values and row_ptr is W.row_ptr and col_idx is W.col_idx

    class Double(torch.nn.Module):
        def forward(self, v):
            return 2 * v

    parametrize.register_parametrization(W, "values", Double())
    values, row_ptr, col_idx = W.parts()
    assert torch.equal(values, 2 * W.parametrizations["values"].original) and row_ptr is W.row_ptr
    row, col, _ = W.coo()
    doubled = torch.zeros(12, 9, dtype=torch.float64)
    doubled[row, col] = 2 * W.parametrizations["values"].original.detach()
    X = torch.randn(9, 3, dtype=torch.float64, generator=rng)
    torch.testing.assert_close(ops.spmm(W, X), doubled @ X)


def test_spmm_builds_the_transposed_index_only_for_an_input_gradient(rng):
    from sparse_engine import ops

    W = random_weight(25, 18, 0.3, empty_rows=2, dtype=torch.float64, generator=rng)
    X = torch.randn(18, 4, dtype=torch.float64, generator=rng)
    ref = W.to_dense() @ X
    torch.testing.assert_close(ops.spmm(W, X), ref, rtol=1e-12, atol=1e-12)
    assert not W.has_transpose  # no input gradient: W^T is never needed
    y = ops.spmm(W, X)
    y.backward(torch.ones_like(y))  # the values' gradient is sddmm, which reads only the CSR
    assert not W.has_transpose
    torch.testing.assert_close(W.values.grad, X.sum(1)[W.col_idx.long()], rtol=1e-12, atol=1e-12)
    Xg = X.clone().requires_grad_()
    y = ops.spmm(W, Xg)
    assert W.has_transpose
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(Xg.grad, W.to_dense().sum(0)[:, None].expand(18, 4), rtol=1e-12, atol=1e-12)


def test_ops_that_read_the_transposed_index_refuse_an_absent_one(rng):
    W = random_weight(12, 9, 0.4, generator=rng)
    G = torch.randn(12, 3, generator=rng)
    with pytest.raises(ValueError, match="needs the transposed index"):
        torch.ops.sparse_engine.spmm_t(*W.csr_index, W.values, G)
    rp, ci, cp, cr, _ = W.index
    with pytest.raises(ValueError, match="csc_row and csc_perm must have nnz="):
        torch.ops.sparse_engine.spmm(rp, ci, cp, cr, torch.empty(0, dtype=torch.int32), W.values,
                                     torch.randn(9, 3))
    fresh = random_weight(12, 9, 0.4, generator=rng)
    assert not fresh.has_transpose
    with pytest.raises(ValueError, match="X must have 9 rows"):  # the absent index still gives the column count
        torch.ops.sparse_engine.spmm(*fresh.csr_index, fresh.values, torch.randn(8, 3))


def test_export_and_compile_of_a_weight_whose_transpose_is_not_built(rng):
    """torch.export does not build it (nothing in an inference graph reads W^T) and leaves no
    tracing tensor behind; torch.compile builds it at the first compiled backward, in one graph."""
    from sparse_engine.nn import SparseLinear

    torch.manual_seed(0)
    lin = SparseLinear(7, 5, density=0.5)
    x = torch.randn(3, 7, generator=rng)
    ref = lin(x)
    torch.export.export(lin, (x,))
    assert not lin.weight.has_transpose and "_absent_csc" in lin.weight.__dict__
    assert all(type(t) is torch.Tensor for t in lin.weight.__dict__["_absent_csc"])
    torch.testing.assert_close(lin(x), ref)
    compiled = torch.compile(lin, fullgraph=True)
    xg = x.clone().requires_grad_()
    compiled(xg).sum().backward()
    assert lin.weight.has_transpose and type(lin.weight.csc_ptr) is torch.Tensor
    torch.testing.assert_close(xg.grad, lin.weight.to_dense().sum(0).expand(3, 7))


def test_index_entries_int32_cannot_hold_are_refused_not_wrapped():
    """An int64 column of 2^32 + 5 was cast to 5 (and validate() passed); -2^32 + 7 to 7; a
    scipy matrix of 2^32 + 10 columns was stored the same way."""
    import scipy.sparse as sp

    for col in (2**32 + 5, -(2**32) + 7):
        with pytest.raises(ValueError, match=f"col_idx holds {col}, outside torch.int32's range"):
            SparseWeight(torch.tensor([0, 1]), torch.tensor([col]), torch.ones(1), (1, 10))
    w = SparseWeight(torch.tensor([0, 1]), torch.tensor([3], dtype=torch.int64), torch.ones(1), (1, 10))
    with pytest.raises(ValueError, match="col_idx holds 4294967301"):
        w.set_pattern(torch.tensor([0, 1]), torch.tensor([2**32 + 5]), torch.ones(1))
    assert w.col_idx.tolist() == [3]
    wide = sp.csr_matrix((np.ones(1), (np.zeros(1, np.int64), np.array([2**32 + 5]))), shape=(1, 2**32 + 10))
    with pytest.raises(ValueError, match="at most 2\\^31 - 1 columns"):
        SparseWeight.from_scipy(wide)
    for bad in ((1, 2.5), (-2, 2), (1,), "ab"):
        with pytest.raises(ValueError, match="shape"):
            SparseWeight(torch.tensor([0, 0]), torch.zeros(0, dtype=torch.int32), torch.ones(0), bad)


def test_numpy_index_is_copied():
    """A weight built from numpy arrays no longer shares them: a later write to the array (which
    the kernels' cached index check cannot see) changes nothing (before: garbage, or a segfault
    for a column of 2e8)."""
    rp, ci = np.array([0, 2, 4]), np.array([0, 1, 0, 1], dtype=np.int32)
    w = SparseWeight(rp, ci, np.ones(4, dtype=np.float32), (2, 2))
    x = torch.ones(2, 3)
    before = se.ops.spmm(w, x)
    ci[1], rp[1] = 200_000_000, 1
    torch.testing.assert_close(se.ops.spmm(w, x), before)
    assert w.col_idx.tolist() == [0, 1, 0, 1] and w.row_ptr.tolist() == [0, 2, 4]


def test_assigning_a_csr_buffer_drops_the_transposed_index():
    """W.col_idx = <new tensor> kept the transposed index of the old pattern: spmm_t and the input
    gradient of spmm read it (wrong numbers at B > 1) while the forward read the new one."""
    w = SparseWeight(torch.tensor([0, 1, 2]), torch.tensor([0, 1], dtype=torch.int32),
                     torch.tensor([1.0, 2.0]), (2, 3))
    assert w.csc_ptr is not None and w.has_transpose
    w.col_idx = torch.tensor([0, 2], dtype=torch.int32)
    assert not w.has_transpose
    G = torch.ones(2, 4)
    torch.testing.assert_close(se.ops.spmm_t(w, G), w.to_dense().t() @ G)


def test_loading_a_state_of_another_shape_is_refused_before_anything_changes():
    """As torch's "size mismatch": loading a 6 x 5 weight into a 3 x 4 SparseLinear was accepted
    ("All keys matched"), leaving in_features 4 beside a 6 x 5 matrix."""
    from sparse_engine.nn import SparseLinear

    torch.manual_seed(0)
    src, dst = SparseLinear(5, 6, density=0.5), SparseLinear(4, 3, density=0.5)
    before = {k: v.clone() for k, v in dst.state_dict().items() if torch.is_tensor(v)}
    with pytest.raises(ValueError, match="size mismatch: the state holds a 6 x 5 SparseWeight, this one is 3 x 4"):
        dst.load_state_dict(src.state_dict())
    after = dst.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert dst(torch.randn(2, 4)).shape == (2, 3)


def test_random_and_from_scipy_refuse_what_they_cannot_hold():
    import scipy.sparse as sp

    with pytest.raises(TypeError, match="dtype must be one of"):
        SparseWeight.random(3, 3, 0.5, dtype=torch.int32)
    with pytest.raises(ValueError, match="shape must be non-negative"):
        SparseWeight.random(-2, 2, density=0.5)
    with pytest.raises(TypeError, match="real values"):
        SparseWeight.from_scipy(sp.random(3, 3, 0.5, format="csr", random_state=0) * 1j)
