"""Model parallelism: a sparse layer's output rows split across the ranks of a process group, for
networks larger than one card (issue 47). Data parallelism (:mod:`.data_parallel`) keeps a whole
model on every rank; here each rank keeps the rows of its share of the units: their values,
index, gradients and optimizer state.

:func:`shard_rows` turns a SparseLinear, SparseMLP, SparseRNN, SparseLSTM or SparseGRU into its
sharded form in place. Given the same input on every rank, every rank returns the same output as
the unsharded module (and the same input gradients). How the ranks exchange is :mod:`.exchange`
(Megatron-LM's tensor parallelism by rows); a recurrent layer gathers the local units' h once per
time step, so every rank has the whole state for the next step's product, and in the backward
the ranks' partial gradients of that state go to the units' owners with one reduce-scatter per
step. Checkpoints for any world size: :mod:`.checkpoint`; SET's, RigL's and Selfish-RNN's updates as the
unsharded ones: :mod:`.topology`; growth by gradient records each rank's rows' factors
(:class:`_GrowthFactors`). While a step's gather is in flight, a bidirectional layer computes the
other direction's step and a one-direction layer the product of its own units' columns
(:class:`~.exchange._OwnColumns`). Not yet (issue 47): proj_size. See docs/distributed.md.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .. import ops
from ..kernels.constants import GATES
from ..nn import SparseGRU, SparseLinear, SparseLSTM, SparseMLP, SparseRNN
from ..nn.mlp import _FaithfulDrop, _ReluDropout
from ..nn.rnn import SparseRNNBase
from ..nn.sequences import packed_positions, run_by_length, time_major
from ..sparse import SparseWeight
from .topology import RowShard
from .exchange import (Shard, _all_gather_features, _OwnColumns, _Sequence, _States, _StepProduct, gathered,
                       replicated, scattered, shard_ranges)

__all__ = ["shard_rows", "ShardedSparseLinear", "ShardedSparseMLP", "ShardedSparseRNN", "ShardedSparseLSTM",
           "ShardedSparseGRU"]


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
        lstm, D = self.mode == "LSTM", 2 if self.bidirectional else 1
        h0, c0 = (hx if lstm and hx is not None else (hx, None))
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, h0, c0)
        x, batched = time_major(input, self.batch_first)
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input must have last dimension input_size={self.input_size}, got shape "
                             f"{tuple(input.shape)}")
        zeros = x.new_zeros(self.num_layers * D, x.shape[1], self.hidden_size)
        h0 = zeros if h0 is None else (h0 if batched else h0.unsqueeze(1))
        if lstm:
            c0 = zeros if c0 is None else (c0 if batched else c0.unsqueeze(1))
        out, h_n, c_n = self._sequence(x, h0, c0)
        out = out.transpose(0, 1) if self.batch_first and batched else out
        if not batched:
            out, h_n = out.squeeze(1), h_n.squeeze(1)
            c_n = c_n.squeeze(1) if lstm else None
        return out, ((h_n, c_n) if lstm else h_n)

    def _forward_packed(self, input: PackedSequence, h0, c0):
        """torch's semantics for a PackedSequence, as the unsharded module: the sequences grouped
        by length, each group run on its own (every rank the same groups in the same order),
        outputs and states put back in the packed and the caller's order."""
        data, batch_sizes, sorted_indices, unsorted_indices = input
        lengths, pos = packed_positions(batch_sizes, unsorted_indices)
        B, D, lstm = int(batch_sizes[0]), 2 if self.bidirectional else 1, self.mode == "LSTM"
        zeros = data.new_zeros(self.num_layers * D, B, self.hidden_size)
        h0 = zeros if h0 is None else h0
        c0 = (zeros if c0 is None else c0) if lstm else None
        def run(i, x, h0_g, c0_g):
            y, h, c = self._sequence(x, h0_g, c0_g, first=(i == 0))
            return y.reshape(-1, y.shape[-1]), h, c
        out, h_n, c_n = run_by_length(data, lengths, pos, h0, c0, run)
        packed = PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices)
        return packed, ((h_n, c_n) if lstm else h_n)

    def _sequence(self, x, h0, c0, first: bool = True):
        """Every layer over a time-major x (T, B, input): (output (T, B, D*H), h_n, c_n). ``first``:
        the first run of this forward (a PackedSequence runs once per length group), for the
        gradient factors' record."""
        shard, D = self.shard, 2 if self.bidirectional else 1
        T, B = x.shape[0], x.shape[1]
        lstm = self.mode == "LSTM"
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            xin = replicated(x, shard).reshape(T * B, -1).t()  # (features, T*B)
            runs = [self._direction(layer, d, xin, h0, c0, T, B, first) for d in range(D)]
            # both directions step by step together: one's gather of h is in flight while the
            # other computes its step (the same operations, the same bits, in another order); one
            # direction multiplies its own units' columns meanwhile (run.split)
            for s in range(T):
                for run in runs:
                    t = T - 1 - s if run.d else s
                    if run.gather is not None:  # the state of the step before, gathered
                        gh = _StepProduct.apply(run.h_loc, run.v_hh, run.w_hh, run.states, run.tp, shard, run.split,
                                                run.finish_gather)
                    else:  # the first step: the given state, replicated
                        gh = _product(run.w_hh, replicated(h0[run.k], shard).t())
                    if run.factors is not None:
                        run.factors.watch_step(t, gh)
                    if self.bias:
                        gh = gh + getattr(self, "bias_hh" + run.sfx)[:, None]
                    run.h_loc, run.c_loc = _cell(self.mode, run.gx[t], gh, run.h_loc, run.c_loc)
                    with torch.no_grad():  # every rank's units: the next step's state, the output
                        run.gather = (t, _all_gather_features(run.h_loc, shard, dim=0, wait=False))
                    run.h_locs[t] = run.h_loc
            outs = []
            for run in runs:
                run.finish_gather()
                run.states.version = run.states.Y._version
                y = _Sequence.apply(run.states, shard, *run.h_locs).transpose(1, 2)  # (T, B, H), a view
                outs.append(y)
                h_n.append(y[run.tp])
                if lstm:
                    c_n.append(gathered(run.c_loc.t(), shard))
            x = torch.cat(outs, dim=-1) if D == 2 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                # the unsharded module's draws (the same seed on every rank): its dropout runs on
                # the step-major (T, D*H, B) layout
                x = F.dropout(x.permute(0, 2, 1).contiguous(), self.dropout, training=True).permute(0, 2, 1)
        return x, torch.stack(h_n), (torch.stack(c_n) if lstm else None)

    def _direction(self, layer: int, d: int, xin, h0, c0, T: int, B: int, first: bool) -> "_Direction":
        """A layer-direction's run before its first step: the input part of all steps as one
        product of the local rows (then one tensor per step), the local initial state, and while a
        controller asks for them (``record_grad_factors``) the hooks that record (G, X)."""
        shard, k = self.shard, layer * (2 if self.bidirectional else 1) + d
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        gx = _product(getattr(self, "weight_ih" + sfx), xin)
        if self.bias:  # in place: the product's backward does not read its output
            gx.add_(getattr(self, "bias_ih" + sfx)[:, None])
        run = _Direction(d, k, sfx)
        # one tensor per step, by one unbind: its backward stacks the steps' gradients once
        # (an index per step would make a zeros tensor of the whole gx per step)
        run.gx = gx.view(-1, T, B).unbind(1)
        run.w_hh = getattr(self, "weight_hh" + sfx)
        run.v_hh = run.w_hh.values if isinstance(run.w_hh, SparseWeight) else run.w_hh
        if self.overlap and shard.world > 1 and not self.bidirectional and isinstance(run.w_hh, SparseWeight):
            run.split = _OwnColumns(run.w_hh, shard.start, shard.end)
        run.states = _States(T, self.hidden_size, B, xin)
        run.c_loc = scattered(c0[k], shard).t() if self.mode == "LSTM" else None  # (units, B)
        run.h_loc = scattered(h0[k], shard).t()
        run.h_locs = [None] * T
        sink = self._factor_sink(sfx, first) if gx.requires_grad else None
        if sink is not None:
            run.factors = _GrowthFactors(sink, run, xin, h0[k].t(), gx)
        return run

    def extra_repr(self) -> str:
        return super().extra_repr() + f", units {self.shard.start}:{self.shard.end} of rank {self.shard.rank}"


