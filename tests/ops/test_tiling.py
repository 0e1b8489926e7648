"""The cache-tiled CPU gathers (csrc/cpu/gather.h, gather_panels): from a large source the rows
are taken in panels, every output row consuming one panel before the next. Here the bounds are
lowered (``sparse_engine._C._set_tiling``) so that small inputs take several panels: spmm,
spmm_t (with and without values_t), sddmm and the fused steps forward and backward, against the
float64 references, against the untiled kernels (sddmm bit for bit: each dot product is the same
whichever panel computes it), on 1 and 2 threads (the same bits), with rows in any order,
repeated columns, empty rows, one source row per panel and B from 2 to 67. The panels a sample of
the pattern picks (tiling.h, sample_gathers) are tested last; the other tests turn that rule off
so that their panels are the ones they ask for."""
import subprocess
import pytest
import torch

import sparse_engine._C as _C
from sparse_engine import SparseWeight, ops
from sparse_engine.recurrent.sequence import Config, Recurrence
from sparse_engine.testing import assert_within_rounding, num_threads, random_weight, references, weight_with_row_lengths

RAW = torch.ops.sparse_engine


@pytest.fixture
def tiles():
    """tiles(panel_bytes, by_reuse=False): tiling from any source size in panels of panel_bytes, a
    sample of the pattern choosing them only when asked (restored after)."""
    before = _C._set_tiling(0, 1, 0)

    def set_panels(panel_bytes, by_reuse=False):
        _C._set_tiling(0, panel_bytes, 0, by_reuse)

    yield set_panels
    _C._set_tiling(*before)


def untiled():
    _C._set_tiling(2**62, 2**62, 2**62)


