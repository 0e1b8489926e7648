"""The largest sparse LSTM / GRU that trains under a memory cap: the table of issue #46 (8, 12, 16,
24 and 80 GB cards, emulated on a large GPU).

For each row (``CAP`` or ``CAP@HIDDEN``; ``none@HIDDEN``: no cap) and model: the memory model
(sparse_engine.memory) picks the largest hidden size whose training step fits ``CAP`` times
``--margin``, with the cheapest memory options that fit (``memory.plan_for_budget``: every step
stored before recomputation, float32 Adam moments before bfloat16 ones; ``@HIDDEN``: that size,
its cheapest options), then a fresh process builds it (the command line's classifier:
``SequenceModel(model, 28, 10, H, 1, 32 / H, "recurrent", "classify")``, 32 nonzeros per recurrent
row, Adam or CompactAdam, T=35, B=20, random inputs), caps itself, trains a warm-up step and
``--steps`` timed ones, and reports the measured peak against the prediction, and the step time
beside the estimate train's plan line prints.

The cap: on CUDA ``torch.cuda.set_per_process_memory_fraction(cap / total)`` (the caching
allocator refuses more segments), with expandable segments as train sets them
(``--allocator default``: torch's fixed segments, where a GRU planned at 95% of 8 and 12 GiB
ran out of memory, most likely by fragmentation; a failed row says how much its tensors and its
segments held); on the CPU ``RLIMIT_AS`` at the process's address space before the model plus
the cap and 1 GiB (code pages, thread stacks; an allocation past it fails). The measured peak is
of the tensors, as the model counts them, over the timed steps: CUDA ``max_memory_allocated``,
the CPU the allocation events of torch's profiler (``sparse_engine.testing.TensorMemoryTrace``,
from before the build, over one step after the warm-up, not timed), with the allocator's segments
(CUDA) or the resident high-water mark of the timed steps less the resident memory before the build
beside it (it adds malloc's retained blocks and the threads' first buffers: docs/memory.md).

    python benchmarks/bench_caps.py --device cuda --rows 8G,12G,16G,24G,80G,16G@1M,none@1M --out caps_cuda.md
    python benchmarks/bench_caps.py --device cpu --rows 512M,1G,2G --models lstm,gru --out caps_cpu.md

Without --out a fresh file benchmarks/results/local/caps_<device>-<UTC time>.md; rewritten after
every row (and into --copy-to). A row that fails says why; the run goes on.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import (add_copy_to, announce, cell, finish, markdown_table, parse_hidden, results_path,  # noqa: E402
                    write_result)

T, B, N_IN, N_OUT, PER_ROW = 35, 20, 28, 10, 32

CHILD = r"""
import contextlib, json, resource, sys, time
import sparse_engine
import torch
from sparse_engine.models import SequenceModel
from sparse_engine.testing import TensorMemoryTrace
from sparse_engine.training import CompactAdam

a = json.loads(sys.argv[1])
dev = torch.device(a["device"])
if dev.type == "cuda" and a["allocator"] == "expandable":  # as train does (runtime/cuda_allocator.py)
    from sparse_engine.runtime.cuda_allocator import prefer_expandable_segments
    prefer_expandable_segments()

def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) * 1024

# train's estimated step time (its plan line), made as train makes it: before the model is built
# (and before the cap, which counts from the address space after it)
from sparse_engine.memory import ADAM_STATES, Head, RecurrentSizes
from sparse_engine.runs.step_estimate import estimate_step
plan_sizes = RecurrentSizes.build(a["model"], a["n_in"], a["hidden"], row_nnz=a["per_row"], sparse="recurrent",
                                  device=dev.type, head=Head(a["n_out"], "last", "classify"))
parts = estimate_step(plan_sizes, a["T"], a["B"], ADAM_STATES[a["adam_state"]], dev).parts(a["T"], a["k"])
estimated = sum(parts.values())
if dev.type == "cuda":
    torch.cuda.empty_cache()
before = status("VmRSS:")
if dev.type == "cuda":
    torch.cuda.init()
    if a["cap"]:
        total = torch.cuda.get_device_properties(dev).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, a["cap"] / total))
elif a["cap"]:  # the address space now, the cap, 1 GiB for code pages and thread stacks
    resource.setrlimit(resource.RLIMIT_AS, (status("VmSize:") + a["cap"] + (1 << 30),) * 2)
# CPU: the tensors' peak from torch's allocator events over the build, a warm-up step and one
# step (traced: its time is not counted); then the timed steps untraced
trace = TensorMemoryTrace() if dev.type == "cpu" else contextlib.nullcontext()
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
times, losses = [], []

