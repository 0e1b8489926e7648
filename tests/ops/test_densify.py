"""The densify ops (csrc/cpu/densify_cpu.cpp), the dense-compute path's CPU conversions between a
CSR weight and its dense matrix: pattern_bits, expand_bits, compress_bits (against the dense
matrix and scatter_csr/gather_csr), same_bytes, and their refusals; scatter_csr and gather_csr, whose
CUDA kernels (and the fallback of every other device) are written with torch primitives
(sparse_engine.kernels.densify_torch), against the dense matrix and against the C++ kernels."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from sparse_engine import SparseWeight
from sparse_engine.kernels import densify_torch
from sparse_engine.testing import num_threads, random_weight

ops = torch.ops.sparse_engine
tt = SimpleNamespace(**densify_torch.OPS)  # the Python kernels by operator name, like ops

# (rows, cols, density): widths around the 16-column words (and the 8-lane halves of float64),
# empty and full matrices, one column, and the last one large enough for the parallel copy
SHAPES = [(0, 5, 0.5), (6, 0, 0.5), (7, 9, 0.0), (7, 9, 1.0), (40, 1, 0.5), (5, 8, 0.6), (5, 16, 0.7), (5, 17, 0.5),
          (9, 24, 0.4), (3, 33, 0.9), (1, 50, 0.3), (30, 40, 0.2), (800, 200, 0.33), (1100, 1000, 0.3)]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def as_bits(t):
    """The tensor's bytes as integers (NaN == NaN, -0.0 != 0.0)."""
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def stored_mask(w):
    rows, cols = w.shape
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    rp, ci = w.row_ptr, w.col_idx
    for r in range(rows):
        mask[r, ci[rp[r]:rp[r + 1]].long()] = True
    return mask