def scrambled(W: SparseWeight) -> tuple:
    """W's CSR index and values with each row's entries in a random order (the products take any order)."""
    g = torch.Generator().manual_seed(3)
    rp, ci, v = W.row_ptr, W.col_idx.clone(), W.values.detach().clone()
    for r in range(W.shape[0]):
        a, b = int(rp[r]), int(rp[r + 1])
        p = torch.randperm(b - a, generator=g) + a
        ci[a:b], v[a:b] = ci[p], v[p]
    return rp, ci, v


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B", [2, 3, 20, 33, 67])
@pytest.mark.parametrize("panel_rows", [1, 7, 64])
def test_products_match_reference_when_tiled(dtype, B, panel_rows, tiles, rng):
    W = random_weight(150, 130, 0.15, empty_rows=6, full_rows=2, dtype=dtype, generator=rng)
    stride = -(-B // (8 if dtype == torch.float32 else 4)) * (8 if dtype == torch.float32 else 4)
    tiles(panel_rows * stride * W.values.element_size())
    X = torch.randn(130, B, generator=rng, dtype=dtype)
    G = torch.randn(150, B, generator=rng, dtype=dtype)
    refs = references(W, X, G)
    assert_within_rounding(ops.spmm(W, X), *refs["spmm"], dtype)
    assert_within_rounding(ops.spmm_t(W, G), *refs["spmm_t"], dtype)
    assert_within_rounding(RAW.spmm_t(*W.index, W.values, G, W.values[W.index[4].long()]), *refs["spmm_t"], dtype)
    sd = ops.sddmm(W, G, X)
    assert_within_rounding(sd, *refs["sddmm"], dtype)
    untiled()
    assert torch.equal(sd, ops.sddmm(W, G, X)), "sddmm tiled and untiled must agree bit for bit"


def test_tiling_is_engaged_and_changes_only_the_summation_order(tiles, rng):
    """Tiled float32 sums of long rows round differently from the untiled ones somewhere (so the
    tiled path ran), both within rounding of the reference."""
    W = weight_with_row_lengths([400] * 64, 512, dtype=torch.float32, generator=rng)
    X = torch.randn(512, 20, generator=rng)
    ref = references(W, X)["spmm"]
    tiles(16 * 24 * 4)  # 16 source rows a panel: 32 panels
    tiled = ops.spmm(W, X)
    untiled()
    plain = ops.spmm(W, X)
    assert not torch.equal(tiled, plain)
    assert_within_rounding(tiled, *ref, torch.float32)
    assert_within_rounding(plain, *ref, torch.float32)


@pytest.mark.parametrize("B", [2, 20, 40])
def test_any_order_and_repeated_columns_are_summed_once(B, tiles, rng):
    """A row in random order (its entries of one panel not contiguous) or with a column repeated:
    every entry is summed exactly once (the last panel takes whatever is left)."""
    W = random_weight(90, 200, 0.2, dtype=torch.float64, generator=rng)
    rp, ci, v = scrambled(W)
    X = torch.randn(200, B, generator=rng, dtype=torch.float64)
    tiles(8 * 64 * 8)  # 8 source rows a panel
    none = torch.empty(0, dtype=torch.int32)
    cp = torch.zeros(201, dtype=torch.int64)
    out = RAW.spmm(rp, ci, cp, none, none, v, X)
    assert_within_rounding(out, *references(W, X)["spmm"], torch.float64)
    # the same column twice in a row: both entries counted
    rp2 = torch.tensor([0, 3, 3, 5])
    ci2 = torch.tensor([5, 190, 5, 0, 0], dtype=torch.int32)
    v2 = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    got = RAW.spmm(rp2, ci2, cp, none, none, v2, X)
    want = torch.stack([4 * X[5] + 2 * X[190], torch.zeros(B, dtype=torch.float64), 9 * X[0]])
    bound = 4 * torch.finfo(torch.float64).eps * torch.stack([4 * X[5].abs() + 2 * X[190].abs(),
                                                             torch.zeros(B, dtype=torch.float64), 9 * X[0].abs()])
    assert bool(((got - want).abs() <= bound).all())  # three terms summed in some order: rounding only


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_and_two_threads_give_the_same_bits(dtype, tiles, rng):
    W = random_weight(300, 260, 0.1, dtype=dtype, generator=rng)
    X = torch.randn(260, 20, generator=rng, dtype=dtype)
    G = torch.randn(300, 20, generator=rng, dtype=dtype)
    tiles(5 * 24 * W.values.element_size())
    out = []
    for n in (1, 2):
        with num_threads(n):
            out.append((ops.spmm(W, X), ops.spmm_t(W, G), ops.sddmm(W, G, X)))
    for a, b in zip(*out):
        assert torch.equal(a, b)


def test_non_contiguous_and_wide_sources(tiles, rng):
    """A transposed (non-contiguous) X and a batch of 130 columns (several blocks per row)."""
    W = random_weight(70, 90, 0.3, dtype=torch.float32, generator=rng)
    X = torch.randn(130, 90, generator=rng).t()
    tiles(3 * 136 * 4)
    assert_within_rounding(ops.spmm(W, X), *references(W, X)["spmm"], torch.float32)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "CTRNN"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "composed"])
