"""Data-parallel SET training of a sparse MLP on scikit-learn's digits, one process per core (gloo)
or per GPU (NCCL).

    torchrun --nproc_per_node 2 examples/ddp_set.py [--epochs 20] [--hidden 256] [--zeta 0.3]
    python examples/ddp_set.py            # one process (a world of 1), same code path

Every rank trains on its share of each global batch; DDP averages the gradients of the sparse
values like any parameter; SET's update after each epoch is identical on every rank because
the values, the averaged gradients and the controller's seed are, and a callback verifies it
(sparse_engine.distributed.check_topology_in_sync). See docs/distributed.md.
"""
from __future__ import annotations

import sparse_engine  # noqa: F401  (before torch: OpenMP's idle threads then sleep, not spin)

import argparse

import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from sparse_engine.distributed import (DistributedDataParallel, check_topology_in_sync, end_process_group,
                                       init_from_env, rewrap)
from sparse_engine.nn import SparseLinear
from sparse_engine.training import SET


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=64, help="global batch size (split over the ranks)")
    p.add_argument("--zeta", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rank, world, device = init_from_env()
    try:
        return train(args, rank, world, device)
    finally:
        end_process_group()  # after train's DDP model is gone: the group's threads end now, not at exit


def train(args, rank: int, world: int, device: torch.device) -> float:
    """SET training on this rank's share of each batch; returns the test accuracy."""
    torch.manual_seed(args.seed)  # the same data split and the same initial model on every rank
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25, random_state=args.seed,
                                                        stratify=y)
    X_train, X_test = (torch.tensor(a, dtype=torch.float32, device=device) for a in (X_train, X_test))
    y_train, y_test = (torch.tensor(a, device=device) for a in (y_train, y_test))

    net = nn.Sequential(SparseLinear(64, args.hidden), nn.ReLU(), SparseLinear(args.hidden, 10)).to(device)
    model = DistributedDataParallel(net)  # rank 0's topology and values everywhere
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    # the same seed on every rank; the callback raises if the ranks' topologies ever differ
    ctl = SET(net, opt, zeta=args.zeta, seed=args.seed, callbacks=[lambda step, w: check_topology_in_sync(net)])
    order = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        for idx in torch.randperm(len(X_train), generator=order).split(args.batch):
            idx = idx[rank::world].to(device)  # this rank's share of the global batch
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(X_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            ctl.step()
        ctl.end_epoch()
        model = rewrap(model)  # a no-op for SET (same nnz); rebuilds DDP after a pruning update
    check_topology_in_sync(net, values=True)
    with torch.no_grad():
        accuracy = (net(X_test).argmax(1) == y_test).float().mean().item()
    if rank == 0:
        nnz = sum(w.nnz for w in ctl.weights.values())
        print(f"{world} process(es), {args.epochs} epochs of SET: test accuracy {accuracy:.3f}, nnz {nnz:,}, "
              "topologies and values identical on every rank")
    dist.barrier()  # every rank done before the group is torn down (gloo aborted a rank that left early)
    return accuracy


if __name__ == "__main__":
    main()