def step():
    sync()
    t = time.perf_counter()
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    sync()
    times.append(time.perf_counter() - t)
    losses.append(float(loss))
    print(json.dumps({"step": len(times), "s": times[-1]}), file=sys.stderr, flush=True)

def train():
    global model, opt, x, y
    with trace:
        torch.manual_seed(0)
        t0 = time.perf_counter()
        model = SequenceModel(a["model"], a["n_in"], a["n_out"], a["hidden"], 1, a["per_row"] / a["hidden"],
                              "recurrent", "classify", recompute_every=a["k"]).to(dev)
        build_s = time.perf_counter() - t0
        if a["adam_state"] == "bfloat16":
            opt = CompactAdam(model.parameters(), lr=1e-3)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(a["B"], a["T"], a["n_in"], generator=g).to(dev)
        y = torch.randint(0, a["n_out"], (a["B"],), generator=g).to(dev)
        step()  # warms up: the transposed index, Adam's state
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            with trace.phase("step"):
                step()
    open("/proc/self/clear_refs", "w").write("5")  # the resident peak of the timed steps
    for i in range(a["steps"]):
        step()
    return build_s

try:
    build_s = train()
except torch.OutOfMemoryError:  # where a CUDA row ran out: its tensors then and at their peak, its segments
    if dev.type != "cuda":
        raise
    print(json.dumps({"oom": True, "allocated": torch.cuda.memory_allocated(),
                      "peak": torch.cuda.max_memory_allocated(), "reserved": torch.cuda.memory_reserved()}))
    sys.exit(3)
reserved = None
if dev.type == "cuda":
    peak, rss, reserved = torch.cuda.max_memory_allocated(), None, torch.cuda.max_memory_reserved()
else:
    peak, rss = trace.peak("step"), status("VmHWM:") - before
