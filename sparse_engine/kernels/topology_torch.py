"""The topology operators written with PyTorch's own tensor primitives, their kernels on CUDA and on
every device without a C++ kernel of its own: ``<op>_torch`` here is the twin of ``<op>_cpu`` in ``csrc/cpu/topology_cpu.cpp`` (the OpenMP C++
CPU kernel) for ``sparse_engine::select_smallest``, ``set_prune``, ``compact``,
``random_empty``, ``merge``, ``remap_index``, ``gather_or_zero``, ``coo_dot``, ``grad_topk`` and
``rewire`` (the steps of one update chained in one call).
:mod:`sparse_engine.kernels.library` registers them (:data:`OPS`) as those operators' kernels on
CUDA and on every other device that has none of its own (the CPU keeps its C++ kernels), so
``torch.ops.sparse_engine.<op>`` is the one way to call them. Nothing here is CUDA-specific: the
functions run on tensors of any device (the tests run them on the CPU).

Why torch primitives instead of hand-written CUDA kernels: a topology update is a handful of
sorts, scans and gathers over nnz-long arrays, run once per epoch (or every k steps). On a GPU
``torch.sort``/``unique``/``cumsum``/``nonzero``/``searchsorted``/``index_select`` are cub
radix sorts, device scans and bandwidth-bound gathers, about as fast as a custom kernel would
be, and the same code runs on the CPU, so it is tested bit for bit against the C++ kernels in
CI on machines without a GPU (no GPU is needed to know the CUDA path is right). The CUDA
kernels of the training path (spmm/spmm_t/sddmm) are hand-written; these are not worth it.

Semantics are those of the CPU ops, including the tie rule (among equal scores the lower
position wins; stable sorts give it) and the error messages (ValueError/TypeError naming the
argument). Differences: ``random_empty`` draws from torch's generator of the input's device
seeded with ``seed`` (another stream than the C++ counter-based one: same distribution, other
positions); ``coo_dot`` sums in another order (equal up to rounding). Memory is O(nnz) (plus
one gradient tile in ``grad_topk``); no rows x cols tensor is ever formed. Data-dependent output
sizes (``nonzero``, a few checks) cost a handful of scalar device-to-host syncs per call;
no nnz-long array leaves the device.
"""
from __future__ import annotations

import math

import torch

from .._moved import old_name
from .checks import check_dtype as _dtype
from .checks import ANY_COLUMN as _ANY_COLUMN
from .checks import check_index as _check_csr
from .checks import check_pattern as _check_pattern
from .checks import check_same_device as _same_device
from .checks import check_tensor as _tensor

__all__ = ["select_smallest_torch", "set_prune_torch", "compact_torch", "random_empty_torch", "merge_torch",
           "remap_index_torch", "gather_or_zero_torch", "coo_dot_torch", "grad_topk_torch", "rewire_torch", "OPS"]

_FLOATS = (torch.float32, torch.float64)
_INT32_MAX = 2**31 - 1


# ----------------------------------------------------------------------- checks
def _float(t, name: str) -> torch.Tensor:
    if _tensor(t, name).dtype not in _FLOATS:
        raise TypeError(f"{name} must be float32 or float64, got {t.dtype}")
    return t


def _no_nan(t: torch.Tensor, name: str) -> None:
    if t.numel() and bool(torch.isnan(t).any()):
        raise ValueError(f"{name} must not contain NaN")


def _check_values(values, nnz: int) -> None:
    _float(values, "values")
    if values.dim() != 1 or values.numel() != nnz:
        raise ValueError(f"values must be 1-D with nnz={nnz} entries, got shape {tuple(values.shape)}")


def _entry_rows(row_ptr: torch.Tensor, nnz: int) -> torch.Tensor:
    """Row of every stored entry (int64, nnz), without a sync."""
    rows = row_ptr.numel() - 1
    return torch.repeat_interleave(torch.arange(rows, device=row_ptr.device), row_ptr.diff(), output_size=nnz)


def _keys(row_ptr: torch.Tensor, col_idx: torch.Tensor, n_cols: int) -> torch.Tensor:
    """Linear positions row * n_cols + col of the stored entries (sorted for a valid CSR)."""
    return _entry_rows(row_ptr, col_idx.numel()) * n_cols + col_idx.long()


def _check_n_cols(n_cols: int) -> None:
    if not 0 <= n_cols <= _INT32_MAX:
        raise ValueError(f"n_cols must be in [0, 2^31), got {n_cols}")


