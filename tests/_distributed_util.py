"""Scenarios for tests/test_distributed.py: each runs on every rank of a 2-process gloo group (and,
with ``world=1``, in the test process itself as the single-process reference on the whole batch)."""
import os
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from sparse_engine.distributed import (DistributedDataParallel, broadcast_topology, check_topology_in_sync,
                                       rewrap)
from sparse_engine.nn import SparseLinear, SparseLSTM
from sparse_engine.training import SET, DeepR, GradualMagnitudePruning, RigL, SelfishRNN, sparse_weights

BATCH = 8  # per rank


class LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = SparseLSTM(5, 16, density=0.3)
        self.head = SparseLinear(16, 3, density=0.5)

    def forward(self, x):  # x: (T, B, 5)
        y, _ = self.lstm(x)
        return self.head(y[-1])


def mlp():
    return nn.Sequential(SparseLinear(12, 24, density=0.3), nn.Tanh(), SparseLinear(24, 6, density=0.3))


MODELS = {"mlp": mlp, "lstm": LSTMNet}
CONTROLLERS = {
    "set": lambda net, opt: SET(net, opt, zeta=0.3, init="normal", seed=1),
    "rigl": lambda net, opt: RigL(net, opt, end_step=12, update_every=2, update_fraction=0.3, grad_method="exact",
                                  seed=2),
    "rigl_sample": lambda net, opt: RigL(net, opt, end_step=12, update_every=2, update_fraction=0.3,
                                         grad_method="sample", sample_factor=2, seed=5),
    "gmp": lambda net, opt: GradualMagnitudePruning(net, opt, final_density=0.1, end_step=8, frequency=2),
    "selfish": lambda net, opt: SelfishRNN(net, opt, total_steps=12, growth="gradient", grad_method="exact",
                                           redistribution="magnitude", seed=3),
    "deepr": lambda net, opt: DeepR(net, opt, l1=1e-3, temperature=1e-3, rewire_every=2, seed=4),
}


