"""Model parallelism: a sparse layer's output rows split across the ranks of a process group, for
networks larger than one card (issue 47). Data parallelism (:mod:`.data_parallel`) keeps a whole
model on every rank; here each rank keeps the rows of its share of the units: their values,
index, gradients and optimizer state.

:func:`shard_rows` turns a SparseLinear, SparseRNN, SparseLSTM or SparseGRU into its sharded
form in place. Given the same input on every rank, every rank returns the same output as the
unsharded module (and the same input gradients). The exchange follows Megatron-LM's tensor
parallelism (Shoeybi et al. 2019), by rows: a replicated tensor (the same on every rank, its
gradient too) enters the local rows' product through :class:`_Replicated` (identity; backward:
the ranks' partial gradients summed, one all-reduce), and the local rows' result leaves through
:class:`_Gathered` (one all-gather along the features; backward: the rank's own slice). A
recurrent layer gathers the local units' h once per time step (:class:`_StepState`), so every
rank has the whole state for the next step's product; in the backward the ranks' partial
gradients of that state go back to the units' owners with one reduce-scatter per step.

Checkpoints: :func:`full_state_dict` (one state for any world size). Not yet (issue 47): the
exchange overlapped with the local rows, proj_size,
PackedSequence, topology updates that equal the unsharded ones. See docs/distributed.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..kernels.constants import GATES
from ..nn import SparseGRU, SparseLinear, SparseLSTM, SparseMLP, SparseRNN
from ..nn.mlp import _FaithfulDrop, _ReluDropout
from ..nn.rnn import SparseRNNBase
from ..sparse import SparseWeight

_ops = torch.ops.sparse_engine  # loaded by .. ops

__all__ = ["shard_rows", "shard_ranges", "Shard", "full_state_dict", "full_optimizer_state_dict",
           "load_full_optimizer_state_dict"]


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
def _collective(op, *args, group, what: str):
    """``op(*args, group=group)``; a failure (a rank that died, or the process group's timeout)
    becomes one line that says so, rather than gloo's or NCCL's page."""
    try:
        if op is dist.all_gather_object:
            return op(*args, group=group)
        # waited for here, and the handle dropped here, so that the buffers' last reference goes
        # on this thread (a blocking call leaves it to the backend's thread, where torch's memory
        # profiler does not see the free)
        work = op(*args, group=group, async_op=True)
        work.wait()
        del work
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise RuntimeError(f"sharded {what}: rank {dist.get_rank()} got no answer from the other ranks of its group "
                           f"(one died, or stopped past the process group's timeout): {first}") from None


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


def _all_gather_features(local: torch.Tensor, shard: "Shard", dim: int = -1) -> torch.Tensor:
    """Every rank's ``local`` concatenated in rank order along its features (dimension ``dim``)."""
    local = local.movedim(dim, 0)
    widest = max(e - s for s, e in shard.ranges)
    padded = local.new_zeros(widest, *local.shape[1:])  # all_gather needs equal sizes
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(shard.world)]
    _collective(dist.all_gather, parts, padded, group=shard.group, what="exchange (all_gather)")
    out = torch.cat([p[:e - s] for p, (s, e) in zip(parts, shard.ranges)])
    # a tensor of its own, not a view: its user may change it in place (relu_, dropout)
    return out if dim % out.dim() == 0 else out.movedim(0, dim).contiguous()


def _reduce_scatter_features(grad: torch.Tensor, shard: "Shard", dim: int = -1) -> torch.Tensor:
    """Every rank's ``grad`` summed over the ranks: this rank's features (dimension ``dim``) of it."""
    grad = grad.movedim(dim, 0)
    widest = max(e - s for s, e in shard.ranges)
    parts = []
    for s, e in shard.ranges:
        part = grad.new_zeros(widest, *grad.shape[1:])  # reduce_scatter needs equal sizes
        part[:e - s] = grad[s:e]
        parts.append(part)
    out = torch.empty_like(parts[0])
    _collective(dist.reduce_scatter, out, parts, group=shard.group, what="backward (reduce_scatter)")
    return out[:shard.end - shard.start].movedim(0, dim)