def test_recurrent_steps_tiled_match_untiled(mode, fused, tiles, rng):
    """A whole sequence forward and backward (per-step gathers over h and, back, over the gate
    gradients through the transposed index) with many panels: outputs and gradients as untiled,
    within float64 rounding."""
    from sparse_engine.kernels.constants import GATES
    H, I, B, T = 40, 6, 5, 4
    G = GATES[mode] * H
    W_ih, W_hh = (random_weight(G, n, 0.3, empty_rows=2, generator=rng) for n in (I, H))
    cfg = Config(mode, H, B, T, False, W_ih.index, W_hh.index, unfolds=2, fused=fused)
    args = [torch.randn(T, I, B, generator=rng, dtype=torch.float64), torch.randn(H, B, generator=rng, dtype=torch.float64),
            torch.randn(H, B, generator=rng, dtype=torch.float64) if mode == "LSTM" else None,
            W_ih.values.detach().clone(), W_hh.values.detach().clone(),
            torch.randn(G, generator=rng, dtype=torch.float64), None if mode == "CTRNN" else torch.randn(G, generator=rng, dtype=torch.float64)]

    def run():
        leaves = [a.clone().requires_grad_() if a is not None else None for a in args]
        y, h, c = Recurrence.apply(cfg, *leaves)
        (y * torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y)).sum().backward()
        return [y.detach(), h.detach()] + [a.grad for a in leaves if a is not None]

    tiles(3 * 8 * 8)  # 3 rows of h (8 doubles padded) a panel
    tiled = run()
    untiled()
    plain = run()
    for a, b in zip(tiled, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_set_tiling_checks_its_arguments():
    with pytest.raises(ValueError, match="panel_bytes >= 1"):
        _C._set_tiling(0, 0, 0)
    with pytest.raises(ValueError, match="from_bytes must be >= 0"):
        _C._set_tiling(-1, 5, 0)
    with pytest.raises(ValueError, match="from_row_bytes >= 0"):
        _C._set_tiling(0, 5, -1)


def level3_bytes() -> int:
    """The level-3 cache of cpu 0 as the kernel reports it in sysfs, else getconf's; 0 if neither."""
    from pathlib import Path
    for d in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (d / "level").read_text().strip() == "3":
                size = (d / "size").read_text().strip()
                return int(size.rstrip("KMG")) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1], 1)
        except (OSError, ValueError):
            continue
    getconf = subprocess.run(["getconf", "LEVEL3_CACHE_SIZE"], capture_output=True, text=True)
    return int(getconf.stdout.strip()) if getconf.returncode == 0 and getconf.stdout.strip().isdigit() else 0


def test_default_bounds():
    """Tiled from 32 MiB of gathered source or the level-3 cache a core shares (sysfs, else
    getconf), whichever is larger, in 16 MiB panels, rows of at least 128 bytes, the pattern
    consulted."""
    now = _C._set_tiling(0, 1, 0)
    _C._set_tiling(*now)
    assert now == (max(32 << 20, level3_bytes()), 16 << 20, 128, True)


