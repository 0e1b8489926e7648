"""Building blocks of the models composed step by step from the sparse products (RHN, ON-LSTM,
the Neural-ODE RNN, the language models): a product with a weight that is sparse or dense,
a row lookup in a CSR (the sparse embedding), and the dropouts of AWD-LSTM-style models.

Everything here is differentiated by autograd through :func:`sparse_engine.ops.spmm` (whose
formula gives the gradient of the values at the nonzeros only) and torch's own ops.
"""
from __future__ import annotations

import torch

from .. import ops
from ..sparse import SparseWeight
from .recurrence import check_input_dtype
from .rnn import check_not_packed, time_major

__all__ = ["matmul", "row_lookup", "locked_dropout", "init_values_uniform", "check_dropout",
           "sequence_input", "initial_state"]


def matmul(w, x: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
    """W X for a SparseWeight or dense (rows x cols) Parameter ``w`` and feature-major X
    (cols x B). ``values`` replaces a SparseWeight's values (DropConnect masks them)."""
    if isinstance(w, SparseWeight):
        if values is None:
            return ops.spmm(w, x)
        return torch.ops.sparse_engine.spmm(*w.index, values, x)
    return (w if values is None else values) @ x


def row_lookup(w: SparseWeight, ids: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``ids`` of the CSR ``w`` as a dense (len(ids), cols) tensor: the embedding lookup of a
    (vocab x dim) SparseWeight. Reads only the stored entries of those rows (O(sum of their nnz)),
    and its gradient reaches ``w.values`` at those entries only (repeated ids accumulate)."""
    if not isinstance(w, SparseWeight):
        raise TypeError(f"w must be a SparseWeight, got {type(w).__name__}")
    ids = ids.reshape(-1).to(torch.int64)
    vals = w.values if values is None else values
    rows, cols = w.shape
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= rows):
        raise ValueError(f"ids must be in [0, {rows}), got values in [{int(ids.min())}, {int(ids.max())}]")
    start = w.row_ptr[ids]
    counts = w.row_ptr[ids + 1] - start
    out_row = torch.repeat_interleave(torch.arange(ids.numel(), device=ids.device), counts)
    # position k of a gathered entry: its row's start plus its rank within the row
    first = torch.cumsum(counts, 0) - counts
    pos = start[out_row] + (torch.arange(out_row.numel(), device=ids.device) - first[out_row])
    flat = out_row * cols + w.col_idx[pos].to(torch.int64)
    # index_select, not vals[pos]: the backward of indexing with repeated positions is torch's
    # index_put_(accumulate=True), whose CPU kernel adds float32 with atomics from several threads
    # above 32,768 elements, so the values' gradient changed with the thread count (and from run
    # to run); index_select's backward is index_add, which adds in order
    out = vals.new_zeros(ids.numel() * cols).index_add(0, flat, vals.index_select(0, pos))
    return out.view(ids.numel(), cols)


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Variational dropout of a (T, B, F) sequence: one mask per sequence and feature, shared by
    all T steps (AWD-LSTM's LockedDropout)."""
    if not training or not p:
        return x
    mask = x.new_empty(1, x.shape[1], x.shape[2]).bernoulli_(1 - p) / (1 - p)
    return x * mask


def init_values_uniform(w, bound: float) -> None:
    """U(-bound, bound) on a SparseWeight's values or a dense Parameter, in place."""
    target = w.values if isinstance(w, SparseWeight) else w
    with torch.no_grad():
        target.uniform_(-bound, bound)


def check_dropout(name: str, p) -> float:
    """``p`` as a float, or ValueError naming ``name`` unless it is a number in [0, 1)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {p!r}")
    return float(p)


def sequence_input(owner: str, input, input_size: int, batch_first: bool, ref: torch.Tensor):
    """The checked (T, B, I) time-major view of a layer's ``input`` ((T, B, I), batch-first
    (B, T, I), or unbatched (T, I)) and whether it was batched; errors name ``owner``."""
    check_not_packed(input, owner)
    if input.dim() not in (2, 3) or input.shape[-1] != input_size:
        raise ValueError(f"input must be (T, B, {input_size}), (B, T, {input_size}) with batch_first, "
                         f"or (T, {input_size}), got {tuple(input.shape)}")
    check_input_dtype(input, ref)
    return time_major(input, batch_first)


def initial_state(hx, name: str, want: tuple, batched: bool, ref: torch.Tensor, like: torch.Tensor):
    """A layer's initial state as (L, B, H) (zeros when ``hx`` is None); ``want`` is the shape the
    caller must give (unbatched: without B)."""
    if hx is None:
        L, H = want[0], want[-1]
        return like.new_zeros(L, like.shape[1], H)
    if not isinstance(hx, torch.Tensor) or tuple(hx.shape) != tuple(want):
        got = tuple(hx.shape) if isinstance(hx, torch.Tensor) else type(hx).__name__
        raise ValueError(f"{name} must have shape {tuple(want)}, got {got}")
    check_input_dtype(hx, ref, name)
    return hx if batched else hx.unsqueeze(1)