class _Direction:
    """A layer-direction's state between steps (ShardedRNNBase._sequence): the local h (c), every
    step's local h, the gathered states, the step the last gather is for and its wait."""

    def __init__(self, d: int, k: int, sfx: str):
        self.d, self.k, self.sfx = d, k, sfx
        self.gx = self.w_hh = self.v_hh = self.states = self.h_loc = self.c_loc = self.h_locs = None
        self.gather = None  # (step, the wait of its all-gather) or None: before the first step
        self.factors: _GrowthFactors | None = None  # recording (G, X) for growth by gradient
        self.split: _OwnColumns | None = None  # one direction: W_hh's own units' columns apart

    @property
    def tp(self) -> int:
        """The step before: the one the last gather is for."""
        return self.gather[0]

    def finish_gather(self) -> None:
        """The last step's state, gathered from every rank, into the output sequence."""
        t, result = self.gather
        with torch.no_grad():
            self.states.Y[t] = result()


class _GrowthFactors:
    """A sharded layer-direction's (G, X) for growth by gradient (dL/dW = G X^T; the recurrent
    modules' ``_factor_sink``), recorded by tensor hooks as the backward runs: W_ih's G is the
    gradient of the input part of all steps (local rows x T*B) and X the layer's input; W_hh's G is
    each step's hidden part's gradient and X the whole state before that step (the given one at the
    first step), in the order of time."""

    def __init__(self, sink: dict, run: _Direction, xin: torch.Tensor, h_first: torch.Tensor, gx: torch.Tensor):
        self.sink, self.states, self.reverse, self.h_first = sink, run.states, bool(run.d), h_first.detach()
        self.steps = [None] * len(run.h_locs)
        gx.register_hook(lambda g: sink.__setitem__("ih", (g.detach(), xin.detach())))

    def watch_step(self, t: int, gh: torch.Tensor) -> None:
        if gh.requires_grad:
            gh.register_hook(lambda g: self._step(t, g))

    def _step(self, t: int, g: torch.Tensor) -> None:
        self.steps[t] = g.detach()
        if any(s is None for s in self.steps):
            return
        Y = self.states.Y.detach()  # (T, H, B): the state after each step
        first = self.h_first[None]
        before = torch.cat([Y[1:], first]) if self.reverse else torch.cat([first, Y[:-1]])
        T, H, B = Y.shape
        self.sink["hh"] = (torch.stack(self.steps, 1).reshape(-1, T * B), before.transpose(0, 1).reshape(H, T * B))
        self.steps = [None] * T


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


