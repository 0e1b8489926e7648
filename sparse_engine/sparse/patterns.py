"""Random CSR patterns and the values a new sparse weight starts with, built in O(nnz) time and
memory (never a dense or rows*cols-sized array, so they work for 10^5-10^6 neurons).

They sit below both :class:`~sparse_engine.SparseWeight`, whose ``random``/``erdos_renyi`` draw
with them, and :mod:`sparse_engine.init`, their public home (it re-exports them beside its
``torch.nn.init`` mirrors, which take SparseWeights): so ``init`` imports ``SparseWeight`` and
nothing imports back (no import circle).
"""
from __future__ import annotations

import math

import torch

from ..kernels import topology_torch

__all__ = ["erdos_renyi_density", "random_pattern", "default_values", "random_csr_on"]


def erdos_renyi_density(rows: int, cols: int, epsilon: float) -> float:
    """Density of an Erdos-Renyi layer (Mocanu et al. 2018): epsilon*(rows+cols)/(rows*cols),
    capped at 1, so nnz ~= epsilon * (n_in + n_out)."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if rows * cols == 0:
        return 0.0
    return min(1.0, epsilon * (rows + cols) / (rows * cols))


def random_pattern(rows: int, cols: int, nnz: int, generator: torch.Generator | None = None):
    """A uniformly random set of exactly ``nnz`` distinct positions as CSR (row_ptr int64,
    col_idx int32, sorted and unique within each row).

    Sparse targets draw linear positions with rejection of repeats (expected O(nnz)); dense
    targets (nnz >= rows*cols/4) take a prefix of a permutation, which is then O(nnz) too.
    """
    total = rows * cols
    if not 0 <= nnz <= total:
        raise ValueError(f"nnz must be in [0, rows*cols={total}], got {nnz}")
    if cols > 2**31 - 1:
        raise ValueError(f"cols must fit int32 column indices, got {cols}")
    if 4 * nnz >= total:
        linear = torch.randperm(total, generator=generator)[:nnz]
    else:
        linear = torch.empty(0, dtype=torch.int64)
        while linear.numel() < nnz:
            need = nnz - linear.numel()
            draw = torch.randint(total, (need + need // 8 + 16,), generator=generator)
            linear = torch.unique(torch.cat([linear, draw]))
        if linear.numel() > nnz:  # a uniform subset of a uniform set stays uniform
            linear = linear[torch.randperm(linear.numel(), generator=generator)[:nnz]]
    linear = torch.sort(linear).values
    row = torch.div(linear, cols, rounding_mode="floor") if cols else linear
    col = (linear - row * cols).to(torch.int32)
    counts = torch.bincount(row, minlength=rows)
    row_ptr = torch.zeros(rows + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=row_ptr[1:])
    return row_ptr, col


def default_values(nnz: int, rows: int, dtype=torch.float32, generator=None) -> torch.Tensor:
    """Uniform(-b, b) with b = 1/sqrt(mean nonzeros per row): what ``nn.Linear`` would use
    for a dense layer with the same fan-in, so sparse layers keep the usual activation scale."""
    fan_in = max(1.0, nnz / max(rows, 1))
    bound = 1.0 / math.sqrt(fan_in)
    return torch.empty(nnz, dtype=dtype).uniform_(-bound, bound, generator=generator)


def random_csr_on(rows: int, cols: int, nnz: int, device, seed: int = 0):
    """(row_ptr, col_idx, values) of a uniformly random rows x cols pattern of exactly nnz
    entries, drawn on ``device`` (the topology ops' random_empty: O(nnz) there). On a GPU this
    takes milliseconds where SparseWeight.random, which draws on the host, takes minutes at
    100M+ entries. Values: uniform(+-1/sqrt(nnz per row)), like SparseWeight.random."""
    device = torch.device(device)
    empty = torch.zeros(rows + 1, dtype=torch.int64, device=device)
    no_cols = torch.empty(0, dtype=torch.int32, device=device)
    row, col_idx = topology_torch.random_empty_torch(empty, no_cols, cols, nnz, seed)
    row_ptr = torch.zeros(rows + 1, dtype=torch.int64, device=device)
    torch.cumsum(torch.bincount(row, minlength=rows), 0, out=row_ptr[1:])
    del row
    bound = 1.0 / max(1.0, nnz / max(rows, 1)) ** 0.5
    g = torch.Generator(device=device).manual_seed(seed)
    values = torch.empty(nnz, device=device).uniform_(-bound, bound, generator=g)
    return row_ptr, col_idx, values
