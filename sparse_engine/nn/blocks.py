"""Building blocks of the models composed step by step from the sparse products (RHN, ON-LSTM,
the Neural-ODE RNN, the language models): a row lookup in a CSR (the sparse embedding) and the
locked dropout of AWD-LSTM-style models; with, for these models' code, the product with a weight
that is sparse or dense (:func:`matmul`, from :mod:`.products`), their inputs and states
(:func:`sequence_input`, :func:`initial_state`, from :mod:`.sequences`) and their arguments and
initialisation (:func:`check_dropout`, :func:`init_values_uniform`, from :mod:`.weights`).

Everything here is differentiated by autograd through :func:`sparse_engine.ops.spmm` (whose
formula gives the gradient of the values at the nonzeros only) and torch's own ops.
"""
from __future__ import annotations

import torch

from ..sparse import SparseWeight
from ..recurrent import matmul
from .sequences import initial_state, sequence_input
from .weights import check_dropout, init_values_uniform

__all__ = ["matmul", "row_lookup", "locked_dropout", "init_values_uniform", "check_dropout",
           "sequence_input", "initial_state"]


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
