"""``sparse-engine bench`` as a function, :func:`bench`: a quick look at the CPU operators against
torch.sparse (MKL) and scipy on one shape. The full benchmarks are the scripts in benchmarks/."""
from __future__ import annotations

import torch

from ..runtime.timing import best_of
from ..sparse import SparseWeight
from .config import BenchConfig, with_options


def bench(config: BenchConfig | None = None, **options) -> list[dict]:
    """Times spmm and sddmm on the CPU against torch.sparse (MKL) and scipy on one shape
    (``sparse-engine bench``), prints a table and returns one dict per operator (seconds)."""
    from rich.console import Console
    from rich.table import Table

    from .. import ops

    cfg = with_options(BenchConfig, config, options)
    W = SparseWeight.random(cfg.n, cfg.n, cfg.density, generator=torch.Generator().manual_seed(0))
    X = torch.randn(cfg.n, cfg.batch)
    G = torch.randn(cfg.n, cfg.batch)
    csr = W.to_torch_sparse_csr()
    sci, Xn = W.to_scipy(), X.numpy()

    def best(fn):
        return best_of(fn, repeat=5, warmup=1)

    rows = [
        ("spmm", best(lambda: ops.spmm(W, X)), best(lambda: torch.sparse.mm(csr, X)), best(lambda: sci @ Xn)),
        ("sddmm", best(lambda: ops.sddmm(W, G, X)),
         best(lambda: torch.sparse.sampled_addmm(csr, G, X.T, beta=0.0)), None),
    ]
    table = Table(title=f"N={cfg.n:,}, density={cfg.density:g}, B={cfg.batch} ({torch.get_num_threads()} threads)")
    for col in ("op", "ours ms", "torch.sparse ms", "scipy ms", "vs torch.sparse"):
        table.add_column(col, justify="right")
    out = []
    for op, ours, ts, sc in rows:
        table.add_row(op, f"{ours * 1e3:.2f}", f"{ts * 1e3:.2f}", "-" if sc is None else f"{sc * 1e3:.2f}",
                      f"{ts / ours:.2f}x")
        out.append(dict(op=op, ours=ours, torch_sparse=ts, scipy=sc))
    Console().print(table)
    print("Full benchmarks: python benchmarks/bench_ops.py (and the other scripts in benchmarks/).")
    return out
