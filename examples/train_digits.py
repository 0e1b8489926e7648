"""Train a small sparse MLP on scikit-learn's bundled digits (8x8 images, 10 classes).

The library API on data that ships with a dependency (the command line's default run, `make demo`, is
`sparse-engine train`: a sparse LSTM on the same digits). Prints test accuracy, the number of stored
weights (nnz) and the memory they take next to a dense model.

    python examples/train_digits.py [--epochs 30] [--hidden 256] [--density 0.2] [--seed 0]
"""
from __future__ import annotations

import sparse_engine  # noqa: F401  (before torch: OpenMP's idle threads then sleep, not spin)

import argparse
import resource
import sys

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from tqdm import tqdm

from sparse_engine import SparseWeight
from sparse_engine.cli import checked, run_handled
from sparse_engine.nn import SparseLinear
from sparse_engine.runs import validators


def weight_bytes(model: nn.Module) -> tuple[int, int]:
    """Bytes of the sparse weights (values + indices + transposed index) and of the dense
    matrices they replace."""
    sparse = dense = 0
    for w in model.modules():
        if isinstance(w, SparseWeight):
            sparse += sum(t.numel() * t.element_size() for t in (w.values, *w.index))
            dense += w.shape[0] * w.shape[1] * w.values.element_size()
    return sparse, dense


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=checked(validators.integer(1), int), default=30)
    p.add_argument("--hidden", type=checked(validators.integer(1), int), default=256)
    p.add_argument("--density", type=checked(validators.fraction), default=0.2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25, random_state=args.seed, stratify=y)
    X_train, X_test = (torch.tensor(a, dtype=torch.float32) for a in (X_train, X_test))
    y_train, y_test = (torch.tensor(a) for a in (y_train, y_test))

    model = nn.Sequential(
        SparseLinear(64, args.hidden, density=args.density), nn.ReLU(),
        SparseLinear(args.hidden, 10, density=args.density),
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    bar = tqdm(range(args.epochs), desc="training", unit="epoch")
    for _ in bar:
        model.train()
        for idx in torch.randperm(len(X_train)).split(64):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(X_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        accuracy = (model(X_test).argmax(1) == y_test).float().mean().item()
    nnz = sum(w.nnz for w in model.modules() if isinstance(w, SparseWeight))
    sparse_b, dense_b = weight_bytes(model)
    print(model)
    print(f"test accuracy: {accuracy:.3f}")
    print(f"stored weights (nnz): {nnz:,} of {64 * args.hidden + args.hidden * 10:,} dense")
    print(f"weight memory: {sparse_b / 1024:.1f} KiB sparse (with indices) vs {dense_b / 1024:.1f} KiB dense")
    print(f"peak process memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return accuracy


if __name__ == "__main__":
    sys.exit(run_handled(main, "train_digits.py"))
