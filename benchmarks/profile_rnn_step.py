"""Where a recurrent training step's time goes: torch.profiler over a few steps of ours and of
masked-dense nn.LSTM/GRU, in the same run, the operators and kernels by their own time.

Why: issue 44 asks for the dense path (`compute="dense"`: the weights written into dense matrices,
then torch's cuDNN recurrence) within 1.1x of masked cuDNN at 1,500 units and 33%, where the first
H200 run measured 7.9 ms against 3.3 ms; a table of where the 4.6 ms go comes before removing them.
Each method's section: its step time (wall, with the profiler on), the host synchronisations it made
(`cudaStreamSynchronize`, `cudaDeviceSynchronize`, `aten::_local_scalar_dense`: a device-to-host
read that waits for the queue), the host's time to queue a step (where it exceeds the device's busy
time, the step waits for the host: Python, launches, cuDNN's set-up), on a GPU the device's busy time
(the union of its kernels), and the `--top` operators or kernels by self time on the device
(on the CPU: by self CPU time), per step. Method ``dense_copied`` is the dense path without cuDNN's
flat buffer (the weights handed over as separate matrices, which cuDNN copies at each call: the dense
path before sparse_engine/recurrent/cudnn_flat.py), beside ``dense`` in the same run.

    python benchmarks/profile_rnn_step.py --device cuda --cells LSTM:1500:0.33 --out profile_rnn_step_cuda.md
    python benchmarks/profile_rnn_step.py --cells LSTM:256:0.33 --steps 2   # the CPU, a quick look
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (add_copy_to, announce, cell, finish, markdown_table, out_help, results_path,  # sparse_engine first
                    write_result)

import torch
from torch.profiler import ProfilerActivity, profile
from sparse_engine.runs import step_bench

DEFAULT = "profile_rnn_step.md"
TITLE = "Where a recurrent training step's time goes (torch.profiler)"
#: method: (step_bench method, compute)
METHODS = {"dense": ("sparse_engine", "dense"), "persistent": ("sparse_engine", "persistent"),
           "sparse": ("sparse_engine", "sparse"), "masked_dense": ("masked_dense", None),
           "dense_copied": ("sparse_engine", "dense")}
#: methods run with the library's cuDNN flat buffer switched off (sparse_engine/recurrent/cudnn_flat.py):
#: the dense path as it was before it, separate matrices that cuDNN copies at each call, for an A/B in one run
UNFLAT = ("dense_copied",)
SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "aten::_local_scalar_dense")


def parse_cell(text: str) -> tuple[str, int, float]:
    """'LSTM:1500:0.33' -> ('LSTM', 1500, 0.33)."""
    try:
        kind, hidden, density = text.split(":")
        if kind not in step_bench.CELLS:
            raise ValueError
        return kind, int(hidden), float(density)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a cell is CELL:HIDDEN:DENSITY with CELL one of "
                                         f"{', '.join(step_bench.CELLS)}, got {text!r}") from None


def self_time_us(event, device: bool) -> float:
    """An averaged event's own time (us) on the device, or on the CPU."""
    if not device:
        return event.self_cpu_time_total
    return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0)


