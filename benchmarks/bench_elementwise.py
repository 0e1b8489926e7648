"""SET-MLP's elementwise CPU passes (csrc/cpu/mlp_cpu.cpp: relu_dropout, sgd_step) on 1 and 2
threads by size: where the second thread pays, which sets each pass's parallel threshold.

    python benchmarks/bench_elementwise.py          # -> benchmarks/results/local/relu_dropout_threads-<time>.md
    python benchmarks/bench_elementwise.py --out relu_dropout_threads.md   # rewrites the committed table
    python benchmarks/bench_elementwise.py --sizes 4096         # a few seconds: checks the script
    python benchmarks/bench_elementwise.py --dtypes float32,bfloat16,float16 --sizes 1048576 4194304
                                                 # the 2-byte passes; "x float32": time / float32's

A pass runs on one thread below parallel_work() / cost elements (relu_dropout's hash: cost
kHashCost; sgd_step: 1), whatever torch's thread count, so on 2 threads the rows below a
pass's threshold time that one thread, and the rows above it the parallel pass: the 1-thread
column next to them is what the pass did there with a higher threshold. Medians of adaptive
samples (common.timeit), 1 and 2 threads alternating per size; the results file is rewritten
after every row, with the load average: without --out a fresh file under benchmarks/results/local/
(named at the start and the end), the committed table only with --out relu_dropout_threads.md.
"""
from __future__ import annotations

import argparse
import os

from common import (announce, cell, finish, markdown_table, out_help, results_path, timeit,  # sparse_engine first
                    write_result)

import sparse_engine._C as _C
import torch

RAW = torch.ops.sparse_engine
DEFAULT = "relu_dropout_threads.md"
TITLE = "SET-MLP's elementwise passes on 1 and 2 threads"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1 << k for k in range(14, 22)])
    p.add_argument("--dtypes", default="float32",
                   help="comma-separated storage dtypes (float32, float64, bfloat16, float16); float32 first")
    p.add_argument("--out", default=None, help=out_help(DEFAULT))
    args = p.parse_args(argv)
    dtypes = [getattr(torch, d, None) for d in args.dtypes.split(",")]
    if not all(isinstance(d, torch.dtype) and d.is_floating_point for d in dtypes):
        p.error(f"--dtypes: expected floating dtypes such as float32,bfloat16,float16, got {args.dtypes!r}")
    g = torch.Generator().manual_seed(0)
    header = ["pass", "dtype", "elements", "1 thread us", "2 threads us", "1 / 2 threads", "x float32 (2 threads)",
              "load"]
    float32_us = {}
    rows = []
    path = results_path(args.out, DEFAULT)
    announce(TITLE, header, path)
    for n in args.sizes:
        for dtype in dtypes:
            z = torch.randn(n, generator=g).to(dtype)
            param, buf, grad = (torch.randn(n, generator=g).to(dtype) for _ in range(3))
            passes = {"relu_dropout": lambda: RAW.relu_dropout(z, 0.2, 7),  # ReLU'd after the first call: same work
                      "sgd_step": lambda: RAW.sgd_step(param, buf, grad, 1e-9, 0.9, 0.0)}
            name_of = str(dtype).removeprefix("torch.")
            for name, fn in passes.items():
                with cell(f"{name}, {name_of}, {n:,} elements") as c:
                    times = {}
                    for threads in (1, 2, 1, 2):
                        torch.set_num_threads(threads)
                        times[threads] = min(times.get(threads, float("inf")), timeit(fn))
                    if dtype == torch.float32:
                        float32_us[name, n] = times[2]
                    ref = float32_us.get((name, n))
                    c.result = [name, name_of, f"{n:,}", f"{1e6 * times[1]:.1f}", f"{1e6 * times[2]:.1f}",
                                f"{times[1] / times[2]:.2f}x", "-" if ref is None else f"{times[2] / ref:.2f}x",
                                f"{os.getloadavg()[0]:.1f}"]
                rows.append(c.result)
                write_result(path, TITLE,
                             f"parallel_work() here: {_C._parallel_work():,} (csrc/cpu/common.h).\n\n"
                             + markdown_table(header, rows)
                             + "\n\n`python benchmarks/bench_elementwise.py` (its docstring says how to read it).")
    torch.set_num_threads(2)
    finish(path)


if __name__ == "__main__":
    main()
