"""Whether a benchmark cell's result is right: our output against a float64 reference computed here
from the CSR arrays and the dense operands (gathers and sums in float64: neither our kernels nor a
baseline), judged by the op tests' rounding bound (``sparse_engine.testing.rounding_bound``, per
output with its own number of terms, in the dtype our output is stored in, so that a bfloat16 cell
measures our error, not a baseline's).

Every output row is checked when that costs at most ``MACS`` float64 multiply-adds; past that, a
random sample of rows that costs about as much, plus the longest rows (or columns, for spmm_t),
where the long-row paths run. bench_ops.py (CPU) and bench_cuda.py (GPU) share it; the reference
runs on the operands' device.
"""
from __future__ import annotations

from sparse_engine.testing import rounding_bound

import torch

#: float64 multiply-adds a reference may spend on one output before it samples rows (an entry
#: counts as at least MIN_WORK of them: its gathers cost that much at B = 1)
MACS, MIN_WORK = 1 << 24, 16
#: entries (times the batch) a gather of the reference handles at once
BLOCK = 1 << 22


def sample(lengths: torch.Tensor, batch: int, seed: int = 0) -> torch.Tensor | None:
    """The output rows to check: None (all of them) when that is cheap, else the 2 longest rows and
    random ones (sorted), about ``MACS`` multiply-adds in all; ``lengths``: the terms of each row."""
    n, work = lengths.numel(), max(batch, MIN_WORK)
    if (int(lengths.sum()) + n) * work <= MACS:
        return None
    mean = max(1.0, float(lengths.sum()) / n)
    k = int(min(n, max(32, MACS // (mean * work))))
    g = torch.Generator().manual_seed(seed)
    rows = torch.cat([torch.topk(lengths.cpu(), min(2, n)).indices, torch.randperm(n, generator=g)[:k]])
    return torch.unique(rows).to(lengths.device)


def _rows_entries(row_ptr: torch.Tensor, rows: torch.Tensor):
    """(entry ids, position of each entry's row in ``rows``, row lengths) of the CSR rows ``rows``."""
    start, lengths = row_ptr[rows], row_ptr[rows + 1] - row_ptr[rows]
    owner = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), lengths)
    entry = torch.arange(owner.numel(), device=rows.device) - (torch.cumsum(lengths, 0) - lengths - start)[owner]
    return entry, owner, lengths


def _accumulate(n_out: int, owner, weight, dense, index, batch: int):
    """float64 sum over entries e of weight[e] * dense[index[e]] into row owner[e], and the same of
    |weight| |dense| (what a rounding bound scales with), BLOCK entries x batch at a time."""
    ref = torch.zeros(n_out, batch, dtype=torch.float64, device=dense.device)
    abs_ref = torch.zeros_like(ref)
    step = max(1, BLOCK // max(batch, 1))
    for a in range(0, owner.numel(), step):
        w, d = weight[a:a + step].double()[:, None], dense[index[a:a + step]].double()
        ref.index_add_(0, owner[a:a + step], w * d)
        abs_ref.index_add_(0, owner[a:a + step], w.abs() * d.abs())
    return ref, abs_ref


def spmm_reference(row_ptr, col_idx, values, X, rows: torch.Tensor):
    """float64 rows ``rows`` of W @ X: (value, sum of |terms|, terms per row)."""
    entry, owner, lengths = _rows_entries(row_ptr, rows)
    ref, abs_ref = _accumulate(rows.numel(), owner, values[entry], X, col_idx[entry].long(), X.shape[1])
    return ref, abs_ref, lengths


def spmm_t_reference(row_ptr, col_idx, values, G, cols: torch.Tensor, n_cols: int):
    """float64 rows ``cols`` of W^T @ G (the entries of those columns, found by a scan of col_idx)."""
    where = torch.full((n_cols,), -1, dtype=torch.int32, device=col_idx.device)
    where[cols] = torch.arange(cols.numel(), dtype=torch.int32, device=cols.device)
    hit = where.index_select(0, col_idx)
    entry = (hit >= 0).nonzero().squeeze(1)
    owner = hit[entry].long()
    row = torch.searchsorted(row_ptr, entry, right=True) - 1
    ref, abs_ref = _accumulate(cols.numel(), owner, values[entry], G, row, G.shape[1])
    return ref, abs_ref, torch.bincount(owner, minlength=cols.numel())


def sddmm_reference(row_ptr, col_idx, G, X, rows: torch.Tensor):
    """float64 (G X^T) at the entries of rows ``rows``: (value, sum of |terms|, terms, entry ids)."""
    entry, owner, _ = _rows_entries(row_ptr, rows)
    ref = torch.empty(entry.numel(), dtype=torch.float64, device=G.device)
    abs_ref = torch.empty_like(ref)
    step = max(1, BLOCK // max(G.shape[1], 1))
    for a in range(0, entry.numel(), step):
        e = entry[a:a + step]
        g, x = G[rows[owner[a:a + step]]].double(), X[col_idx[e].long()].double()
        ref[a:a + step], abs_ref[a:a + step] = (g * x).sum(1), (g.abs() * x.abs()).sum(1)
    return ref, abs_ref, torch.full_like(entry, G.shape[1]), entry


def worst(out: torch.Tensor, ref: torch.Tensor, abs_ref: torch.Tensor, terms: torch.Tensor) -> float:
    """The largest |out - ref| / rounding bound over the outputs (> 1: wrong; NaN: wrong), each
    output's bound with its own number of terms, in ``out``'s dtype."""
    if out.numel() == 0:
        return 0.0
    if out.dim() == 2:
        terms = terms[:, None].expand_as(out)
    err, bound = (out.detach().double() - ref).abs(), torch.empty_like(ref)
    for t in torch.unique(terms).tolist():
        m = terms == t
        bound[m] = rounding_bound(ref[m], abs_ref[m], int(t), out.dtype)
    return float((err / bound).max())


def check(W, X: torch.Tensor, G: torch.Tensor, outputs: dict, seed: int = 0) -> tuple[float, str]:
    """(the worst error over rounding bound, which rows were checked) of ``outputs``: ``"spmm"`` (W X),
    ``"spmm_t"`` (W^T G), ``"sddmm"`` (G X^T at W's entries), each ours as computed for the cell.
    ``W`` has ``row_ptr``, ``col_idx``, ``values`` (a SparseWeight)."""
    row_ptr, col_idx, values = W.row_ptr, W.col_idx, W.values.detach()
    n_rows, n_cols = W.shape
    ratios, checked = [], []
    for op, out in outputs.items():
        if op == "spmm_t":
            rows = sample(torch.bincount(col_idx, minlength=n_cols), G.shape[1], seed)
            at = torch.arange(n_cols, device=G.device) if rows is None else rows
            ratios.append(worst(out[at], *spmm_t_reference(row_ptr, col_idx, values, G, at, n_cols)))
        else:
            rows = sample(row_ptr.diff(), X.shape[1], seed)
            at = torch.arange(n_rows, device=X.device) if rows is None else rows
            if op == "spmm":
                ratios.append(worst(out[at], *spmm_reference(row_ptr, col_idx, values, X, at)))
            else:
                ref, abs_ref, terms, entry = sddmm_reference(row_ptr, col_idx, G, X, at)
                ratios.append(worst(out[entry], ref, abs_ref, terms))
        checked.append(None if rows is None else rows.numel())
    ratio = float("nan") if any(r != r for r in ratios) else max(ratios, default=0.0)
    sampled = [k for k in checked if k is not None]
    return ratio, f"{min(sampled):,}+ rows" if sampled else "all rows"


def verdict(ratio: float, rows: str) -> str:
    """The check column: ``checked (<rows>)``, or ``WRONG: ...`` when an output is past its bound."""
    if ratio <= 1.0:
        return f"checked ({rows})"
    return f"WRONG: error {ratio:.3g}x the rounding bound ({rows})"
