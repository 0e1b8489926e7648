"""The estimated step time's products (sparse_engine/runs/step_estimate.py) against the same
products timed on the whole matrix, in the same run: an LSTM's W_hh (4H x H, 32 nonzeros per row)
at B = 20, forward (spmm) and backward (spmm_t with the values in column order, as the recurrence
calls it, and sddmm), for H up to a million units.

"one block" is how the estimate timed them before 2026-11-27 (one block of rows with all the
columns, scaled by the rows over the block's): its transposed product wrote every column's output
once per block, an error growing with H (5.0x the measured step at 8.6 million units on an H200,
results/caps_cuda.md). The estimate now times blocks of rows for the forward and the weight
gradient and blocks of columns for W^T G, each at two sizes (module docstring). Each ratio is the
estimate over the whole matrix's time (1: exact).

    python benchmarks/bench_step_estimate.py --hidden 16k,64k,256k,1M --out step_estimate_products_cpu.md
    python benchmarks/bench_step_estimate.py --device cuda --hidden 256k,1M,4M --out step_estimate_products_cuda.md
"""
from __future__ import annotations

import argparse
import os

from common import (add_copy_to, announce, cell, finish, markdown_table, out_help, parse_hidden,  # sparse_engine first
                    results_path, write_result)

import torch
from sparse_engine import ops
from sparse_engine.runs import step_estimate
from sparse_engine.sparse import SparseWeight

DEFAULT = "step_estimate_products.md"
TITLE = "The step estimate's products against the whole matrix's"
B, PER_ROW = 20, 32


def one_block(rows, cols, nnz, device, gen) -> tuple[float, float]:
    """(forward, backward) seconds as the estimate took them before: one block of rows, scaled."""
    block = min(rows, step_estimate._BLOCK_NNZ[device.type] // PER_ROW)
    W = SparseWeight.random(block, cols, nnz=block * PER_ROW, generator=gen).to(device)
    X, G = torch.randn(cols, B, generator=gen).to(device), torch.randn(block, B, generator=gen).to(device)
    with torch.no_grad():
        fwd = step_estimate._seconds(lambda: ops.spmm(W, X), device)
        bwd = step_estimate._seconds(lambda: (ops.spmm_t(W, G), ops.sddmm(W, G, X)), device)
    return fwd * rows / block, bwd * rows / block


def whole(rows, cols, nnz, device, gen) -> tuple[float, float]:
    """(forward, backward) seconds of the whole matrix's products, called as the recurrence calls them."""
    W = SparseWeight.random(rows, cols, nnz=nnz, generator=gen).to(device)
    X, G = torch.randn(cols, B, generator=gen).to(device), torch.randn(rows, B, generator=gen).to(device)
    with torch.no_grad():
        values_t = ops.transposed_values(W)
        fwd = step_estimate._seconds(lambda: ops.spmm(W, X), device)
        bwd = step_estimate._seconds(lambda: (ops.spmm_t(W, G, values_t), ops.sddmm(W, G, X)), device)
    return fwd, bwd


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", default="16k,64k,256k,1M", help="comma-separated LSTM sizes (10k, 1M, ...)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", default=None, help=out_help(DEFAULT))
    add_copy_to(p)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    header = ["hidden", "nonzeros", "whole fwd ms", "whole bwd ms", "estimate fwd ms", "estimate bwd ms",
              "estimate / whole (fwd, bwd)", "one block fwd ms", "one block bwd ms", "one block / whole (fwd, bwd)",
              "load"]
    rows_out, path = [], results_path(args.out, DEFAULT)
    announce(TITLE, header, path)
    for H in (parse_hidden(h) for h in args.hidden.split(",")):
        rows, cols = 4 * H, H
        nnz = PER_ROW * rows
        with cell(f"hidden {H:,}") as c:
            gen = torch.Generator().manual_seed(0)
            est = step_estimate._product_times(rows, cols, nnz, B, B, torch.float32, device, gen)
            old = one_block(rows, cols, nnz, device, gen)
            ref = whole(rows, cols, nnz, device, gen)
            c.result = [f"{H:,}", f"{nnz:,}", *(f"{1e3 * t:.1f}" for t in ref),
                        f"{1e3 * est.forward:.1f}", f"{1e3 * est.backward:.1f}",
                        f"{est.forward / ref[0]:.2f}, {est.backward / ref[1]:.2f}",
                        *(f"{1e3 * t:.1f}" for t in old), f"{old[0] / ref[0]:.2f}, {old[1] / ref[1]:.2f}",
                        f"{os.getloadavg()[0]:.1f}"]
        rows_out.append(c.result)
        write_result(path, TITLE, f"LSTM W_hh (4H x H, {PER_ROW} nonzeros per row), B = {B}, float32, "
                     f"{args.device}; each time the fastest of 3 calls after a warm-up "
                     "(step_estimate._seconds).\n\n"
                     + markdown_table(header, rows_out)
                     + "\n\n`python benchmarks/bench_step_estimate.py` (its docstring says how to read it).",
                     args.copy_to)
    finish(path)


if __name__ == "__main__":
    main()
