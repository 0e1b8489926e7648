"""This machine's memory floor, measured in the calling run: what a kernel that only moves its bytes
could reach, to set a large-shape kernel's time against (its fraction of the floor).

* :func:`triad_bandwidth`: sequential bandwidth, STREAM's triad ``a = b + s c`` on float32 arrays
  far larger than the caches (bytes counted as STREAM does: two arrays read, one written).
* :func:`gather_bandwidth`: random-row gather bandwidth, rows of ``row_floats`` float32 (a CSR
  product gathers one row of B floats of the dense operand per nonzero) drawn uniformly from a
  table far larger than the caches; the faster of a gather-copy (``index_select``) and a
  gather-sum (``embedding_bag``, which adds the rows of each bag as spmm adds a CSR row's).
  Bytes counted: the rows read.
* :func:`floor_seconds`: the time of a kernel that streams ``streamed`` bytes at the triad's
  bandwidth and gathers ``gathered`` bytes at the gather bandwidth.

Both run on torch's threads (``torch.get_num_threads()``), as the kernels do; each is the best
of ``repeat`` runs (the floor is what the machine can do, not what it did under load).
"""
from __future__ import annotations

import sparse_engine  # noqa: F401  (before torch: the OpenMP waiting policy, see benchmarks/common.py)
import torch
from sparse_engine.runtime.timing import best_of


def triad_bandwidth(n: int = 1 << 26, repeat: int = 5) -> float:
    """Bytes per second of ``a = b + 3 c`` on three float32 arrays of ``n`` elements (default
    256 MiB each): 12 n bytes a pass."""
    b, c = torch.rand(n), torch.rand(n)
    a = torch.empty(n)
    return 12 * n / best_of(lambda: torch.add(b, c, alpha=3.0, out=a), repeat, warmup=1)


def gather_bandwidth(row_floats: int, table_bytes: int = 1 << 30, rows: int = 1 << 22, repeat: int = 5,
                     bag: int = 32) -> float:
    """Bytes per second read by gathering ``rows`` random rows of ``row_floats`` float32 from a
    table of ``table_bytes``: the faster of ``index_select`` (copy) and ``embedding_bag`` (sum of
    ``bag`` rows per output row, spmm's access)."""
    n_rows = max(1, table_bytes // (4 * row_floats))
    table = torch.rand(n_rows, row_floats)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(n_rows, (rows,), generator=g)
    offsets = torch.arange(0, rows, bag)
    out = torch.empty(rows, row_floats)
    copy = best_of(lambda: torch.index_select(table, 0, idx, out=out), repeat, warmup=1)
    summed = best_of(lambda: torch.nn.functional.embedding_bag(idx, table, offsets, mode="sum"), repeat, warmup=1)
    return rows * row_floats * 4 / min(copy, summed)


def floor_seconds(streamed: float, gathered: float, triad: float, gather: float) -> float:
    """Seconds to stream ``streamed`` bytes at ``triad`` B/s and gather ``gathered`` at ``gather`` B/s."""
    return streamed / triad + gathered / gather


if __name__ == "__main__":
    print(f"threads {torch.get_num_threads()}: triad {triad_bandwidth() / 1e9:.1f} GB/s", flush=True)
    for B in (1, 8, 20, 32, 64):
        print(f"gather of {B}-float rows: {gather_bandwidth(B) / 1e9:.1f} GB/s", flush=True)
