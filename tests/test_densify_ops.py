"""The densify ops (csrc/cpu/densify_cpu.cpp), the dense-compute path's CPU conversions between a
CSR weight and its dense matrix: pattern_bits, expand_bits, compress_bits (against the dense
matrix and scatter_csr/gather_csr), same_bytes, and their refusals."""
from __future__ import annotations

import pytest
import torch

from sparse_engine.testing import num_threads, random_weight

ops = torch.ops.sparse_engine

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
