"""Data-parallel training of sparse models with ``torch.distributed`` (DDP; NCCL on GPUs, gloo on CPU).

The values of a :class:`~sparse_engine.SparseWeight` are one ordinary Parameter, so DDP averages
their gradients like any other. What DDP does not know about is the topology:

* every rank must hold the same pattern. The controllers (SET, RigL, SelfishRNN,
  GradualMagnitudePruning, DeepR) are deterministic given the values, the averaged gradients and
  their ``seed`` (use the same seed on every rank), so their updates come out identical; growth by
  gradient reads the (G, X) factors of the recorder, which under torch.distributed are gathered
  from all ranks (:func:`all_gather_columns`), so RigL grows where the gradient of the global
  batch is largest. :func:`check_topology_in_sync` verifies it cheaply (a per-layer hash of the
  pattern, computed on the device), :func:`broadcast_topology` repairs a diverged rank.
* DDP fixes the sizes of its gradient buckets at construction: after an update that changes a
  layer's nnz (gradual pruning, SelfishRNN with redistribution), the model
  needs a new DDP. :class:`DistributedDataParallel` (torch's, plus a size check in ``forward``
  that raises a clear RuntimeError) and :func:`rewrap` (a new DDP when sizes changed, the same
  object otherwise) do that. Same-nnz updates (SET, RigL, DeepR) work with any DDP.

See docs/distributed.md.
"""
from __future__ import annotations

import zlib

import torch
import torch.distributed as dist
from torch import nn

from ..sparse import SparseWeight, sparse_weights
from ..sparse.weight import _INDEX_NAMES

__all__ = ["DistributedDataParallel", "rewrap", "topology_fingerprint", "check_topology_in_sync",
           "broadcast_topology", "all_gather_columns", "all_reduce_sum", "gather_batch_sizes", "is_distributed"]

_TorchDDP = torch.nn.parallel.DistributedDataParallel


def is_distributed(group=None) -> bool:
    """True when torch.distributed is initialized and ``group`` has more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def _comm_device(group) -> torch.device:
    """Where collectives of ``group`` take their tensors: the current GPU for NCCL, else the CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _sparse_weights(module: nn.Module) -> dict[str, SparseWeight]:
    """:func:`~sparse_engine.sparse.sparse_weights` of ``module``, or of the module a DDP wraps."""
    if isinstance(module, _TorchDDP):
        module = module.module
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    return sparse_weights(module)


