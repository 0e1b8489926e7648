"""Training steps of large sparse recurrent networks on the CPU, two tables.

``--model lstm`` (the default; the table lstm_scale_cpu.md): the scale table of a
SparseLSTM classifier (``SequenceModel("lstm", 28, 10, H, 1, 32 / H, "recurrent", "classify")``:
32 nonzeros per recurrent row, a dense 28-input W_ih and readout, Adam), T=35, B=20, random
inputs, at each of ``--sizes`` (``10k,100k,1M,max``; ``max``: the largest hidden size whose step
the memory model (sparse_engine.memory) fits in ``--budget``, 16G by default, and whose
construction fits too). Per size, in a process of its own: the build, the recompute interval
(``--recompute auto``: none where every step fits the budget, else the memory model's pick), one
warm-up step and ``--steps`` timed steps (forward, backward, optimizer), one SET update (zeta 0.3,
SET's end of epoch: prune and regrow W_hh, Adam state remapped), the peak resident memory of
training (from the first step on: the construction's own peak is reported apart) against the
memory model's prediction, bytes per connection, what a masked-dense nn.LSTM of that size would
need (weights, mask, gradient and Adam's two moments: 20 bytes a parameter), and the step
against its memory floor (benchmarks/floor.py, measured in the same run: the streamed bytes at the
triad's bandwidth plus the gathered rows, one per nonzero and product, at the random gather
bandwidth of an operand of that size).

    python benchmarks/bench_rnn_large.py --sizes 10k,100k,1M,max --out lstm_scale_cpu.md   # the committed table
    python benchmarks/bench_rnn_large.py --sizes 100k --steps 1 --recompute 5               # a fresh file
    python benchmarks/bench_rnn_large.py --sizes 1M --before 4c97327     # each size, then an older commit's

``--before REF`` adds, after each size, the same cell run with commit REF's ``sparse_engine``
(``git archive``) and this checkout's compiled extension: a comparison under the same load.

``--model rnn`` (the table rnn_large_cpu.md): one training step of a large sparse vanilla
RNN (the model of examples/balance_at_scale.py: ``SequenceModel("rnn", ..., sparse="recurrent")``)
at hidden 10k/30k/100k, recurrent density 1e-4, batch 64, for this checkout ("after") and, in the
same run, an older commit ("before", default: the commit before the recurrence was reworked to
stream its input products and weight gradients per step), back to back under the same load.

    python benchmarks/bench_rnn_large.py --model rnn --out rnn_large_cpu.md   # the committed table
    python benchmarks/bench_rnn_large.py --model rnn --sizes 30000 --steps 2 --before none
    python benchmarks/bench_rnn_large.py --model rnn --task mackey-glass    # T=50, 1 input, regression

Tasks of ``--model rnn``: ``mnist`` (MNIST rows: T=28, 28 inputs, 10 classes, the last step
read) and ``mackey-glass`` (T=50, 1 input, every step regressed); random inputs of those shapes.
Each (version, size) runs in its own subprocess, so its peak memory is its own; the "before"
version is the older commit's ``sparse_engine`` (``git archive``) with this checkout's compiled
extension, so only the Python differs. The results files are rewritten after every cell, with
the load average when the cell ran (numbers taken on a loaded machine are not comparable).

Where the results go: without --out a fresh file benchmarks/results/local/<table>-<UTC time>.md
(lstm_scale_cpu, rnn_large_cpu or rnn_large_cpu_<task>; named at the start and the end); a
committed table is rewritten only with --out NAME (e.g. --out lstm_scale_cpu.md). The console
shows the table's header, then a line as each cell (size, version) starts and one (its row) as it
ends.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import (announce, cell, finish, markdown_table, out_help, parse_hidden, results_path,  # noqa: E402
                    write_result)

BEFORE = "8eb8491"  # main before the recurrence streamed its per-step work (branch recperf)
TASKS = {"mnist": dict(T=28, n_in=28, n_out=10, kind="classify"),
         "mackey-glass": dict(T=50, n_in=1, n_out=1, kind="regress")}

CHILD = r"""
import json, resource, sys, time
import sparse_engine  # before torch: OpenMP's idle threads then sleep, not spin
import torch
from torch import nn
from sparse_engine.models import SequenceModel
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
torch.manual_seed(0)
model = SequenceModel("rnn", a["n_in"], a["n_out"], a["hidden"], 1, a["density"], "recurrent", a["kind"])
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(1)
x = torch.randn(a["batch"], a["T"], a["n_in"], generator=g)
if a["kind"] == "classify":
    y, loss_fn = torch.randint(0, a["n_out"], (a["batch"],), generator=g), nn.functional.cross_entropy
