"""Random CSR patterns and the values a new sparse weight starts with, built in O(nnz) time and
memory (never a dense or rows*cols-sized array, so they work for 10^5-10^6 neurons).

They sit below both :class:`~sparse_engine.SparseWeight`, whose ``random``/``erdos_renyi`` draw
with them, and :mod:`sparse_engine.init`, their public home (it re-exports them beside its
``torch.nn.init`` mirrors, which take SparseWeights): so ``init`` imports ``SparseWeight`` and
nothing imports back (no import circle).

:func:`row_law_pattern` is the one generator of patterns by row law (uniform, Zipf, banded,
block-clustered), what the op benchmarks sweep: a kernel's speed depends on how the entries spread
over the rows, not only on how many there are.
"""
from __future__ import annotations

import math

import torch

from ..kernels import topology_torch

__all__ = ["erdos_renyi_density", "random_pattern", "default_values", "random_csr_on", "ROW_LAWS", "row_law_pattern"]


def erdos_renyi_density(rows: int, cols: int, epsilon: float) -> float:
    """Density of an Erdos-Renyi layer (Mocanu et al. 2018): epsilon*(rows+cols)/(rows*cols),
    capped at 1, so nnz ~= epsilon * (n_in + n_out)."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if rows * cols == 0:
        return 0.0
    return min(1.0, epsilon * (rows + cols) / (rows * cols))


def random_pattern(rows: int, cols: int, nnz: int, generator: torch.Generator | None = None):
    """A uniformly random set of exactly ``nnz`` distinct positions as CSR (row_ptr int64,
    col_idx int32, sorted and unique within each row).

    Sparse targets draw linear positions with rejection of repeats (expected O(nnz)); dense
    targets (nnz >= rows*cols/4) take a prefix of a permutation, which is then O(nnz) too.
    """
    total = rows * cols
    if not 0 <= nnz <= total:
        raise ValueError(f"nnz must be in [0, rows*cols={total}], got {nnz}")
    if cols > 2**31 - 1:
        raise ValueError(f"cols must fit int32 column indices, got {cols}")
    if 4 * nnz >= total:
        linear = torch.randperm(total, generator=generator)[:nnz]
    else:
        linear = torch.empty(0, dtype=torch.int64)
        while linear.numel() < nnz:
            need = nnz - linear.numel()
            draw = torch.randint(total, (need + need // 8 + 16,), generator=generator)
            linear = torch.unique(torch.cat([linear, draw]))
        if linear.numel() > nnz:  # a uniform subset of a uniform set stays uniform
            linear = linear[torch.randperm(linear.numel(), generator=generator)[:nnz]]
    linear = torch.sort(linear).values
    row = torch.div(linear, cols, rounding_mode="floor") if cols else linear
    col = (linear - row * cols).to(torch.int32)
    counts = torch.bincount(row, minlength=rows)
    row_ptr = torch.zeros(rows + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=row_ptr[1:])
    return row_ptr, col


def default_values(nnz: int, rows: int, dtype=torch.float32, generator=None) -> torch.Tensor:
    """Uniform(-b, b) with b = 1/sqrt(mean nonzeros per row): what ``nn.Linear`` would use
    for a dense layer with the same fan-in, so sparse layers keep the usual activation scale."""
    fan_in = max(1.0, nnz / max(rows, 1))
    bound = 1.0 / math.sqrt(fan_in)
    return torch.empty(nnz, dtype=dtype).uniform_(-bound, bound, generator=generator)


def random_csr_on(rows: int, cols: int, nnz: int, device, seed: int = 0):
    """(row_ptr, col_idx, values) of a uniformly random rows x cols pattern of exactly nnz
    entries, drawn on ``device`` (the topology ops' random_empty: O(nnz) there). On a GPU this
    takes milliseconds where SparseWeight.random, which draws on the host, takes minutes at
    100M+ entries. Values: uniform(+-1/sqrt(nnz per row)), like SparseWeight.random."""
    device = torch.device(device)
    empty = torch.zeros(rows + 1, dtype=torch.int64, device=device)
    no_cols = torch.empty(0, dtype=torch.int32, device=device)
    row, col_idx = topology_torch.random_empty_torch(empty, no_cols, cols, nnz, seed)
    row_ptr = torch.zeros(rows + 1, dtype=torch.int64, device=device)
    torch.cumsum(torch.bincount(row, minlength=rows), 0, out=row_ptr[1:])
    del row
    bound = 1.0 / max(1.0, nnz / max(rows, 1)) ** 0.5
    g = torch.Generator(device=device).manual_seed(seed)
    values = torch.empty(nnz, device=device).uniform_(-bound, bound, generator=g)
    return row_ptr, col_idx, values


# ------------------------------------------------------------------------------ row laws
#: the row laws of :func:`row_law_pattern` (any ``zipf<a>`` with a > 0 is accepted too)
ROW_LAWS = ("uniform", "zipf0.8", "zipf1.0", "zipf1.2", "banded", "block")
#: block law: column blocks per row block, and the density an active block is filled to
BLOCKS_PER_ROW, BLOCK_FILL = 4, 0.5


def row_law_pattern(law: str, rows: int, cols: int, nnz: int, generator: torch.Generator | None = None,
                    device=None):
    """A ``rows x cols`` pattern of exactly ``nnz`` entries whose rows follow ``law``, as CSR
    (row_ptr int64, col_idx int32, columns sorted and unique within each row) on ``device``
    (default: the generator's). A kernel's speed depends on how the entries spread over the rows
    (dynamic sparse training grows hub rows), so the op benchmarks sweep this as an axis:

    * ``uniform``: ``nnz`` distinct positions, every set of them equally likely;
    * ``zipf<a>`` (``zipf0.8``, ``zipf1.0``, ``zipf1.2``): row lengths proportional to 1 / rank^a,
      the ranks shuffled over the rows, scaled to ``nnz`` and capped at ``cols`` (at 65,536 x 65,536
      and 1% density 35, 85 and 144 rows are full); each row's columns uniform;
    * ``banded``: every row holds ``nnz / rows`` entries (+-1) drawn uniformly from a window of
      ``2 * ceil(nnz / rows)`` columns (at most ``cols``) around the diagonal ``r * cols // rows``,
      so every entry is less than that width from it;
    * ``block``: rows and columns cut into blocks, each row block holding its entries in
      ``BLOCKS_PER_ROW`` column blocks (its diagonal one and random others) filled to about
      ``BLOCK_FILL``: a few dense-ish blocks, the rest empty (one block when the density is above
      about 50%).

    Vectorised (no Python loop over rows), O(nnz + rows) time, memory bounded by drawing in chunks
    (65,536 x 65,536 at 1%, 43M entries: a few seconds on 2 cores); the same seed gives the same
    pattern on the same device."""
    exponent = _law_exponent(law)
    if rows < 0 or cols < 0:
        raise ValueError(f"rows and cols must be >= 0, got {rows} x {cols}")
    if not 0 <= nnz <= rows * cols:
        raise ValueError(f"nnz must be in [0, rows*cols={rows * cols}], got {nnz}")
    if cols > 2**31 - 1:
        raise ValueError(f"cols must fit int32 column indices, got {cols}")
    if device is None:
        device = generator.device if generator is not None else "cpu"
    device = torch.device(device)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"the generator is on {generator.device}, the pattern is asked on {device}")
    g, i64 = generator, dict(dtype=torch.int64, device=device)
    if nnz == 0:
        return torch.zeros(rows + 1, **i64), torch.zeros(0, dtype=torch.int32, device=device)
    row = torch.arange(rows, **i64)
    if law in ("banded", "block"):
        lengths = torch.full((rows,), nnz // rows, **i64)
        lengths[torch.randperm(rows, generator=g, device=device)[:nnz % rows]] += 1
        if law == "banded":
            width = min(cols, 2 * -(-nnz // rows))
            lo = torch.clamp(row * cols // rows - width // 2, 0, cols - width)
            seg_row, seg_lo, seg_w, seg_len = row, lo, torch.full_like(lo, width), lengths
        else:
            seg_row, seg_lo, seg_w, seg_len = _block_segments(rows, cols, nnz, lengths, g)
    else:
        lengths = (_uniform_lengths(rows, cols, nnz, g, device) if exponent is None
                   else _zipf_lengths(rows, cols, nnz, exponent, g, device))
        seg_row, seg_lo, seg_w, seg_len = row, torch.zeros_like(row), torch.full_like(row, cols), lengths
    col = _sample_segments(seg_lo, seg_w, seg_len, g).to(torch.int32)
    row_ptr = torch.zeros(rows + 1, **i64)
    torch.cumsum(torch.zeros(rows, **i64).index_add_(0, seg_row, seg_len), 0, out=row_ptr[1:])
    return row_ptr, col


def _law_exponent(law: str) -> float | None:
    """None for the laws without an exponent, a for ``zipf<a>``; a one-line error for an unknown law."""
    if law in ("uniform", "banded", "block"):
        return None
    try:
        a = float(law[4:]) if law.startswith("zipf") else None
    except ValueError:
        a = None
    if a is None or not 0 < a < float("inf"):
        raise ValueError(f"unknown row law {law!r}: expected one of {', '.join(ROW_LAWS)} (or zipf<a>, a > 0)")
    return a


def _uniform_lengths(rows: int, cols: int, nnz: int, g, device) -> torch.Tensor:
    """Row lengths of ``nnz`` uniformly random distinct positions: binomial rows at a density a few
    standard deviations above ``nnz / (rows cols)`` (a uniform set of a random size), then the
    surplus removed as uniformly random entries (a uniform subset of a uniform set is uniform)."""
    total = rows * cols
    p = nnz / total
    q = min(1.0, p + (6 * math.sqrt(total * p * (1 - p)) + 1) / total)
    count = torch.full((rows,), float(cols), dtype=torch.float64, device=device)
    while True:
        lengths = torch.binomial(count, torch.full_like(count, q), generator=g).long()
        drawn = int(lengths.sum())
        if drawn >= nnz:
            break
    surplus = _sample_segments(torch.zeros(1, dtype=torch.int64, device=device), torch.full((1,), drawn, device=device),
                               torch.full((1,), drawn - nnz, device=device), g)
    owner = torch.searchsorted(torch.cumsum(lengths, 0), surplus, right=True)
    return lengths - torch.bincount(owner, minlength=rows)


def _zipf_lengths(rows: int, cols: int, nnz: int, a: float, g, device) -> torch.Tensor:
    """Row lengths s / rank^a (ranks shuffled over the rows) capped at ``cols``, s such that they
    sum to ``nnz``: rounded down, then the remainder given to the rows with the largest fractions."""
    w = torch.arange(1, rows + 1, dtype=torch.float64, device=device).pow(-a)
    w = w[torch.randperm(rows, generator=g, device=device)]
    lo, hi = 0.0, nnz / float(w.min())  # at hi every row holds min(cols, nnz) or more: >= nnz in all
    for _ in range(100):  # bisection: the cap makes the sum piecewise linear in s
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if float(torch.clamp(w * mid, max=cols).sum()) < nnz else (lo, mid)
    x = torch.clamp(w * hi, max=cols)
    lengths = x.floor().long()
    short = nnz - int(lengths.sum())
    if short > 0:
        lengths[torch.topk(torch.where(lengths < cols, x - lengths, -1.0), short).indices] += 1
    elif short < 0:
        lengths[torch.topk(lengths, -short).indices] -= 1
    return lengths


def _block_segments(rows: int, cols: int, nnz: int, lengths: torch.Tensor, g):
    """(row, lo, width, length) of the block law's segments, in row-major order and by column within
    a row: row block R's rows hold their entries in column blocks {diagonal(R)} + random others."""
    device = lengths.device
    per_row, longest = BLOCKS_PER_ROW, -(-nnz // rows)
    width = max(-(-longest // per_row), math.ceil(nnz / rows / (per_row * BLOCK_FILL)), 1)
    n_cb = cols // width
    if n_cb < per_row:  # above ~50% density: one block, the whole matrix
        per_row, width, n_cb = 1, cols, 1
    height = max(1, round(width * rows / cols))
    n_rb = max(1, rows // height)
    starts = torch.arange(n_cb, dtype=torch.int64, device=device) * width
    widths = torch.full_like(starts, width)
    widths[-1] = cols - starts[-1]  # the last block takes the columns left over
    diagonal = torch.arange(n_rb, dtype=torch.int64, device=device) * n_cb // n_rb
    others = _sample_segments(torch.zeros_like(diagonal), torch.full_like(diagonal, n_cb - 1),
                              torch.full_like(diagonal, per_row - 1), g).view(n_rb, per_row - 1)
    others += others >= diagonal[:, None]  # skip the diagonal block
    blocks = torch.cat([diagonal[:, None], others], 1).sort(1).values  # (row blocks, per_row)
    row = torch.arange(rows, dtype=torch.int64, device=device)
    seg_block = blocks[torch.clamp(row // height, max=n_rb - 1)]
    j = torch.arange(per_row, dtype=torch.int64, device=device)
    seg_len = lengths[:, None] // per_row + (j[None, :] < (lengths % per_row)[:, None])
    return (row.repeat_interleave(per_row), starts[seg_block].reshape(-1), widths[seg_block].reshape(-1),
            seg_len.reshape(-1))


#: positions (or draws) a chunk of segments handles at once (its memory: ~40 bytes each)
CHUNK = {"cpu": 1 << 24}
DEVICE_CHUNK = 1 << 26
#: segments of at most this many positions are drawn as rows of one matrix (_small_segments)
SMALL = 64


def _sample_segments(lo: torch.Tensor, width: torch.Tensor, length: torch.Tensor, g) -> torch.Tensor:
    """For each segment s, ``length[s]`` distinct integers drawn uniformly from ``[lo[s], lo[s] +
    width[s])``, sorted; the segments' results concatenated in order (int64). Segments of at most
    SMALL positions go through :func:`_small_segments`, larger ones at least 1/4 full through
    :func:`_dense_segments`, sparser ones through :func:`_sparse_segments`, in chunks of consecutive
    segments that bound the memory."""
    device = length.device
    out = torch.empty(int(length.sum()) if length.numel() else 0, dtype=torch.int64, device=device)
    if out.numel() == 0:
        return out
    kind = torch.where(width <= SMALL, 2, (4 * length >= width).long())  # 0 sparse, 1 dense, 2 small
    cost = torch.cumsum(torch.where(kind > 0, width, length), 0)
    chunk = CHUNK.get(device.type, DEVICE_CHUNK)
    cuts = torch.searchsorted(cost, torch.arange(1, int(cost[-1]) // chunk + 1, device=device) * chunk) + 1
    edges = [0] + sorted({int(c) for c in cuts.tolist() if 0 < c < length.numel()}) + [length.numel()]
    out_ptr = torch.cumsum(length, 0) - length
    starts = out_ptr[torch.tensor(edges[:-1], device=device)].tolist() + [out.numel()]
    samplers = (_sparse_segments, _dense_segments, _small_segments)
    for (s0, s1), (o0, o1) in zip(zip(edges, edges[1:]), zip(starts, starts[1:])):
        K, L, piece = kind[s0:s1], length[s0:s1], out[o0:o1]
        kinds = torch.unique(K[L > 0]).tolist()
        if len(kinds) == 1:  # one kind: no masks
            keep = L > 0
            piece.copy_(samplers[kinds[0]](lo[s0:s1][keep], width[s0:s1][keep], L[keep], g))
            continue
        slot_kind = torch.repeat_interleave(K, L)
        for k in kinds:
            mask = (K == k) & (L > 0)
            piece[slot_kind == k] = samplers[k](lo[s0:s1][mask], width[s0:s1][mask], L[mask], g)
    return out


def _small_segments(lo, width, length, g) -> torch.Tensor:
    """Segments of at most SMALL positions: a random key per position (a row of a segments x SMALL
    matrix), the ``length`` smallest kept; no recursion, whatever the density."""
    k, span = width.numel(), int(width.max())
    at = torch.arange(span, device=width.device)
    keys = torch.rand(k, span, generator=g, device=width.device).masked_fill_(at >= width[:, None], 2.0)
    chosen = torch.zeros(k, span, dtype=torch.bool, device=width.device)
    chosen.scatter_(1, keys.argsort(1), (at < length[:, None]))
    seg, offset = chosen.nonzero(as_tuple=True)
    return lo[seg] + offset


def _dense_segments(lo, width, length, g) -> torch.Tensor:
    """Segments of more than SMALL positions, at least 1/4 full: each position kept with probability
    length / width (the kept set is uniform given its size), then the surplus removed, or the
    shortfall added, as a uniform subset of the kept (or free) positions drawn by
    :func:`_sample_segments`. O(positions), no sort."""
    dev = width.device
    start = torch.cumsum(width, 0) - width
    prob = torch.repeat_interleave((length.double() / width).float(), width)
    keep = torch.rand(prob.shape, generator=g, device=dev) < prob
    del prob
    kept_before = torch.cumsum(keep, 0)
    count = kept_before[start + width - 1] - torch.where(start > 0, kept_before[(start - 1).clamp(min=0)], 0)
    del kept_before
    kept_start = torch.cumsum(count, 0) - count
    flips = []
    for wrong, pool, pool_start, pool_size, n in (
            (count > length, keep, kept_start, count, count - length),
            (count < length, ~keep, start - kept_start, width - count, length - count)):
        if bool(wrong.any()):
            at = torch.repeat_interleave(pool_start[wrong], n[wrong])
            at += _sample_segments(torch.zeros_like(n[wrong]), pool_size[wrong], n[wrong], g)
            flips.append(pool.nonzero().squeeze(1)[at])
    for f in flips:
        keep[f] = ~keep[f]
    return keep.nonzero().squeeze(1) + torch.repeat_interleave(lo - start, length)


def _sparse_segments(lo, width, length, g) -> torch.Tensor:
    """Segments of more than SMALL positions, under 1/4 full: sorted uniform draws per segment
    (normalised exponential spacings: no sort), repeats dropped, the missing ones drawn again until
    every segment is complete (at most 1/4 repeat, so a few rounds of ever fewer draws), merged in
    once at the end."""
    k, dev = length.numel(), length.device
    span = int(width.max())
    seg = torch.repeat_interleave(torch.arange(k, device=dev), length)
    c = torch.cumsum(torch.empty(seg.numel(), dtype=torch.float64, device=dev).exponential_(generator=g), 0)
    first = torch.cumsum(length, 0) - length
    before = torch.where(first > 0, c[(first - 1).clamp(min=0)], 0.0)
    total = c[first + length - 1] - before + torch.empty(k, dtype=torch.float64, device=dev).exponential_(generator=g)
    keys = _draw_keys(c.sub_(before.index_select(0, seg)).mul_((width / total).index_select(0, seg)), seg, width,
                      span)
    del c
    step = keys.diff()
    if bool((step < 0).any()):  # a parallel scan may round a sum out of order
        keys, order = keys.sort()
        seg, step = seg[order], keys.diff()
    repeat = step == 0
    missing = torch.bincount(seg[1:][repeat], minlength=k)
    keys = keys[torch.cat([repeat.new_ones(1), ~repeat])]
    del seg, step, repeat
    extra = keys[:0]
    while int(missing.sum()) > 0:  # the new draws: few, sorted with a sort
        seg = torch.repeat_interleave(torch.arange(k, device=dev), missing)
        new = torch.unique(_draw_keys(torch.rand(seg.numel(), dtype=torch.float64, generator=g, device=dev)
                                      * width[seg], seg, width, span))
        new = new[~_contains(keys, new) & ~_contains(extra, new)]
        missing -= torch.bincount(new // span, minlength=k)
        extra = torch.cat([extra, new]).sort().values
    if extra.numel():
        merged = torch.empty(keys.numel() + extra.numel(), dtype=torch.int64, device=dev)
        merged[torch.arange(keys.numel(), device=dev) + torch.searchsorted(extra, keys)] = keys
        merged[torch.arange(extra.numel(), device=dev) + torch.searchsorted(keys, extra)] = extra
        keys = merged
    return keys + torch.repeat_interleave(lo - torch.arange(k, device=dev) * span, length)


def _draw_keys(x: torch.Tensor, seg: torch.Tensor, width: torch.Tensor, span: int) -> torch.Tensor:
    """seg * span + floor(x), x in [0, width[seg]] kept below the segment's width."""
    keys = x.long()
    if bool((width == width[0]).all()):  # one width (uniform, Zipf, banded rows): no gather
        keys.clamp_(max=int(width[0]) - 1)
    else:
        torch.minimum(keys, (width - 1).index_select(0, seg), out=keys)
    return keys.add_(seg, alpha=span)


def _contains(sorted_keys: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Which of ``keys`` are in ``sorted_keys``."""
    if sorted_keys.numel() == 0:
        return torch.zeros(keys.shape, dtype=torch.bool, device=keys.device)
    at = torch.searchsorted(sorted_keys, keys).clamp(max=sorted_keys.numel() - 1)
    return sorted_keys[at] == keys