timed = times[-a["steps"]:]
print(json.dumps({"step_s": sorted(timed)[len(timed) // 2], "estimated_s": estimated, "estimated_parts": parts,
                  "peak": peak, "rss": rss, "reserved": reserved,
                  "build_s": build_s, "loss": losses, "load": open("/proc/loadavg").read().split()[0]}))
"""


def sizes(model: str, hidden: int, device: str):
    from sparse_engine.memory import Head, RecurrentSizes
    return RecurrentSizes.build(model, N_IN, hidden, row_nnz=PER_ROW, sparse="recurrent", device=device,
                                head=Head(N_OUT, "last", "classify"))


def plan_row(model: str, cap: int | None, hidden: int | None, device: str, margin: float):
    """(hidden, MemoryPlan) of a row: the largest hidden fitting ``cap * margin`` (bisection over
    the cheapest plan that fits), or ``hidden`` with the cheapest plan for the cap (none: store,
    float32). None where nothing fits."""
    from sparse_engine.memory import MemoryBudgetError, memory_plans, plan_for_budget

    def plan(h):
        if cap is None:
            return memory_plans(sizes(model, h, device), T, B, recompute_every=None, adam_state="float32")[0]
        try:
            return plan_for_budget(sizes(model, h, device), T, B, int(cap * margin))
        except MemoryBudgetError:
            return None

    if hidden is not None:
        got = plan(hidden)
        return None if got is None else (hidden, got)
    # the peak is not monotone in the hidden size where small layers take the stacked products
    # (more memory: recurrence.STACK_BYTES), so a doubling ladder first, then bisection above its last fit
    # (at 128 MiB: 1,024 units fit, 2,048-8,192 do not, 10,000 do), so a ladder of 10% steps first
    ladder = [PER_ROW]
    while ladder[-1] < 1 << 26:
        ladder.append(int(ladder[-1] * 1.1) + 1)
    fits = [h for h in ladder if plan(h) is not None]
    if not fits:
        return None
    lo, hi = fits[-1], int(fits[-1] * 1.1)
    while lo < hi:  # above the stacked sizes the peak grows with the hidden size
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if plan(mid) is not None else (lo, mid - 1)
    return lo, plan(lo)


COLUMNS = ["cap", "model", "hidden", "recurrent nonzeros", "options chosen", "predicted", "measured peak",
           "error", "step s", "estimated step s", "build s", "loss (first, last)", "load"]


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def failure(out: subprocess.CompletedProcess) -> str:
    """Why a row's process failed: a CUDA row out of memory says where (its tensors then and at
    their peak, the allocator's segments: more segments than tensors is fragmentation), anything
    else its last line of stderr."""
    if out.returncode == 3:
        r = json.loads(out.stdout.strip().splitlines()[-1])
        return (f"out of memory with tensors of {gib(r['allocated'])} (peak {gib(r['peak'])}) in segments of "
                f"{gib(r['reserved'])}")
    return (out.stderr.strip().splitlines() or ["?"])[-1][:100]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--rows", default="8G,12G,16G,24G,80G,16G@1M,none@1M", help="CAP or CAP@HIDDEN, comma separated")
    p.add_argument("--models", default="lstm", help="lstm, gru (comma separated)")
    p.add_argument("--margin", type=float, default=0.95, help="the model plans for cap x margin (default 0.95)")
    p.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up")
    p.add_argument("--allocator", choices=("expandable", "default"), default="expandable",
                   help="CUDA: expandable segments, as train sets them (default), or torch's default segments")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per row")
    p.add_argument("--budget-s", type=float, default=None, help="start no row after this many seconds")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=None, help="results file (default: a fresh one in benchmarks/results/local/)")
    add_copy_to(p)
    args = p.parse_args(argv)
    from sparse_engine.memory import format_size, parse_size

    path = results_path(args.out, f"caps_{args.device}.md")
    title = f"Largest sparse recurrent network under a memory cap ({args.device})"
    announce(title, COLUMNS, path)
    head = (f"SequenceModel classifier: T={T}, B={B}, {N_IN} inputs (dense W_ih), {PER_ROW} nonzeros per recurrent "
            f"row, {N_OUT} classes, Adam (float32 moments) or CompactAdam (bfloat16) as planned; planned for cap x "
            f"{args.margin}; the median of {args.steps} timed steps after one warm-up, in a process per row"
            + (f"; CUDA allocator: {'expandable segments' if args.allocator == 'expandable' else 'default segments'}."
               if args.device == "cuda" else "."))
    rows, start = [], time.monotonic()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    for model in args.models.split(","):
        for spec in args.rows.split(","):
            if args.budget_s is not None and time.monotonic() - start > args.budget_s:
                print(f"budget: {spec} {model} not started", flush=True)
                continue
            cap_text, _, at = spec.partition("@")
            cap = None if cap_text == "none" else parse_size(cap_text)
            found = plan_row(model, cap, parse_hidden(at) if at else None, args.device, args.margin)
            with cell(f"{spec} {model}") as c:
                if found is None:
                    c.result = [cap_text, model, at or "-", "-", "nothing fits"] + ["-"] * 8
                else:
                    hidden, plan = found
                    options = ("every step stored" if plan.recompute_every is None
                               else f"recompute_every {plan.recompute_every}") + f", Adam moments {plan.adam_state}"
                    spec_json = dict(device=args.device, cap=cap, model=model, hidden=hidden, k=plan.recompute_every,
                                     adam_state=plan.adam_state, T=T, B=B, n_in=N_IN, n_out=N_OUT, per_row=PER_ROW,
                                     steps=args.steps, allocator=args.allocator)
                    try:
                        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec_json)], capture_output=True,
                                             text=True, env=env, cwd=str(ROOT), timeout=args.timeout)
                        error = None if out.returncode == 0 else failure(out)
                    except subprocess.TimeoutExpired:
                        error = f"over {args.timeout} s"
                    gates = 4 if model == "lstm" else 3
                    base = [cap_text, model, f"{hidden:,}", f"{gates * hidden * PER_ROW:,}", options,
                            gib(plan.step.peak)]
                    if error:
                        c.result = base + [f"failed: {error}"] + ["-"] * 6
                    else:
                        r = json.loads(out.stdout.strip().splitlines()[-1])
                        rss = "" if r["rss"] is None else f" (resident {gib(r['rss'])})"
                        rss += "" if r["reserved"] is None else f" (segments {gib(r['reserved'])})"
                        parts = ", ".join(f"{v:.2f}" for v in r["estimated_parts"].values())
                        c.result = base + [gib(r["peak"]) + rss, f"{plan.step.peak / r['peak'] - 1:+.1%}",
                                           f"{r['step_s']:.2f}",
                                           f"{r['estimated_s']:.2f} ({r['estimated_s'] / r['step_s']:.2f}x: {parts})",
                                           f"{r['build_s']:.0f}",
                                           f"{r['loss'][0]:.3f}, {r['loss'][-1]:.3f}", r["load"]]
            rows.append(c.result)
            body = head + "\n\n" + markdown_table(COLUMNS, rows) + (
                "\n\nerror: predicted / measured - 1. estimated step s: what train's plan line prints "
                "(sparse_engine/runs/step_estimate.py, timed in the row's process before the build), "
                "its ratio to the measured step, and its parts (recurrent products, input products, cells, "
                "optimizer). Caps: " + ", ".join(
                    f"{c} = {format_size(parse_size(c))}"
                    for c in dict.fromkeys(r.partition("@")[0] for r in args.rows.split(",")) if c != "none") + ".")
            write_result(path, title, body, args.copy_to)
    finish(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