else:
    y, loss_fn = torch.randn(a["batch"], a["T"], a["n_out"], generator=g), nn.functional.mse_loss
times = []
for i in range(a["steps"] + 1):  # the first step warms up (allocations, Adam state)
    t = time.perf_counter()
    opt.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - t)
assert torch.isfinite(loss)
print(json.dumps({"step_s": min(times[1:]), "median_s": sorted(times[1:])[len(times[1:]) // 2],
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "load": open("/proc/loadavg").read().split()[0]}))
"""


# --------------------------------------------------------------------------- the LSTM scale table
LSTM = dict(T=35, B=20, n_in=28, n_out=10, per_row=32)

LSTM_CHILD = r"""
import json, sys, time
import sparse_engine
import torch
from sparse_engine.models import SequenceModel
from sparse_engine.nn import memory
from sparse_engine.training import SET

a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])

def status(key):  # bytes
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) * 1024

H, T, B = a["hidden"], a["T"], a["B"]
runtime = status("VmRSS:")  # the interpreter, torch and the library, before any model
torch.manual_seed(0)
t0 = time.perf_counter()
model = SequenceModel("lstm", a["n_in"], a["n_out"], H, 1, a["per_row"] / H, "recurrent", "classify")
build_s, build_peak = time.perf_counter() - t0, status("VmHWM:")
if a["recompute"] == "auto":
    k, _ = memory.recompute_for_budget(model, T, B, a["budget"])
else:
    k = None if a["recompute"] == "none" else int(a["recompute"])
model.rnn.recompute_every = k
predicted = memory.predict(model, T, B).peak
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(1)
x, y = torch.randn(B, T, a["n_in"], generator=g), torch.randint(0, a["n_out"], (B,), generator=g)
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) of training from here on
before = status("VmRSS:")
steps = []
for i in range(a["steps"] + 1):  # the first step warms up (the transposed index, Adam's state, pages)
    t0 = time.perf_counter()
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    steps.append((time.perf_counter() - t0, t1 - t0, t2 - t1, time.perf_counter() - t2))
    print(json.dumps({"progress": i, "step_s": steps[-1][0]}), file=sys.stderr, flush=True)
assert torch.isfinite(loss)
train_peak = status("VmHWM:")
ctl = SET(model.rnn, opt, zeta=0.3, seed=0)
t0 = time.perf_counter()
ctl.end_epoch()
set_s = time.perf_counter() - t0
timed = steps[1:] or steps
best = min(timed)
W = model.rnn.weight_hh_l0
params = sum(p.numel() for p in model.parameters())
print(json.dumps({"k": k, "build_s": build_s, "build_peak": build_peak, "first_s": steps[0][0],
                  "step_s": best[0], "fwd_s": best[1], "bwd_s": best[2], "opt_s": best[3], "set_s": set_s,
                  "train_peak": train_peak, "runtime": runtime, "predicted": predicted, "nnz": W.nnz,
                  "params": params, "set_nnz": model.rnn.weight_hh_l0.nnz,
                  "load": open("/proc/loadavg").read().split()[0]}))
