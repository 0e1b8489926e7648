"""sparse_engine.sparse.patterns.row_law_pattern: the patterns the op benchmarks sweep by row law.
Every law gives a valid CSR (columns sorted, unique, in range) of exactly the asked nnz, the same
for the same seed; the Zipf laws grow hub rows with their exponent, banded entries stay in their
band, block entries in a few dense-ish blocks, uniform columns are uniform; N = 1 and nnz = 0 work."""
import math
import time

import pytest
import torch

from sparse_engine.sparse.patterns import BLOCK_FILL, BLOCKS_PER_ROW, ROW_LAWS, row_law_pattern

SHAPES = [(1, 1, 0), (1, 1, 1), (0, 5, 0), (5, 0, 0), (7, 5, 35), (7, 5, 12), (300, 257, 3000), (50, 4000, 30000),
          (2000, 2000, 400), (1024, 1024, 52_429)]


def check_csr(row_ptr, col_idx, rows, cols, nnz):
    assert row_ptr.dtype == torch.int64 and col_idx.dtype == torch.int32
    assert row_ptr.shape == (rows + 1,) and int(row_ptr[0]) == 0
    assert int(row_ptr[-1]) == col_idx.numel() == nnz  # exactly the target: the tolerance is 0
    assert bool((row_ptr.diff() >= 0).all())
    if nnz:
        assert 0 <= int(col_idx.min()) and int(col_idx.max()) < cols
        row = torch.repeat_interleave(torch.arange(rows), row_ptr.diff())
        assert bool(((row * cols + col_idx.long()).diff() > 0).all()), "columns not sorted and unique in a row"


