"""The cache-tiled CPU gathers (csrc/cpu/gather.h, gather_panels): from a large source the rows
are taken in panels, every output row consuming one panel before the next. Here the bounds are
lowered (``sparse_engine._C._set_tiling``) so that small inputs take several panels: spmm,
spmm_t (with and without values_t), sddmm and the fused steps forward and backward, against the
float64 references, against the untiled kernels (sddmm bit for bit: each dot product is the same
whichever panel computes it), on 1 and 2 threads (the same bits), with rows in any order,
repeated columns, empty rows, one source row per panel and B from 2 to 67."""
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
    """tiles(panel_bytes): tiling from any source size in panels of panel_bytes (restored after)."""
    before = _C._set_tiling(0, 1, 0)

    def set_panels(panel_bytes):
        _C._set_tiling(0, panel_bytes, 0)

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


def test_default_bounds():
    """Tiled from 32 MiB of gathered source or the last-level cache the OS reports, whichever is
    larger, in 16 MiB panels, rows of at least 128 bytes."""
    now = _C._set_tiling(0, 1, 0)
    _C._set_tiling(*now)
    getconf = subprocess.run(["getconf", "LEVEL3_CACHE_SIZE"], capture_output=True, text=True)
    l3 = int(getconf.stdout.strip() or 0) if getconf.returncode == 0 and getconf.stdout.strip().isdigit() else 0
    assert now == (max(32 << 20, l3), 16 << 20, 128)
