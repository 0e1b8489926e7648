"""How large a row-sharded SparseLSTM trains on N devices and what a step costs: a model of the
memory and the exchange of :mod:`.sharding` per rank (issue 47), from the tensors it keeps.

Per rank, with n = ceil(H / world) units (the largest share), G = 4 gates, k nonzeros per row in
both W_ih (input = hidden) and W_hh, T steps, batch B, e bytes a value (float32: 4), Adam:

* persistent: each nonzero its value, gradient and Adam's two moments (4e), its column (4) and
  its place in the transposed index (row and permutation, 8): 4e + 12 bytes; the row pointers of
  both weights (8 bytes a row) and of their transposed indexes (8 bytes a column: all H columns
  on every rank); the biases with their gradients and moments;
* activations, at the larger of two moments: the end of the forward, per step the gathered
  state (H*B, every rank the whole of it: it is both the output sequence and what each step's
  backward reads for its weight gradient, kept once), the step's input part (G*n*B) and the six
  tensors torch's LSTM cell keeps for its backward (6*n*B), plus the input (T*B*H) and, with
  ``overlap`` (shard_rows' default) on more than one rank, W_hh's local nonzeros split by columns
  for the forward (a column and a value each: 4 + e bytes, :class:`~.exchange._OwnColumns`); and the end of
  the backward, the input part's gradient (each step's and then stacked: 2*G*n*B a step) and the
  input's gradient on its way (the product's, summed over the ranks, the result: 3*T*B*H, with
  the input and the output 4*T*B*H). A loss that reads every step of the output adds its
  gradient (another T*B*H, the caller's).

So the output sequence, T*B*H values a rank, does not shrink with more ranks: it bounds the
largest model (a model that reads only the last step could drop it; not done yet). Checked
against torch's allocator (TensorMemoryTrace) on 1, 2 and 4 CPU processes:
tests/distributed/test_sharding.py.

The step time is an estimate, labelled as one: the sparse products read their nonzeros once and
gather B values for each (forward, and twice in the backward) at the device's memory bandwidth,
and each time step exchanges H*B values twice (all-gather forward, reduce-scatter backward), each
(world - 1) / world of it over the link, plus the link's latency; the overlap of the own units'
columns with the gather is not counted (an upper bound).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ShardedLSTMStep", "largest_sharded_hidden"]

GATES = 4  # LSTM


@dataclass(frozen=True)
class ShardedLSTMStep:
    """One training step of a row-sharded SparseLSTM (one layer, input = hidden) on one rank."""
    hidden: int
    nnz_per_row: int
    steps: int
    batch: int
    world: int
    value_bytes: int = 4
    overlap: bool = True

    @property
    def units(self) -> int:
        """The largest rank's units."""
        return math.ceil(self.hidden / self.world)

    @property
    def local_nnz(self) -> int:
        """Nonzeros of W_ih and W_hh on that rank."""
        return 2 * GATES * self.units * self.nnz_per_row

    def persistent_bytes(self) -> int:
        e, n, H = self.value_bytes, self.units, self.hidden
        per_nnz = 4 * e + 12
        pointers = 2 * 8 * (GATES * n + 1) + 2 * 8 * (H + 1)
        biases = 2 * GATES * n * 4 * e
        return self.local_nnz * per_nnz + pointers + biases

    def activation_bytes(self) -> int:
        """The larger of the two high-water marks of the step: the end of the forward (what the
        backward will read, plus the input) and the end of the backward (the input part's
        gradient, every step's and stacked, then the input's gradient: the product's, its sum
        over the ranks, the result, beside the input and the output)."""
        e, n, H, T, B = self.value_bytes, self.units, self.hidden, self.steps, self.batch
        forward_end = e * (T * B * (H + (GATES + 6) * n) + T * B * H)
        if self.overlap and self.world > 1:
            forward_end += GATES * n * self.nnz_per_row * (4 + e)
        backward_end = e * (2 * T * B * GATES * n + 4 * T * B * H)
        return max(forward_end, backward_end)

    def peak_bytes(self) -> int:
        return self.persistent_bytes() + self.activation_bytes()

    def exchange_bytes(self) -> int:
        """Bytes a rank sends per training step: per time step an all-gather of the state in the
        forward and a reduce-scatter of its gradient in the backward."""
        H, B, T, W = self.hidden, self.batch, self.steps, self.world
        return 0 if W == 1 else int(2 * T * H * B * self.value_bytes * (W - 1) / W)

    def step_seconds(self, memory_bytes_per_s: float, link_bytes_per_s: float, link_latency_s: float) -> float:
        """An estimate (module docstring): the products' bytes over the memory bandwidth, the
        exchange over the link, 2T collectives' latency."""
        e, B, T = self.value_bytes, self.batch, self.steps
        per_weight = self.local_nnz // 2
        # the forward product, the backward's W^T g and its sddmm each read a weight's nonzeros
        # (value and column) and gather B values for each: W_hh once per time step, W_ih once
        # over all T*B columns
        product_bytes = 3 * (T * per_weight * (e + 4 + B * e) + per_weight * (e + 4 + T * B * e))
        compute = product_bytes / memory_bytes_per_s
        exchange = 0.0 if self.world == 1 else self.exchange_bytes() / link_bytes_per_s + 2 * T * link_latency_s
        return compute + exchange


def largest_sharded_hidden(world: int, device_bytes: int, nnz_per_row: int = 32, steps: int = 35, batch: int = 20,
                           value_bytes: int = 4, usable: float = 0.9) -> int:
    """The largest hidden size whose step fits ``usable`` of ``device_bytes`` on every rank."""
    if world < 1 or device_bytes <= 0:
        raise ValueError(f"world must be >= 1 and device_bytes > 0, got {world} and {device_bytes}")
    def fits(h: int) -> bool:
        return ShardedLSTMStep(h, nnz_per_row, steps, batch, world, value_bytes).peak_bytes() <= usable * device_bytes

    lo, hi = 0, 1
    while fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
