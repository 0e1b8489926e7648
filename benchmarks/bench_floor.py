"""Large-shape CPU kernels against this machine's memory floor, measured in the same run.

    python benchmarks/bench_floor.py [--quick] [--threads 2] [--repeat 3]  # -> benchmarks/results/local/floor_cpu-<t>.md
    python benchmarks/bench_floor.py --out floor_cpu.md                     # rewrites the committed table

First the floor (benchmarks/floor.py): STREAM's triad (sequential bandwidth) and the random
gather bandwidth of rows of the padded batch the kernels read (B floats rounded up to 8). Then
each kernel at a large shape, untiled and cache-tiled (csrc/cpu/gather.h, gather_panels: 16 MiB
panels from 32 MiB of gathered source; the header says from what size the library tiles on this
machine by default), alternating, the best of ``--repeat`` runs each, and
its two floors from the bytes it moves:

* gather floor: the streamed bytes (index, values, outputs, sequential operands) at the triad's
  bandwidth plus the gathered rows (one per nonzero, the padded row) at the random gather
  bandwidth from a table the size of the gathered operand: what the untiled kernel, which
  gathers every row from wherever the operand sits, can reach;
* stream floor: every byte moved once at the triad's bandwidth (the gathered operand read once,
  as a cache-aware kernel that reused every row would): the bound no layout beats.

The fraction of a floor is floor / measured time (above 100%: faster than that floor, as a
tiled kernel can be against the gather floor). Shapes (float32, 32 nonzeros per row unless said):
spmm / spmm_t (with values_t) / sddmm at 65,536 and 1,048,576 square; SET-MLP's hidden layer
(333,333 x 333,333 at epsilon 13, B = 40: forward spmm, spmm_t of the input gradient, sddmm
of the weight gradient); the LSTM step at hidden 1,000,000 (W_hh 4M x 1M, B = 20) forward and
backward. The results file is rewritten after every row, with the load average: without --out a
fresh file under benchmarks/results/local/ (named at the start and the end), the committed table
only with --out floor_cpu.md.
"""
from __future__ import annotations

import argparse
import os

from common import (announce, cell, finish, markdown_table, out_help, results_path,  # imports sparse_engine first
                    write_result)
from floor import gather_bandwidth, triad_bandwidth
from sparse_engine.runtime.timing import best_of

import sparse_engine._C as _C
import torch
from sparse_engine.sparse import SparseWeight

RAW = torch.ops.sparse_engine
F32 = 4
UNTILED = (2**62, 2**62, 2**62)
TILED = (32 << 20, 16 << 20, 0, False)  # 16 MiB panels from 32 MiB, whatever the row size and the pattern
DEFAULT = "floor_cpu.md"
TITLE = "Large-shape CPU kernels against the memory floor"
HEADER = ["kernel", "gathered operand", "gathers GB/s", "untiled s", "tiled s", "untiled / tiled",
          "gather floor s", "stream floor s",
          "untiled % of gather floor", "tiled % of gather floor", "tiled % of stream floor", "load"]


