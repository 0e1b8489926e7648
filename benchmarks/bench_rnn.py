"""One LSTM and one GRU training step (forward + backward), T=35 (``--steps``), B=20 (``--batch``), one layer,
input size = hidden, both matrices at the given density: SparseLSTM / SparseGRU against masked-dense
``nn.LSTM`` / ``nn.GRU`` (weights * mask re-applied each step, as sparselearning/Selfish-RNN do;
cuDNN on a GPU) and a ``torch.sparse`` CSR loop, in the same run. Each row records the 1-minute
load average when it was measured. Every (method, size) runs in its own subprocess so its peak memory is
its own and a failure (out of memory, cuDNN) is recorded as "fails" without ending the run.

    python benchmarks/bench_rnn.py                 # CPU table -> benchmarks/results/local/rnn_cpu-<time>.md
    python benchmarks/bench_rnn.py                 # on a CUDA machine: GPU table -> ...local/rnn_gpu-<time>.md
    python benchmarks/bench_rnn.py --out rnn_cpu.md   # rewrites the committed benchmarks/results/rnn_cpu.md
    python benchmarks/bench_rnn.py --largest       # + largest trainable hidden at 32 nonzeros/row
    python benchmarks/bench_rnn.py --sizes 1500:0.33 4096:0.01 --repeats 5 --cells LSTM
    python benchmarks/bench_rnn.py --batch 1 --sizes 4096:0.01 --cells LSTM   # one sequence at a time
    python benchmarks/bench_rnn.py --inference --steps 1 --batch 1 --sizes 1500:0.33   # a sampler's step, no_grad
    python benchmarks/bench_rnn.py --quick        # one small size, to check the script
    python3 benchmarks/bench_rnn.py --device cuda --budget-s 480 --out rnn_gpu.md --copy-to $OUT  # a 10-minute GPU run

On a GPU the SparseLSTM column needs this build's CUDA kernels (sparse_engine.kernels.HAS_CUDA_KERNELS);
without them it is recorded as "no CUDA kernels". Each SparseLSTM cell says which path ran:
"dense" (compute='auto' or 'dense' materialised the weights for torch's own recurrence,
docs/compute_paths.md) or the sparse kernels with their recurrent step, "fused" (one op per step:
csrc/cpu/rnn_step_cpu.cpp, csrc/cuda/rnn_step_cuda.cu), "composed" (spmm + torch elementwise) or
"composed fwd, fused bwd" (kernels/choose.py's rule). --compute sets the modules' compute
(default: the library default, 'auto'), so the sparse kernels can be timed where 'auto' goes dense. On a GPU the table also times the composed step (method
sparse_engine_composed: the module built with fused=False), so fused vs composed is measured in
the same run.
The results file is rewritten after every cell (and into --copy-to), and --budget-s stops starting
cells (and caps each cell's timeout) so that a run under a wall-clock limit still leaves a table.
Without --out it is a fresh file, benchmarks/results/local/rnn_<cpu|gpu>-<UTC time>.md (named at the
start and the end); the committed table is rewritten only with --out rnn_cpu.md (rnn_gpu.md). The
console shows the table's header, then a line as each (method, size) starts and as it ends.
Ours (SparseLSTM/GRU, fused then composed) runs first at every size, then the baselines, so a
baseline that fails or takes its whole timeout cannot leave ours unmeasured. On a GPU each step is
timed with CUDA events (torch.cuda.Event) recorded around it on the current stream.

On a GPU (``--floor``, the default there) each row also gives the step's floor and the fraction of it
ours reaches (issue 44's table), the larger of two bounds:

* memory floor: the bytes the step must move (:func:`floor_bytes`) over the device's copy bandwidth,
  measured at the start of the run (common.copy_bandwidth);
* latency floor: ours at one nonzero a row (the same cell, T, B and hidden size; ``compute`` auto,
  which holds so small a W_hh on chip): the launches, the 2T dependent steps and the gate math that
  no sparse product can remove.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's package, installed or not
sys.path.insert(0, str(ROOT / "benchmarks"))
from sparse_engine.runs.step_bench import METHODS, cell_text, run_child, run_order, speedup  # noqa: E402
import common  # noqa: E402  (after sparse_engine: see common.py)

CPU_SIZES = ["1500:0.33", "4096:0.01", "16384:0.01"]
GPU_SIZES = ["1500:0.33", "4096:0.01", "16384:0.01", "65536:0.01"]
CPU_METHODS = ["sparse_engine", "masked_dense", "torch_sparse"]  # the CPU step: bench_rnn_step.py
T, B = 35, 20
CELLS = ["LSTM", "GRU"]
GATES = {"LSTM": 4, "GRU": 3}
QUICK_SIZES = ["512:0.05"]


SECTOR = 32  # bytes: the unit in which a GPU's L2 reads device memory


def floor_bytes(cell: str, H: int, density: float, B: int, T: int, on_chip: int, l2: int, es: int = 4) -> int:
    """Bytes one training step (forward + backward, one layer, input = hidden, T steps of B columns) must
    move to or from device memory, at the least: both matrices' values and column index read and
    their values' gradients written (and their row pointers); x read, y written, dy read, dx written;
    W_hh (values and index) read again at every step, forward and back, where it does not fit on chip
    (``on_chip`` bytes: no launch can keep it between steps); and where the state (H x B) does not fit
    L2 (``l2`` bytes), the state rows that even an ideal cache must fetch: each nonzero of each matrix
    reads one row of B values (whole 32-byte sectors) at each step in each of its three products (the
    forward product, the backward's transposed product, the weight gradient), of which the share of
    the state L2 can hold is a hit at best."""
    G = GATES[cell]
    nnz = round(density * G * H * H)  # each of W_ih, W_hh
    once = 2 * (nnz * (4 + 2 * es) + 8 * (G * H + 1)) + 4 * T * B * H * es
    hh = nnz * (4 + es)
    reread = (2 * T - 1) * hh if hh > on_chip else 0
    state = H * B * es
    row = -(-B * es // SECTOR) * SECTOR
    gathers = round(2 * 3 * T * nnz * row * max(0.0, 1 - l2 / state))
    return once + reread + gathers


def floor_row(res: dict, ms_floor: float) -> list[str]:
    """The floor columns of a row: memory floor (ms), latency floor (ours at one nonzero a row), and
    the fraction of the larger that ours reaches (floor / ours)."""
    ours, one = res.get("sparse_engine", {}), res.get(ONE_PER_ROW, {"status": "-"})
    floor = max(ms_floor, one["ms"]) if one.get("status") == "ok" else ms_floor
    reached = f"{floor / ours['ms']:.0%}" if ours.get("status") == "ok" else "-"
    return [f"{ms_floor:.2f} ms", cell_text(one), reached]


FLOOR_TEXT = ("both matrices' values and index read and their gradients written, x, y, dy, dx once; W_hh again at "
              "every step where it does not fit on chip; where the state does not fit L2, each nonzero's state row "
              "(32-byte sectors) at each step in its three products, less L2's share of the state")
#: the latency floor's run: ours at one nonzero a row (not a method of step_bench: a density of its own)
ONE_PER_ROW = "sparse_engine_one_per_row"


# ------------------------------------------------------------------------- report
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compute", choices=["auto", "sparse", "dense", "persistent"], default=None,
                   help="the SparseLSTM/GRU modules' compute path (default: the library default, 'auto')")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--sizes", nargs="+", default=None, help="hidden:density pairs")
    p.add_argument("--cells", nargs="+", default=CELLS, choices=CELLS)
    p.add_argument("--quick", action="store_true", help=f"only {QUICK_SIZES}, 1 repeat: checks the script")
    p.add_argument("--methods", nargs="+", default=None, choices=METHODS,
                   help="default: all on a GPU; on the CPU all but sparse_engine_composed")
    p.add_argument("--batch", type=int, default=B, help=f"batch width (default {B}, the papers' language models; "
                   "1: one sequence at a time)")
    p.add_argument("--steps", type=int, default=T, help=f"sequence length (default {T}, the papers' bptt; "
                   "1: a sampler's step)")
    p.add_argument("--inference", action="store_true",
                   help="time calls under torch.no_grad (eval mode) instead of training steps: a sampler's "
                   "step with --steps 1 --batch 1, an evaluation")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--timeout", type=int, default=900, help="seconds per (method, size)")
    p.add_argument("--dense-limit-gb", type=float, default=6.0,
                   help="skip masked-dense where its weights, masks and gradients would exceed this (CPU only)")
    p.add_argument("--largest", action="store_true", help="also search the largest trainable hidden size")
    p.add_argument("--per-row", type=int, default=32, help="nonzeros per row for --largest")
    p.add_argument("--max-hidden", type=int, default=None, help="stop --largest here (default cpu 2^18, gpu 2^21)")
    p.add_argument("--out", default=None, help=common.out_help("rnn_<cpu|gpu>.md"))
    common.add_copy_to(p)
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting cells after this many seconds; each cell's timeout is capped to what is left")
    p.add_argument("--floor", action=argparse.BooleanOptionalAction, default=None,
                   help="the step's floor and the fraction of it ours reaches (GPU only; default on there)")
    args = p.parse_args(argv)
    if args.batch < 1:
        p.error(f"--batch must be at least 1, got {args.batch}")
    if args.steps < 1:
        p.error(f"--steps must be at least 1, got {args.steps}")

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.floor and device != "cuda":
        p.error("--floor needs --device cuda (the CPU's floors: benchmarks/bench_floor.py)")
    if args.floor and args.inference:
        p.error("--floor counts a training step's bytes; not with --inference")
    args.floor = device == "cuda" and not args.inference if args.floor is None else args.floor
    sizes = args.sizes or (QUICK_SIZES if args.quick else GPU_SIZES if device == "cuda" else CPU_SIZES)
    if args.quick:
        args.repeats = 1
    methods = args.methods or (METHODS if device == "cuda" else CPU_METHODS)
    out_path = common.results_path(args.out, f"rnn_{'gpu' if device == 'cuda' else 'cpu'}.md")
    load_start = os.getloadavg()[0]
    t_start = time.perf_counter()
    # masked-dense holds 4H x H weights, gradients, masks and a masked copy: skip it where that
    # cannot fit (CPU: --dense-limit-gb; GPU: the device's memory) instead of letting it OOM slowly
    dense_limit = args.dense_limit_gb if device == "cpu" else 0.9 * torch.cuda.get_device_properties(0).total_memory / 2**30
    rows, extra = [], []

    def cell_timeout():
        if args.budget_s is None:
            return args.timeout
        return min(args.timeout, int(args.budget_s - (time.perf_counter() - t_start)))

    def save():
        text = "\n".join(report(rows, methods, device, args, load_start) + extra) + "\n"
        common.write_text(out_path, text, args.copy_to)

    for cell, spec in ((c, s) for s in sizes for c in args.cells):
        H, d = spec.split(":")
        rows.append((cell, int(H), float(d), {}))
    if args.floor:  # the device's constants, before any cell: the copy bandwidth, L2, the shared memory
        from sparse_engine.recurrent.compute_paths import on_chip_bytes

        args.bandwidth = common.copy_bandwidth("cuda")
        args.l2 = torch.cuda.get_device_properties(0).L2_cache_size
        args.on_chip = on_chip_bytes("cuda")
    common.announce(title(args), columns(methods, args.floor), out_path)
    # ours first, every size, then the latency floor's run, then the baselines: a baseline that runs
    # out of memory or time (a dense cuDNN LSTM at a large hidden size) cannot spend the budget
    # before ours is measured
    order = run_order(methods)
    if args.floor:
        order.insert(sum(m.startswith("sparse_engine") for m in order), ONE_PER_ROW)
    for method, (cell, H, d, res) in ((m, r) for m in order for r in rows):
        need = 2 * GATES[cell] * H * H * (4 + 4 + 1 + 4) / 2**30  # weight, grad, mask, masked copy (float32)
        timeout = cell_timeout()
        with common.cell(f"{cell} hidden {H:,} density {d:g}, {method}") as c:
            if method == "masked_dense" and need > dense_limit:
                res[method] = {"status": f"skipped (needs ~{need:.0f} GiB > {dense_limit:.0f} GiB)"}
            elif timeout <= 0:
                res[method] = {"status": f"not run (budget of {args.budget_s:.0f} s spent)"}
            elif method == ONE_PER_ROW:
                res[method] = run_child("sparse_engine", cell, H, 1 / H, device, args.repeats, args.warmup, timeout,
                                        None, args.steps, args.batch, args.inference)
            else:
                res[method] = run_child(method, cell, H, d, device, args.repeats, args.warmup, timeout, args.compute,
                                        args.steps, args.batch, args.inference)
            c.result = cell_text(res[method]) + (f"  ({res[method].get('error')})" if res[method].get("error") else "")
        save()

    if args.largest:
        limit = args.max_hidden or (2**18 if device == "cpu" else 2**21)
        H, best = 16384, None
        extra += ["", f"## Largest trainable SparseLSTM ({args.per_row} nonzeros per row, doubling from 16,384, "
                      f"up to {limit:,})", "", "- searching ..."]
        while H <= limit:
            timeout = cell_timeout()
            if timeout <= 0:
                print(f"largest search: hidden {H:,} not run (budget spent)", flush=True)
                extra.append(f"- hidden {H:,}: not run (budget of {args.budget_s:.0f} s spent), so the largest may be larger")
                break
            with common.cell(f"largest search: hidden {H:,}") as c:
                r = run_child("sparse_engine", "LSTM", H, args.per_row / H, device, 1, 0, timeout, T=args.steps,
                              B=args.batch)
                c.result = cell_text(r) + (f"  ({r['error']})" if r.get("error") else "")
            cut = r.get("status", "").startswith("timeout") and timeout < args.timeout
            extra.append(f"- hidden {H:,}: {cell_text(r)}" + (" (cut short by --budget-s)" if cut else ""))
            save()
            if r.get("status") != "ok":
                break
            best, H = (H, r), H * 2
        extra[3] = (f"- largest: {best[0]:,} hidden ({cell_text(best[1])})" if best else "- none fits")
    save()
    print("\n".join(report(rows, methods, device, args, load_start) + extra))
    common.finish(out_path)


TITLE = "LSTM and GRU {case}, one layer, T={steps}, B={batch}, input = hidden"


def title(args) -> str:
    case = "call under torch.no_grad (inference)" if args.inference else "training step (forward + backward)"
    return TITLE.format(case=case, steps=args.steps, batch=args.batch)


# Ours by path: (method, column, ratio column, (numerator, denominator) of the ratio)
VARIANTS = (("sparse_engine_per_step", "ours, per step", "auto vs per step",
             ("sparse_engine_per_step", "sparse_engine")),
            ("sparse_engine_persistent_l2", "ours, persistent, W_hh not staged", "staged / not staged",
             ("sparse_engine_persistent_l2", "sparse_engine_persistent")),
            ("sparse_engine_persistent_split", "ours, persistent, split rows", "split / lane per column",
             ("sparse_engine_persistent", "sparse_engine_persistent_split")),
            ("sparse_engine_dense", "ours, dense", "dense / persistent",
             ("sparse_engine_persistent", "sparse_engine_dense")))


def columns(methods, floor: bool = False) -> list[str]:
    """The table's columns (a composed-step and persistent columns where those methods run; the floor's
    with ``floor``)."""
    composed, persistent = "sparse_engine_composed" in methods, "sparse_engine_persistent" in methods
    variants = [v for v in VARIANTS if v[0] in methods]
    split = any(v[0] == "sparse_engine_persistent_split" for v in variants)
    return ["cell", "hidden", "density", "ours"] + (["ours, composed step"] if composed else []) + (
        ["ours, persistent"] if persistent else []) + [v[1] for v in variants] + [
        "masked-dense", "torch.sparse CSR", "vs masked-dense", "vs torch.sparse"] + (
        ["composed / fused"] if composed else []) + (["persistent vs masked-dense"] if persistent else []) + (
        ["split vs masked-dense"] if split else []) + [v[2] for v in variants] + (
        ["auto vs best"] if variants else []) + (
        ["memory floor", "ours at 1 nonzero a row", "% of floor"] if floor else []) + ["load"]


#: what "auto vs best" compares ours (compute auto) with: each of its paths that ran, and masked-dense
BEST_OF = ("sparse_engine_per_step", "sparse_engine_persistent", "sparse_engine_persistent_split",
           "sparse_engine_dense", "masked_dense")


def best_of(res: dict) -> dict:
    """The fastest of the row's :data:`BEST_OF` measurements, or a status "-" where none ran."""
    done = [res[m] for m in BEST_OF if res.get(m, {}).get("status") == "ok"]
    return min(done, key=lambda r: r["ms"]) if done else {"status": "-"}


