"""What a compact index would save on the capped rows of issue #46: the bytes of the recurrent
matrix's index today and under candidate encodings, counted on patterns drawn as the models draw
them, against each row's peak (the memory model's plan, as bench_caps.py makes it).

Today a sparse W_hh (G*H x H) holds 12 bytes of index a nonzero: its CSR's columns (int32), its
transposed index's rows (int32) and permutation (int32, the CSR position of each transposed
entry), beside the row pointers (int64). Counted for each of the two sorted indexes:

* ``blocks16``: 16-bit offsets within 65,536-wide blocks (the issue's example), plus a marker for
  each run of a row's entries in one block (the block and the run's length: 2 bytes at least), which
  a kernel needs to know each entry's block;
* ``packed``: the fewest whole bytes that hold every index (3 below 2^24);
* ``entropy``: log2 C(n, k) bits for a row of k entries among n, the information-theoretic bound:
  no encoding of a uniformly random pattern does better on average;

and for the permutation, ``place``: each entry's place in its CSR row (1 byte while no row is
longer than 256; 2 bytes up to 65,536), its row's start read from the row pointers.

A uniformly random pattern's transpose is uniformly random: both indexes are counted on
``--sample`` rows drawn with the real row's proportions (k = 32 of H columns; G*32 of G*H rows)
and scaled to the matrix's nonzeros.

    python benchmarks/count_index_bytes.py --out compact_index_count_lstm.md

Without --out a fresh file benchmarks/results/local/compact_index_count_<model>-<UTC time>.md.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import sparse_engine  # noqa: F401  (before torch: the OpenMP waiting policy, see benchmarks/common.py)
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import add_copy_to, announce, cell, finish, markdown_table, results_path, write_result  # noqa: E402

BLOCK_BITS = 16
ENCODINGS = ("int32", "blocks16", "packed", "entropy")


def index_bytes(row_ptr: torch.Tensor, idx: torch.Tensor, n: int) -> dict:
    """Bytes of one sorted index (a CSR's columns among ``n``, or a transposed index's rows among
    ``n``) under each encoding of :data:`ENCODINGS`, and ``runs``: its (row, block) runs."""
    nnz = idx.numel()
    lengths = row_ptr.diff()
    row_of = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
    block = idx.long() >> BLOCK_BITS
    starts = torch.ones(nnz, dtype=torch.bool)
    starts[1:] = (row_of[1:] != row_of[:-1]) | (block[1:] != block[:-1])
    runs = int(starts.sum())
    k = lengths.double()
    bits = (math.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)).sum().item() / math.log(2)
    return {"int32": 4 * nnz, "blocks16": 2 * nnz + 2 * runs, "packed": max(1, -(-(n - 1).bit_length() // 8)) * nnz,
            "entropy": bits / 8, "runs": runs}


def place_bytes(longest_row: int) -> int:
    """Bytes a nonzero of the permutation stored as the entry's place in its CSR row."""
    return 1 if longest_row <= 256 else 2 if longest_row <= 65536 else 4


def count(hidden: int, gates: int, per_row: int, sample: int, seed: int = 0) -> dict:
    """Bytes a nonzero of W_hh's index (``gates*hidden`` x ``hidden``, ``per_row`` a row) under each
    encoding: {"csr": {...}, "transposed": {...}, "longest_row": ...}, from ``sample`` rows of each."""
    from sparse_engine.sparse.patterns import random_pattern
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, n, k in (("csr", hidden, per_row), ("transposed", gates * hidden, gates * per_row)):
        row_ptr, idx = random_pattern(sample, n, sample * k, generator=g)
        got = index_bytes(row_ptr, idx, n)
        out[name] = {e: got[e] / idx.numel() for e in ENCODINGS}
        if name == "csr":
            out["longest_row"] = int(row_ptr.diff().max())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--caps", default="8,12,16,24,80", help="card sizes in GiB (the LSTM rows of bench_caps.py)")
    p.add_argument("--model", default="lstm", choices=("lstm", "gru"))
    p.add_argument("--sample", type=int, default=1 << 16, help="rows drawn for each index")
    p.add_argument("--out", help="results file (default: benchmarks/results/local/...)")
    add_copy_to(p)
    a = p.parse_args(argv)
    from bench_caps import PER_ROW, gib, plan_row
    gates = {"lstm": 4, "gru": 3}[a.model]
    header = ["cap", "hidden", "W_hh nonzeros", "planned peak", "index today", "blocks16 B/nz (csr / transposed)",
              "saves", "packed B/nz", "saves", "entropy bound B/nz", "saves", "permutation as place saves",
              "at best (entropy bound + place)"]
    title = f"What a compact index would save: {a.model.upper()}, {PER_ROW} nonzeros a row, T=35, B=20"
    path = results_path(a.out, f"compact_index_count_{a.model}.md")
    announce(title, header, path)
    rows = []
    for cap in (float(c) for c in a.caps.split(",")):
        with cell(f"cap {cap:g}G") as c:
            hidden, plan = plan_row(a.model, int(cap * 2**30), None, "cuda", 0.95)
            nnz = gates * hidden * PER_ROW  # what SequenceModel draws: nonzeros = density x rows x cols
            got = count(hidden, gates, PER_ROW, a.sample)
            csr, tr = got["csr"], got["transposed"]
            today = plan.step.index
            saved = {e: (8 - csr[e] - tr[e]) * nnz for e in ("blocks16", "packed", "entropy")}
            place = (4 - place_bytes(got["longest_row"])) * nnz
            best = saved["entropy"] + place
            peak = plan.step.peak
            c.result = [f"{cap:g}G", f"{hidden:,}", f"{nnz:,}", gib(peak), f"{gib(today)} ({today / peak:.1%})",
                        f"{csr['blocks16']:.2f} / {tr['blocks16']:.2f}", f"{gib(saved['blocks16'])}",
                        f"{csr['packed']:.0f} / {tr['packed']:.0f}", f"{gib(saved['packed'])}",
                        f"{csr['entropy']:.2f} / {tr['entropy']:.2f}", f"{gib(saved['entropy'])}",
                        f"{gib(place)}", f"{gib(best)} ({best / peak:.1%}; +{best / (peak - best):.1%} units)"]
            rows.append(c.result)
        body = ("The recurrent matrix's index against the memory model's peak of each capped row "
                f"(`bench_caps.py`'s plan: the largest {a.model.upper()} under cap x 0.95, its cheapest options). "
                f"B/nz: bytes a nonzero in each sorted index, counted on {a.sample:,} rows of each drawn with "
                "`random_pattern` (today: 4 / 4, plus the 4-byte permutation). saves: against today's 12 bytes "
                "a nonzero. units: about how many more units the same cap would hold (the peak grows in "
                "proportion to the hidden size at these sizes).\n\n" + markdown_table(header, rows))
        write_result(str(path), title, body, a.copy_to)  # rewritten after every row
    finish(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