class _StepState(torch.autograd.Function):
    """A recurrent step's local h (units x B, feature-major) gathered once (one all-gather) for its
    two uses: the next step's product of the local rows ((H, B), contiguous, as the product reads
    it), whose gradient on each rank is a partial sum over its rows (backward: reduce-scattered to
    the units' owners), and the replicated output ((B, H), a view; backward: this rank's slice)."""

    @staticmethod
    def forward(ctx, h_loc, shard):
        ctx.shard = shard
        full = _all_gather_features(h_loc, shard, dim=0)
        return full, full.t()

    @staticmethod
    def backward(ctx, g_product, g_output):
        shard = ctx.shard
        local = _reduce_scatter_features(g_product, shard, dim=0)
        return local + g_output.t()[shard.start:shard.end], None


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


class _StepProduct(torch.autograd.Function):
    """W_hh's local rows times the state gathered at step tp (states.Y[tp], H x B). Saves nothing
    of the state: the backward reads it from the output sequence. Backward: the values' gradient
    (sddmm of the local rows), the state's (W^T g, a partial sum over the local rows, reduce-
    scattered to the units' owners)."""

    @staticmethod
    def forward(ctx, h_loc_prev, values, weight, states, tp, shard):
        ctx.weight, ctx.states, ctx.tp, ctx.shard = weight, states, tp, shard
        ctx.save_for_backward(values)
        X = states.Y[tp]
        if isinstance(weight, SparseWeight):
            return _ops.spmm(*weight.csr_index, values, X)
        return values @ X

    @staticmethod
    def backward(ctx, g):
        (values,) = ctx.saved_tensors
        weight, shard = ctx.weight, ctx.shard
        X = ctx.states.check()[ctx.tp]
        g = g.contiguous()
        if isinstance(weight, SparseWeight):
            g_values = _ops.sddmm(*weight.index, g, X) if ctx.needs_input_grad[1] else None
            g_state = _ops.spmm_t(*weight.index, values, g, None)
        else:
            g_values = g @ X.t() if ctx.needs_input_grad[1] else None
            g_state = values.t() @ g
        return _reduce_scatter_features(g_state, shard, dim=0), g_values, None, None, None, None


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


# ------------------------------------------------------------------ the rows of a weight
def _row_block(weight, rows: torch.Tensor):
    """The rows ``rows`` (ascending, int64) of a SparseWeight or a dense Parameter, as a new one."""
    if isinstance(weight, SparseWeight):
        row_ptr, col_idx, values = weight.row_ptr, weight.col_idx, weight.values.detach()
        lengths = (row_ptr[1:] - row_ptr[:-1])[rows]
        new_ptr = torch.zeros(len(rows) + 1, dtype=torch.int64, device=row_ptr.device)
        new_ptr[1:] = torch.cumsum(lengths, 0)
        starts = row_ptr[rows]
        entries = (torch.repeat_interleave(starts - new_ptr[:-1], lengths)
                   + torch.arange(int(new_ptr[-1]), device=row_ptr.device))
        return SparseWeight(new_ptr, col_idx[entries], values[entries].clone(), (len(rows), weight.shape[1]),
                            requires_grad=weight.values.requires_grad)
    return nn.Parameter(weight.detach()[rows].clone(), requires_grad=weight.requires_grad)


def _device(weight) -> torch.device:
    return weight.values.device if isinstance(weight, SparseWeight) else weight.device


def _product(weight, x: torch.Tensor) -> torch.Tensor:
    """weight @ x, x feature-major (features x columns), for a SparseWeight or a dense weight."""
    return ops.spmm(weight, x) if isinstance(weight, SparseWeight) else weight @ x


