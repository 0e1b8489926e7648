"""CPU benchmark of spmm, spmm_t, sddmm and spmm forward+backward over a grid of shapes.

Same inputs, same run: ours vs torch.sparse.mm on CSR (MKL), scipy.sparse, dense and
masked-dense (W * mask, then the dense product), plus PyG's torch_sparse when it is installed,
for every N in {1,024, 4,096, 16,384, 65,536}, density in {0.1%, 1%, 5%, 33%} and batch B in
{1, 20, 32}. A baseline (or a whole cell) whose memory would exceed --memory-gib is skipped and
the row says so. Each row is printed and appended to the results file as soon as it is measured,
with the 1-minute load average at that moment (a busy machine inflates every time); each cell
(N, density, B) prints a line when it starts and when it ends. Without --out the results file is a
fresh one, benchmarks/results/local/cpu_ops-<UTC time>.md (named at the start and the end); the
committed table is rewritten only with --out cpu_ops.md (`make bench` passes it).

    python benchmarks/bench_ops.py --out cpu_ops.md   # the full grid -> benchmarks/results/cpu_ops.md
    python benchmarks/bench_ops.py --quick         # a small subset, to check the script (a fresh file)
    python benchmarks/bench_ops.py --n 16384 --density 0.01 --batch 32
    python benchmarks/bench_ops.py --ops spmm_t spmm_t+gather sddmm --out /tmp/ops.md   # some ops only
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (announce, cell, finish, ms, out_help, ratio, results_path, timeit,  # noqa: E402
                    write_result)

from sparse_engine import SparseWeight, ops  # noqa: E402
import torch  # noqa: E402

GRID_N = [1024, 4096, 16384, 65536]
GRID_DENSITY = [0.001, 0.01, 0.05, 0.33]
GRID_B = [1, 20, 32]
QUICK = ([1024, 4096], [0.01, 0.05], [1, 20])
OPS = ["spmm", "spmm_t", "spmm_t+gather", "sddmm", "fwd+bwd"]
BASELINES = ["torch.sparse CSR", "scipy", "dense", "masked-dense"]
DEFAULT = "cpu_ops.md"
TITLE = "CPU operators: ours vs baselines (same run)"
HEADER = ["N", "density", "B", "op", "ours ms", "baseline", "baseline ms", "speed-up", "load"]
NOTES = """speed-up = baseline time / our time; > 1 means we are faster. load = 1-minute load average
when the row was measured. spmm_t: W^T G. Its torch.sparse baseline gets a transposed CSR built
once outside the timing, values included (`torch.sparse.mm(W.t(), G)` converts the transposed CSR
on every call, about 100x slower), and so do we in the `spmm_t` rows: the values in column order
(`ops.transposed_values(W)`, what a recurrence makes once per sequence) are made outside the
timing and passed as `values_t`. The `spmm_t+gather` rows time ours gathering the current values
through the transposed index on every call (`ops.spmm_t(W, G)`, one product per change of the
values), against the same baselines. The forward-only rows run ours under torch.no_grad(), like the baselines, whose
values are detached. sddmm baselines: torch.sparse.sampled_addmm, scipy (row gathers), dense (G X^T,
then the entries), masked-dense ((G X^T) * mask). fwd+bwd: Y = W X, then the gradients of the
values (or the dense weight) and X; scipy has no autograd. Dense and masked-dense build N x N
matrices; torch.sparse's backward through a CSR weight also needs O(N^2) memory. Anything that
would need more than the memory budget is skipped and says so.
"""


def physical_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def memory_needed(op: str, impl: str, n: int, nnz: int, B: int) -> float:
    """Bytes an implementation holds for one op (weights, workspaces, outputs), a rough bound."""
    dense, act = 4.0 * n * n, 4.0 * n * B
    if impl == "ours":
        return 40.0 * nnz + 6 * act  # index + values + values grad + transposed values, padded copies
    return OURS_RESIDENT * nnz + _baseline_bytes(op, impl, n, nnz, B, dense, act)


# Our weight (values, CSR and transposed index, values_t) stays in memory while a baseline runs.
OURS_RESIDENT = 20.0


def _baseline_bytes(op: str, impl: str, n: int, nnz: int, B: int, dense: float, act: float) -> float:
    if impl == "torch.sparse CSR":
        # int64 column indices; spmm_t's transposed CSR is converted through COO (int64 rows and
        # columns, a sort): at 40 bytes per entry in all, 65,536 / 5% was killed for memory on 24 GiB
        per_entry = {"spmm_t": 80.0, "spmm_t+gather": 80.0}.get(op, 40.0)
        return per_entry * nnz + (3 * dense if op == "fwd+bwd" else 0.0) + 4 * act
    if impl == "scipy":
        return (8.0 * nnz * B if op == "sddmm" else 0.0) + 12.0 * nnz + 4 * act
    if impl == "dense":
        return (2 if op in ("sddmm", "fwd+bwd") else 1) * dense + 8.0 * nnz + 4 * act
    if impl == "masked-dense":
        return {"spmm": 2.25, "spmm_t": 2.25, "sddmm": 2.25, "fwd+bwd": 3.5}[op] * dense + 8.0 * nnz + 4 * act
    if impl == "torch_sparse (PyG)":
        return 24.0 * nnz + 4 * act
    raise ValueError(impl)


def make_weight(n: int, density: float) -> SparseWeight:
    g = torch.Generator().manual_seed(0)
    nnz = int(round(density * n * n))
    if nnz <= 20_000_000:
        return SparseWeight.random(n, n, density, generator=g)
    from common import random_csr_on  # O(nnz) draws with the topology ops, for the big cells

    return SparseWeight(*random_csr_on(n, n, nnz, "cpu"), (n, n), validate=False)


def implementations(op: str, W: SparseWeight, X: torch.Tensor, G: torch.Tensor) -> dict:
    """name -> a function building (outside the timing) and returning the timed callable."""
    n = W.shape[0]

    def ours():
        # forward-only rows under no_grad, as the baselines' (detached) values are: recording the
        # autograd graph costs tens of microseconds per call, which dominates the smallest cells
        if op in ("spmm", "spmm_t", "spmm_t+gather", "sddmm"):
            values_t = ops.transposed_values(W) if op == "spmm_t" else None  # made once, outside the timing
            run = {"spmm": lambda: ops.spmm(W, X), "spmm_t": lambda: ops.spmm_t(W, G, values_t),
                   "spmm_t+gather": lambda: ops.spmm_t(W, G), "sddmm": lambda: ops.sddmm(W, G, X)}[op]

            def no_grad():
                with torch.no_grad():
                    return run()
            return no_grad

        def fwd_bwd():
            x = X.detach().requires_grad_()
            ops.spmm(W, x).backward(G)
            W.values.grad = None
        return fwd_bwd

    def torch_sparse():
        csr = W.to_torch_sparse_csr()
        if op == "spmm":
            return lambda: torch.sparse.mm(csr, X)
        if op.startswith("spmm_t"):
            csr_t = csr.t().to_sparse_csr()
            return lambda: torch.sparse.mm(csr_t, G)
        if op == "sddmm":
            return lambda: torch.sparse.sampled_addmm(csr, G, X.T, beta=0.0)
        v = W.values.detach().clone().requires_grad_()

        def fwd_bwd():
            w = torch.sparse_csr_tensor(W.row_ptr, W.col_idx.long(), v, size=W.shape)
            torch.sparse.mm(w, X.detach().requires_grad_()).backward(G)
            v.grad = None
        return fwd_bwd

    def scipy():
        sci, Xn, Gn = W.to_scipy(), X.numpy(), G.numpy()
        if op == "spmm":
            return lambda: sci @ Xn
        if op.startswith("spmm_t"):
            return lambda: sci.T @ Gn
        row = sci.tocoo().row
        return lambda: (Gn[row] * Xn[sci.indices]).sum(1)

    def dense(masked: bool):
        D = W.to_dense()
        mask = D != 0
        row, col, _ = W.coo()
        if op == "spmm":
            return (lambda: (D * mask) @ X) if masked else (lambda: D @ X)
        if op == "spmm_t":
            return (lambda: (D * mask).T @ G) if masked else (lambda: D.T @ G)
        if op == "sddmm":
            return (lambda: (G @ X.T) * mask) if masked else (lambda: (G @ X.T)[row, col])
        P = D.clone().requires_grad_()

        def fwd_bwd():
            x = X.detach().requires_grad_()
            ((P * mask) if masked else P).matmul(x).backward(G)
            P.grad = None
        return fwd_bwd

    impls = {"ours": ours, "torch.sparse CSR": torch_sparse,
             "scipy": scipy if op != "fwd+bwd" else None,
             "dense": lambda: dense(False), "masked-dense": lambda: dense(True)}
    if op == "spmm_t+gather":  # the dense baselines are the spmm_t rows'; no values to gather there
        del impls["dense"], impls["masked-dense"]
    if op == "spmm":
        try:
            import torch_sparse as pyg  # noqa: F401

            impls["torch_sparse (PyG)"] = lambda: (lambda ts: (lambda: ts @ X))(W.to_torch_sparse())
        except ImportError:
            pass
    assert n == W.shape[1]
    return impls


class Results:
    """The results file, written row by row: the header first, then each row as it comes."""

    def __init__(self, path: Path, title: str):
        self.path = write_result(path.absolute(), title, f"{NOTES}\n| " + " | ".join(HEADER) + " |\n|"
                                 + "---|" * len(HEADER))
        self.rows = 0

    def add(self, row: list) -> None:
        line = "| " + " | ".join(str(c) for c in row) + " |"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")
        self.rows += 1


def bench_cell(n: int, density: float, B: int, budget: float, out: Results, ops_=OPS) -> None:
    nnz = int(round(density * n * n))
    head = [f"{n:,}", f"{density:.1%}", B]
    load = lambda: f"{os.getloadavg()[0]:.1f}"  # noqa: E731
    if memory_needed("fwd+bwd", "ours", n, nnz, B) > budget:
        need = memory_needed("fwd+bwd", "ours", n, nnz, B) / 2**30
        out.add(head + ["all", "-", "all", "-", f"skipped: needs ~{need:.0f} GiB > {budget / 2**30:.0f} GiB", load()])
        return
    W = make_weight(n, density)
    g = torch.Generator().manual_seed(1)
    X, G = torch.randn(n, B, generator=g), torch.randn(n, B, generator=g)
    for op in ops_:
        impls = implementations(op, W, X, G)
        t_ours = timeit(impls.pop("ours")())
        for name, build in impls.items():
            if build is None:
                continue
            need = memory_needed(op, name, n, nnz, B)
            if need > budget:
                out.add(head + [op, ms(t_ours), name, f"skipped: needs ~{need / 2**30:.0f} GiB", "-", load()])
                continue
            fn = build()
            t = timeit(fn)
            del fn
            out.add(head + [op, ms(t_ours), name, ms(t), ratio(t, t_ours), load()])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N 1,024 and 4,096, density 1%% and 5%%, B 1 and 20")
    p.add_argument("--n", type=int, nargs="+", default=None, help=f"default {GRID_N}")
    p.add_argument("--density", type=float, nargs="+", default=None, help=f"default {GRID_DENSITY}")
    p.add_argument("--batch", type=int, nargs="+", default=None, help=f"default {GRID_B}")
    p.add_argument("--ops", nargs="+", default=OPS, choices=OPS, help="default: all")
    p.add_argument("--memory-gib", type=float, default=None,
                   help="skip what would need more (default: 80%% of this machine's memory)")
    p.add_argument("--out", default=None, help=out_help(DEFAULT))
    args = p.parse_args(argv)
    grid = QUICK if args.quick else (GRID_N, GRID_DENSITY, GRID_B)
    sizes, densities, batches = args.n or grid[0], args.density or grid[1], args.batch or grid[2]
    for name, values in (("--n", sizes), ("--batch", batches)):
        if any(v < 1 for v in values):
            p.error(f"{name} values must be >= 1")
    if any(not 0 < d <= 1 for d in densities):
        p.error("--density values must be in (0, 1]")
    budget = (args.memory_gib if args.memory_gib is not None else 0.8 * physical_gib()) * 2**30
    path = results_path(args.out, DEFAULT)
    announce(TITLE, HEADER, path)
    out = Results(path, TITLE)
    for n in sizes:
        for d in densities:
            for B in batches:
                with cell(f"N {n:,}, density {d:.1%}, B {B}") as c:
                    before = out.rows
                    bench_cell(n, d, B, budget, out, [op for op in OPS if op in args.ops])
                    c.result = f"{out.rows - before} rows"
    finish(out.path)


if __name__ == "__main__":
    main()
