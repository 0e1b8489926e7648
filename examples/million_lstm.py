"""A SparseLSTM of a million hidden units trained on sequential MNIST (rows: T=28, 28 inputs),
on a machine with a few cores and ~16 GB: recomputed recurrence picked by the memory model.

The model is the command line's classifier (``SequenceModel``: a dense 28-input W_ih, a sparse
W_hh with ``--per-row`` nonzeros per row, a dense readout of the last state), trained with Adam
on batches of ``--batch`` images for ``--steps`` steps. Before it starts it prints the memory
model's estimate of a step and the recompute interval it picked for ``--budget`` (default: the
memory available now); it refuses, in one line, a run that would not fit. Each step prints its
loss, its time and the process's peak memory; at the start and the end the loss on a fixed
held-out batch (the same images both times) says whether training moved the network.

    python -m sparse_engine.data.fetch mnist_test --root data     # MNIST's test set, from its public source
    python examples/million_lstm.py --data data/mnist_test --steps 20
    python examples/million_lstm.py --data data/mnist_test --hidden 100000 --steps 50   # minutes, not hours

At hidden 1,000,000 (128M recurrent connections) one step takes several minutes on 2 cores
(benchmarks/results/lstm_scale_cpu.md: where the time goes) and about 10 GiB. ``--save`` writes a
checkpoint after every step (atomically) and ``--resume`` continues from one bit for bit.
"""
from __future__ import annotations

import sparse_engine  # noqa: F401  (before torch: OpenMP's idle threads then sleep, not spin)

import argparse
import sys
import time

import torch

from sparse_engine.data.tasks import load_task
from sparse_engine.io.checkpoint import load_checkpoint, save_checkpoint
from sparse_engine.models import SequenceModel
from sparse_engine import memory
from sparse_engine.cli import checked, run_handled
from sparse_engine.runs import validators
from sparse_engine.runtime.timing import available_memory_bytes, peak_rss_bytes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a directory holding the MNIST idx files")
    p.add_argument("--hidden", type=checked(validators.integer(1), int), default=1_000_000)
    p.add_argument("--per-row", type=checked(validators.integer(1), int), default=32,
                   help="nonzeros per row of W_hh (default 32)")
    p.add_argument("--steps", type=checked(validators.integer(1), int), default=20)
    p.add_argument("--batch", type=checked(validators.integer(1), int), default=20)
    p.add_argument("--lr", type=checked(validators.non_negative), default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=checked(validators.size_or_none, str), default=None,
                   help="memory a step may use, e.g. 16G (default: available now)")
    p.add_argument("--save", default=None, help="checkpoint written after every step")
    p.add_argument("--resume", default=None, help="a checkpoint of this script to continue")
    args = p.parse_args(argv)
    budget = memory.parse_size(args.budget) if args.budget else available_memory_bytes()

    (X, y), (Xte, yte), meta = load_task("mnist", args.data, args.seed)
    T = X.shape[1]
    sizes = memory.RecurrentSizes.build("lstm", meta["n_in"], args.hidden, row_nnz=args.per_row,
                                        sparse="recurrent", head=memory.Head(meta["n_out"], "last", "classify"))
    try:
        k, step = memory.recompute_for_budget(sizes, T, args.batch, budget)
    except memory.MemoryBudgetError as exc:
        print(f"million_lstm.py: error: --budget: {exc}", file=sys.stderr)
        return 2
    print(f"hidden {args.hidden:,}, {args.per_row} nonzeros per row, T={T}, B={args.batch}: a step needs about "
          f"{memory.format_size(step.peak)} ({'every step stored' if k is None else f'recompute_every={k}'}); "
          f"budget {memory.format_size(budget)}", flush=True)

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = SequenceModel("lstm", meta["n_in"], meta["n_out"], args.hidden, 1, args.per_row / args.hidden,
                          "recurrent", "classify", recompute_every=k)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = 0
    if args.resume:
        payload = load_checkpoint(args.resume, model, opt)
        start = payload["extra"]["step"]
    print(f"built in {time.perf_counter() - t0:.0f} s, peak {peak_rss_bytes() / 2**30:.2f} GiB", flush=True)

    g = torch.Generator().manual_seed(args.seed + 1)
    order = torch.randperm(len(X), generator=g)
    held = torch.randperm(len(Xte), generator=g)[:args.batch]

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(model(Xte[held]), yte[held]))

    print(f"held-out batch loss before step {start + 1}: {held_out_loss():.4f}", flush=True)
    for step_no in range(start, args.steps):
        idx = order[(step_no * args.batch) % len(X):][:args.batch]
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
        loss.backward()
        opt.step()
        print(f"step {step_no + 1}/{args.steps}: loss {loss.item():.4f}, {time.perf_counter() - t0:.1f} s, "
              f"peak {peak_rss_bytes() / 2**30:.2f} GiB", flush=True)
        if args.save:
            save_checkpoint(args.save, model, opt, step=step_no + 1)
    print(f"held-out batch loss after step {args.steps}: {held_out_loss():.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_handled(main, "million_lstm.py"))
