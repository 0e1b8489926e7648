"""``sparse-engine bench`` as a function, :func:`bench`: a quick look at the CPU operators against
torch.sparse (MKL) and scipy on one shape; with ``model`` one training step of a recurrent layer
against masked-dense and torch.sparse (:mod:`.step_bench`); with ``memory`` the predicted memory of a
step (:mod:`.memory_run`). The full benchmarks are the scripts in benchmarks/."""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import replace

import torch

from ..runtime.timing import best_of
from ..sparse import SparseWeight
from .config import BenchConfig, resolve_device, with_options


#: what torch.sparse says about itself when a CSR tensor is first made (once per process): nothing
#: about this benchmark, so silenced around our torch.sparse baseline only
TORCH_SPARSE_NOTICES = ("Sparse CSR tensor support is in beta state", "Sparse invariant checks are implicitly disabled")


@contextlib.contextmanager
def torch_sparse_notices_silenced():
    """The UserWarnings of :data:`TORCH_SPARSE_NOTICES` ignored inside; every other warning as it was."""
    with warnings.catch_warnings():
        for message in TORCH_SPARSE_NOTICES:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


def bench(config: BenchConfig | None = None, **options) -> list[dict] | dict:
    """Times spmm and sddmm on the CPU against torch.sparse (MKL) and scipy on one shape
    (``sparse-engine bench``), prints a table and returns one dict per operator (seconds). With
    ``model``: one training step of that recurrent model against masked-dense and torch.sparse
    (:func:`.step_bench.step_bench`, {method: measurement}); with ``memory``: the predicted memory of
    a training step (:func:`.memory_run.memory_bench`)."""
    from rich.console import Console
    from rich.table import Table

    from .. import ops

    cfg = with_options(BenchConfig, config, options)
    if cfg.memory:
        from .memory_run import memory_bench

        return memory_bench(replace(cfg, model=cfg.model or "lstm", batch=cfg.batch or 32))
    if cfg.model is not None:
        from .step_bench import step_bench

        return step_bench(cfg.model.upper(), cfg.hidden, cfg.density, resolve_device(cfg.device).type, cfg.seq_len,
                          cfg.batch or 20, cfg.repeats)
    cfg = replace(cfg, batch=cfg.batch or 32)
    W = SparseWeight.random(cfg.n, cfg.n, cfg.density, generator=torch.Generator().manual_seed(0))
    X = torch.randn(cfg.n, cfg.batch)
    G = torch.randn(cfg.n, cfg.batch)
    with torch_sparse_notices_silenced():
        csr = W.to_torch_sparse_csr()
    sci, Xn = W.to_scipy(), X.numpy()

    def best(fn):
        return best_of(fn, repeat=5, warmup=1)

    def baseline(fn):  # torch.sparse, without its notices
        with torch_sparse_notices_silenced():
            return best(fn)

    rows = [
        ("spmm", best(lambda: ops.spmm(W, X)), baseline(lambda: torch.sparse.mm(csr, X)), best(lambda: sci @ Xn)),
        ("sddmm", best(lambda: ops.sddmm(W, G, X)),
         baseline(lambda: torch.sparse.sampled_addmm(csr, G, X.T, beta=0.0)), None),
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