def shard_rows(module: nn.Module, group=None, *, overlap: bool = True) -> nn.Module:
    """Splits ``module``'s sparse weights by output rows across the ranks of ``group`` (None: the
    default group), in place, and returns it: each rank keeps its share of the units (SparseLinear:
    of the output features; the first ``n % world`` ranks one more) with their values, index and
    bias, and forward exchanges the rest (module docstring). Call it on every rank of the group,
    on identical modules (the same seed), before building the optimizer.

    Supported: SparseLinear, SparseMLP (each of its layers), SparseRNN, SparseLSTM, SparseGRU (any
    number of layers, either direction, ``batch_first``, dense or sparse input weights, dropout
    between layers with the unsharded module's draws when every rank has the same seed); not yet
    ``proj_size`` or parametrized weights.

    ``overlap`` (recurrent modules, one direction, sparse W_hh; the module's attribute ``overlap``
    afterwards): multiply the own units' columns of W_hh while the step's all-gather is in flight.
    A row's sum is then made in two parts, so outputs move with the world size by rounding (1e-16
    relative, float64); False gives every world size the same bits (a row's product does not depend
    on where the row lives), with the gather not overlapped."""
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
    if isinstance(module, SparseRNNBase):
        module.overlap = bool(overlap)
    # where each row-split weight's and bias's rows are in the whole matrix: for the checkpoints
    # (checkpoint.py) and the topology controllers (distributed/topology.py)
    n_rows = GATES[module.mode] * module.hidden_size if isinstance(module, SparseRNNBase) else module.out_features
    module._row_shards = {name: RowShard(_sharded_rows_of(module, name), n_rows, group)
                          for name in _sharded_names(module)}
    module.__class__ = _SHARDED[kind]
    return module


# ------------------------------------------------------------------ which rows (RowShard)
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