def report(rows, methods, device, args, load_start) -> list[str]:
    lines = [
        f"# {title(args)}",
        "",
        f"- machine: {common.machine()}",
        f"- 1-min load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (a busy machine "
        "inflates every time)",
        f"- median of {args.repeats} steps after {args.warmup} warm-up, "
        f"{'timed with CUDA events around each step' if device == 'cuda' else 'wall time'}; peak memory of the "
        f"whole process ({'max_memory_allocated' if device == 'cuda' else 'max RSS'}); each cell in its own process; "
        "ours measured first at every size, then the baselines",
        "- masked-dense: nn.LSTM / nn.GRU with weights * mask re-applied each step (on a GPU with cuDNN, or without "
        "it where cuDNN's RNN fails, marked 'cuDNN off'); torch.sparse: CSR "
        "torch.sparse.mm loop; load: 1-minute load average after our (SparseLSTM/GRU) measurement",
        f"- ours: SparseLSTM / SparseGRU, compute={args.compute or 'default (auto)'}; in parentheses the path "
        "that ran: dense (weights materialised for torch's recurrence), the sparse kernels' step (fused, composed) "
        "or the whole sequence in one op each way (persistent: one cooperative launch per direction on a GPU)",
        "",
    ]
    composed, persistent = "sparse_engine_composed" in methods, "sparse_engine_persistent" in methods
    variants = [v for v in VARIANTS if v[0] in methods]
    split = any(v[0] == "sparse_engine_persistent_split" for v in variants)
    if split:
        lines[-1:-1] = ["- split rows: the persistent kernels with a row's entries split across a warp's lanes, S at a "
                        "time (`_set_sequence_split(0)`: S = 1, 2, 4 or 8, at most 32 / B and 16 entries a slot of the mean row); "
                        "'ours, persistent' takes a lane per batch column"]
    if variants:
        lines[-1:-1] = ["- auto vs best: the fastest of ours' paths that ran (per step, persistent, dense) and "
                        "masked-dense, over ours (compute auto); issue 44 asks >= 0.95x"]
    if args.floor:
        lines[-1:-1] = [
            f"- floor: the larger of the memory floor (bytes the step must move, {FLOOR_TEXT}, over the device's copy "
            f"bandwidth, {args.bandwidth / 1e9:,.0f} GB/s measured at the start; L2 {args.l2 / 2**20:.0f} MiB, "
            f"shared memory {args.on_chip / 2**20:.1f} MiB) and the latency floor (ours at one nonzero a row, "
            "compute auto); % of floor = floor / ours"]
    head = columns(methods, args.floor)
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for cell, H, d, res in rows:
        got = lambda m: res.get(m, {"status": "-"})  # noqa: E731
        ours, cmp_, pers = got("sparse_engine"), got("sparse_engine_composed"), got("sparse_engine_persistent")
        md, ts = got("masked_dense"), got("torch_sparse")
        load = f"{ours['load']:.1f}" if "load" in ours else "-"
        cells = [cell, f"{H:,}", f"{d:g}", cell_text(ours)] + ([cell_text(cmp_)] if composed else []) + (
            [cell_text(pers)] if persistent else []) + [cell_text(got(v[0])) for v in variants] + [
            cell_text(md), cell_text(ts), speedup(md, ours), speedup(ts, ours)] + (
            [speedup(cmp_, ours)] if composed else []) + ([speedup(md, pers)] if persistent else []) + (
            [speedup(md, got("sparse_engine_persistent_split"))] if split else []) + [
            speedup(got(v[3][0]), got(v[3][1])) for v in variants] + (
            [speedup(best_of(res), ours)] if variants else []) + (
            floor_row(res, floor_bytes(cell, H, d, args.batch, args.steps, args.on_chip, args.l2)
                      / args.bandwidth * 1e3)
            if args.floor else []) + [load]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Ratios are baseline time / our time (> 1: ours is faster).")
    return lines


if __name__ == "__main__":
    main()
