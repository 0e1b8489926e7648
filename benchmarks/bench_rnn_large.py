"""One training step of a large sparse vanilla RNN (the model of examples/balance_at_scale.py:
``SequenceModel("rnn", ..., sparse="recurrent")``: dense input weights, sparse recurrent matrix,
dense readout; Adam) at hidden 10k/30k/100k, recurrent density 1e-4, batch 64: time per step
and peak memory, for this checkout ("after") and, in the same run, for an older commit ("before",
default: the commit before the recurrence was reworked to stream its input products and weight
gradients per step), so the comparison is measured back to back under the same load.

    python benchmarks/bench_rnn_large.py                         -> benchmarks/results/rnn_large_cpu.md
    python benchmarks/bench_rnn_large.py --sizes 30000 --steps 2 --before none
    python benchmarks/bench_rnn_large.py --task mackey-glass     # T=50, 1 input, regression

Tasks: ``mnist`` (MNIST rows: T=28, 28 inputs, 10 classes, the last step read) and
``mackey-glass`` (T=50, 1 input, every step regressed); random inputs of those shapes. Each
(version, size) runs in its own subprocess, so its peak memory (ru_maxrss) is its own; the
"before" version is the older commit's ``sparse_engine`` (``git archive``) with this checkout's
compiled extension, so only the Python differs. The results file is rewritten after every cell,
with the load average when the cell ran (numbers taken on a loaded machine are not comparable).
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
from common import markdown_table, write_result  # noqa: E402

BEFORE = "8eb8491"  # main before the recurrence streamed its per-step work (branch recperf)
TASKS = {"mnist": dict(T=28, n_in=28, n_out=10, kind="classify"),
         "mackey-glass": dict(T=50, n_in=1, n_out=1, kind="regress")}

CHILD = r"""
import json, resource, sys, time, torch
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
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    p.add_argument("--task", choices=sorted(TASKS), default="mnist")
    p.add_argument("--density", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="timed steps per cell (after one warm-up step)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--before", default=BEFORE, help=f"commit to compare with (default {BEFORE}); 'none': skip")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    p.add_argument("--out", default=None, help="results file name (default rnn_large_cpu.md, "
                                               "rnn_large_cpu_mackey-glass.md for that task)")
    args = p.parse_args(argv)
    name = args.out or ("rnn_large_cpu.md" if args.task == "mnist" else f"rnn_large_cpu_{args.task}.md")
    t = TASKS[args.task]
    title = (f"Large sparse RNN training step ({args.task}: T={t['T']}, {t['n_in']} inputs, batch {args.batch}, "
             f"recurrent density {args.density:g}, Adam)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        versions = [("after (this checkout)", ROOT)]
        if args.before != "none":
            versions.insert(0, (f"before ({args.before})", checkout(args.before, Path(tmp))))
        for hidden in args.sizes:
            for label, path in versions:  # back to back, so both see the same load
                r = measure(path, args, hidden)
                cells = ([r["error"], "-", "-", "-"] if "error" in r else
                         [f"{r['step_s']:.2f}", f"{r['median_s']:.2f}", f"{r['peak_mib']:,.0f}", r["load"]])
                rows.append([f"{hidden:,}", label] + cells)
                print(" | ".join(rows[-1]), flush=True)
                body = (markdown_table(["hidden", "version", "step (s, best)", "step (s, median)", "peak RSS (MiB)",
                                        "load average (1 min)"], rows)
                        + f"\n\n{args.steps} timed steps after one warm-up, {args.threads} thread(s); "
                          "`python benchmarks/bench_rnn_large.py` (see its docstring). Compare rows taken at a "
                          "similar load only.")
                write_result(name, title, body)


if __name__ == "__main__":
    main()