def _llround(x: float) -> int:
    """std::llround for x >= 0 (halves away from zero), exactly."""
    r = math.floor(x)
    return r + 1 if x - r >= 0.5 else r


def _stable_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k smallest scores, ties to the lower index (-0.0 equals +0.0)."""
    s = scores.masked_fill(scores == 0, 0.0)
    return torch.sort(s, stable=True).indices[:k]


# ----------------------------------------------------------------------- selection
def select_smallest_torch(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` smallest scores (ties: lower index). One stable radix sort."""
    _float(scores, "scores")
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D, got {scores.dim()} dims")
    n = scores.numel()
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, {n}], got {k}")
    _no_nan(scores, "scores")
    out = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if k:
        out[_stable_smallest(scores, k)] = True
    return out


def set_prune_torch(values: torch.Tensor, zeta: float) -> torch.Tensor:
    """SET keep mask: drops round(zeta * P) of the P positive values nearest zero and, separately,
    round(zeta * N) of the N negative ones nearest zero, and every exact zero."""
    _float(values, "values")
    if values.dim() != 1:
        raise ValueError(f"values must be 1-D, got {values.dim()} dims")
    if not 0.0 <= zeta <= 1.0:
        raise ValueError(f"zeta must be in [0, 1], got {zeta}")
    _no_nan(values, "values")
    drop = torch.zeros(values.numel(), dtype=torch.bool, device=values.device)
    for sign in (values > 0, values < 0):
        idx = torch.nonzero(sign).squeeze(1)
        k = _llround(zeta * float(idx.numel()))
        if k:
            drop[idx[_stable_smallest(values[idx].abs(), k)]] = True
    return ~drop & (values != 0)


# ----------------------------------------------------------------------- compaction
def compact_torch(row_ptr, col_idx, values, keep):
    """(row_ptr, col_idx, values, kept_pos) of the CSR holding only the entries with keep[k];
    kept_pos[j] is the old position of new entry j. A scan of keep gives the new row_ptr."""
    rows, nnz = _check_pattern(row_ptr, col_idx, _ANY_COLUMN)  # columns copied as they are
    _check_values(values, nnz)
    _dtype(keep, "keep", torch.bool)
    if keep.dim() != 1 or keep.numel() != nnz:
        raise ValueError(f"keep must be 1-D with nnz={nnz} entries")
    dev = _same_device(row_ptr=row_ptr, values=values, keep=keep)
    kept = torch.nonzero(keep).squeeze(1)
    before = torch.zeros(nnz + 1, dtype=torch.int64, device=dev)
    torch.cumsum(keep, 0, out=before[1:])
    return before[row_ptr], col_idx[kept], values[kept], kept