@pytest.mark.parametrize("rows,cols,density", SHAPES)
def test_pattern_bits_are_the_stored_positions(rng, rows, cols, density):
    w = random_weight(rows, cols, density, empty_rows=(rows + 2) // 3, generator=rng)
    bits = ops.pattern_bits(w.row_ptr, w.col_idx, cols)
    W = (cols + 15) // 16
    assert bits.dtype == torch.int16 and bits.shape == (rows, W)
    words = bits.to(torch.int64) & 0xFFFF
    unpacked = ((words.unsqueeze(-1) >> torch.arange(16)) & 1).bool().reshape(rows, W * 16)
    assert torch.equal(unpacked[:, :cols], stored_mask(w))
    assert not unpacked[:, cols:].any()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows,cols,density", SHAPES)
def test_expand_and_compress_bits_equal_the_dense_matrix(rng, rows, cols, density, threads):
    """expand_bits writes every entry of dense (the values at the pattern, zeros elsewhere,
    whatever dense held; rows with a stride longer than cols keep what lies between them);
    compress_bits reads the values back and equals gather_csr, dense row- or column-major; each
    dtype's bytes copied exactly (NaN, -0.0); one or two threads."""
    w = random_weight(rows, cols, density, empty_rows=(rows + 2) // 3, generator=rng)
    rp, ci, v = w.row_ptr, w.col_idx, w.values.detach()
    if v.numel() >= 2:
        v = v.clone()
        v[0], v[-1] = float("nan"), -0.0
    bits = ops.pattern_bits(rp, ci, cols)
    stored = stored_mask(w)
    for dtype in DTYPES:
        values = v.to(dtype)
        expect = torch.zeros(rows, cols, dtype=dtype)
        expect[stored] = values  # row-major order of the stored entries is CSR order
        padded = torch.full((rows, cols + 3), 5.0, dtype=dtype)
        with num_threads(threads):
            for dense in (torch.full((rows, cols), 7.0, dtype=dtype), padded[:, :cols]):
                assert ops.expand_bits(rp, bits, values, dense) is None
                assert torch.equal(as_bits(dense), as_bits(expect)), dtype
            assert (padded[:, cols:] == 5).all()
            G = torch.randn(rows, cols, generator=rng, dtype=torch.float64).to(dtype)
            for layout in (G, G.t().contiguous().t(), torch.cat([G, G], 1)[:, :cols]):
                assert torch.equal(ops.compress_bits(rp, bits, layout), ops.gather_csr(rp, ci, G)), dtype


def test_bits_ops_refuse_what_does_not_fit(rng):
    w = random_weight(20, 30, 0.3, generator=rng)
    other = random_weight(20, 30, 0.3, generator=rng)
    rp, ci, v = w.row_ptr, w.col_idx, w.values.detach()
    bits = ops.pattern_bits(rp, ci, 30)
    dense = torch.zeros(20, 30, dtype=v.dtype)
    with pytest.raises(ValueError, match="entries per row"):  # the bits of another pattern
        ops.expand_bits(rp, ops.pattern_bits(other.row_ptr, other.col_idx, 30), v, dense)
    with pytest.raises(ValueError, match="entries per row"):
        ops.compress_bits(other.row_ptr, bits, dense)
    with pytest.raises(ValueError, match="out of range"):
        ops.pattern_bits(rp, ci, 10)
    unsorted = ci.clone()
    r = int((rp.diff() >= 2).nonzero()[0])
    a, b = int(rp[r]), int(rp[r]) + 1
    unsorted[a], unsorted[b] = ci[b], ci[a]
    with pytest.raises(ValueError, match="sorted and unique within each row: unsorted"):
        ops.pattern_bits(rp, unsorted, 30)
    with pytest.raises(ValueError, match="bits must be"):
        ops.expand_bits(rp, bits[:, :1].contiguous(), v, dense)
    with pytest.raises(TypeError, match="bits must be int16"):
        ops.expand_bits(rp, bits.int(), v, dense)
    with pytest.raises(TypeError, match="dtype"):
        ops.expand_bits(rp, bits, v.float(), dense)
    with pytest.raises(ValueError, match="values must be 1-D"):
        ops.expand_bits(rp, bits, v[:-1], dense)
    with pytest.raises(ValueError, match="rows="):
        ops.expand_bits(rp, bits, v, dense[:5])
    with pytest.raises(ValueError, match="unit column stride"):
        ops.expand_bits(rp, bits, v, dense.t().contiguous().t())
    with pytest.raises(ValueError, match="unit column stride"):  # rows that overlap
        ops.expand_bits(rp, bits, v, torch.zeros(50, dtype=v.dtype).as_strided((20, 30), (1, 1)))


def test_same_bytes_compares_bytes():
    x = torch.tensor([1.0, float("nan"), 0.0, 2.5])
    assert ops.same_bytes(x, x.clone())  # NaN is the same bytes as itself
    y = x.clone()
    y[2] = -0.0  # equal as a number, other bytes
    assert not ops.same_bytes(x, y)
    y = x.clone()
    y[-1] = 2.5000002
    assert not ops.same_bytes(x, y)
    assert not ops.same_bytes(x, x.double()) and not ops.same_bytes(x, x[:3]) and not ops.same_bytes(x, x.view(2, 2))
    assert ops.same_bytes(torch.empty(0), torch.empty(0))
    z = torch.stack([x, -x], 1)[:, 0]  # strided
    assert not z.is_contiguous() and ops.same_bytes(z, x)


# ------------------------------------------------------------------------ scatter_csr, gather_csr
# (rows, cols, density): empty and full matrices, one column, one row, and the last one large enough
# for a parallel copy
SCATTER_SHAPES = [(0, 5, 0.5), (6, 0, 0.5), (7, 9, 0.0), (7, 9, 1.0), (40, 1, 0.5), (1, 50, 0.3), (30, 40, 0.2),
                  (400, 500, 0.05), (1024, 1100, 0.95)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows,cols,density", SCATTER_SHAPES)
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


def _bad_inputs():
    """scatter_csr's and gather_csr's cases (the topology ops' are in test_topology.py)."""
    w = SparseWeight.from_dense(torch.eye(4, dtype=torch.float64))
    rp, ci, v = w.row_ptr, w.col_idx, w.values.detach()
    d4 = torch.zeros(4, 4, dtype=torch.float64)
    return [
        ("scatter_csr", (rp, ci, v[:3], d4), ValueError, "values"),
        ("scatter_csr", (rp, ci, v.float(), d4), TypeError, "dtype"),
        ("scatter_csr", (rp, ci, v, d4[:3]), ValueError, "dense"),
        ("scatter_csr", (rp, ci.long(), v, d4), TypeError, "col_idx"),
        ("gather_csr", (rp, ci, d4[:, :3]), ValueError, "col_idx"),
        ("gather_csr", (rp, ci, d4[0]), ValueError, "dense"),
        ("gather_csr", (rp.int(), ci, d4), TypeError, "row_ptr"),
    ]


@pytest.mark.parametrize("name,args,exc,match", _bad_inputs(), ids=lambda x: x if isinstance(x, str) else "")
def test_bad_input_raises_like_the_cpu_kernel(name, args, exc, match):
    with pytest.raises(exc, match=match):
        getattr(tt, name)(*args)
    with pytest.raises(exc):
        getattr(ops, name)(*args)