def _group_of(group) -> tuple[object, int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("shard_rows needs torch.distributed initialized first (torch.distributed."
                           "init_process_group, or a launch with torchrun)")
    return group, dist.get_rank(group), dist.get_world_size(group)


# ------------------------------------------------------------------ the sharded modules
class ShardedSparseLinear(SparseLinear):
    """A SparseLinear whose weight holds this rank's output rows (see :func:`shard_rows`)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.shape[-1] != self.in_features:
            raise ValueError(f"input must have last dimension in_features={self.in_features}, "
                             f"got shape {tuple(input.shape)}")
        lead = input.shape[:-1]
        x = replicated(input.reshape(-1, self.in_features), self.shard)
        y = _product(self.weight, x.t()).t()
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return gathered(y, self.shard).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", rows {self.shard.start}:{self.shard.end} of rank {self.shard.rank}"


def _cell(mode: str, gx, gh, h_loc, c_loc):
    """One step of the local units (feature-major, units x B) from the gates' input part gx and
    hidden part gh (biases in): torch.nn's cell equations. Returns (h, c)."""
    if mode == "LSTM":
        i, f, g, o = gx.add(gh).chunk(4)
        c = torch.sigmoid(f) * c_loc + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    if mode == "GRU":
        xr, xz, xn = gx.chunk(3)
        hr, hz, hn = gh.chunk(3)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return n + z * (h_loc - n), None
    pre = gx + gh
    return (torch.tanh(pre) if mode == "RNN_TANH" else torch.relu(pre)), None


class ShardedRNNBase:
    """The forward of a sharded SparseRNN/LSTM/GRU (mixed in before the module's class): each
    layer-direction's input part for all steps as one product of the local rows, then per step
    the local rows of W_hh against the whole state, the cell on the local units, and the local h
    gathered from every rank."""

    def forward(self, input, hx=None):
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise TypeError("a sharded recurrent module does not take a PackedSequence yet (issue 47)")
        shard, H, D = self.shard, self.hidden_size, 2 if self.bidirectional else 1
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(1)
        if self.batch_first and batched:
            x = x.transpose(0, 1)
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input must have last dimension input_size={self.input_size}, got shape "
                             f"{tuple(input.shape)}")
        T, B = x.shape[0], x.shape[1]
        lstm = self.mode == "LSTM"
        h0, c0 = (hx if lstm and hx is not None else (hx, None))
        zeros = x.new_zeros(self.num_layers * D, B, H)
        h0 = zeros if h0 is None else (h0 if batched else h0.unsqueeze(1))
        if lstm:
            c0 = zeros if c0 is None else (c0 if batched else c0.unsqueeze(1))
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            xin = replicated(x, shard).reshape(T * B, -1).t()  # (features, T*B)
            outs = []
            for d in range(D):
                k = layer * D + d
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                gx = _product(getattr(self, "weight_ih" + sfx), xin)
                if self.bias:  # in place: the product's backward does not read its output
                    gx.add_(getattr(self, "bias_ih" + sfx)[:, None])
                # one tensor per step, by one unbind: its backward stacks the steps' gradients once
                # (an index per step would make a zeros tensor of the whole gx per step)
                gx = gx.view(-1, T, B).unbind(1)
                w_hh = getattr(self, "weight_hh" + sfx)
                v_hh = w_hh.values if isinstance(w_hh, SparseWeight) else w_hh
                states = _States(T, H, B, x)
                c_loc = scattered(c0[k], shard).t() if lstm else None  # (units, B)
                h_loc = scattered(h0[k], shard).t()
                h_locs = [None] * T
                tp = None
                for s in range(T):
                    t = T - 1 - s if d else s
                    if tp is None:  # the first step: the given state, replicated
                        gh = _product(w_hh, replicated(h0[k], shard).t())
                    else:
                        gh = _StepProduct.apply(h_loc, v_hh, w_hh, states, tp, shard)
                    if self.bias:
                        gh = gh + getattr(self, "bias_hh" + sfx)[:, None]
                    h_loc, c_loc = _cell(self.mode, gx[t], gh, h_loc, c_loc)
                    with torch.no_grad():  # every rank's units: the next step's state, the output
                        states.Y[t] = _all_gather_features(h_loc, shard, dim=0)
                    h_locs[t], tp = h_loc, t
                states.version = states.Y._version
                y = _Sequence.apply(states, shard, *h_locs).transpose(1, 2)  # (T, B, H), a view
                outs.append(y)
                h_n.append(y[tp])
                if lstm:
                    c_n.append(gathered(c_loc.t(), shard))
            x = torch.cat(outs, dim=-1) if D == 2 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                # the unsharded module's draws (the same seed on every rank): its dropout runs on
                # the step-major (T, D*H, B) layout
                x = F.dropout(x.permute(0, 2, 1).contiguous(), self.dropout, training=True).permute(0, 2, 1)
        out = x.transpose(0, 1) if self.batch_first and batched else x
        h_n = torch.stack(h_n)
        c_n = torch.stack(c_n) if lstm else None
        if not batched:
            out, h_n = out.squeeze(1), h_n.squeeze(1)
            c_n = c_n.squeeze(1) if lstm else None
        return out, ((h_n, c_n) if lstm else h_n)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", units {self.shard.start}:{self.shard.end} of rank {self.shard.rank}"


