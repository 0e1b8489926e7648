"""Would column panels of the state pay on a GPU? The million-unit LSTM step spends its time in gathers
of an 80 MB state (B = 20 floats a row) that does not fit L2 (issue 44: spmm, sddmm and the fused step
at 5.5-6.4 ms a call where the 65,536-unit cells of the kernel grid, their state in L2, gather about 3x
faster per entry). A kernel that takes a row's entries one column panel at a time, each panel's state
rows fitting L2, would gather from L2; on the CPU the same scheme lost at B = 20 (csrc/cpu/tiling.h:
0.58x on the LSTM step at 10^6 units), because every panel costs a pass over the rows and their outputs.

This measures it before any kernel is written, with the kernels we have: W (4H x H, an LSTM's W_ih or
W_hh, a uniform pattern of --per-row entries a row) split into P column panels, each its own CSR (the
entries with columns in [p H / P, (p + 1) H / P), in their order), and

* spmm: W h as P products of the panels with their slices of h, each added into the output (one more
  pass over the output a panel than a kernel that adds in place would make: this is the pessimistic
  side);
* sddmm: the weight gradient at W's entries as P sddmm calls (each panel's entries are its own: no
  adds), against the whole, and cuSPARSE's SpMM / SDDMM on the whole W beside them.

Each panelled result is checked against the whole product (float32 reassociation bound). The panels'
CSRs are made outside the timing. A row per (H, B, op, P): the whole and the panelled times, their
ratio, the state a panel gathers from and the GPU's L2. P = 1 is the whole.

    python benchmarks/bench_state_panels.py --out state_panels_cuda.md             # H 262,144 and 1,048,576
    python benchmarks/bench_state_panels.py --device cpu --hidden 65536 --panels 1 4 --out /tmp/p.md

``--out``: the results file (benchmarks/common.py's rule: a bare name is written in benchmarks/results/;
without it a fresh file under benchmarks/results/local/).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (add_copy_to, announce, cell, cuda_times_of, finish, markdown_table, ms, out_help,  # noqa: E402
                    random_csr_on, results_path, write_result)

from sparse_engine import SparseWeight, ops  # noqa: E402
from sparse_engine.runtime.timing import times_of  # noqa: E402
import torch  # noqa: E402

DEFAULT = "state_panels.md"
TITLE = "Column panels of the state, emulated with one CSR per panel: do they pay?"
COLUMNS = ["H", "B", "op", "panels", "panel state MB", "L2 MB", "whole ms", "panelled ms", "whole / panelled",
           "cuSPARSE ms", "check"]


def panel_weights(w: SparseWeight, panels: int) -> list[tuple[int, int, SparseWeight]]:
    """(lo, hi, W_p) for P column panels of W: W_p holds W's entries with columns in [lo, hi), in their
    order, with columns shifted by lo (a (rows x (hi - lo)) CSR)."""
    rows, cols = w.shape
    row_of = torch.repeat_interleave(torch.arange(rows, device=w.row_ptr.device), w.row_ptr.diff())
    out = []
    for p in range(panels):
        lo, hi = p * cols // panels, (p + 1) * cols // panels
        keep = (w.col_idx >= lo) & (w.col_idx < hi)
        ptr = torch.zeros(rows + 1, dtype=torch.int64, device=w.row_ptr.device)
        torch.cumsum(torch.bincount(row_of[keep], minlength=rows), 0, out=ptr[1:])
        out.append((lo, hi, SparseWeight(ptr, (w.col_idx[keep] - lo).to(torch.int32), w.values.detach()[keep],
                                         (rows, hi - lo), validate=False, requires_grad=False)))
    del row_of
    return out


def timer(device: torch.device, repeat: int):
    if device.type == "cuda":
        return lambda fn: min(cuda_times_of(fn, repeat, warmup=1))
    return lambda fn: min(times_of(fn, repeat, warmup=1))


def close(a: torch.Tensor, b: torch.Tensor, terms: int) -> str:
    """The panelled result against the whole: float32 sums of the same products in another order."""
    bound = 4 * terms * torch.finfo(a.dtype).eps * (b.abs().max().item() + 1e-30)
    err = (a - b).abs().max().item()
    return "same" if err == 0 else ("close" if err <= bound else f"WRONG (max error {err:.3g}, bound {bound:.3g})")


def bench_cell(H: int, B: int, per_row: int, panel_counts, ops_: list[str], device, repeat: int, seed: int):
    """The rows of one (H, B): every op at every panel count."""
    rows = []
    row_ptr, col_idx, values = random_csr_on(4 * H, H, 4 * H * per_row, device, seed)
    w = SparseWeight(row_ptr, col_idx, values, (4 * H, H), validate=False, requires_grad=False)
    gen = torch.Generator(device=device).manual_seed(seed)
    h = torch.randn(H, B, device=device, generator=gen)
    g = torch.randn(4 * H, B, device=device, generator=gen)
    best = timer(device, repeat)
    l2 = f"{torch.cuda.get_device_properties(device).L2_cache_size / 2**20:.0f}" if device.type == "cuda" else "-"
    csr = w.to_torch_sparse_csr().detach() if device.type == "cuda" else None
    whole = {"spmm": ops.spmm(w, h), "sddmm": ops.sddmm(w, g, h)}
    t_whole = {"spmm": best(lambda: ops.spmm(w, h)), "sddmm": best(lambda: ops.sddmm(w, g, h))}
    t_cusparse = {}
    if csr is not None:
        t_cusparse = {"spmm": best(lambda: torch.sparse.mm(csr, h)),
                      "sddmm": best(lambda: torch.sparse.sampled_addmm(csr, g, h.t(), beta=0.0))}
    for P in panel_counts:
        parts = panel_weights(w, P) if P > 1 else [(0, H, w)]

        def spmm_panels():
            out = ops.spmm(parts[0][2], h[parts[0][0]:parts[0][1]])
            for lo, hi, wp in parts[1:]:
                out.add_(ops.spmm(wp, h[lo:hi]))
            return out

        def sddmm_panels():
            return [ops.sddmm(wp, g, h[lo:hi]) for lo, hi, wp in parts]

        for op in ops_:
            with cell(f"H {H:,}, B {B}, {op}, {P} panel{'s' * (P > 1)}") as c:
                fn = spmm_panels if op == "spmm" else sddmm_panels
                result = fn()
                if op == "sddmm":  # each panel's entries back in W's order, to compare
                    keep_all = torch.cat([((w.col_idx >= lo) & (w.col_idx < hi)).nonzero().flatten()
                                          for lo, hi, _ in parts])
                    flat = torch.empty_like(whole["sddmm"])
                    flat[keep_all] = torch.cat(result)
                    result = flat
                check = close(result, whole[op], per_row if op == "spmm" else B)
                t = best(fn)
                row = [f"{H:,}", B, op, P, f"{H / P * B * h.element_size() / 2**20:.1f}", l2,
                       ms(t_whole[op]), ms(t), f"{t_whole[op] / t:.2f}x", ms(t_cusparse.get(op)), check]
                c.result = row
                rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--hidden", type=int, nargs="+", default=[262144, 1048576])
    p.add_argument("--batch", type=int, nargs="+", default=[20])
    p.add_argument("--per-row", type=int, default=32, help="entries a row of W (4H x H)")
    p.add_argument("--panels", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--ops", nargs="+", default=["spmm", "sddmm"], choices=["spmm", "sddmm"])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help=out_help(DEFAULT))
    add_copy_to(p)
    a = p.parse_args(argv)
    for name in ("hidden", "batch", "panels"):
        if any(v < 1 for v in getattr(a, name)):
            p.error(f"--{name}: expected positive integers, got {getattr(a, name)}")
    if a.per_row < 1:
        p.error(f"--per-row: expected a positive integer, got {a.per_row}")
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    path = results_path(a.out, DEFAULT)
    announce(TITLE, COLUMNS, path)
    rows = []
    notes = (f"W: 4H x H, {a.per_row} entries a row (uniform), float32; h: H x B; device {device}; best of "
             f"{a.repeat} calls{' (CUDA events)' if device.type == 'cuda' else ''}. check: the panelled result "
             "against the whole product ('same' bits, or 'close': within 4 x terms x eps of the largest output).")

    def write():
        write_result(path, TITLE, f"{notes}\n\n{markdown_table(COLUMNS, rows)}\n\n1-minute load average "
                     f"{os.getloadavg()[0]:.1f} at the end.", a.copy_to)

    for H in a.hidden:
        for B in a.batch:
            rows += bench_cell(H, B, a.per_row, a.panels, a.ops, device, a.repeat, a.seed)
            write()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    write()
    finish(path)
    return 1 if any(str(r[-1]).startswith("WRONG") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