def pattern(law, rows, cols, nnz, seed=0):
    return row_law_pattern(law, rows, cols, nnz, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("law", ROW_LAWS + ("zipf1.1",))
@pytest.mark.parametrize("rows,cols,nnz", SHAPES)
def test_valid_csr_of_exactly_nnz(law, rows, cols, nnz):
    check_csr(*pattern(law, rows, cols, nnz), rows, cols, nnz)


@pytest.mark.parametrize("law", ROW_LAWS)
def test_same_seed_same_pattern(law):
    a, b = pattern(law, 500, 600, 9000, seed=3), pattern(law, 500, 600, 9000, seed=3)
    c = pattern(law, 500, 600, 9000, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_zipf_hub_rows_grow_with_the_exponent():
    """At 0.05% of 4,096 x 4,096 no row reaches the cap: longest / mean follows 1 / rank^a."""
    n, nnz = 4096, 8389
    ratios = []
    for law in ("zipf0.8", "zipf1.0", "zipf1.2"):
        lengths = pattern(law, n, n, nnz)[0].diff()
        assert int(lengths.max()) < n
        ratios.append(float(lengths.max()) / (nnz / n))
    assert ratios[0] < ratios[1] < ratios[2] and ratios[0] > 50, ratios
    assert float(pattern("uniform", n, n, nnz)[0].diff().max()) / (nnz / n) < 5


def test_zipf_lengths_follow_rank_power_and_cap_at_cols():
    n, nnz = 2048, 2048 * 2048 // 100
    lengths = pattern("zipf1.0", n, n, nnz)[0].diff().sort(descending=True).values.double()
    full = int((lengths == n).sum())
    assert full > 0  # at 1% the top ranks are capped: full rows
    rank = torch.arange(1, n + 1, dtype=torch.float64)
    uncapped = slice(full + 1, n // 2)
    scale = lengths[uncapped] * rank[uncapped]  # ~ constant for 1 / rank, up to the rounding to integers
    assert float(scale.max() / scale.min()) < 1.3


def test_banded_entries_stay_in_the_band():
    for rows, cols, nnz in ((1000, 1000, 20_000), (300, 900, 3000), (900, 300, 2000), (64, 64, 4000)):
        row_ptr, col = pattern("banded", rows, cols, nnz)
        row = torch.repeat_interleave(torch.arange(rows), row_ptr.diff())
        width = min(cols, 2 * -(-nnz // rows))
        assert int((col.long() - row * cols // rows).abs().max()) < width
        assert int(row_ptr.diff().max()) - int(row_ptr.diff().min()) <= 1


def test_block_entries_in_a_few_dense_blocks():
    """Each row's columns fall in at most BLOCKS_PER_ROW runs of one block width, filled to ~50%."""
    n, nnz = 4096, 4096 * 4096 // 100
    row_ptr, col = pattern("block", n, n, nnz)
    longest = -(-nnz // n)
    width = max(-(-longest // BLOCKS_PER_ROW), math.ceil(nnz / n / (BLOCKS_PER_ROW * BLOCK_FILL)))
    row = torch.repeat_interleave(torch.arange(n), row_ptr.diff())
    blocks = torch.unique(row * n + torch.clamp(col.long() // width, max=n // width - 1))
    per_row = torch.bincount(blocks // n, minlength=n)
    assert int(per_row.max()) <= BLOCKS_PER_ROW
    occupied = torch.unique(torch.div(row, width, rounding_mode="floor") * n + col.long() // width).numel()
    fill = nnz / (occupied * width * width)
    assert 0.3 < fill <= 1.0, fill


@pytest.mark.parametrize("law", ["uniform", "zipf1.0", "banded"])
@pytest.mark.parametrize("rows,cols,nnz", [(20_000, 8, 60_000), (2000, 300, 30_000)])
def test_columns_are_uniform(law, rows, cols, nnz):
    """Within its rows (uniform, Zipf) or its band, every column is as likely: the chi-square of the
    column counts (of the position inside the band) within 5 standard deviations of its mean; rows
    3/8 full (the dense sampler) and 1/20 full (the sparse one)."""
    row_ptr, col = pattern(law, rows, cols, nnz)
    if law == "banded":
        row = torch.repeat_interleave(torch.arange(rows), row_ptr.diff())
        width = min(cols, 2 * -(-nnz // rows))
        lo = torch.clamp(row * cols // rows - width // 2, 0, cols - width)
        col, cols = col.long() - lo, width
    counts = torch.bincount(col.long(), minlength=cols).double()
    chi2 = float(((counts - nnz / cols) ** 2 / (nnz / cols)).sum())
    assert abs(chi2 - (cols - 1)) < 5 * (2 * (cols - 1)) ** 0.5, chi2


def test_nnz_zero_and_one_by_one():
    for law in ROW_LAWS:
        rp, ci = pattern(law, 1, 1, 1)
        assert rp.tolist() == [0, 1] and ci.tolist() == [0]
        rp, ci = pattern(law, 3, 4, 0)
        assert rp.tolist() == [0, 0, 0, 0] and ci.numel() == 0
        rp, ci = pattern(law, 3, 4, 12)  # full
        assert ci.tolist() == [0, 1, 2, 3] * 3


def test_large_pattern_is_vectorised():
    """131,072 x 131,072 at 0.05% (8.6M entries) in seconds: no loop over rows."""
    start = time.perf_counter()
    _, col = pattern("zipf1.2", 131_072, 131_072, 8_589_935)
    assert col.numel() == 8_589_935 and time.perf_counter() - start < 60


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match=r"unknown row law 'power': expected one of uniform, zipf0\.8"):
        pattern("power", 4, 4, 1)
    for law in ("zipf", "zipf-1", "zipfx", "zipf0"):
        with pytest.raises(ValueError, match="unknown row law"):
            pattern(law, 4, 4, 1)
    with pytest.raises(ValueError, match=r"nnz must be in \[0, rows\*cols=16\], got 17"):
        pattern("uniform", 4, 4, 17)
    with pytest.raises(ValueError, match="rows and cols must be >= 0"):
        pattern("uniform", -1, 4, 0)
    with pytest.raises(ValueError, match="the generator is on cpu, the pattern is asked on meta"):
        row_law_pattern("uniform", 4, 4, 1, torch.Generator(), device="meta")
