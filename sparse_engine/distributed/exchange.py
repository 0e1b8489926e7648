"""How the ranks of a row-sharded module exchange (:mod:`.sharding`): which rows each rank keeps
(:func:`shard_ranges`, :class:`Shard`), and the autograd Functions that move tensors between the
local rows and the replicated whole (Megatron-LM's tensor parallelism by rows, Shoeybi et al.
2019): a replicated tensor enters the local rows' product through :class:`_Replicated`
(identity; backward: an all-reduce of the ranks' partial gradients), the local rows' result leaves
through :class:`_Gathered` (an all-gather; backward: the rank's own slice), a recurrent step's
product reads the whole state from the output sequence (:class:`_StepProduct`, :class:`_Sequence`;
backward: a reduce-scatter to the units' owners). Every collective fails with one line
(:func:`_collective`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from .. import ops  # noqa: F401  (loads the compiled operators)
from ..sparse import SparseWeight

_ops = torch.ops.sparse_engine

__all__ = ["shard_ranges", "Shard", "replicated", "gathered", "scattered"]


def shard_ranges(n: int, world: int) -> list[tuple[int, int]]:
    """[start, end) of each rank's share of n rows: the first n % world ranks one more."""
    base, extra = divmod(n, world)
    out, start = [], 0
    for r in range(world):
        size = base + (r < extra)
        out.append((start, start + size))
        start += size
    return out


@dataclass
class Shard:
    """Where a sharded module's rows are: its process group, this rank, every rank's [start, end)
    of the units (SparseLinear: of the output features)."""
    group: object
    rank: int
    world: int
    ranges: list

    @property
    def start(self) -> int:
        return self.ranges[self.rank][0]

    @property
    def end(self) -> int:
        return self.ranges[self.rank][1]


# ------------------------------------------------------------------ the exchange
def _collective(op, *args, group, what: str, wait: bool = True):
    """``op(*args, group=group)``; a failure (a rank that died, or the process group's timeout)
    becomes one line that says so, rather than gloo's or NCCL's page. ``wait`` False: started, and
    a function returned that waits for it (with the same one line), so that work can go on meanwhile."""
    try:
        if op is dist.all_gather_object:
            return op(*args, group=group)
        # waited for on this thread, and the handle dropped here, so that the buffers' last reference
        # goes on this thread (a blocking call leaves it to the backend's thread, where torch's memory
        # profiler does not see the free)
        work = op(*args, group=group, async_op=True)
    except RuntimeError as e:
        raise _failure(e, what) from None
    if not wait:
        return lambda handle=work: _wait(handle, what)
    _wait(work, what)
    return None


def _wait(work, what: str) -> None:
    try:
        work.wait()
    except RuntimeError as e:
        raise _failure(e, what) from None


def _failure(e: RuntimeError, what: str) -> RuntimeError:
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
    return RuntimeError(f"sharded {what}: rank {dist.get_rank()} got no answer from the other ranks of its group "
                        f"(one died, or stopped past the process group's timeout): {first}")