def batch(model: str, t: int, rank: int, world: int):
    """Step t's global batch of 2 * BATCH samples; rank r of ``world`` ranks gets its share."""
    g = torch.Generator().manual_seed(1000 + t)
    n = 2 * BATCH
    if model == "lstm":
        x, y = torch.randn(4, n, 5, generator=g), torch.randn(n, 3, generator=g)
    else:
        x, y = torch.randn(n, 12, generator=g), torch.randn(n, 6, generator=g)
    if world == 1:
        return x, y
    share = slice(rank * n // world, (rank + 1) * n // world)
    return (x[:, share] if model == "lstm" else x[share]), y[share]


def snapshot(net):
    return {n: (w.row_ptr.clone(), w.col_idx.clone(), w.values.detach().clone())
            for n, w in sparse_weights(net).items()}


def train(model: str, controller: str, steps: int = 12, epoch_len: int = 3, ddp: str | None = None,
          local_factors: bool = False):
    """Trains with the controller; returns the snapshot after every step. ``ddp``: None (one process),
    "sparse" (DistributedDataParallel + rewrap + check after every step) or "torch" (plain torch DDP)."""
    torch.manual_seed(0)
    net = MODELS[model]().double()
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    if ddp == "sparse":
        run = DistributedDataParallel(net)
    elif ddp == "torch":
        run = torch.nn.parallel.DistributedDataParallel(net)
    else:
        run = net
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    ctl = CONTROLLERS[controller](net, opt)
    if local_factors:
        ctl.recorder.global_factors = False
    snaps = []
    for t in range(steps):
        x, y = batch(model, t, rank, world)
        opt.zero_grad()
        F.mse_loss(run(x.double()), y.double()).backward()
        opt.step()
        ctl.step()
        if (t + 1) % epoch_len == 0:
            ctl.end_epoch()
        if ddp == "sparse":
            run = rewrap(run)
        if ddp:
            check_topology_in_sync(net, values=True)
        snaps.append(snapshot(net))
    return snaps


# --------------------------------------------------------------- distributed-only scenarios
def forgotten_rewrap():
    """GMP changes nnz; the next forward through the old DDP must raise, not hang or mis-average."""
    torch.manual_seed(0)
    net = mlp().double()
    run = DistributedDataParallel(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ctl = CONTROLLERS["gmp"](net, opt)
    x, y = batch("mlp", 0, dist.get_rank(), 2)
    for _ in range(2):
        opt.zero_grad()
        F.mse_loss(run(x.double()), y.double()).backward()
        opt.step()
        ctl.step()
    try:
        run(x.double())
    except RuntimeError as e:
        return str(e)
    return None


def diverged():
    """Ranks build different topologies (other seed and density) and take a local Adam step."""
    rank = dist.get_rank()
    torch.manual_seed(10 + rank)
    net = nn.Sequential(SparseLinear(12, 24, density=0.3 + 0.1 * rank), nn.Tanh(), SparseLinear(24, 6, density=0.3))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    x, y = batch("mlp", 0, rank, 2)
    F.mse_loss(net(x), y).backward()
    opt.step()
    out = {}
    try:
        check_topology_in_sync(net)
    except RuntimeError as e:
        out["error"] = str(e)
    broadcast_topology(net, src=0, optimizer=opt)
    check_topology_in_sync(net, values=True)
    out["weights"] = snapshot(net)
    out["state"] = {n: {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[w.values].items()}
                    for n, w in sparse_weights(net).items()}
    # under DDP: rank 1 drops entries (a bug), the check names the layer, broadcast + rewrap repair it
    torch.manual_seed(0)
    net3 = mlp().double()
    run = DistributedDataParallel(net3)
    opt3 = torch.optim.Adam(net3.parameters(), lr=0.01)
    x, y = (t.double() for t in batch("mlp", 1, rank, 2))
    F.mse_loss(run(x), y).backward()
    opt3.step()
    if rank == 1:
        from sparse_engine.training import magnitude_keep, rewire
        w = net3[2].weight
        rewire(w, magnitude_keep(w.values, 3), optimizer=opt3)
    try:  # only rank 1 changed size: both ranks still rebuild, and the check names the layer
        rewrap(run)
    except RuntimeError as e:
        out["error_rewrap"] = str(e)
    try:
        check_topology_in_sync(net3)
    except RuntimeError as e:
        out["error_ddp"] = str(e)
    broadcast_topology(net3, optimizer=opt3)
    run = rewrap(run)
    ctl = SET(net3, opt3, zeta=0.3, seed=1)
    for t in range(2, 5):
        x, y = (t_.double() for t_ in batch("mlp", t, rank, 2))
        opt3.zero_grad()
        F.mse_loss(run(x), y).backward()
        opt3.step()
        ctl.end_epoch()
        check_topology_in_sync(net3, values=True)
    out["repaired"] = snapshot(net3)
    # a model built with per-rank seeds agrees once wrapped (rank 0's topology, as DDP does for values)
    torch.manual_seed(20 + rank)
    net2 = mlp()
    DistributedDataParallel(net2)
    check_topology_in_sync(net2, values=True)
    return out


def gathered_factors():
    """Uneven local batches (8 and 5 samples): the recorder's factors hold both ranks' columns and
    give exactly DDP's averaged gradient at the stored entries (sddmm(G, X) == values.grad)."""
    from sparse_engine import ops

    rank = dist.get_rank()
    torch.manual_seed(0)
    net = mlp().double()
    run = DistributedDataParallel(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ctl = RigL(net, opt, end_step=10, update_every=1, grad_method="exact")
    x, y = batch("mlp", 0, 0, 1)
    x, y = (x[:BATCH], y[:BATCH]) if rank == 0 else (x[BATCH:BATCH + 5], y[BATCH:BATCH + 5])
    F.mse_loss(run(x.double()), y.double()).backward()
    out = {}
    for name, w in ctl.weights.items():
        G, X = ctl.recorder.factors(w)
        out[name] = (G.shape[1], ops.sddmm(w, G, X).detach(), w.values.grad.clone())
    return out


TRAINING_CASES = [("mlp", "set"), ("mlp", "rigl"), ("mlp", "rigl_sample"), ("mlp", "gmp"), ("mlp", "deepr"),
                  ("lstm", "rigl"), ("lstm", "selfish")]
SCENARIOS = {
    **{f"{m}-{c}": (lambda m=m, c=c: train(m, c, ddp="sparse")) for m, c in TRAINING_CASES},
    "torch-ddp-set": lambda: train("mlp", "set", steps=6, ddp="torch"),
    "local-factors": lambda: train("mlp", "rigl", steps=2, ddp="sparse", local_factors=True),
    "forgotten-rewrap": forgotten_rewrap,
    "diverged": diverged,
    "factors": gathered_factors,
}


def worker(rank: int, world: int, init_file: str, out_dir: str):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=30))
    results = {}
    try:
        for name, fn in SCENARIOS.items():
            try:
                results[name] = ("ok", fn())
            except Exception:
                results[name] = ("error", traceback.format_exc())
            dist.barrier()
    finally:
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()