# ------------------------------------------------------------------ fingerprints
_M1, _M2 = 0xBF58476D1CE4E5B9 - 2**64, 0x94D049BB133111EB - 2**64  # splitmix64 (as signed int64)
_GOLDEN = 0x9E3779B97F4A7C15 - 2**64


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer on int64 (wrapping arithmetic): a well-spread 64-bit hash per entry."""
    x = x ^ _shr(x, 30)
    x = x * _M1
    x = x ^ _shr(x, 27)
    x = x * _M2
    return x ^ _shr(x, 31)


_INT_OF = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def topology_fingerprint(module: nn.Module, *, values: bool = False) -> torch.Tensor:
    """One row per SparseWeight of ``module`` (``named_modules`` order), int64 on the weights'
    device: (crc32 of the name, rows, cols, nnz, hash of the pattern, hash of the values bits or 0).
    The pattern hash is a sum of 64-bit hashes of the positions row*cols+col (a set hash: the CSR
    order is canonical), computed on the device in O(nnz) with no host copy of the index."""
    weights = _sparse_weights(module)
    rows_out = []
    for name, w in weights.items():
        rows, cols = w.shape
        row, col, v = w.coo()
        h_pattern = _mix(row * cols + col + _GOLDEN).sum() if w.nnz else torch.zeros((), dtype=torch.int64,
                                                                                   device=row.device)
        h_values = torch.zeros((), dtype=torch.int64, device=row.device)
        if values and w.nnz:
            bits = v.detach().contiguous().view(_INT_OF[v.element_size()]).to(torch.int64)
            pos = torch.arange(w.nnz, dtype=torch.int64, device=row.device)
            h_values = _mix(bits ^ _mix(pos)).sum()
        head = torch.tensor([zlib.crc32(name.encode()), rows, cols, w.nnz], dtype=torch.int64, device=row.device)
        rows_out.append(torch.cat([head, h_pattern.view(1), h_values.view(1)]))
    if not rows_out:
        return torch.empty(0, 6, dtype=torch.int64)
    return torch.stack(rows_out)


def check_topology_in_sync(module: nn.Module, group=None, *, values: bool = False) -> None:
    """Raises RuntimeError naming the sparse layers whose (shape, nnz, pattern) -- and values, with
    ``values=True`` -- differ across the ranks of ``group``. Two all-gathers of a few int64 per layer.
    A no-op without torch.distributed or with one process. Every rank must call it."""
    if not is_distributed(group):
        return
    names = list(_sparse_weights(module))
    dev = _comm_device(group)
    fp = topology_fingerprint(module, values=values).to(dev)
    world = dist.get_world_size(group)
    counts = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([fp.shape[0]], dtype=torch.int64, device=dev), group=group)
    counts = [int(c) for c in counts]
    if len(set(counts)) > 1:
        raise RuntimeError(f"the ranks hold different numbers of sparse weights: {counts}")
    gathered = [torch.empty_like(fp) for _ in range(world)]
    dist.all_gather(gathered, fp, group=group)
    fps = torch.stack(gathered).cpu()  # (world, layers, 6)
    bad = []
    for i, name in enumerate(names):
        per_rank = fps[:, i]
        if not bool((per_rank == per_rank[0]).all()):
            nnz = per_rank[:, 3].tolist()
            what = ("name/shape" if (per_rank[:, :3] != per_rank[0, :3]).any() else
                    "nnz" if len(set(nnz)) > 1 else
                    "pattern" if (per_rank[:, 4] != per_rank[0, 4]).any() else "values")
            bad.append(f"{name} ({what} differs; nnz per rank {nnz})")
    if bad:
        raise RuntimeError("sparse topology differs across ranks in " + ", ".join(bad) +
                           ": give every rank's controller the same seed, or call broadcast_topology()")


# ------------------------------------------------------------------ broadcast
def _broadcast(t: torch.Tensor, src: int, group, dev: torch.device) -> torch.Tensor:
    buf = t.to(dev).contiguous()
    dist.broadcast(buf, src, group=group)
    return buf.to(t.device)


def broadcast_topology(module: nn.Module, src: int = 0, group=None,
                       optimizer: torch.optim.Optimizer | None = None) -> None:
    """Makes every rank's sparse weights equal to (global) rank ``src``'s: pattern and values (resized
    through ``set_pattern``, keeping the Parameter objects), the optimizer state of their values
    (``optimizer``: every per-parameter entry is copied from ``src``, so the next steps agree
    too) and drops their ``.grad``. Call it between steps, on every rank. Dense parameters are
    DDP's business (it broadcasts them at construction). Per-entry state of a controller (DeepR's
    signs, SelfishRNN's averages) is not repaired: build the controller after this call. Under
    :class:`DistributedDataParallel`, call ``model = rewrap(model)`` next (it rebuilds on every rank).
    A no-op without torch.distributed or with one process."""
    if not is_distributed(group):
        return
    dev = _comm_device(group)
    rank = dist.get_rank()
    for name, w in _sparse_weights(module).items():
        meta = _broadcast(torch.tensor([*w.shape, w.nnz], dtype=torch.int64), src, group, dev)
        rows, cols, nnz = meta.tolist()
        if (rows, cols) != w.shape:
            raise RuntimeError(f"{name}: shape {w.shape} on rank {rank} but {(rows, cols)} on rank {src}")
        p = w.values
        if rank == src:
            rp, ci, v = w.row_ptr, w.col_idx, p.detach()
        else:
            rp = torch.empty(rows + 1, dtype=torch.int64, device=p.device)
            ci = torch.empty(nnz, dtype=torch.int32, device=p.device)
            v = torch.empty(nnz, dtype=p.dtype, device=p.device)
        rp, ci, v = (_broadcast(t, src, group, dev) for t in (rp, ci, v))
        if rank != src:
            with torch.no_grad():
                w.set_pattern(rp, ci, v)
        p.grad = None
        if optimizer is not None:
            _broadcast_state(optimizer, p, src, group, dev)
    # a resized rank lost DDP's gradient hooks even where its sizes are back to the old ones: the
    # next rewrap() rebuilds on every rank (it is a collective, so the decision must be common)
    (module.module if isinstance(module, _TorchDDP) else module).__dict__["_sparse_rewrap_pending"] = True


def _broadcast_state(optimizer: torch.optim.Optimizer, p: torch.Tensor, src: int, group, dev) -> None:
    """Copies ``optimizer.state[p]`` of rank ``src`` to every rank (tensors keep their device kind:
    the parameter's, or the CPU for scalars such as Adam's ``step``)."""
    state = optimizer.state.get(p, {})
    meta = [{k: (("tensor", tuple(t.shape), t.dtype, t.device == p.device) if isinstance(t, torch.Tensor)
                 else ("object", t)) for k, t in state.items()}] if dist.get_rank() == src else [None]
    dist.broadcast_object_list(meta, src, group=group, device=dev if dev.type == "cuda" else None)
    new = {}
    for key, m in meta[0].items():
        if m[0] == "object":
            new[key] = m[1]
            continue
        _, shape, dtype, on_param = m
        local = state[key] if dist.get_rank() == src else torch.empty(
            shape, dtype=dtype, device=p.device if on_param else "cpu")
        new[key] = _broadcast(local, src, group, dev)
    if new:
        optimizer.state[p] = new
    else:
        optimizer.state.pop(p, None)


# ------------------------------------------------------------------ gradient factors
def gather_batch_sizes(m: int | None, group=None) -> list[int]:
    """Every rank's number of factor columns M_r (rank order). ``m=None`` on any rank (nothing
    recorded) raises RuntimeError on every rank instead of leaving the others waiting."""
    dev = _comm_device(group)
    sizes = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, torch.tensor([-1 if m is None else m], dtype=torch.int64, device=dev), group=group)
    sizes = [int(s) for s in sizes]
    missing = [r for r, s in enumerate(sizes) if s < 0]
    if missing:
        raise RuntimeError(f"no gradient factors recorded on rank(s) {missing}: every rank must run forward and "
                           "backward on a batch before the topology update")
    return sizes


def all_reduce_sum(t: torch.Tensor, group=None) -> torch.Tensor:
    """The sum of ``t`` over the ranks (a new tensor on ``t``'s device)."""
    buf = t.to(_comm_device(group), copy=True).contiguous()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
    return buf.to(t.device)


def all_gather_columns(t: torch.Tensor | None, group=None) -> torch.Tensor:
    """The (features x M_r) tensors of all ranks side by side (features x sum M_r, rank order);
    M_r may differ between ranks. ``t=None`` on any rank (nothing recorded) raises RuntimeError
    on every rank instead of leaving the others waiting."""
    sizes = gather_batch_sizes(None if t is None else t.shape[1], group)
    dev = _comm_device(group)
    buf = torch.zeros(t.shape[0], max(sizes), dtype=t.dtype, device=dev)
    buf[:, :t.shape[1]] = t
    out = [torch.empty_like(buf) for _ in sizes]
    dist.all_gather(out, buf, group=group)
    return torch.cat([o[:, :m] for o, m in zip(out, sizes)], 1).to(t.device)


# ------------------------------------------------------------------ DDP
def _index_buffer_names(module: nn.Module) -> list[str]:
    return [f"{name}.{b}" if name else b for name, w in _sparse_weights(module).items() for b in _INDEX_NAMES]


class DistributedDataParallel(_TorchDDP):
    """``torch.nn.parallel.DistributedDataParallel`` for models with sparse weights (same
    arguments). Differences:

    * at construction the sparse topology (pattern and values) of rank 0 is broadcast to all
      ranks, as DDP does for parameters, so ranks that built their models with different seeds
      agree;
    * the index buffers (row_ptr, col_idx, transposed index) are left out of DDP's per-forward
      buffer broadcast: they are 16 bytes per stored weight (4x a float32 gradient) and would silently
      overwrite a diverged rank's pattern under its own values; topology agreement is the
      controllers' job and :func:`check_topology_in_sync` verifies it;
    * ``forward`` raises RuntimeError when a sparse weight's nnz changed since construction
      (DDP's gradient buckets have fixed sizes): call ``model = rewrap(model)`` after updates
      that change nnz.
    """

    def __init__(self, module: nn.Module, *args, **kwargs):
        ignore = set(getattr(module, "_ddp_params_and_buffers_to_ignore", ())) | set(_index_buffer_names(module))
        _TorchDDP._set_params_and_buffers_to_ignore_for_model(module, sorted(ignore))
        group = kwargs.get("process_group")
        broadcast_topology(module, 0 if group is None else dist.get_global_rank(group, 0), group)
        super().__init__(module, *args, **kwargs)
        self._sparse_args = (args, dict(kwargs))
        self._sparse_nnz = {n: w.nnz for n, w in _sparse_weights(module).items()}
        module.__dict__.pop("_sparse_rewrap_pending", None)

    def changed_sizes(self) -> dict[str, tuple[int, int]]:
        """{name: (nnz at construction, nnz now)} of the sparse weights whose size changed."""
        now = {n: w.nnz for n, w in _sparse_weights(self.module).items()}
        return {n: (self._sparse_nnz.get(n, -1), k) for n, k in now.items() if self._sparse_nnz.get(n) != k}

    def forward(self, *inputs, **kwargs):
        changed = self.changed_sizes()
        if changed:
            desc = ", ".join(f"{n}: nnz {a} -> {b}" for n, (a, b) in list(changed.items())[:4])
            raise RuntimeError(f"sparse weights changed size since this DistributedDataParallel was built ({desc}); "
                               "DDP's gradient buckets have fixed sizes: call `model = "
                               "sparse_engine.distributed.rewrap(model)` after topology updates that change nnz")
        return super().forward(*inputs, **kwargs)


def rewrap(model: DistributedDataParallel, *, check: bool = True) -> DistributedDataParallel:
    """``model`` itself when no sparse weight changed size since it was built (and no
    :func:`broadcast_topology` ran since), else a new :class:`DistributedDataParallel` around the
    same module with the same arguments (the optimizer keeps working: the Parameter objects are
    the same). With ``check`` (default) the
    topologies are first verified to agree across ranks. Call it on every rank, after every
    topology update that may change nnz. The ranks first agree whether anything changed
    anywhere (one one-element all-reduce), so a size change on only some ranks (a bug) ends
    in check_topology_in_sync's error naming the layers, not in a collective timeout."""
    if not isinstance(model, DistributedDataParallel):
        raise TypeError("rewrap needs a sparse_engine.distributed.DistributedDataParallel (it remembers the "
                        f"arguments to rebuild with), got {type(model).__name__}")
    args, kwargs = model._sparse_args
    group = kwargs.get("process_group")
    changed = model.changed_sizes() or model.module.__dict__.get("_sparse_rewrap_pending", False)
    if is_distributed(group):
        flag = torch.tensor([int(bool(changed))], device=_comm_device(group))
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        changed = bool(flag.item())
    if not changed:
        return model
    if check:
        check_topology_in_sync(model.module, group)
    return DistributedDataParallel(model.module, *args, **kwargs)
