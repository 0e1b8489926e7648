"""Where the thread pool's second thread pays (csrc/cpu/thread_pool.h, parallel_work() in
csrc/cpu/common.h): spmm, spmm_t (values_t), sddmm and the LSTM step at sizes whose work
((nnz + rows) x B) runs from 2^12 to 2^22, on 1 thread and on 2 with every call split
(sparse_engine._C._set_parallel_work(0)), alternating in one interpreter per spin setting
(IDLE:WAIT microseconds: SPARSE_ENGINE_POOL_SPIN_US, how long an idle worker spins for the next
job, and SPARSE_ENGINE_POOL_WAIT_US, how long the caller spins for claimed chunks; read once), on a
quiet machine. The bound is the work above which 2 threads are faster than 1 in every op.

    python benchmarks/bench_pool_threshold.py                       # the defaults (20:50)
    python benchmarks/bench_pool_threshold.py --spin 0:0 0:50 20:50 --out /tmp/t.md

Without --out the table goes to a fresh file under benchmarks/results/local/; ``--out
pool_threshold_cpu.md`` rewrites the committed one.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

DEFAULT_OUT = "pool_threshold_cpu.md"
#: --out's help (common.out_help's words; common is imported only by the parent)
OUT_HELP = (f"results file (benchmarks/common.py's rule): a name in benchmarks/results/ ({DEFAULT_OUT} rewrites "
            "the committed table), a path, or a folder ending in /; default: a fresh file under benchmarks/results/local/")
TITLE = "Where the thread pool's second thread pays"

#: (op, N, density, B): square N x N weights, spmm / spmm_t / sddmm; "lstm": H units, 4H x H
CELLS = [(op, n, d, b) for op in ("spmm", "spmm_t", "sddmm") for n, d, b in
         [(256, 0.01, 20), (512, 0.01, 20), (1024, 0.01, 20), (1536, 0.01, 20), (2048, 0.01, 20),
          (4096, 0.01, 20), (2048, 0.01, 1), (4096, 0.01, 1), (8192, 0.01, 1), (16384, 0.01, 1)]] + \
        [("lstm", h, 0.01, 20) for h in (256, 512, 1024, 2048)]


def work_of(op: str, n: int, nnz: int, B: int) -> int:
    rows = 4 * n if op == "lstm" else n
    return (nnz + rows) * B


def child(rounds: int) -> None:
    """Times every cell on 1 and 2 threads (2: every call split), alternating; prints JSON rows."""
    sys.path.insert(0, str(ROOT))
    import sparse_engine  # noqa: F401
    import torch
    from sparse_engine import SparseWeight, _C, ops
    from sparse_engine.runtime.timing import times_of

    sys.path.insert(0, str(HERE))
    from quiet import wait_quiet  # noqa: E402

    _C._set_parallel_work(0)
    sp = torch.ops.sparse_engine
    rows = []
    for op, n, d, B in CELLS:
        g = torch.Generator().manual_seed(n + B)
        if op == "lstm":
            W = SparseWeight.random(4 * n, n, d, generator=g)
            gx, h, c = torch.randn(4 * n, B, generator=g), torch.randn(n, B, generator=g), torch.randn(n, B, generator=g)
            vals = W.values.detach()
            fn = lambda: sp.lstm_step(*W.index, vals, gx, h, c)  # noqa: E731
        else:
            W = SparseWeight.random(n, n, d, generator=g)
            X, G = torch.randn(n, B, generator=g), torch.randn(n, B, generator=g)
            v_t = ops.transposed_values(W)
            fn = {"spmm": lambda: ops.spmm(W, X), "spmm_t": lambda: ops.spmm_t(W, G, v_t),
                  "sddmm": lambda: ops.sddmm(W, G, X)}[op]
        times = {1: [], 2: []}
        idle = []
        with torch.no_grad():
            for _ in range(rounds):
                idle.append(wait_quiet())
                for threads in (1, 2):
                    torch.set_num_threads(threads)
                    times[threads].append(statistics.median(times_of(fn, 7, 3, min_time=0.02)))
        rows.append([op, n, d, B, work_of(op, n, W.nnz, B), statistics.median(times[1]) * 1e6,
                     statistics.median(times[2]) * 1e6, min(idle)])
    print(json.dumps(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spin", nargs="+", default=["20:50"],
                        help="IDLE:WAIT spin bounds in us (SPARSE_ENGINE_POOL_SPIN_US, SPARSE_ENGINE_POOL_WAIT_US)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", help=OUT_HELP)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(args.child)
    sys.path.insert(0, str(HERE))
    from common import announce, cell, finish, markdown_table, results_path, write_result  # noqa: E402

    path = results_path(args.out, DEFAULT_OUT)
    announce(TITLE, ["spin us (idle:wait)", "cells", "1-min load after"], path)

    table = []
    loads = []
    for spin in args.spin:
        idle, wait = spin.split(":")
        env = {**os.environ, "SPARSE_ENGINE_POOL_SPIN_US": idle, "SPARSE_ENGINE_POOL_WAIT_US": wait}
        with cell(f"spin {spin}") as c:
            out = subprocess.run([sys.executable, __file__, "--child", str(args.rounds)], env=env, capture_output=True,
                                 text=True, check=True)
            loads.append(f"{os.getloadavg()[0]:.2f}")
            rows = json.loads(out.stdout.splitlines()[-1])
            for op, n, d, B, work, t1, t2, idle in rows:
                table.append([spin, op, f"{n:,}", f"{d:.0%}", B, f"{work:,}", f"2^{work.bit_length() - 1}",
                              f"{t1:.1f}", f"{t2:.1f}", f"{t2 / t1:.2f}", f"{idle:.0%}"])
            c.result = [spin, len(rows), loads[-1]]
    write_result(path, TITLE,
                        f"{__doc__.split(chr(10) + chr(10))[0]}\n\nMedians over {args.rounds} alternating rounds "
                        "of the median of 7 samples (each >= 20 ms of calls), each round started when the machine "
                        "was at least 90% idle over 0.3 s (or after 2 minutes of waiting); idle: the least idle "
                        "of a cell's starts. 2/1: the 2-thread time over the 1-thread time (< 1: the second "
                        f"thread pays). 1-minute load average after each spin setting: {', '.join(loads)}.\n\n"
                        + markdown_table(["spin us (idle:wait)", "op", "N or H", "density", "B", "work", "about",
                                          "1 thread us", "2 threads us", "2/1", "idle"], table))
    finish(path)


if __name__ == "__main__":
    main()