"""


def parse_sizes(text: str) -> list:
    """``10k,100k,1M,max`` -> [10000, 100000, 1000000, "max"]."""
    return ["max" if part.strip().lower() == "max" else parse_hidden(part) for part in text.split(",")]


def lstm_traffic(H: int, nnz: int, k) -> tuple[float, float]:
    """(streamed bytes, gathered bytes) of one training step of the scale table's model: per
    step and product, the CSR (values and column, 8 bytes a nonzero) streamed and one padded row
    of the batch gathered per nonzero; the forward once, and again for the steps a recomputed run
    makes again (all but its last segment's: T - 1 - (T - 1) % k of T), the backward's
    W_hh^T dG (the transposed index and values_t, 8 bytes a nonzero) and sddmm (column, gradient
    written and added, 16 bytes a nonzero); the states and gates (about 16 rows of H x B per step
    forward, 16 backward) and the dense W_ih (4H x 28, read forward, its gradient added backward)."""
    T, B, n_in = LSTM["T"], LSTM["B"], LSTM["n_in"]
    row = -(-B // 8) * 8 * 4
    forwards = 1 + ((T - 1) // k * k / T if k else 0)
    per_step_stream = forwards * (8 * nnz + 16 * H * B * 4 + 4 * H * n_in * 4) + (24 * nnz + 16 * H * B * 4
                                                                                  + 2 * 4 * H * n_in * 4)
    per_step_gather = (forwards + 2) * nnz * row
    return T * per_step_stream, T * per_step_gather


def masked_dense_bytes(H: int) -> int:
    """A masked-dense nn.LSTM(28, H) with the same readout, trained with Adam: weights, the mask of
    W_hh, the gradient and two moments (20 bytes a parameter; its activations not counted)."""
    params = 4 * H * (LSTM["n_in"] + H) + 8 * H + 10 * H + 10
    return 20 * params


LSTM_TITLE = "SparseLSTM scale table (CPU)"
LSTM_COLUMNS = ["hidden", "recurrent nonzeros", "activations", "step s (fwd + bwd + Adam)", "SET update s",
                "training peak GiB (process)", "predicted GiB", "build (time, peak GiB)", "bytes per parameter",
                "masked-dense nn.LSTM needs", "gathers GB/s", "floor s (% of it reached)", "load"]


def lstm_table(args) -> None:
    """The SparseLSTM scale table (see the module docstring)."""
    from floor import triad_bandwidth
    from sparse_engine import memory

    budget = memory.parse_size(args.budget)
    sizes = parse_sizes(args.sizes)
    args.path = results_path(args.out, "lstm_scale_cpu.md")
    announce(LSTM_TITLE, LSTM_COLUMNS, args.path)
    with cell("floor: the triad's bandwidth") as c:
        triad = triad_bandwidth()
        c.result = f"{triad / 1e9:.1f} GB/s"
    head = (f"SparseLSTM classifier: T={LSTM['T']}, B={LSTM['B']}, {LSTM['n_in']} inputs (dense W_ih), "
            f"{LSTM['per_row']} nonzeros per recurrent row, Adam; {args.threads} threads. Floor: triad "
            f"{triad / 1e9:.1f} GB/s, measured at the start of the run; gathers per row below.")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        versions = [("", ROOT)]
        if args.before != "none":  # back to back with this checkout, under the same load
            versions.append((f" (before: {args.before})", checkout(args.before, Path(tmp))))
        for size in sizes:
            for label, path in versions:
                lstm_row(args, size, budget, triad, head, rows, label, path)
    finish(args.path)


def lstm_row(args, size, budget, triad, head, rows, label="", path=ROOT) -> None:
    """One row of the LSTM table: ``size`` measured with the ``sparse_engine`` under ``path``
    (``label`` names an older commit's: its floor column is left out, what it recomputes may
    differ), appended to ``rows``; the results file (``args.path``) is rewritten."""
    from floor import gather_bandwidth
    from sparse_engine import memory
    hidden = size
    if size == "max":
        found = memory.largest_hidden(_lstm_sizes, LSTM["T"], LSTM["B"], budget, auto=args.recompute == "auto",
                                      low=1000, high=50_000_000)
        hidden = found[0] if found else None
        # the construction of the pattern (SparseWeight.random) peaks at about 55 bytes a nonzero
        while hidden and 55 * 4 * hidden * LSTM["per_row"] > budget:
            hidden = int(hidden * 0.95)
        if not hidden:
            print(f"max: no hidden size fits {args.budget}", flush=True)
            return
    name = f"{hidden:,}" + (" (max)" if size == "max" else "") + label
    spec = dict(LSTM, hidden=hidden, steps=args.steps, threads=args.threads, recompute=args.recompute, budget=budget)
    env = dict(os.environ, PYTHONPATH=str(path), OMP_NUM_THREADS=str(args.threads))
    with cell(f"hidden {name}") as c:
        out = subprocess.run([sys.executable, "-c", LSTM_CHILD, json.dumps(spec)], capture_output=True, text=True,
                             env=env, cwd=str(path), timeout=args.timeout)
        if out.returncode:
            c.result = [name, "failed: " + ((out.stderr.strip().splitlines() or ["?"])[-1][:80])] + ["-"] * 11
        else:
            r = json.loads(out.stdout.strip().splitlines()[-1])
            row_floats = -(-LSTM["B"] // 8) * 8
            gather = gather_bandwidth(row_floats, table_bytes=max(hidden * row_floats * 4, 1 << 20))
            streamed, gathered = lstm_traffic(hidden, r["nnz"], r["k"])
            floor = streamed / triad + gathered / gather
            peak = r["train_peak"] - r["runtime"]  # the step's, as the memory model counts it
            c.result = [name, f"{r['nnz']:,}", "stored" if r["k"] is None else f"every {r['k']}",
                        f"{r['step_s']:.2f} ({r['fwd_s']:.1f} + {r['bwd_s']:.1f} + {r['opt_s']:.2f})",
                        f"{r['set_s']:.2f}", f"{peak / 2**30:.2f} ({r['train_peak'] / 2**30:.2f})",
                        f"{r['predicted'] / 2**30:.2f}", f"{r['build_s']:.0f} s, {r['build_peak'] / 2**30:.2f}",
                        f"{r['train_peak'] / r['params']:.1f}", f"{masked_dense_bytes(hidden) / 2**40:,.3g} TiB",
                        f"{gather / 1e9:.1f}", "-" if label else f"{floor:.2f} ({100 * floor / r['step_s']:.0f}%)",
                        r["load"]]
    rows.append(c.result)
    before = f" --before {args.before}" if args.before != "none" else ""
    write_result(args.path, LSTM_TITLE, head + "\n\n" + markdown_table(LSTM_COLUMNS, rows)
        + f"\n\n{args.steps} timed step(s) after one warm-up (the best shown), in a process per size; "
          f"`python benchmarks/bench_rnn_large.py --sizes {args.sizes}{before}` (see its docstring: what the "
          f"floor counts; '(before: REF)': the same cell with commit REF's sparse_engine and this checkout's "
          f"compiled extension, run right after). The training peak is the resident high-water mark from the "
          f"first step on (its construction's own peak apart) less the resident memory before the model was "
          f"built (the interpreter, torch and the library, about 0.3 GiB), in brackets the process's own; bytes "
          f"per parameter: the process's peak over all parameters (recurrent nonzeros, dense W_ih, readout, "
          f"biases); 'max': the largest hidden size the memory model fits in {args.budget}.")


def _lstm_sizes(hidden: int):
    """The memory model's sizes of the scale table's model at ``hidden`` units, without building it."""
    from sparse_engine.memory import Head, RecurrentSizes
    return RecurrentSizes.build("lstm", LSTM["n_in"], hidden, row_nnz=LSTM["per_row"], sparse="recurrent",
                                head=Head(LSTM["n_out"], "last", "classify"))


def checkout(ref: str, into: Path) -> Path:
    """``sparse_engine`` of commit ``ref`` under ``into``, with this checkout's compiled extension."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "sparse_engine"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    for so in (ROOT / "sparse_engine").glob("_C*.so"):
        shutil.copy2(so, into / "sparse_engine" / so.name)
    return into


def measure(path: Path, args, hidden: int) -> dict:
    spec = dict(TASKS[args.task], hidden=hidden, density=args.density, batch=args.batch, steps=args.steps,
                threads=args.threads)
    env = dict(os.environ, PYTHONPATH=str(path), OMP_NUM_THREADS=str(args.threads))
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True,
                             env=env, cwd=str(path), timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {args.timeout} s"}
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:80]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("lstm", "rnn"), default="lstm", help="which table (see above)")
    p.add_argument("--sizes", default=None, help="lstm: e.g. 10k,100k,1M,max (default); rnn: e.g. 10000,30000,100000")
    p.add_argument("--budget", default="16G", help="lstm: the memory 'max' and --recompute auto fit in (default 16G)")
    p.add_argument("--recompute", default="auto", help="lstm: auto (the memory model's pick), none, or an interval")
    p.add_argument("--task", choices=sorted(TASKS), default="mnist")
    p.add_argument("--density", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=None, help="timed steps per cell (after one warm-up step); "
                                                         "default 2 for lstm, 3 for rnn")
    p.add_argument("--threads", type=int, default=None, help="default: 2 for lstm, 1 for rnn")
    p.add_argument("--before", default=None, help=f"commit to compare with (default: {BEFORE} for rnn, none for "
                                                   "lstm); 'none': skip")
    p.add_argument("--timeout", type=int, default=7200, help="seconds per cell")
    p.add_argument("--out", default=None, help=out_help("lstm_scale_cpu.md, rnn_large_cpu[_<task>].md"))
    args = p.parse_args(argv)
    if args.model == "lstm":
        args.sizes, args.threads, args.steps = args.sizes or "10k,100k,1M,max", args.threads or 2, args.steps or 2
        args.before = args.before or "none"
        return lstm_table(args)
    args.before = args.before or BEFORE
    args.sizes, args.threads, args.steps = parse_sizes(args.sizes or "10000,30000,100000"), args.threads or 1, args.steps or 3
    path = results_path(args.out, "rnn_large_cpu.md" if args.task == "mnist" else f"rnn_large_cpu_{args.task}.md")
    t = TASKS[args.task]
    title = (f"Large sparse RNN training step ({args.task}: T={t['T']}, {t['n_in']} inputs, batch {args.batch}, "
             f"recurrent density {args.density:g}, Adam)")
    columns = ["hidden", "version", "step (s, best)", "step (s, median)", "peak RSS (MiB)", "load average (1 min)"]
    announce(title, columns, path)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        versions = [("after (this checkout)", ROOT)]
        if args.before != "none":
            versions.insert(0, (f"before ({args.before})", checkout(args.before, Path(tmp))))
        for hidden in args.sizes:
            for label, path_ in versions:  # back to back, so both see the same load
                with cell(f"hidden {hidden:,}, {label}") as c:
                    r = measure(path_, args, hidden)
                    c.result = [f"{hidden:,}", label] + (
                        [r["error"], "-", "-", "-"] if "error" in r else
                        [f"{r['step_s']:.2f}", f"{r['median_s']:.2f}", f"{r['peak_mib']:,.0f}", r["load"]])
                rows.append(c.result)
                body = (markdown_table(columns, rows)
                        + f"\n\n{args.steps} timed steps after one warm-up, {args.threads} thread(s); "
                          "`python benchmarks/bench_rnn_large.py` (see its docstring). Compare rows taken at a "
                          "similar load only.")
                write_result(path, title, body)
    finish(path)


if __name__ == "__main__":
    main()
