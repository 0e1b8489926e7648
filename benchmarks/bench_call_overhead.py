"""Per-call time of the sparse ops at small sizes, where a call's fixed cost (Python, the
dispatcher, autograd) weighs as much as the product: ours with and without a gradient against
torch.sparse CSR (MKL), one thread. The results file is rewritten after every row: without
--out a fresh file benchmarks/results/local/call_overhead_cpu-<UTC time>.md (named at the start
and the end); the committed table is rewritten only with --out call_overhead_cpu.md.

    python benchmarks/bench_call_overhead.py              # N 256 and 1,024, density 1%, B 1 and 20
    python benchmarks/bench_call_overhead.py --n 64 --batch 1     # a few seconds: checks the script
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sparse_engine  # noqa: E402,F401  (before torch: passive OpenMP waiting)
import torch  # noqa: E402
from sparse_engine import ops  # noqa: E402
from sparse_engine.testing import random_weight  # noqa: E402

from common import (announce, cell, finish, markdown_table, out_help, ratio, results_path, timeit,  # noqa: E402
                    write_result)

DEFAULT = "call_overhead_cpu.md"
HEADER = ["N", "density", "B", "op", "ours, values need grad (us)", "ours, no grad (us)", "torch.sparse (us)",
          "no grad vs torch.sparse", "load"]


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--density", type=float, default=0.01)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--out", default=None, help=out_help(DEFAULT))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    path = results_path(args.out, DEFAULT)
    title = "Per-call time of the sparse ops at small sizes (CPU)"
    announce(title, HEADER, path)

    def write():
        body = ("One thread; times are medians per call. 'values need grad': the call as a training "
                "forward makes it (an autograd node is recorded); 'no grad': under torch.no_grad(), "
                "as the torch.sparse baseline (a CSR tensor with detached values) runs. spmm_t reads "
                "the values through the transposed index (no values_t). Load: 1-minute load average.\n\n"
                + markdown_table(HEADER, rows))
        return write_result(path, title, body)

    for n in args.n:
        W = random_weight(n, n, args.density, dtype=torch.float32, seed=0)
        W.index  # noqa: B018  (the transposed index, built once)
        S = torch.sparse_csr_tensor(W.row_ptr.long(), W.col_idx.long(), W.values.detach(), (n, n))
        St = S.t().to_sparse_csr()
        for B in args.batch:
            X = torch.randn(n, B)
            cases = [("spmm", lambda: ops.spmm(W, X), lambda: torch.sparse.mm(S, X)),
                     ("spmm_t", lambda: ops.spmm_t(W, X), lambda: torch.sparse.mm(St, X)),
                     ("sddmm", lambda: ops.sddmm(W, X, X), None)]
            for name, ours, base in cases:
                with cell(f"N {n:,}, B {B}, {name}") as c:
                    with_grad = timeit(ours)
                    with torch.no_grad():
                        no_grad = timeit(ours)
                        baseline = timeit(base) if base is not None else None
                    c.result = [f"{n:,}", f"{args.density:.1%}", B, name, us(with_grad), us(no_grad),
                                "-" if baseline is None else us(baseline),
                                ratio(baseline, no_grad), f"{os.getloadavg()[0]:.1f}"]
                rows.append(c.result)
                write()
    finish(write())


if __name__ == "__main__":
    main()