def busy_ms(events, steps: int) -> float:
    """ms a step during which the device ran anything (the union of its kernels' and copies' intervals):
    against the step's wall time it says how long the device waited for the host."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in events
                   if e.device_type == torch.autograd.DeviceType.CUDA)
    total, end = 0.0, float("-inf")
    for a, b in spans:
        if b > end:
            total += b - max(a, end)
            end = b
    return total / 1e3 / steps


@contextlib.contextmanager
def unflat():
    """The dense path without cuDNN's flat buffer (``cudnn_flat.views`` gives None: the weights go to
    cuDNN as separate matrices, which it copies at each call), for the block."""
    from sparse_engine.recurrent import cudnn_flat

    views = cudnn_flat.views
    cudnn_flat.views = lambda *args: None
    try:
        yield
    finally:
        cudnn_flat.views = views


def profiled(method: str, kind: str, H: int, density: float, device: str, steps: int, warmup: int, top: int,
             plain: bool = False):
    """(step ms with the profiler on, host syncs per step, the path that ran, [(name, us per step, calls
    per step)], {"host": ms a step the host took to queue the steps (to their last kernel's launch),
    "busy": ms a step the device was busy (GPU only)}) or a reason it did not run; with ``plain`` the
    steps run without the profiler (no table: for Nsight Compute)."""
    base, compute = METHODS[method]
    if method in UNFLAT:
        with unflat():
            return profiled("dense", kind, H, density, device, steps, warmup, top, plain)
    built = step_bench.training_step(base, kind, H, density, device, compute)
    if built is None:
        return "no CUDA kernels"
    step, clear_grads, _, path = built
    for _ in range(warmup):
        step()
        clear_grads()
    on_gpu = device == "cuda"

    host = {}

    def run_steps() -> float:
        """ms a step over ``steps`` steps, the queue drained before and after."""
        if on_gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
            clear_grads()
        host["host"] = 1e3 * (time.perf_counter() - t0) / steps
        if on_gpu:
            torch.cuda.synchronize()
        return 1e3 * (time.perf_counter() - t0) / steps

    if plain:  # no torch.profiler: under Nsight Compute, which needs CUPTI to itself
        return run_steps(), float("nan"), path, [], host
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])) as prof:
        ms = run_steps()
    events = prof.key_averages()
    syncs = sum(e.count for e in events if e.key in SYNCS) / steps
    if on_gpu:
        host["busy"] = busy_ms(prof.events(), steps)
    ranked = sorted(events, key=lambda e: self_time_us(e, on_gpu), reverse=True)[:top]
    return ms, syncs, path, [(e.key, self_time_us(e, on_gpu) / steps, e.count / steps) for e in ranked], host


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", nargs="+", type=parse_cell, default=[parse_cell("LSTM:1500:0.33")])
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=["dense", "masked_dense"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=5, help="profiled steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--top", type=int, default=15, help="operators / kernels listed per method")
    p.add_argument("--sequence-split", type=int, default=None, choices=[0, 1, 2, 4, 8],
                   help="the persistent kernels' split rows (sparse_engine._C._set_sequence_split; CUDA builds)")
    p.add_argument("--plain", action="store_true",
                   help="run the steps without torch.profiler (to run under Nsight Compute: ncu ... python %(prog)s)")
    p.add_argument("--out", default=None, help=out_help(DEFAULT))
    add_copy_to(p)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.top < 1:
        p.error("--steps and --top must be >= 1, --warmup >= 0")
    if args.sequence_split is not None:
        from sparse_engine import _C
        if not hasattr(_C, "_set_sequence_split"):
            p.error("--sequence-split needs a build with the CUDA kernels")
        _C._set_sequence_split(args.sequence_split)
    path = results_path(args.out, DEFAULT)
    announce(TITLE, ["cell", "method", "ms a step (profiled)", "host syncs a step", "host ms a step",
                     "device busy ms a step"], path)
    sections = []
    for kind, H, density in args.cells:
        for method in args.methods:
            with cell(f"{kind} {H:,} @ {density:g}, {method}") as c:
                got = profiled(method, kind, H, density, args.device, args.steps, args.warmup, args.top, args.plain)
                if isinstance(got, str):
                    c.result = [f"{kind} {H:,} @ {density:g}", method, got, "-", "-", "-"]
                    sections.append(f"## {kind} {H:,} @ {density:g}, {method}: {got}")
                else:
                    ms, syncs, ran, rows, host = got
                    c.result = [f"{kind} {H:,} @ {density:g}", method, f"{ms:.2f}", "-" if args.plain else f"{syncs:g}",
                                f"{host['host']:.2f}", f"{host['busy']:.2f}" if "busy" in host else "-"]
                    where = "device" if args.device == "cuda" else "CPU"
                    busy = (f"; the device busy {host['busy']:.2f} ms of it (idle {ms - host['busy']:.2f} ms: waiting "
                            "for the host)" if "busy" in host else "")
                    table = "" if args.plain else (
                        f", {syncs:g} host syncs a step; the host queued a step in {host['host']:.2f} ms{busy}\n\n"
                        + markdown_table([f"operator or kernel (by self {where} time)", "us a step", "calls a step"],
                                         [[f"`{n[:90]}`", f"{us:.0f}", f"{k:g}"] for n, us, k in rows]))
                    sections.append(f"## {kind} {H:,} @ {density:g}, {method} (path: {ran or method}): {ms:.2f} ms a "
                                    "step" + (" (without the profiler: --plain)" if args.plain else table))
            write_result(path, TITLE,
                         f"T = 35, B = 20, one layer, input = hidden, float32, {args.device}; {args.steps} steps "
                         f"profiled after {args.warmup} warm-up; 1-minute load average "
                         f"{os.getloadavg()[0]:.1f}; the step time includes the profiler's own cost.\n\n"
                         + "\n\n".join(sections)
                         + "\n\n`python benchmarks/profile_rnn_step.py` (its docstring says how to read it).",
                         args.copy_to)
    finish(path)


if __name__ == "__main__":
    main()
