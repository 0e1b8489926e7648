"""A SparseLSTM split by rows across processes (model parallelism: each rank holds 1/world of the
weights, sparse_engine.distributed.shard_rows) learning scikit-learn's digits as sequences (an 8x8
image read as 8 steps of 8 pixels), one process per core (gloo) or per GPU (NCCL).

    torchrun --nproc_per_node 2 examples/sharded_lstm.py [--epochs 15] [--hidden 256]
    python examples/sharded_lstm.py       # one process (a world of 1), same code path

Every rank sees the same batches (this is not data parallelism): the LSTM's units are split
across the ranks, each step gathers h from all of them, and every rank computes the same loss.
The predicted peak of a rank's step and the largest model per card size come from
sparse_engine.distributed.scale. See docs/distributed.md.
"""
from __future__ import annotations

import sparse_engine  # noqa: F401  (before torch: OpenMP's idle threads then sleep, not spin)

import argparse

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from sparse_engine.distributed import end_process_group, init_from_env, shard_rows
from sparse_engine.nn import SparseLSTM


class DigitsLSTM(nn.Module):
    def __init__(self, hidden: int, density: float):
        super().__init__()
        self.lstm = SparseLSTM(8, hidden, density=density)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):  # x: (8 steps, B, 8 pixels)
        _, (h, _) = self.lstm(x)
        return self.head(h[-1])


def main(argv=None) -> tuple[float, float, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--density", type=float, default=0.2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rank, world, device = init_from_env()
    try:
        return train(args, rank, world, device)
    finally:
        end_process_group()  # after train's model is gone: the group's threads end now, not at exit


def train(args, rank: int, world: int, device: torch.device) -> tuple[float, float, float]:
    """Trains this rank's shard; returns the first and last training loss and the test accuracy."""
    torch.manual_seed(args.seed)  # the same model, split and batches on every rank
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25, random_state=args.seed,
                                                        stratify=y)
    seq = lambda a: torch.tensor(a, dtype=torch.float32).view(-1, 8, 8).transpose(0, 1).to(device)  # noqa: E731
    X_train, X_test = seq(X_train), seq(X_test)
    y_train, y_test = torch.tensor(y_train).to(device), torch.tensor(y_test).to(device)
    model = DigitsLSTM(args.hidden, args.density).to(device)
    shard_rows(model.lstm)  # this rank keeps its units' rows; the head is small and replicated
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(args.epochs):
        order = torch.randperm(y_train.numel(), device=device)
        for i in range(0, order.numel(), args.batch):
            idx = order[i:i + args.batch]
            opt.zero_grad()
            loss = loss_fn(model(X_train[:, idx]), y_train[idx])
            loss.backward()
            opt.step()
            losses.append(loss.item())
    first, last = (losses[0], losses[-1]) if losses else (float("nan"), float("nan"))
    with torch.no_grad():
        acc = (model(X_test).argmax(1) == y_test).float().mean().item()
    if rank == 0:
        print(f"{world} process(es), {args.epochs} epochs of a sharded SparseLSTM: hidden {args.hidden}, units "
              f"{model.lstm.shard.start}:{model.lstm.shard.end} on rank 0, loss {first:.3f} -> {last:.3f}, "
              f"test accuracy {acc:.3f}", flush=True)
    return first, last, acc


if __name__ == "__main__":
    main()
