"""Which long-row threshold and segment should the CUDA gather (spmm, spmm_t) use? A sweep over the two
multiples of the mean row that decide where a row's entries go (csrc/cuda/common.cuh; set through
``sparse_engine._C._set_gather_long_rows``): rows longer than LONG x the mean leave the row kernel (a warp
a row) for the long-row kernel (a block a row), and rows longer than a segment, SEG x the mean, are split
into segments (a block each) whose sums a third kernel adds. The defaults are 4 and 2.

Why (issue 45): the eighth H200 run's grid lost spmm cells only on Zipf rows, at B = 1 (0.64-0.98x
cuSPARSE at 1% and 5%) and at B >= 128 on 16,384 units (0.82-0.96x), where the same entries in uniform
rows win; on those patterns 30-68% of the entries sit in split rows' segments of 1,024-1,536 entries
(6 chunks for each of a block's 8 warps at B = 1: short items) and rows of up to 4x the mean stay on one
warp (a tail). Each cell here times ours at every setting in the same process, against cuSPARSE once,
and checks every result against a float64 reference (benchmarks/float64_check.py), so that a rule can be
chosen from measurements.

    python benchmarks/bench_gather_tuning.py --out gather_tuning_cuda.md      # the default sweep
    python benchmarks/bench_gather_tuning.py --n 65536 --laws zipf1.2 --batch 1 --settings 4,2 4,8 2,8

Needs a GPU and a build with the CUDA kernels (one line and exit status 2 otherwise). ``--out``: the
results file (benchmarks/common.py's rule: a bare name is written in benchmarks/results/).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_copy_to, announce, cell, finish, markdown_table, out_help, results_path, write_result  # noqa: E402
from float64_check import check, verdict  # noqa: E402

from sparse_engine import SparseWeight  # noqa: E402
from sparse_engine import ops as se_ops  # noqa: E402
import torch  # noqa: E402

DEFAULT = "gather_tuning.md"
TITLE = "The CUDA gather's long-row threshold and segment, swept (spmm, spmm_t vs cuSPARSE)"
COLUMNS = ["N", "density", "law", "B", "op", "long x mean", "segment x mean", "ours ms", "cuSPARSE ms", "x",
           "vs 4, 2", "check"]
DEFAULT_SETTING = (4, 2)
SETTINGS = [(4, 2), (2, 2), (1, 2), (4, 8), (2, 8), (1, 8), (2, 32)]


def setting(text: str) -> tuple[int, int]:
    """'4,2' -> (4, 2): the long-row threshold and the segment as multiples of the mean row."""
    try:
        long_mult, seg_mult = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a setting is LONG,SEG (two integers), got {text!r}") from None
    if not (1 <= long_mult <= 64 and 2 <= seg_mult <= 64):
        raise argparse.ArgumentTypeError(f"LONG must be in [1, 64] and SEG in [2, 64], got {text!r}")
    return long_mult, seg_mult


def sweep_rows(cases: dict, settings, timed, checked) -> list[list]:
    """The table's rows for one (N, density, law, B): ``cases`` {op: (ours_fn, base_ms)}; ``timed(fn,
    setting)`` ours' ms at that setting, ``checked(op, fn, setting)`` its check text. 'vs 4, 2' is the
    defaults' time over this setting's (> 1: this one is faster), where the defaults were timed."""
    rows = []
    for op, (fn, base_ms) in cases.items():
        times = {s: timed(fn, s) for s in settings}
        for s in settings:
            t = times[s]
            base = times.get(DEFAULT_SETTING)
            rows.append([op, s[0], s[1], f"{t:.3f}", f"{base_ms:.3f}", f"{base_ms / t:.2f}x",
                         f"{base / t:.2f}x" if base else "-", checked(op, fn, s)])
    return rows


def cases_of(W, A, At, values_t, X, G, ops) -> dict:
    """{op: (ours, cuSPARSE's ms)} of a cell (cuSPARSE timed here, once)."""
    from bench_cuda import time_ms
    cases = {}
    if "spmm" in ops:
        cases["spmm"] = (lambda: se_ops.spmm(W, X), time_ms(lambda: torch.sparse.mm(A, X), budget_s=0.15))
    if "spmm_t" in ops:
        cases["spmm_t"] = (lambda: se_ops.spmm_t(W, G, values_t),
                           time_ms(lambda: torch.sparse.mm(At, G), budget_s=0.15))
    return cases


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[16384, 65536])
    p.add_argument("--density", type=float, nargs="+", default=[0.01])
    p.add_argument("--laws", nargs="+", default=["zipf1.0", "zipf1.2", "uniform"])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 20, 128, 256])
    p.add_argument("--settings", type=setting, nargs="+", default=SETTINGS,
                   help="LONG,SEG pairs (default: %(default)s); 4,2 (the defaults) is added first if missing")
    p.add_argument("--ops", nargs="+", default=["spmm", "spmm_t"], choices=["spmm", "spmm_t"])
    p.add_argument("--budget-s", type=float, default=300.0, help="no new (N, density, law) starts after this")
    p.add_argument("--out", default=None, help=out_help(DEFAULT))
    add_copy_to(p)
    a = p.parse_args(argv)
    if any(v < 1 for v in a.n + a.batch) or any(not 0 < d <= 1 for d in a.density):
        p.error("--n and --batch take positive integers, --density values in (0, 1]")
    from sparse_engine import _C
    if not torch.cuda.is_available() or not hasattr(_C, "_set_gather_long_rows"):
        p.error("needs a GPU and a build with the CUDA kernels (SPARSE_ENGINE_CUDA=1)")
    from bench_cuda import pattern_for, time_ms  # noqa: E402  (CUDA only)
    settings = [DEFAULT_SETTING] + [s for s in dict.fromkeys(a.settings) if s != DEFAULT_SETTING]
    path = results_path(a.out, DEFAULT)
    announce(TITLE, COLUMNS, path)
    rows, start, wrong = [], time.monotonic(), False
    notes = ("float32; every setting's result checked against a float64 reference (float64_check.py); timing: "
             "CUDA events, median of 5-50 calls (0.15 s of calls at most); cuSPARSE: torch.sparse.mm on CSR "
             "(spmm_t: on the CSR of W^T, ours with values_t, as bench_cuda.py); 'vs 4, 2': the defaults' time / "
             "this setting's (> 1: faster).")

    def write():
        write_result(path, TITLE, f"{notes}\n\n{markdown_table(COLUMNS, rows)}\n\n1-minute load average "
                     f"{os.getloadavg()[0]:.1f} at the end.", a.copy_to)

    def timed(fn, s):
        _C._set_gather_long_rows(*s)
        return time_ms(fn, budget_s=0.15)

    def checked(W, X, G, op, fn, s):  # bound to a cell's W, X, G (functools.partial) for sweep_rows
        _C._set_gather_long_rows(*s)
        return verdict(*check(W, X, G, {op: fn()}))

    try:
        for n in a.n:
            for d in a.density:
                for law in a.laws:
                    if time.monotonic() - start > a.budget_s:
                        print(f"budget of {a.budget_s:.0f} s spent: N={n} {law} and later not run")
                        break
                    row_ptr, col, values, _ = pattern_for(n, d, law, {})
                    W = SparseWeight(row_ptr, col, values, (n, n), validate=False, requires_grad=False)
                    A = torch.sparse_csr_tensor(W.row_ptr.to(torch.int32), W.col_idx, W.values, (n, n))
                    At = torch.sparse_csr_tensor(W.csc_ptr.to(torch.int32), W.csc_row, W.values[W.csc_perm],
                                                 (n, n))
                    values_t = se_ops.transposed_values(W)
                    for B in a.batch:
                        with cell(f"N={n} d={d:g} {law} B={B}") as c:
                            gen = torch.Generator(device="cuda").manual_seed(zlib.crc32(f"{n}/{d}/{law}/{B}".encode()))
                            X = torch.randn(n, B, generator=gen, device="cuda")
                            G = torch.randn(n, B, generator=gen, device="cuda")
                            _C._set_gather_long_rows(*DEFAULT_SETTING)
                            got = sweep_rows(cases_of(W, A, At, values_t, X, G, a.ops), settings, timed,
                                             functools.partial(checked, W, X, G))
                            rows += [[f"{n:,}", f"{d * 100:g}%", law, B, *r] for r in got]
                            wrong |= any(r[-1].startswith("WRONG") for r in got)
                            c.result = [f"{len(got)} rows"]
                        write()
                    W = A = At = values_t = None
                    torch.cuda.empty_cache()
    finally:
        _C._set_gather_long_rows(*DEFAULT_SETTING)
    write()
    finish(path)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
