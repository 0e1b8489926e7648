"""Topology updates on a row-sharded weight, the unsharded update (issue 47): SET's, RigL's and
Selfish-RNN's (magnitude death; random or gradient growth).

A weight split by :func:`~sparse_engine.distributed.shard_rows` holds some of the whole matrix's rows
on each rank (a recurrent layer: the same units in every gate block). SET (Mocanu et al. 2018) prunes
a fraction of each sign over the whole matrix and regrows as many at uniformly random empty
positions; done on each shard alone it would prune each shard's own fraction and draw other
positions. :class:`RowShard` gives the whole matrix's answer on every rank, each rank keeping its
rows of it:

* :meth:`RowShard.set_keep`: the ``round(zeta * count)`` magnitudes nearest zero of each sign over all
  ranks (``set_keep``'s rule, ties to the lower position of the whole matrix): the k-th smallest
  magnitude found by a radix selection whose 65,536-bin histograms are summed over the ranks (2
  all-reduces in float32, 4 in float64), the ties at it (rare) ordered by their (row, column) in
  the whole matrix, gathered from the ranks;
* :meth:`RowShard.magnitude_keep`: the same selection over all |w| (Selfish-RNN's and RigL's death),
  :meth:`RowShard.selfish_set_keep` over each sign (Selfish-RNN's "SET" death);
* :meth:`RowShard.top_gradients`: the same selection over candidates' |gradient| (RigL's growth,
  :func:`~sparse_engine.training.topology.sharded_gradient_growth`);
* :meth:`RowShard.random_empty`: the positions ``random_empty`` draws for the whole pruned pattern,
  this rank's rows of them (and :meth:`RowShard.values_at` the new values, of the whole draw).
  The draw numbers its candidates from the matrix's first row, so every rank assembles the whole
  pruned pattern (each rank's column indices, gathered: 4 bytes a connection for the moment of the
  update) and draws the same positions with the same seed.

The controllers find a sharded module's weights' shards by name in its ``_row_shards`` (set by
``shard_rows``) and use these in place of the one-process functions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .data_parallel import _comm_device
from .exchange import _collective

_ops = torch.ops.sparse_engine

_BINS = 1 << 16


@dataclass
class RowShard:
    """Where a sharded weight's (or bias's) rows are in the whole matrix: ``rows`` (CPU int64,
    increasing) the whole matrix's row of each local row, ``n_rows`` the whole matrix's rows,
    ``group`` the ranks that hold the others. ``shard_rows`` sets one per row-split tensor of a
    module (its ``_row_shards``), which the checkpoints and the topology controllers read."""
    rows: torch.Tensor
    n_rows: int
    group: object

    # ------------------------------------------------------------------------- pruning
    def set_keep(self, weight, zeta: float) -> torch.Tensor:
        """This rank's part of ``set_keep(whole values, zeta)`` (a collective of the group)."""
        values = weight.values.detach()
        if not 0.0 <= zeta <= 1.0:
            raise ValueError(f"zeta must be in [0, 1], got {zeta}")
        dev = values.device
        positive, negative = values > 0, values < 0
        counts = torch.stack([positive.sum(), negative.sum(), values.isnan().sum()]).to(torch.int64)
        self._all_reduce(counts, "SET's counts")
        if counts[2]:
            raise ValueError("values must not contain NaN")
        key = _magnitude_keys(values)
        drop = values == 0  # exact zeros: always dropped, as set_keep does
        for sign, count in ((positive, int(counts[0])), (negative, int(counts[1]))):
            k = _round_half_away(zeta * count)
            if k:
                drop |= self._smallest(weight, key, sign, k, "SET's selection")
        return (~drop).to(dev)

    def selfish_set_keep(self, weight, rate: float, negatives: str) -> torch.Tensor:
        """This rank's part of Selfish-RNN's "SET" death (``selfish_set_keep(whole values, rate,
        negatives)``): k = ceil(ceil(rate * nnz) / 2) of each sign over the whole matrix, the
        smallest positive ones and the most negative (or the nearest zero) negative ones, ties to
        the lower position of the whole matrix; exact zeros go (a collective of the group)."""
        values = weight.values.detach()
        positive, negative = values > 0, values < 0
        counts = torch.tensor([int(positive.sum()), int(negative.sum()), values.numel()], dtype=torch.int64)
        self._all_reduce(counts, "Selfish-RNN's counts")
        k = math.ceil(math.ceil(rate * int(counts[2])) / 2)
        key = _magnitude_keys(values)
        drop = values == 0
        negative_key = _magnitude_keys(values, largest_first=True) if negatives == "most_negative" else key
        for sign, count, sign_key in ((positive, int(counts[0]), key), (negative, int(counts[1]), negative_key)):
            if min(k, count):
                drop |= self._smallest(weight, sign_key, sign, min(k, count), "Selfish-RNN's SET death")
        return ~drop

    def magnitude_keep(self, weight, n_prune: int) -> torch.Tensor:
        """This rank's part of ``magnitude_keep(whole values, n_prune)``: the ``n_prune`` smallest
        |w| of the whole matrix go, ties to the lower position of the whole matrix (Selfish-RNN's
        magnitude death; a collective of the group)."""
        values = weight.values.detach()
        if self.total(int(values.isnan().sum())):  # every rank raises, none waits in a collective
            raise ValueError("values must not contain NaN")
        every = torch.ones_like(values, dtype=torch.bool)
        if n_prune <= 0:
            return every
        return ~self._smallest(weight, _magnitude_keys(values), every, n_prune, "the magnitude selection")

    def _smallest(self, weight, key: torch.Tensor, among: torch.Tensor, k: int, what: str) -> torch.Tensor:
        """The ``k`` smallest keys of the entries ``among`` over the group, ties to the lower position
        of the whole matrix: a mask of this rank's entries."""
        n_cols = weight.shape[1]
        return self._smallest_at(key, among, k, 64 if weight.values.dtype == torch.float64 else 32, what,
                                 lambda pos: self._global_rows(weight)[pos.cpu()] * n_cols
                                 + weight.col_idx[pos].cpu().long())

    def _smallest_at(self, key: torch.Tensor, among: torch.Tensor, k: int, bits: int, what: str,
                     position) -> torch.Tensor:
        """:meth:`_smallest` of any local entries: ``position(idx)`` gives the whole matrix's linear
        positions (row * cols + col, CPU int64) of the local entries ``idx``, which order the ties."""
        t = self._kth_smallest(key[among], k, bits, what)
        below = among & (key < t)
        n_below = below.sum().reshape(1)
        self._all_reduce(n_below, what)
        return below | self._first_ties(among & (key == t), k - int(n_below), position)

    def sums(self, *numbers: float) -> list[float]:
        """``numbers`` summed over the group, in float64 (exact for counts below 2^53)."""
        t = torch.tensor(numbers, dtype=torch.float64)
        self._all_reduce(t, "the topology update's sums")
        return t.tolist()

    def _kth_smallest(self, keys: torch.Tensor, k: int, bits: int, what: str) -> int:
        """The k-th smallest (1-based) key over the group: 16 bits a round, from the top."""
        prefix, left, cand = 0, k, keys
        for shift in range(bits - 16, -1, -16):
            digit = (cand >> shift) & (_BINS - 1)
            hist = torch.bincount(digit, minlength=_BINS).to(torch.int64)
            self._all_reduce(hist, what)
            cum = hist.cumsum(0)
            b = int(torch.searchsorted(cum, torch.tensor([left], dtype=torch.int64, device=cum.device)))
            left -= int(cum[b - 1]) if b > 0 else 0
            prefix |= b << shift
            cand = cand[digit == b]
        return prefix

    def _first_ties(self, ties: torch.Tensor, n: int, position) -> torch.Tensor:
        """Of the entries equal to the cut on every rank, the ``n`` first in the whole matrix's order
        (by row, then column; ``position`` as :meth:`_smallest_at`): a mask of this rank's."""
        out = torch.zeros_like(ties)
        if n <= 0:
            return out
        pos = ties.nonzero().flatten()
        keys = position(pos)
        cut = torch.cat(self._all_gather(keys)).sort().values[n - 1]
        out[pos[(keys <= cut).to(pos.device)]] = True
        return out

    # ------------------------------------------------------------------------- regrowth
    def random_empty(self, row_ptr: torch.Tensor, col_idx: torch.Tensor, n_cols: int, n: int, seed: int):
        """This rank's rows (local rows, columns) of ``random_empty`` over the whole pattern of
        which (row_ptr, col_idx) are this rank's rows, ``n`` positions in all (a collective)."""
        lengths = row_ptr.diff().cpu()
        everyone = list(zip(self._all_gather(self.rows), self._all_gather(lengths), self._all_gather(col_idx.cpu())))
        full_len = torch.zeros(self.n_rows, dtype=torch.int64)
        for rows, lens, _ in everyone:
            full_len[rows] = lens
        full_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), full_len.cumsum(0)])
        full_col = torch.empty(int(full_ptr[-1]), dtype=torch.int32)
        for rows, lens, cols in everyone:
            first = torch.repeat_interleave(full_ptr[rows], lens)
            local_first = torch.repeat_interleave(torch.cat([torch.zeros(1, dtype=torch.int64), lens.cumsum(0)[:-1]]),
                                                  lens)
            full_col[first + torch.arange(len(cols)) - local_first] = cols
        dev = row_ptr.device
        r, c = _ops.random_empty(full_ptr.to(dev), full_col.to(dev), int(n_cols), int(n), int(seed))
        local = torch.full((self.n_rows,), -1, dtype=torch.int64, device=dev)
        local[self.rows.to(dev)] = torch.arange(len(self.rows), device=dev)
        mine = local[r]
        keep = mine >= 0
        return mine[keep], c[keep]

    def values_at(self, rows: torch.Tensor, cols: torch.Tensor, n_cols: int, draw) -> torch.Tensor:
        """The new values of this rank's new positions (local ``rows``, ``cols``) as the unsharded
        update gives them: ``draw(n)`` makes the values of all n new positions of the whole matrix
        (on every rank, so that a generator advances alike everywhere), in the whole matrix's
        (row, column) order; this rank's are taken (a collective)."""
        keys = self.rows[rows.cpu()] * n_cols + cols.cpu().long()
        every_key = torch.cat(self._all_gather(keys)).sort().values
        every = draw(len(every_key))
        return every[torch.searchsorted(every_key, keys).to(every.device)]

    # ------------------------------------------------------------------------- growth by gradient
    def top_gradients(self, rows: torch.Tensor, cols: torch.Tensor, grads: torch.Tensor, k: int,
                      n_cols: int) -> torch.Tensor:
        """Of this rank's candidate positions (local ``rows``, ``cols``) and their gradients, those
        among the ``k`` of largest |gradient| over the group, ties to the lower position of the whole
        matrix (``gradient_growth``'s rule): a mask (a collective of the group)."""
        if self.total(int(grads.isnan().sum())):  # every rank raises, none waits in a collective
            raise ValueError("the gradients of growth by gradient must not contain NaN")
        chosen = torch.zeros_like(grads, dtype=torch.bool)
        if k <= 0:
            return chosen
        wide = grads.dtype == torch.float64
        key = _magnitude_keys(grads, largest_first=True)
        return self._smallest_at(key, ~chosen, k, 64 if wide else 32, "the gradient selection",
                                 lambda pos: self.rows[rows[pos].cpu()] * n_cols + cols[pos].cpu().long())

    def total(self, n: int) -> int:
        """``n`` summed over the group."""
        t = torch.tensor([n], dtype=torch.int64)
        self._all_reduce(t, "SET's counts")
        return int(t)

    # ------------------------------------------------------------------------- helpers
    def _global_rows(self, weight) -> torch.Tensor:
        """The whole matrix's row of each local entry (CPU int64)."""
        return torch.repeat_interleave(self.rows, weight.row_ptr.diff().cpu())

    def _all_gather(self, t: torch.Tensor) -> list:
        """Every rank's 1-D ``t`` (of any length), in rank order, on the CPU: the lengths first, then
        the tensors padded to the longest (through the backend's device)."""
        dev, world = _comm_device(self.group), dist.get_world_size(self.group)
        n = torch.tensor([t.numel()], dtype=torch.int64, device=dev)
        sizes = [torch.empty_like(n) for _ in range(world)]
        _collective(dist.all_gather, sizes, n, group=self.group, what="SET's exchange (all_gather)")
        sizes = [int(s) for s in sizes]
        padded = torch.zeros(max(1, *sizes), dtype=t.dtype, device=dev)  # (a collective of empty tensors: one element)
        padded[:t.numel()] = t.to(dev)
        parts = [torch.empty_like(padded) for _ in range(world)]
        _collective(dist.all_gather, parts, padded, group=self.group, what="SET's exchange (all_gather)")
        return [p[:s].cpu() for p, s in zip(parts, sizes)]

    def _all_reduce(self, t: torch.Tensor, what: str) -> None:
        """Sums ``t`` over the group in place (through the backend's device: the GPU for NCCL)."""
        comm = t.to(_comm_device(self.group))
        _collective(dist.all_reduce, comm, group=self.group, what=what)
        t.copy_(comm)


def _magnitude_keys(values: torch.Tensor, largest_first: bool = False) -> torch.Tensor:
    """|values| as order-preserving non-negative int64 keys (a non-negative float's bits);
    ``largest_first``: in the reverse order (the largest magnitude the smallest key), still
    non-negative and of the same width, for the selections that take the smallest keys."""
    mag = values.abs()
    if values.dtype == torch.float64:
        keys, top = mag.view(torch.int64), (1 << 63) - 1
    else:
        keys, top = mag.float().view(torch.int32).to(torch.int64), (1 << 31) - 1
    return top - keys if largest_first else keys


def _round_half_away(x: float) -> int:
    """std::llround for x >= 0 (set_keep's count): halves away from zero."""
    k = int(x)
    return k + 1 if x - k >= 0.5 else k
