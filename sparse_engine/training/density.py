"""How a total density is shared by the layers of a model: uniform, or ERK (Evci et al. 2020,
Erdos-Renyi-Kernel; for 2-D matrices the same as Selfish-RNN's ER option, which solves for one
epsilon so that the total matches), and re-drawing every sparse weight to those densities in
CSR (never via a dense matrix)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import init as _init
from ..sparse import sparse_weights

__all__ = ["uniform_densities", "erk_densities", "sparsify_"]


def uniform_densities(shapes: dict[str, tuple[int, int]], density: float) -> dict[str, float]:
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    return {name: float(density) for name in shapes}


def erk_densities(shapes: dict[str, tuple[int, int]], density: float, power_scale: float = 1.0) -> dict[str, float]:
    """density_l = eps * ((rows + cols) / (rows * cols))^power_scale with one eps chosen so that
    the total nnz equals density * total size; layers that would exceed 1 are made dense and
    eps is solved again for the rest (RigL's procedure)."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    if isinstance(power_scale, bool) or not isinstance(power_scale, (int, float)) or not 0 <= power_scale < math.inf:
        raise ValueError(f"power_scale must be a finite number >= 0 (RigL's erk_power_scale, 1.0), got {power_scale!r}")
    size = {n: r * c for n, (r, c) in shapes.items()}
    raw = {n: ((r + c) / (r * c)) ** power_scale if r * c else 0.0 for n, (r, c) in shapes.items()}
    target = density * sum(size.values())
    dense: set[str] = set()
    while True:
        rest = [n for n in shapes if n not in dense and size[n]]
        budget = target - sum(size[n] for n in dense)
        denom = sum(raw[n] * size[n] for n in rest)
        eps = budget / denom if denom > 0 else 0.0
        over = [n for n in rest if eps * raw[n] > 1.0]
        if not over:
            break
        dense.add(max(over, key=lambda n: raw[n]))
    return {n: 1.0 if n in dense else (min(1.0, max(0.0, eps * raw[n])) if size[n] else 0.0) for n in shapes}


def sparsify_(model: nn.Module, density: float, distribution: str = "uniform", *,
              generator: torch.Generator | None = None) -> dict[str, float]:
    """Re-draws every SparseWeight of ``model`` with a uniformly random pattern at the density
    the distribution gives it ("uniform" or "erk") and fresh default values. Do it before the
    optimizer has state. Returns the densities used."""
    weights = sparse_weights(model)
    shapes = {n: w.shape for n, w in weights.items()}
    if distribution == "uniform":
        dens = uniform_densities(shapes, density)
    elif distribution == "erk":
        dens = erk_densities(shapes, density)
    else:
        raise ValueError(f"distribution must be 'uniform' or 'erk', got {distribution!r}")
    for name, w in weights.items():
        rows, cols = w.shape
        nnz = int(round(dens[name] * rows * cols))
        rp, ci = _init.random_pattern(rows, cols, nnz, generator)
        vals = _init.default_values(nnz, rows, w.values.dtype, generator)
        dev = w.values.device
        w.set_pattern(rp.to(dev), ci.to(dev), vals.to(dev), validate=False)
    return dens