# ----------------------------------------------------------------------- random growth
def _random_subset(total: int, n: int, gen: torch.Generator, dev: torch.device) -> torch.Tensor:
    """A uniformly random n-subset of [0, total), sorted (int64).

    Dense case (total < 4n): a random permutation, O(total) = O(n). Sparse case: rounds of
    uniform draws (about n plus twice the expected duplicates n^2/total), united and
    deduplicated (torch.unique, a sort) until at least n distinct values are there; the union
    of i.i.d. uniform draws is, given its size, a uniform subset. The surplus is removed as a
    uniformly random subset of the positions (the same function, small), so the result is
    uniform. Draws are 63-bit integers reduced mod total (bias < total / 2^63; a 32-bit draw
    reduced modulo a range near 2^32 would make some values twice as likely as others)."""
    if total < 4 * n:
        return torch.randperm(total, generator=gen, device=dev)[:n].sort().values
    got = torch.empty(0, dtype=torch.int64, device=dev)
    while got.numel() < n:
        need = n - got.numel()
        m = need + 2 * (-(-need * need // total)) + need // 64 + 16
        draw = torch.randint(0, 2**63 - 1, (m,), generator=gen, device=dev) % total
        got = torch.unique(torch.cat([got, draw]))
    surplus = got.numel() - n
    if surplus:
        keep = torch.ones(got.numel(), dtype=torch.bool, device=dev)
        keep[_random_subset(got.numel(), surplus, gen, dev)] = False
        got = got[keep]
    return got


def random_empty_torch(row_ptr, col_idx, n_cols: int, n: int, seed: int):
    """Exactly ``n`` distinct positions drawn uniformly from the empty positions of the pattern,
    as (rows int64, cols int32) sorted by (row, col); deterministic given ``seed`` and the device.

    Ranks are drawn among the empty positions only (a uniform n-subset of [0, empty)) and
    mapped to positions: with the stored linear keys o_0 < o_1 < ..., d_j = o_j - j empty
    positions lie before entry j, so the empty position of rank q is q + #{j: d_j <= q} (one
    searchsorted). No rejection against the pattern and no rows x cols array."""
    _check_n_cols(n_cols)
    rows, nnz = _check_pattern(row_ptr, col_idx, n_cols, sorted=True)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    empty = rows * n_cols - nnz
    if n > empty:
        raise ValueError(f"cannot grow {n} entries: only {empty} empty positions in a {rows} x {n_cols} matrix "
                         f"with nnz={nnz}")
    dev = row_ptr.device
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=dev), torch.empty(0, dtype=torch.int32, device=dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(seed) & (2**64 - 1))
    ranks = _random_subset(empty, n, gen, dev)
    if nnz:
        before = _keys(row_ptr, col_idx, n_cols) - torch.arange(nnz, device=dev)
        ranks = ranks + torch.searchsorted(before, ranks, right=True)
    r = torch.div(ranks, n_cols, rounding_mode="floor")
    return r, (ranks - r * n_cols).to(torch.int32)


# ----------------------------------------------------------------------- merge
def merge_torch(row_ptr, col_idx, values, n_cols: int, new_row, new_col, new_values):
    """Inserts new entries (sorted by (row, col), unique, at empty positions; anything else is a
    ValueError) keeping every row sorted: (row_ptr, col_idx, values, old_pos, new_pos). Both
    key lists are sorted, so an entry's merged position is its own index plus the number of
    keys of the other list below it (searchsorted)."""
    _check_n_cols(n_cols)
    rows, nnz = _check_pattern(row_ptr, col_idx, n_cols, sorted=True)
    _check_values(values, nnz)
    _dtype(new_row, "new_row", torch.int64)
    _dtype(new_col, "new_col", torch.int32)
    if _tensor(new_values, "new_values").dtype != values.dtype:
        raise TypeError(f"new_values must have dtype {values.dtype}, got {new_values.dtype}")
    n = new_row.numel()
    if not (new_row.dim() == 1 and new_col.dim() == 1 and new_values.dim() == 1 and new_col.numel() == n
            and new_values.numel() == n):
        raise ValueError("new_row, new_col and new_values must be 1-D of the same length")
    dev = _same_device(row_ptr=row_ptr, values=values, new_row=new_row, new_col=new_col, new_values=new_values)
    R, C = new_row, new_col.long()
    old_keys = _keys(row_ptr, col_idx, n_cols)
    new_keys = R * n_cols + C
    if n:
        inside = (R >= 0) & (R < rows) & (C >= 0) & (C < n_cols)
        ordered = torch.ones(n, dtype=torch.bool, device=dev)
        ordered[1:] = (R[1:] > R[:-1]) | ((R[1:] == R[:-1]) & (C[1:] > C[:-1]))
        bad = torch.nonzero(~(inside & ordered))
        if bad.numel():
            j = int(bad[0])
            r, c = int(R[j]), int(C[j])
            if not bool(inside[j]):
                raise ValueError(f"new entry {j} at ({r}, {c}) is outside the {rows} x {n_cols} matrix")
            raise ValueError(f"new entries must be sorted by (row, col) without duplicates: entry {j} at ({r}, {c})")
    below_new = torch.searchsorted(old_keys, new_keys)  # old entries before each new one
    if n and nnz:
        hit = old_keys[below_new.clamp(max=nnz - 1)] == new_keys
        clash = torch.nonzero(hit)
        if clash.numel():
            b = int(clash[0])
            raise ValueError(f"new entry {b} at ({int(R[b])}, {int(C[b])}) is already stored")
    old_pos = torch.arange(nnz, device=dev) + torch.searchsorted(new_keys, old_keys)
    new_pos = torch.arange(n, device=dev) + below_new
    out_col = torch.empty(nnz + n, dtype=torch.int32, device=dev)
    out_val = torch.empty(nnz + n, dtype=values.dtype, device=dev)
    out_col[old_pos] = col_idx
    out_col[new_pos] = new_col
    out_val[old_pos] = values
    out_val[new_pos] = new_values
    out_ptr = row_ptr + torch.searchsorted(R, torch.arange(rows + 1, device=dev))
    return out_ptr, out_col, out_val, old_pos, new_pos


# ----------------------------------------------------------------------- state remap
def remap_index_torch(kept_pos, old_pos, new_nnz: int) -> torch.Tensor:
    """origin[p]: old position of the entry now at p, -1 for a new entry."""
    if _tensor(kept_pos, "kept_pos").dtype != torch.int64 or _tensor(old_pos, "old_pos").dtype != torch.int64:
        raise TypeError("kept_pos and old_pos must be int64")
    if not (kept_pos.dim() == 1 and old_pos.dim() == 1 and kept_pos.numel() == old_pos.numel()):
        raise ValueError("kept_pos and old_pos must be 1-D of the same length")
    if new_nnz < 0:
        raise ValueError(f"new_nnz must be >= 0, got {new_nnz}")
    dev = _same_device(kept_pos=kept_pos, old_pos=old_pos)
    if old_pos.numel() and bool(((old_pos < 0) | (old_pos >= new_nnz)).any()):
        raise ValueError(f"old_pos entries must be in [0, new_nnz={new_nnz})")
    origin = torch.full((new_nnz,), -1, dtype=torch.int64, device=dev)
    origin[old_pos] = kept_pos
    return origin


def gather_or_zero_torch(t, origin) -> torch.Tensor:
    """out[p] = t[origin[p]] (whole trailing slices, any dtype), zero where origin[p] < 0."""
    if _tensor(origin, "origin").dtype != torch.int64:
        raise TypeError("origin must be int64")
    if _tensor(t, "t").dim() < 1:
        raise ValueError("t must have at least one dimension")
    _same_device(t=t, origin=origin)
    o = origin.reshape(-1)
    old_n = t.shape[0]
    if o.numel() and bool((o >= old_n).any()):
        raise ValueError(f"origin entries must be < {old_n} (the first dimension of t)")
    if old_n == 0 or o.numel() == 0:
        return torch.zeros((o.numel(), *t.shape[1:]), dtype=t.dtype, device=t.device)
    out = t.index_select(0, o.clamp(min=0))
    return out.masked_fill_((o < 0).view(-1, *([1] * (t.dim() - 1))), 0)


# ----------------------------------------------------------------------- RigL growth
def _check_factors(G, X) -> None:
    _float(G, "G")
    if _tensor(X, "X").dtype != G.dtype:
        raise TypeError("X must have the dtype of G")


def coo_dot_torch(rows, cols, G, X) -> torch.Tensor:
    """out[j] = dot(G[rows[j], :], X[cols[j], :]), in chunks of about 2^22 (CPU) or 2^26 (other
    devices) gathered elements per factor."""
    _dtype(rows, "rows", torch.int64)
    _dtype(cols, "cols", torch.int32)
    if not (rows.dim() == 1 and cols.dim() == 1 and rows.numel() == cols.numel()):
        raise ValueError("rows and cols must be 1-D of the same length")
    _check_factors(G, X)
    if not (G.dim() == 2 and X.dim() == 2 and G.shape[1] == X.shape[1]):
        raise ValueError("G and X must be 2-D with the same number of columns")
    _same_device(rows=rows, cols=cols, G=G, X=X)
    n, M = rows.numel(), G.shape[1]
    if n:
        lo_r, hi_r, lo_c, hi_c = torch.stack([rows.min(), rows.max(), cols.min().long(), cols.max().long()]).tolist()
        if lo_r < 0 or hi_r >= G.shape[0]:
            raise ValueError("rows out of range")
        if lo_c < 0 or hi_c >= X.shape[0]:
            raise ValueError("cols out of range")
    out = torch.empty(n, dtype=G.dtype, device=G.device)
    step = max(1, (2**22 if G.device.type == "cpu" else 2**26) // max(M, 1))
    for s in range(0, n, step):
        e = min(n, s + step)
        torch.sum(G.index_select(0, rows[s:e]) * X.index_select(0, cols[s:e]), 1, out=out[s:e])
    return out


def _best(mag, key, grad, k):
    """The best k of the candidates (larger |grad|, ties to the lower key), best first."""
    by_key = torch.argsort(key)  # keys are unique
    order = by_key[torch.sort(mag[by_key], descending=True, stable=True).indices[:k]]
    return mag[order], key[order], grad[order]


def grad_topk_torch(row_ptr, col_idx, G, X, k: int, tile_rows: int, tile_cols: int):
    """The k empty positions with the largest |(G X^T)[i, j]| (ties to the lower linear key;
    NaN never selected), sorted by (row, col), with their signed gradient: (rows int64, cols
    int32, grads). One GEMM per tile_rows x tile_cols tile; stored entries of the tile are
    masked out, a per-tile top-k (torch.topk) keeps at most k candidates plus ties, and a
    running buffer of at most 2k + tile candidates is cut back to the best k by a stable sort
    whenever it passes 2k, the k-th best magnitude then bounding what later tiles may add.
    Memory O(tile + k + nnz); the row_ptr entries at the tile-row starts go to the host once."""
    rows, nnz = _check_csr(row_ptr, col_idx)
    _float(G, "G")
    if G.dim() != 2 or G.shape[0] != rows:
        raise ValueError(f"G must be 2-D with rows={rows} rows, got {list(G.shape)}")
    if _tensor(X, "X").dim() != 2 or X.shape[1] != G.shape[1]:
        raise ValueError(f"X must be 2-D (cols x M) with M={G.shape[1]} like G, got {list(X.shape)}")
    if X.dtype != G.dtype:
        raise TypeError("X must have the dtype of G")
    if tile_rows <= 0 or tile_cols <= 0:
        raise ValueError("tile_rows and tile_cols must be > 0")
    cols = X.shape[0]
    if cols > _INT32_MAX:
        raise ValueError("X has too many rows (cols) for int32 column indices")
    _check_pattern(row_ptr, col_idx, cols, sorted=True)
    empty = rows * cols - nnz
    if not 0 <= k <= empty:
        raise ValueError(f"k must be in [0, {empty}] (the empty positions), got {k}")
    dev = _same_device(row_ptr=row_ptr, G=G, X=X)
    if k == 0:
        return (torch.empty(0, dtype=torch.int64, device=dev), torch.empty(0, dtype=torch.int32, device=dev),
                torch.empty(0, dtype=G.dtype, device=dev))
    G, X = G.contiguous(), X.contiguous()
    entry_row = _entry_rows(row_ptr, nnz)
    band_ptr = row_ptr[list(range(0, rows, tile_rows)) + [rows]].tolist()
    cand: list[tuple] = []
    held = 0
    bound = torch.tensor(0.0, dtype=G.dtype, device=dev)  # admission bound (|grad| >= 0 always)
    for b, r0 in enumerate(range(0, rows, tile_rows)):
        r1 = min(rows, r0 + tile_rows)
        h = r1 - r0
        e_col = col_idx[band_ptr[b]:band_ptr[b + 1]].long()
        e_row = entry_row[band_ptr[b]:band_ptr[b + 1]] - r0
        for c0 in range(0, cols, tile_cols):
            c1 = min(cols, c0 + tile_cols)
            w = c1 - c0
            T = torch.mm(G[r0:r1], X[c0:c1].t()).view(-1)
            mag = torch.empty(h * w + 1, dtype=G.dtype, device=dev)  # last slot: sink for masking
            torch.abs(T, out=mag[:-1])
            inside = (e_col >= c0) & (e_col < c1)
            mag.index_fill_(0, torch.where(inside, e_row * w + (e_col - c0), h * w), -1.0)
            mag = mag[:-1]
            mag.masked_fill_(torch.isnan(mag), -1.0)
            thr = bound
            if k < h * w:
                thr = torch.maximum(thr, torch.topk(mag, k, sorted=False).values.min())
            sel = torch.nonzero(mag >= thr).squeeze(1)
            if sel.numel():
                i, j = torch.div(sel, w, rounding_mode="floor"), sel % w
                cand.append((mag[sel], (i + r0) * cols + (j + c0), T[sel]))
                held += sel.numel()
            if held > 2 * k:
                best = _best(*(torch.cat(x) for x in zip(*cand)), k)
                cand, held = [best], k
                bound = best[0][k - 1]
    if held < k:  # a NaN gradient is never a candidate
        raise ValueError(f"grad_topk: the gradient G X^T is not a number at empty positions (NaN in G or X), so "
                         f"only {held} of the k={k} positions can be chosen")
    _, key, grad = _best(*(torch.cat(x) for x in zip(*cand)), k)
    order = torch.argsort(key)
    key, grad = key[order], grad[order]
    r = torch.div(key, cols, rounding_mode="floor")
    return r, (key - r * cols).to(torch.int32), grad


# ----------------------------------------------------------------------- one update
def _grow(row_ptr, col_idx, n_cols, grow_row, grow_col, G, X, n, seed, tile_rows, tile_cols, sample_factor):
    """The growth of :func:`rewire_torch` on the compacted pattern (see the CPU kernel's)."""
    given, by_gradient = grow_row is not None or grow_col is not None, G is not None or X is not None
    if given and by_gradient:
        raise ValueError("give the positions (grow_row, grow_col) or the factors (G, X), not both")
    if given:
        if grow_row is None or grow_col is None:
            raise ValueError("grow_row and grow_col must be given together")
        _dtype(grow_row, "grow_row", torch.int64)
        _dtype(grow_col, "grow_col", torch.int32)
        if not (grow_row.dim() == 1 and grow_col.dim() == 1 and grow_row.numel() == grow_col.numel()):
            raise ValueError("grow_row and grow_col must be 1-D of the same length")
        return grow_row, grow_col
    if not by_gradient:
        return random_empty_torch(row_ptr, col_idx, n_cols, n, seed)
    if G is None or X is None:
        raise ValueError("G and X must be given together")
    if _tensor(X, "X").dim() != 2 or X.shape[0] != n_cols:
        raise ValueError(f"X must be 2-D with n_cols={n_cols} rows, got shape {list(X.shape)}")
    if sample_factor == 0:
        return grad_topk_torch(row_ptr, col_idx, G, X, n, tile_rows, tile_cols)[:2]
    if sample_factor < 0:
        raise ValueError(f"sample_factor must be >= 0 (0: exact growth), got {sample_factor}")
    empty = (row_ptr.numel() - 1) * n_cols - col_idx.numel()
    if not 0 <= n <= empty:
        raise ValueError(f"k must be in [0, {empty}] (the empty positions), got {n}")
    cr, cc = random_empty_torch(row_ptr, col_idx, n_cols, min(empty, sample_factor * n), seed)
    pick = select_smallest_torch(coo_dot_torch(cr, cc, G, X).abs().neg(), n)
    return cr[pick], cc[pick]


def rewire_torch(row_ptr, col_idx, values, n_cols: int, keep, grow_row, grow_col, G, X, n_grow: int, seed: int,
                tile_rows: int, tile_cols: int, sample_factor: int, keep_regrown: bool, carry):
    """One update of a layer: compact, grow (given positions, by gradient, or random), merge with new
    values 0, and every tensor of ``carry`` in the new order: (row_ptr, col_idx, values, src, dst,
    new_pos, new_row, new_col, carried). With ``keep_regrown`` a pruned entry whose position is grown
    again stays (value and state)."""
    _check_n_cols(n_cols)
    _check_pattern(row_ptr, col_idx, n_cols, sorted=True)  # the steps below see it checked
    for i, t in enumerate(carry):
        if t.dim() < 1 or t.shape[0] != col_idx.numel():
            raise ValueError(f"carry[{i}] must have first dimension nnz={col_idx.numel()}, got shape {list(t.shape)}")
    rp, ci, v, kept = compact_torch(row_ptr, col_idx, values, keep)
    nr, nc = _grow(rp, ci, n_cols, grow_row, grow_col, G, X, n_grow, seed, tile_rows, tile_cols, sample_factor)
    if keep_regrown and nr.numel():
        keys = _keys(row_ptr, col_idx, n_cols)
        new_keys = nr * n_cols + nc.long()
        back = ~keep & torch.isin(keys, new_keys)
        if bool(back.any()):
            fresh = ~torch.isin(new_keys, keys[back])
            rp, ci, v, kept = compact_torch(row_ptr, col_idx, values, keep | back)
            nr, nc = nr[fresh], nc[fresh]
    rp, ci, v, old_pos, new_pos = merge_torch(rp, ci, v, n_cols, nr, nc, v.new_zeros(nr.numel()))
    carried = []
    if len(carry):
        origin = remap_index_torch(kept, old_pos, v.numel())
        carried = [gather_or_zero_torch(t, origin) for t in carry]
    return rp, ci, v, kept, old_pos, new_pos, nr, nc, carried


# ----------------------------------------------------------------------- by operator
#: The kernels by operator name (``torch.ops.sparse_engine.<name>``); :mod:`sparse_engine.kernels.library`
#: registers them as the operators' kernels on every device but the CPU.
OPS = {f.__name__.removesuffix("_torch"): f for f in (
    select_smallest_torch, set_prune_torch, compact_torch, random_empty_torch, merge_torch, remap_index_torch,
    gather_or_zero_torch, coo_dot_torch, grad_topk_torch, rewire_torch)}

__getattr__ = old_name(__name__)  # its old names, answered with a warning (sparse_engine._moved)