def padded(B: int) -> int:
    return -(-B // 8) * 8


def product_cases(n_rows, n_cols, nnz_per_row, B, label, generator, epsilon=None):
    """(label, fn, streamed bytes, gathered bytes, sequential-only bytes, rows of the gathered
    operand) of spmm, spmm_t, sddmm."""
    if epsilon is None:
        W = SparseWeight.random(n_rows, n_cols, nnz_per_row / n_cols, generator=generator)
    else:
        W = SparseWeight.erdos_renyi(n_rows, n_cols, epsilon, generator=generator)
    idx, v = W.index, W.values.detach()
    vt = v[idx[4].long()]
    X = torch.randn(n_cols, B, generator=generator)
    G = torch.randn(n_rows, B, generator=generator)
    nnz, s = W.nnz, padded(B) * F32
    rows_out = n_rows * B * F32
    cases = [
        (f"spmm {label}", lambda: RAW.spmm(*idx, v, X),
         8 * nnz + 8 * n_rows + rows_out, nnz * s, 8 * nnz + 8 * n_rows + rows_out + n_cols * B * F32, n_cols),
        (f"spmm_t {label}", lambda: RAW.spmm_t(*idx, v, G, vt),
         8 * nnz + 8 * n_cols + n_cols * B * F32, nnz * s, 8 * nnz + 8 * n_cols + n_cols * B * F32 + rows_out, n_rows),
        (f"sddmm {label}", lambda: RAW.sddmm(*idx, G, X),
         8 * nnz + 8 * n_rows + rows_out, nnz * s, 8 * nnz + 8 * n_rows + rows_out + n_cols * B * F32, n_cols),
    ]
    return W, cases


def lstm_cases(H, per_row, B, generator):
    """The fused LSTM step forward and backward at hidden H."""
    W = SparseWeight.random(4 * H, H, per_row / H, generator=generator)
    idx, v = W.index, W.values.detach()
    vt = v[idx[4].long()]
    gx, h, c = (torch.randn(n, B, generator=generator) for n in (4 * H, H, H))
    _, c2, acts = RAW.lstm_step(*idx, v, gx, h, c)
    dh, dc = torch.randn(H, B, generator=generator), torch.randn(H, B, generator=generator)
    nnz, s, HB = W.nnz, padded(B) * F32, H * B * F32
    fwd_stream = 8 * nnz + 8 * 4 * H + 4 * HB + HB + 6 * HB  # index+values, row_ptr, gx, c; h', c', acts
    bwd_stream = 8 * nnz + 8 * H + 4 * HB + 4 * HB + 4 * HB + 3 * HB  # csc+values_t; acts, c's, dh, dc; dG; dh', dc'
    return W, [
        (f"lstm_step H={H:,}", lambda: RAW.lstm_step(*idx, v, gx, h, c), fwd_stream, nnz * s, fwd_stream + HB, H),
        (f"lstm_step_backward H={H:,}", lambda: RAW.lstm_step_backward(*idx, v, acts, c, c2, dh, dc, vt),
         bwd_stream, nnz * s, bwd_stream + 4 * HB, 4 * H),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small shapes only (checks the script)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default=None, help=out_help(DEFAULT))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = results_path(args.out, DEFAULT)
    announce(TITLE, HEADER, path)
    load0 = os.getloadavg()[0]
    with cell("floor: the triad's bandwidth") as c:
        triad = triad_bandwidth(1 << (22 if args.quick else 26))
        c.result = f"{triad / 1e9:.1f} GB/s"
    default = _C._set_tiling(*UNTILED)
    _C._set_tiling(*default)
    head = (f"Floor: triad {triad / 1e9:.1f} GB/s (benchmarks/floor.py); the random gather bandwidth of each "
            f"row's gathered operand is in its row. Load average at the start {load0:.1f}. The library's default "
            f"here tiles from {default[0] / 2**20:,.0f} MiB of gathered rows of >= {default[2]} bytes (32 MiB or the "
            "level-3 cache a core shares, whichever is larger), its panels chosen from a sample of the pattern; the "
            "tiled column forces 16 MiB panels from 32 MiB.")
    g = torch.Generator().manual_seed(0)
    if args.quick:
        shapes = [("product", (65_536, 65_536, 8, 20, "65,536 / 8 per row, B=20", None))]
    else:
        shapes = [("product", (65_536, 65_536, 32, 20, "65,536, B=20", None)),
                  ("product", (1 << 20, 1 << 20, 32, 20, "1,048,576, B=20", None)),
                  ("product", (333_333, 333_333, None, 40, "SET-MLP 333,333 eps 13, B=40", 13.0)),
                  ("lstm", (1_000_000, 32, 20))]
    rows = []
    for kind, spec in shapes:
        with cell(f"building the weight: {spec[4] if kind == 'product' else f'LSTM W_hh, hidden {spec[0]:,}'}"):
            if kind == "product":
                n_rows, n_cols, per_row, B, label, eps = spec
                W, cases = product_cases(n_rows, n_cols, per_row, B, label, g, eps)
            else:
                W, cases = lstm_cases(*spec, generator=g)
                B = spec[2]
        for name, fn, streamed, gathered, sequential, src_rows in cases:
            with cell(name) as c:
                table = src_rows * padded(B) * F32
                gather = gather_bandwidth(padded(B), table_bytes=table)
                fn()  # warm: index checks, transposed index, pages
                times = {"untiled": float("inf"), "tiled": float("inf")}
                before = _C._set_tiling(*TILED)
                try:
                    for _ in range(args.repeat):  # alternating, so both see the same load
                        for mode in times:
                            _C._set_tiling(*(UNTILED if mode == "untiled" else TILED))
                            times[mode] = min(times[mode], best_of(fn, repeat=1))
                finally:
                    _C._set_tiling(*before)
                gather_floor = streamed / triad + gathered / gather
                stream_floor = sequential / triad
                u, t = times["untiled"], times["tiled"]
                c.result = [name, f"{table / 2**20:,.0f} MiB", f"{gather / 1e9:.1f}", f"{u:.3f}", f"{t:.3f}",
                            f"{u / t:.2f}x", f"{gather_floor:.3f}", f"{stream_floor:.3f}",
                            f"{100 * gather_floor / u:.0f}%", f"{100 * gather_floor / t:.0f}%",
                            f"{100 * stream_floor / t:.0f}%", f"{os.getloadavg()[0]:.1f}"]
            rows.append(c.result)
            write_result(path, TITLE, head + "\n\n" + markdown_table(HEADER, rows)
                         + f"\n\n{args.threads} threads, float32, best of {args.repeat} alternating runs; "
                           "`python benchmarks/bench_floor.py` (its docstring says what each floor counts).")
        del W, cases
    finish(path)


if __name__ == "__main__":
    main()