def counted_sample(row_ptr: torch.Tensor, col_idx: torch.Tensor, window: int, panel_rows: int) -> tuple:
    """sample_gathers' definition counted here in Python: up to 8 stretches of 2 x window entries,
    starting at rows n * s // stretches; each entry after a stretch's first window a hit when its
    column was gathered within the window entries before it in that stretch, and a new pass when its
    (row, column // panel_rows) differs from the last counted entry's; nothing sampled below 128
    windows of entries. (sampled, reuse, misses per pass)."""
    n, nnz = len(row_ptr) - 1, int(row_ptr[-1])
    if window < 1 or nnz < 128 * window:
        return False, 0.0, 0.0
    stretches = min(8, nnz // (128 * window))
    rows = torch.repeat_interleave(torch.arange(n), row_ptr.diff()).tolist()
    hits = counted = passes = 0
    for s in range(stretches):
        k0 = int(row_ptr[n * s // stretches])
        last, pair = {}, None
        for k in range(k0, min(nnz, k0 + 2 * window)):
            c = int(col_idx[k])
            if k - k0 >= window:
                counted += 1
                hits += c in last and k - last[c] <= window
                passes += (rows[k], c // panel_rows) != pair
                pair = (rows[k], c // panel_rows)
            last[c] = k
    return True, hits / counted, (counted - hits) / max(passes, 1)


def sample_of(row_ptr, col_idx, src_rows, window, panel_rows):
    return _C._sample_gathers(row_ptr.data_ptr(), col_idx.data_ptr(), len(row_ptr) - 1, src_rows, window, panel_rows)


@pytest.mark.parametrize("law", ["uniform", "zipf1.2", "banded", "block"])
@pytest.mark.parametrize("window,panel_rows", [(1, 1), (7, 50), (100, 500), (400, 2000), (500, 2000)])
def test_gather_sample_matches_a_count(law, window, panel_rows):
    """The sampled reuse and misses per pass as counted in Python (a window of 500 is more than the
    60,000 entries hold: not sampled); banded and block rows repeat, uniform ones do not while the
    window is a small share of the 2,000 columns (about 1 - e^(-window / 2,000): 5% at 100)."""
    from sparse_engine.sparse.patterns import row_law_pattern
    g = torch.Generator().manual_seed(5)
    rp, ci = row_law_pattern(law, 3000, 2000, 60_000, g)
    got = sample_of(rp, ci, 2000, window, panel_rows)
    assert got == pytest.approx(counted_sample(rp, ci, window, panel_rows), abs=1e-12)
    assert got[0] == (window < 500)
    if window == 100 and law != "zipf1.2":
        assert got[1] > 0.9 if law in ("banded", "block") else got[1] < 0.1


def test_gather_sample_edges():
    """No entries, fewer than 128 windows of entries, a zero window: nothing sampled; one column
    gathered again and again: every counted gather a hit, no misses."""
    assert sample_of(torch.zeros(1, dtype=torch.int64), torch.zeros(0, dtype=torch.int32), 5, 3, 1) == (False, 0, 0)
    rp, ci = torch.tensor([0, 2, 4]), torch.tensor([0, 1, 1, 0], dtype=torch.int32)
    assert sample_of(rp, ci, 2, 4, 1) == (False, 0, 0) and sample_of(rp, ci, 2, 0, 1) == (False, 0, 0)
    rp, ci = torch.arange(0, 1281, dtype=torch.int64), torch.full((1280,), 3, dtype=torch.int32)
    assert sample_of(rp, ci, 4, 10, 2) == (True, 1.0, 0.0)


def banded_weight(rows, per_row, dtype, rng):
    from sparse_engine.sparse.patterns import row_law_pattern
    rp, ci = row_law_pattern("banded", rows, rows, rows * per_row, rng)
    return SparseWeight.from_csr(rp, ci, torch.randn(len(ci), generator=rng, dtype=dtype), (rows, rows))


@pytest.mark.parametrize("case,expected", [("long spread rows", 1), ("short spread rows", 4), ("banded rows", 0)])
def test_the_pattern_picks_the_panels(case, expected, tiles, rng):
    """With the rule on, the panels asked for where each pass saves at least 3 misses (spread
    gathers, 48 entries a row over 8 panels), panels 4 times as large where only those do (48 over
    32 panels), none where the gathers repeat (banded rows): the same bits as asking for those
    panels with the rule off (a tiled float32 sum rounds by its panels), on 1 and 2 threads."""
    n, B, dtype = {"long spread rows": 512, "short spread rows": 2048, "banded rows": 2048}[case], 33, torch.float32
    W = (banded_weight(n, 16, dtype, rng) if case == "banded rows"
         else weight_with_row_lengths([48] * 2048, n, dtype=dtype, generator=rng))
    X = torch.randn(n, B, generator=rng)
    row = 40 * 4  # 33 floats padded to 40
    panel = (n // 8 if case == "long spread rows" else 64) * row
    need = 3.0
    asked = sample_of(W.row_ptr, W.col_idx, n, panel // row, panel // row)[2]
    wide = sample_of(W.row_ptr, W.col_idx, n, 4 * panel // row, 4 * panel // row)[2]
    assert (asked >= need) == (expected == 1)
    if expected != 1:
        assert (wide >= need) == (expected == 4)
    if expected == 0:
        untiled()
    else:
        tiles(expected * panel)
    want = ops.spmm(W, X)
    tiles(panel)
    as_asked = ops.spmm(W, X)
    for threads in (1, 2):
        with num_threads(threads):
            tiles(panel, by_reuse=True)
            got = ops.spmm(W, X)
        assert torch.equal(got, want)
    if expected != 1:
        assert not torch.equal(got, as_asked), "the rule left the panels as asked"
    assert_within_rounding(got, *references(W, X)["spmm"], dtype)


def hub_weight(rows: int, hot: int, spread: int, src: int, rng) -> SparseWeight:
    """Rows of `hot` distinct columns among 128 hot ones (every 32nd) and `spread` distinct others:
    most gathers go to a few source rows, as spmm_t's do on Zipf rows (the hub rows of G)."""
    hot_cols = torch.arange(0, 4096, 32)[:128]
    others = torch.tensor(sorted(set(range(src)) - set(hot_cols.tolist())))
    cols = [torch.sort(torch.cat([hot_cols[torch.randperm(128, generator=rng)[:hot]],
                                  others[torch.randperm(len(others), generator=rng)[:spread]]])).values
            for _ in range(rows)]
    row_ptr = torch.tensor([0] + [len(c) for c in cols]).cumsum(0)
    col_idx = torch.cat(cols).to(torch.int32)
    return SparseWeight.from_csr(row_ptr, col_idx, torch.randn(len(col_idx), generator=rng), (rows, src))


@pytest.mark.parametrize("panels,expected", [(16, 0), (2, 2)])
def test_gathers_to_hub_rows_need_more_misses_a_pass(panels, expected, tiles, rng):
    """Where half the gathers or more repeat (reuse >= 0.5), a panel must save 16 misses a pass, not
    3: 16 panels saving 3-16 a pass leave the gathers untiled, 2 panels saving more keep them. (Over 12
    seeds: reuse 0.56-0.58 and 4.8-5.3 misses a pass; 0.57-0.58 and 53-55.)"""
    src, B = 4096, 33
    W = hub_weight(512, 120, 80, src, rng) if panels == 16 else hub_weight(1024, 120, 150, src, rng)
    X = torch.randn(src, B, generator=rng)
    panel_rows = src // panels
    panel = panel_rows * 40 * 4
    sampled, reuse, misses = sample_of(W.row_ptr, W.col_idx, src, panel_rows, panel_rows)
    assert sampled and reuse >= 0.5 and (3 <= misses < 16 if expected == 0 else misses >= 16)
    if expected == 0:
        untiled()
    else:
        tiles(panel)
    want = ops.spmm(W, X)
    tiles(panel, by_reuse=True)
    got = ops.spmm(W, X)
    assert torch.equal(got, want)
    if expected == 0:
        tiles(panel)
        assert not torch.equal(got, ops.spmm(W, X)), "the rule left the panels as asked"
    assert_within_rounding(got, *references(W, X)["spmm"], torch.float32)


def test_the_step_asks_the_pattern_too(tiles, rng):
    """The fused LSTM step gathers W_hh h itself unless the pattern's gathers are tiled; banded rows
    the rule leaves untiled take the fused path, bit for bit as with tiling off (the tiled path's
    separate W_hh h rounds differently, as 16 MiB-sized panels of this step would)."""
    H, B = 512, 33
    from sparse_engine.sparse.patterns import row_law_pattern
    rp, ci = row_law_pattern("banded", 4 * H, H, 4 * H * 16, rng)
    W = SparseWeight.from_csr(rp, ci, torch.randn(len(ci), generator=rng), (4 * H, H))
    gx, h, c = (torch.randn(n, B, generator=rng) for n in (4 * H, H, H))
    panel = 64 * 40 * 4
    untiled()
    fused = RAW.lstm_step(*W.index, W.values.detach(), gx, h, c)
    tiles(panel)
    tiled = RAW.lstm_step(*W.index, W.values.detach(), gx, h, c)
    tiles(panel, by_reuse=True)
    ruled = RAW.lstm_step(*W.index, W.values.detach(), gx, h, c)
    assert all(torch.equal(a, b) for a, b in zip(ruled, fused))
    assert not all(torch.equal(a, b) for a, b in zip(tiled, fused)), "tiled and fused steps round alike here"
