"""Fused recurrent step (W_hh h + gate math in one pass: csrc/cpu/rnn_step_cpu.cpp on the CPU,
csrc/cuda/rnn_step_cuda.cu on a GPU) against the composed step (spmm op, then torch's elementwise
ops), forward and backward, per LSTM/GRU step. This is the measurement behind using the fused op.

    python benchmarks/bench_rnn_step.py [--batch 20] [--repeats 50]   # -> ...local/rnn_step_cpu-<time>.md
    python benchmarks/bench_rnn_step.py --device cuda                  # -> ...local/rnn_step_gpu-<time>.md
    python benchmarks/bench_rnn_step.py --out rnn_step_cpu.md          # rewrites the committed table
    python benchmarks/bench_rnn_step.py --sizes 256:0.1 --repeats 3    # a quick check

The results file is rewritten after every size (and into --copy-to); a size that fails (out of
memory) is recorded as such; --budget-s stops starting sizes after that many seconds. Without --out
it is a fresh file under benchmarks/results/local/ (named at the start and the end); the committed
table is rewritten only with --out rnn_step_cpu.md (rnn_step_gpu.md). The console shows the
table's header, then a line as each size starts and one per row as it ends.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import sparse_engine as se  # noqa: E402
from common import add_copy_to, announce, cell, finish, machine, out_help, results_path, write_text  # noqa: E402
from sparse_engine.kernels import has_kernel  # noqa: E402
from sparse_engine.recurrent.cell_steps import CELLS  # noqa: E402
from sparse_engine.runtime.timing import times_of  # noqa: E402
import torch  # noqa: E402

SIZES = [(256, 0.1), (512, 0.05), (1500, 0.05), (1500, 0.33), (4096, 0.01), (16384, 0.001), (16384, 0.01)]
GPU_SIZES = SIZES + [(65536, 0.01)]
_sync = lambda: None  # noqa: E731  (torch.cuda.synchronize on a GPU)


def time_pair(fused, composed, repeats):
    """Median microseconds of both, timed alternately so that a changing machine load hits both alike."""
    fused(), composed()
    t = ([], [])
    for _ in range(repeats):
        for f, out in zip((fused, composed), t):
            out += times_of(f, 1, sync=_sync)
    return tuple(1e6 * sorted(x)[len(x) // 2] for x in t)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--out", default=None, help=out_help("rnn_step_<cpu|gpu>.md"))
    add_copy_to(p)
    p.add_argument("--budget-s", type=float, default=None, help="stop starting sizes after this many seconds")
    p.add_argument("--sizes", nargs="+", default=None, help="hidden:density pairs (default: the table's)")
    args = p.parse_args(argv)
    global _sync
    dev = torch.device(args.device)
    if dev.type == "cuda":
        _sync = torch.cuda.synchronize
        if not has_kernel("lstm_step", "cuda"):
            sys.exit("this build has no CUDA fused step kernels (csrc/cuda/rnn_step_cuda.cu)")
    out = results_path(args.out, f"rnn_step_{'gpu' if dev.type == 'cuda' else 'cpu'}.md")
    ops, B = torch.ops.sparse_engine, args.batch
    rows, t_start = [], time.perf_counter()
    sizes = ([(int(x.split(":")[0]), float(x.split(":")[1])) for x in args.sizes] if args.sizes
             else GPU_SIZES if dev.type == "cuda" else SIZES)
    announce(title(dev, B), COLUMNS, out)
    for H, d in sizes:
        if args.budget_s is not None and time.perf_counter() - t_start > args.budget_s:
            rows.append(f"| {H:,} | {d:g} | | not run (budget of {args.budget_s:.0f} s spent) | | | | |")
            print(rows[-1], flush=True)
            continue
        with cell(f"hidden {H:,} density {d:g}") as c:
            try:
                new = measure(ops, H, d, B, dev, args.repeats)
                c.result = f"{len(new)} rows"
            except (RuntimeError, MemoryError) as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
                new = [f"| {H:,} | {d:g} | | fails: {str(exc).splitlines()[0][:80]} | | | | |"]
                c.result = new[0]
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
        rows += new
        write(out, args, dev, B, rows)
    write(out, args, dev, B, rows)
    finish(out)


def weight(rows: int, cols: int, d: float, dev: torch.device, seed: int) -> se.SparseWeight:
    """A random W_hh; on a GPU drawn there (SparseWeight.random draws on the host: minutes at 100M+ entries)."""
    if dev.type != "cuda":
        return se.SparseWeight.random(rows, cols, d)
    from common import random_csr_on

    return se.SparseWeight(*random_csr_on(rows, cols, int(round(d * rows * cols)), dev, seed), (rows, cols),
                           validate=False)


def measure(ops, H, d, B, dev, repeats) -> list[str]:
    """Table rows of one size: fused vs composed LSTM and GRU forward and backward."""
    rows = []
    W = weight(4 * H, H, d, dev, seed=0)
    v, idx = W.values.detach(), W.index
    vt = v[W.csc_perm.long()]  # the values in column order, as the recurrence gives both backward steps
    g, h, c = (torch.randn(n, B, device=dev) for n in (4 * H, H, H))
    acts = torch.rand(4 * H, B, device=dev)
    lstm, gru = CELLS["LSTM"], CELLS["GRU"]
    res = {
        "LSTM fwd": time_pair(lambda: ops.lstm_step(*idx, v, g, h, c), lambda: lstm.step(v, idx, g, h, c), repeats),
        "LSTM bwd": time_pair(lambda: ops.lstm_step_backward(*idx, v, acts, c, c, h, h, vt),
                              lambda: lstm.step_backward(v, idx, acts, c, c, h, h, values_t=vt), repeats),
    }
    Wg = weight(3 * H, H, d, dev, seed=1)
    vg, ig, bg = Wg.values.detach(), Wg.index, torch.randn(3 * H, device=dev)
    vgt = vg[Wg.csc_perm.long()]
    res["GRU fwd"] = time_pair(lambda: ops.gru_step(*ig, vg, g[:3 * H], h, bg),
                               lambda: gru.step(vg, ig, g[:3 * H], h, bg), repeats)
    res["GRU bwd"] = time_pair(lambda: ops.gru_step_backward(*ig, vg, acts, h, h, vgt),
                               lambda: gru.step_backward(vg, ig, acts, h, h, values_t=vgt), repeats)
    per_row = round(W.nnz / (4 * H))
    for k, (fused, composed) in res.items():
        rows.append(f"| {H:,} | {d:g} | {per_row} | {k} | {fused:.0f} | {composed:.0f} | {composed / fused:.2f}x "
                    f"| {os.getloadavg()[0]:.1f} |")
        print(rows[-1], flush=True)
    return rows


COLUMNS = ["hidden", "density", "nnz per row", "step", "fused (us)", "composed (us)", "composed / fused", "load"]


def title(dev: torch.device, B: int) -> str:
    return f"One recurrent step, fused op vs composed (spmm + torch elementwise), {dev.type}, B={B}"


def write(out: Path, args, dev: torch.device, B: int, rows: list[str]) -> None:
    text = "\n".join([
        f"# {title(dev, B)}", "",
        f"- machine: {machine()}",
        f"- median of {args.repeats}, microseconds", "",
        "Fused and composed are timed alternately; load: the 1-minute load average after each row. Both "
        "backward steps get W_hh's values in column order (values_t), made once per sequence by the recurrence. "
        "sparse_engine.kernels.choose.choose_fused is the rule drawn from this table (docs/cpu_kernels.md).", "",
        "| " + " | ".join(COLUMNS) + " |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows, ""])
    write_text(out, text, args.copy_to)


if __name__ == "__main__":
    main()