class _Replicated(torch.autograd.Function):
    """A replicated tensor entering the local rows: identity; backward sums the ranks' partial
    gradients (all-reduce), so the gradient of the replicated tensor is replicated too."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        _collective(dist.all_reduce, grad, group=ctx.group, what="backward (all_reduce)")
        return grad, None


def _all_gather_features(local: torch.Tensor, shard: "Shard", dim: int = -1, wait: bool = True):
    """Every rank's ``local`` concatenated in rank order along its features (dimension ``dim``);
    ``wait`` False: a function that waits for the collective and returns that (work goes on meanwhile)."""
    local = local.movedim(dim, 0)
    widest = max(e - s for s, e in shard.ranges)
    padded = local.new_zeros(widest, *local.shape[1:])  # all_gather needs equal sizes
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(shard.world)]
    done = _collective(dist.all_gather, parts, padded, group=shard.group, what="exchange (all_gather)", wait=False)

    def result():
        done()
        out = torch.cat([p[:e - s] for p, (s, e) in zip(parts, shard.ranges)])
        # a tensor of its own, not a view: its user may change it in place (relu_, dropout)
        return out if dim % out.dim() == 0 else out.movedim(0, dim).contiguous()
    return result() if wait else result


def _reduce_scatter_features(grad: torch.Tensor, shard: "Shard", dim: int = -1, wait: bool = True):
    """Every rank's ``grad`` summed over the ranks: this rank's features (dimension ``dim``) of it;
    ``wait`` False: a function that waits for the collective and returns that (work goes on meanwhile)."""
    grad = grad.movedim(dim, 0)
    widest = max(e - s for s, e in shard.ranges)
    parts = []
    for s, e in shard.ranges:
        part = grad.new_zeros(widest, *grad.shape[1:])  # reduce_scatter needs equal sizes
        part[:e - s] = grad[s:e]
        parts.append(part)
    out = torch.empty_like(parts[0])
    done = _collective(dist.reduce_scatter, out, parts, group=shard.group, what="backward (reduce_scatter)",
                       wait=False)

    def result():
        done()
        return out[:shard.end - shard.start].movedim(0, dim)
    return result() if wait else result


class _States:
    """A layer-direction's gathered states, (T, H, B): written step by step (outside autograd), the
    output sequence, and read again by each step's backward for its weight gradient, so that no
    rank keeps a second copy of every step's whole state. ``version``: the buffer's version after
    the last write (a later in-place change of the output would make the backward wrong)."""

    def __init__(self, T, H, B, like: torch.Tensor):
        self.Y = like.new_empty(T, H, B)
        self.version = None

    def check(self) -> torch.Tensor:
        if self.Y._version != self.version:
            raise RuntimeError("the output of a sharded recurrent module was modified in place before the "
                               "backward, which reads it (clone it before changing it)")
        return self.Y


class _OwnColumns:
    """A sparse W_hh's local rows split by columns for one forward: those of this rank's own units
    (``start:end``), whose state is here before the step's all-gather ends, and the others'. So
    the product of the first runs while the gather is in flight (a one-direction layer's overlap;
    the sum of a row is the two parts' sums added). Index and values are copied once per forward."""

    def __init__(self, weight: SparseWeight, start: int, end: int):
        row_ptr, col = weight.row_ptr, weight.col_idx
        values = weight.values.detach()
        own = (col >= start) & (col < end)
        own_ptr = torch.cat([own.new_zeros(1, dtype=torch.int64), own.cumsum(0)])[row_ptr]
        rows = (weight.shape[0], end - start)
        self.own = SparseWeight(own_ptr, col[own] - start, values[own], rows, validate=False, requires_grad=False)
        self.other = SparseWeight(row_ptr - own_ptr, col[~own], values[~own], weight.shape, validate=False,
                                  requires_grad=False)

    def own_part(self, h_loc: torch.Tensor) -> torch.Tensor:
        """The own units' columns times their state (units x B)."""
        return _ops.spmm(*self.own.csr_index, self.own.values, h_loc.contiguous())

    def other_part(self, X: torch.Tensor) -> torch.Tensor:
        """The other units' columns times the whole state (H x B, the own units' rows unread)."""
        return _ops.spmm(*self.other.csr_index, self.other.values, X)


class _StepProduct(torch.autograd.Function):
    """W_hh's local rows times the state gathered at step tp (states.Y[tp], H x B), after
    ``wait()`` (the gather's end; with ``split``, an :class:`_OwnColumns`, the own units' columns
    are multiplied before it). Saves nothing of the state: the backward reads it from the output
    sequence. Backward: the values' gradient (sddmm of the local rows), the state's (W^T g, a
    partial sum over the local rows, reduce-scattered to the units' owners)."""

    @staticmethod
    def forward(ctx, h_loc_prev, values, weight, states, tp, shard, split, wait):
        ctx.weight, ctx.states, ctx.tp, ctx.shard = weight, states, tp, shard
        ctx.save_for_backward(values)
        own = None if split is None else split.own_part(h_loc_prev)
        wait()
        X = states.Y[tp]
        if own is not None:
            return own.add_(split.other_part(X))
        if isinstance(weight, SparseWeight):
            return _ops.spmm(*weight.csr_index, values, X)
        return values @ X

    @staticmethod
    def backward(ctx, g):
        (values,) = ctx.saved_tensors
        weight, shard = ctx.weight, ctx.shard
        X = ctx.states.check()[ctx.tp]
        g = g.contiguous()
        # the state's gradient first, its reduce-scatter in flight while the values' gradient is made
        sparse = isinstance(weight, SparseWeight)
        g_state = _ops.spmm_t(*weight.index, values, g, None) if sparse else values.t() @ g
        g_state = _reduce_scatter_features(g_state, shard, dim=0, wait=False)
        g_values = None
        if ctx.needs_input_grad[1]:
            g_values = _ops.sddmm(*weight.index, g, X) if sparse else g @ X.t()
        return g_state(), g_values, None, None, None, None, None, None


class _Sequence(torch.autograd.Function):
    """The gathered states as the layer-direction's output (T, H, B); backward: each step's local
    h gets its own units' slice of the (replicated) gradient."""

    @staticmethod
    def forward(ctx, states, shard, *h_locs):
        ctx.shard = shard
        # a view, so that the buffer itself gets no grad_fn: the steps' backward nodes hold the
        # buffer, and a buffer holding the graph would make a reference cycle that outlives the step
        return states.Y.view_as(states.Y)

    @staticmethod
    def backward(ctx, g):
        s, e = ctx.shard.start, ctx.shard.end
        return (None, None, *g[:, s:e].unbind(0))


class _Gathered(torch.autograd.Function):
    """The local rows' result gathered from every rank in rank order along its features
    (dimension ``dim``): a replicated tensor; backward: this rank's slice of the (replicated)
    gradient."""

    @staticmethod
    def forward(ctx, local, shard, dim=-1):
        ctx.start, ctx.size, ctx.dim = shard.start, local.shape[dim], dim
        return _all_gather_features(local, shard, dim)

    @staticmethod
    def backward(ctx, grad):
        return grad.narrow(ctx.dim, ctx.start, ctx.size).contiguous(), None, None


class _Scattered(torch.autograd.Function):
    """A replicated tensor's slice of this rank's features (last dimension); backward gathers the
    ranks' slices of the gradient, so the replicated tensor's gradient is replicated."""

    @staticmethod
    def forward(ctx, x, shard):
        ctx.shard = shard
        return x.narrow(-1, shard.start, shard.end - shard.start).contiguous()

    @staticmethod
    def backward(ctx, grad):
        return _all_gather_features(grad.contiguous(), ctx.shard), None


def replicated(x: torch.Tensor, shard: Shard) -> torch.Tensor:
    return _Replicated.apply(x, shard.group)


def gathered(local: torch.Tensor, shard: Shard, dim: int = -1) -> torch.Tensor:
    return _Gathered.apply(local, shard, dim)


def scattered(x: torch.Tensor, shard: Shard) -> torch.Tensor:
    return _Scattered.apply(x, shard)