class ShardedSparseRNN(ShardedRNNBase, SparseRNN):
    """A SparseRNN whose weights hold this rank's units' rows (see :func:`shard_rows`)."""


class ShardedSparseLSTM(ShardedRNNBase, SparseLSTM):
    """A SparseLSTM whose weights hold this rank's units' gate rows (see :func:`shard_rows`)."""


class ShardedSparseGRU(ShardedRNNBase, SparseGRU):
    """A SparseGRU whose weights hold this rank's units' gate rows (see :func:`shard_rows`)."""


class ShardedSparseMLP(SparseMLP):
    """A SparseMLP whose layers hold this rank's output rows (see :func:`shard_rows`): each
    layer's local rows, then the pre-activations gathered from every rank, so that ReLU and
    dropout run on the whole width with the same draws on every rank (the unsharded model's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"x must be a (batch, {self.sizes[0]}) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        h = x.t().contiguous()  # feature-major, as SparseMLP
        p, last = self.dropout, len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            z = _product(layer.weight, replicated(h, layer.shard)).add_(layer.bias[:, None])
            z = gathered(z, layer.shard, dim=0)
            if self.faithful and not self.training and i > 0 and p > 0:
                z = z * (1.0 - p)
            if i == last:
                return z.t()
            if not (self.training and p > 0):
                h = torch.relu(z)
            elif self.faithful:
                h = _FaithfulDrop.apply(torch.relu_(z), p)
            else:
                h = _ReluDropout.apply(z, p, True)
        raise AssertionError("unreachable")


_SHARDED = {SparseLinear: ShardedSparseLinear, SparseRNN: ShardedSparseRNN, SparseLSTM: ShardedSparseLSTM,
            SparseGRU: ShardedSparseGRU}


def _unit_rows(G: int, H: int, start: int, end: int, device) -> torch.Tensor:
    """The rows of a gate-major (G*H)-row matrix that belong to units [start, end)."""
    units = torch.arange(start, end, device=device)
    return (torch.arange(G, device=device)[:, None] * H + units[None, :]).reshape(-1)


def shard_rows(module: nn.Module, group=None) -> nn.Module:
    """Splits ``module``'s sparse weights by output rows across the ranks of ``group`` (None: the
    default group), in place, and returns it: each rank keeps its share of the units (SparseLinear:
    of the output features; the first ``n % world`` ranks one more) with their values, index and
    bias, and forward exchanges the rest (module docstring). Call it on every rank of the group,
    on identical modules (the same seed), before building the optimizer.

    Supported: SparseLinear, SparseMLP (each of its layers), SparseRNN, SparseLSTM, SparseGRU (any
    number of layers, either direction, ``batch_first``, dense or sparse input weights, dropout
    between layers with the unsharded module's draws when every rank has the same seed); not yet
    ``proj_size`` or parametrized weights."""
    group, rank, world = _group_of(group)
    kind = type(module)
    if kind in _SHARDED.values():
        raise ValueError(f"shard_rows: the module is already sharded ({kind.__name__})")
    if kind is SparseMLP:
        for layer in module.layers:
            shard_rows(layer, group)
        module.__class__ = ShardedSparseMLP
        return module
    if kind is ShardedSparseMLP:
        raise ValueError("shard_rows: the module is already sharded (ShardedSparseMLP)")
    if kind not in _SHARDED:
        raise TypeError("shard_rows takes a SparseLinear, SparseMLP, SparseRNN, SparseLSTM or SparseGRU, got "
                        f"{kind.__name__} (shard its layers one by one)")
    if isinstance(module, SparseRNNBase):
        if module.proj_size:
            raise ValueError("shard_rows: proj_size is not supported yet (issue 47)")
        H, G = module.hidden_size, GATES[module.mode]
        ranges = shard_ranges(H, world)
        start, end = ranges[rank]
        for name in module._flat_weights_names:
            w = getattr(module, name)
            rows = _unit_rows(G, H, start, end, _device(w))
            setattr(module, name, _row_block(w, rows))
    else:
        ranges = shard_ranges(module.out_features, world)
        start, end = ranges[rank]
        rows = torch.arange(start, end, device=_device(module.weight))
        module.weight = _row_block(module.weight, rows)
        if module.bias is not None:
            module.bias = nn.Parameter(module.bias.detach()[start:end].clone())
    module.shard = Shard(group, rank, world, ranges)
    module._shard_rows = {name: _sharded_rows_of(module, name) for name in _sharded_names(module)}
    module.__class__ = _SHARDED[kind]
    return module


# ------------------------------------------------------------------ checkpoints across world sizes
def _sharded_names(module) -> list[str]:
    """The state_dict prefixes of a (sharding) module's row-split weights and biases."""
    if isinstance(module, SparseRNNBase):
        return list(module._flat_weights_names)
    return ["weight"] + (["bias"] if module.bias is not None else [])


def _sharded_rows_of(module, name: str) -> torch.Tensor:
    """The global rows of weight ``name`` that this rank keeps (CPU int64)."""
    s = module.shard
    if isinstance(module, SparseRNNBase):
        return _unit_rows(GATES[module.mode], module.hidden_size, s.start, s.end, "cpu")
    return torch.arange(s.start, s.end)


def _full_rows(local, rows: torch.Tensor, n_rows: int, shard: Shard, extras=()) -> tuple[dict, list]:
    """The state of the whole (n_rows-row) weight from every rank's rows (a collective), and each
    of ``extras`` (tensors laid out as the weight's values, or as the dense weight: an optimizer's
    moments) in the whole weight's layout."""
    extras = [t.detach().cpu() for t in extras]
    if isinstance(local, SparseWeight):
        row_ptr = local.row_ptr.cpu()
        mine = (torch.repeat_interleave(rows, row_ptr[1:] - row_ptr[:-1]), local.col_idx.cpu(),
                local.values.detach().cpu(), extras)
    else:
        mine = (rows, local.detach().cpu(), extras)
    parts = [None] * shard.world
    _collective(dist.all_gather_object, parts, mine, group=shard.group, what="full_state_dict (all_gather_object)")
    if isinstance(local, SparseWeight):
        entry_row = torch.cat([p[0] for p in parts])
        order = torch.sort(entry_row, stable=True).indices  # a row's entries come from one rank, in order
        row_ptr = torch.zeros(n_rows + 1, dtype=torch.int64)
        row_ptr[1:] = torch.cumsum(torch.bincount(entry_row, minlength=n_rows), 0)
        full_extras = [torch.cat([p[3][i] for p in parts])[order] for i in range(len(extras))]
        return {"row_ptr": row_ptr, "col_idx": torch.cat([p[1] for p in parts])[order],
                "values": torch.cat([p[2] for p in parts])[order],
                "_extra_state": {"shape": (n_rows, local.shape[1])}}, full_extras

    def whole(i):  # i: None for the weight, else an extra
        first = parts[0][1] if i is None else parts[0][2][i]
        out = torch.empty((n_rows, *first.shape[1:]), dtype=first.dtype)
        for p in parts:
            out[p[0]] = p[1] if i is None else p[2][i]
        return out
    return {"": whole(None)}, [whole(i) for i in range(len(extras))]


def _copy(v):
    """A CPU copy of a state tensor (not the live one: training goes on changing that in place)."""
    return v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v


def _sharded_params(model: nn.Module) -> dict:
    """{id of a sharded Parameter: (its name in model.state_dict(), its module, the weight's name,
    the rows this rank keeps)}."""
    out = {}
    for prefix, module in model.named_modules():
        if not isinstance(module, tuple(_SHARDED.values())):
            continue
        pre = prefix + "." if prefix else ""
        for name, rows in module._shard_rows.items():
            local = getattr(module, name)
            sparse = isinstance(local, SparseWeight)
            param, key = (local.values, pre + name + ".values") if sparse else (local, pre + name)
            out[id(param)] = (key, module, name, rows)
    return out


def _n_rows(module) -> int:
    return GATES[module.mode] * module.hidden_size if isinstance(module, SparseRNNBase) else module.out_features


def full_state_dict(model: nn.Module) -> dict:
    """``model.state_dict()`` as the unsharded model would have it: every sharded module's rows
    gathered from all ranks of its group (a collective: every rank calls it), on the CPU. Save it
    from one rank; it loads into the unsharded model (``load_state_dict``), which
    :func:`shard_rows` then splits for any world size, bit for bit."""
    state = {k: _copy(v) for k, v in model.state_dict().items()}
    for prefix, module in model.named_modules():
        if not isinstance(module, tuple(_SHARDED.values())):
            continue
        pre = prefix + "." if prefix else ""
        for name, rows in module._shard_rows.items():
            whole, _ = _full_rows(getattr(module, name), rows, _n_rows(module), module.shard)
            for key, value in whole.items():
                state[pre + name + ("." + key if key else "")] = value
    return state


def full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state as for the unsharded model (a collective: every rank calls it), by
    parameter name: ``{"state": {name: {key: value}}, "param_groups": [...]}``, each group's
    ``params`` as names. A state tensor shaped like its parameter (Adam's moments) is gathered by
    rows like the parameter; any other (a step count) is kept. With :func:`full_state_dict`, the
    checkpoint that resumes training at any world size (:func:`load_full_optimizer_state_dict`)."""
    names = {id(p): n for n, p in model.named_parameters()}
    sharded = _sharded_params(model)
    out_state = {}
    for p, name in ((p, names[id(p)]) for g in optimizer.param_groups for p in g["params"]):
        st = optimizer.state.get(p, {})
        like = [k for k, v in st.items() if isinstance(v, torch.Tensor) and v.shape == p.shape]
        entry = {k: _copy(v) for k, v in st.items() if k not in like}
        if id(p) in sharded:
            key, module, wname, rows = sharded[id(p)]
            _, gathered_ = _full_rows(getattr(module, wname), rows, _n_rows(module), module.shard,
                                      [st[k] for k in like])
            entry.update(zip(like, gathered_))
            name = key
        else:
            entry.update({k: _copy(st[k]) for k in like})
        out_state[name] = entry
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [names[id(p)] for p in g["params"]]}
              for g in optimizer.param_groups]
    return {"state": out_state, "param_groups": groups}


def load_full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                                   model_state: dict) -> None:
    """Loads :func:`full_optimizer_state_dict` into ``optimizer`` of ``model`` (sharded for any
    world size, or not at all), each sharded parameter taking its rows; ``model_state``: the
    :func:`full_state_dict` saved with it (the whole weights' row pointers). Build the optimizer
    on the sharded model first, as for training."""
    names = {id(p): n for n, p in model.named_parameters()}
    sharded = _sharded_params(model)
    groups = state["param_groups"]
    if len(groups) != len(optimizer.param_groups):
        raise ValueError(f"state has {len(groups)} parameter groups, the optimizer {len(optimizer.param_groups)}")
    for group, saved in zip(optimizer.param_groups, groups):
        group.update({k: v for k, v in saved.items() if k != "params"})
        for p in group["params"]:
            key, module, wname, rows = sharded.get(id(p), (names[id(p)], None, None, None))
            if key not in state["state"]:
                raise KeyError(f"no optimizer state for parameter {key!r}")
            entry = {}
            for k, v in state["state"][key].items():
                if isinstance(v, torch.Tensor) and module is not None and v.dim() > 0 and v.shape != p.shape:
                    if isinstance(getattr(module, wname), SparseWeight):
                        row_ptr = model_state[key.rsplit(".", 1)[0] + ".row_ptr"]
                        lengths = row_ptr[rows + 1] - row_ptr[rows]
                        v = v[torch.repeat_interleave(row_ptr[rows] - torch.cumsum(lengths, 0) + lengths, lengths)
                              + torch.arange(int(lengths.sum()))]
                    else:
                        v = v[rows]
                # copies: training changes the state in place, and `state` may be loaded again
                entry[k] = v.to(p.device if v.dim() > 0 else v.device, copy=True) if isinstance(v, torch.Tensor) else v
            optimizer.state[p] = entry
