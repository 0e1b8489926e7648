"""Checkpoints of row-sharded models (:mod:`.sharding`) that load into any world size: the
model's state and its optimizer's as the unsharded model would have them, each sharded weight's
rows gathered from its group; loading splits them again (issue 47). See docs/distributed.md."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..sparse import SparseWeight
from .exchange import Shard, _collective
from .sharding import _SHARDED

__all__ = ["full_state_dict", "full_optimizer_state_dict", "load_full_optimizer_state_dict"]


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
    its RowShard: the rows this rank keeps)}."""
    out = {}
    for prefix, module in model.named_modules():
        if not isinstance(module, tuple(_SHARDED.values())):
            continue
        pre = prefix + "." if prefix else ""
        for name, shard in module._row_shards.items():
            local = getattr(module, name)
            sparse = isinstance(local, SparseWeight)
            param, key = (local.values, pre + name + ".values") if sparse else (local, pre + name)
            out[id(param)] = (key, module, name, shard)
    return out


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
        for name, shard in module._row_shards.items():
            whole, _ = _full_rows(getattr(module, name), shard.rows, shard.n_rows, module.shard)
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
            key, module, wname, shard = sharded[id(p)]
            _, gathered_ = _full_rows(getattr(module, wname), shard.rows, shard.n_rows, module.shard,
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
            key, module, wname, shard = sharded.get(id(p), (names[id(p)], None, None, None))
            if key not in state["state"]:
                raise KeyError(f"no optimizer state for parameter {key!r}")
            entry = {}
            for k, v in state["state"][key].items():
                if isinstance(v, torch.Tensor) and module is not None and v.dim() > 0 and v.shape != p.shape:
                    rows = shard.rows
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
