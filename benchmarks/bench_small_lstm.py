"""Small recurrent layers (issue #18): our LSTM/GRU on each compute path against dense torch.nn.

The word-language-model setting: hidden 200 (= input 200), density 0.33, T=35; a training step
(forward + backward) at batch 20 and inference (no_grad, eval) at batch 10. Ours on the sparse
path, the dense-compute path and ``compute='auto'``, against ``nn.LSTM``/``nn.GRU`` with the same
(zero-filled) weights. ``--sweep`` adds the sparse/dense crossover over hidden sizes and densities
that ``compute='auto'`` follows (docs/compute_paths.md). The results file is rewritten after every
row, with the load average before and after each row (numbers from a busy machine are not results).

    python benchmarks/bench_small_lstm.py [--quick] [--sweep] [--out small_lstm_cpu.md]
"""
from __future__ import annotations

import argparse
import os

import torch
from torch import nn

import sparse_engine as se
from common import markdown_table, ms, ratio, timeit, write_result

SPARSE = {"LSTM": se.nn.SparseLSTM, "GRU": se.nn.SparseGRU}
DENSE = {"LSTM": nn.LSTM, "GRU": nn.GRU}
PATHS = ("sparse", "dense", "auto")


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def train_step(m, x):
    def run():
        m.zero_grad(set_to_none=True)
        m(x)[0].sum().backward()
    return run


def infer(m, x):
    def run():
        with torch.no_grad():
            m(x)
    return run


def modules(mode, hidden, density, seed=0):
    torch.manual_seed(seed)
    ours = SPARSE[mode](hidden, hidden, density=density)
    return ours, ours.to_dense()


def main_table(args, rows, sections):
    header = ["cell", "case", "torch.nn (ms)"] + [f"{p} (ms)" for p in PATHS] + \
             [f"{p} vs torch.nn" for p in PATHS] + ["load before", "load after"]
    for mode in args.modes:
        ours, dense = modules(mode, args.hidden, args.density)
        for case, batch, make in (("fwd+bwd", args.batch, train_step), ("inference", args.infer_batch, infer)):
            before = load()
            x = torch.randn(args.steps, batch, args.hidden)
            ours.train(case == "fwd+bwd"), dense.train(case == "fwd+bwd")
            base = timeit(make(dense, x), repeat=args.repeat, min_time=args.min_time)
            times = []
            for path in PATHS:
                ours.compute = path
                times.append(timeit(make(ours, x), repeat=args.repeat, min_time=args.min_time))
            rows.append([mode, f"{case}, B={batch}", ms(base), *map(ms, times), *(ratio(base, t) for t in times),
                         before, load()])
            write(args, markdown_table(header, rows), sections)


def sweep(args, sections):
    header = ["cell", "hidden", "density", "sparse (ms)", "dense (ms)", "dense vs sparse", "auto picks",
              "load after"]
    rows = []
    for hidden in args.sweep_hidden:
        for density in args.sweep_density:
            ours, _ = modules("LSTM", hidden, density)
            x = torch.randn(args.steps, args.batch, hidden)
            t = {}
            for path in ("sparse", "dense"):
                ours.compute = path
                t[path] = timeit(train_step(ours, x), repeat=args.repeat, min_time=args.min_time)
            ours.compute = "auto"
            picks = "dense" if ours._dense_now(x) else "sparse"
            rows.append(["LSTM", hidden, density, ms(t["sparse"]), ms(t["dense"]), ratio(t["sparse"], t["dense"]),
                         picks, load()])
            sections["sweep"] = ("## Crossover (LSTM fwd+bwd, T={}, B={})\n\n".format(args.steps, args.batch)
                                 + markdown_table(header, rows))
            write(args, None, sections)


def write(args, table, sections):
    if table is not None:
        sections["main"] = (f"## Hidden {args.hidden}, input {args.hidden}, density {args.density}, T={args.steps}\n\n"
                            "Times are medians; 'X vs torch.nn' is torch.nn's time / ours (above 1: ours faster). "
                            "Load: 1/5/15-minute load averages.\n\n" + table)
    body = "\n\n".join(sections[k] for k in ("main", "sweep") if k in sections)
    path = write_result(args.out, "Small recurrent layers: compute paths against torch.nn (CPU)", body)
    print(f"wrote {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", nargs="+", default=["LSTM", "GRU"], choices=sorted(SPARSE))
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--density", type=float, default=0.33)
    p.add_argument("--steps", type=int, default=35)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--infer-batch", type=int, default=10)
    p.add_argument("--sweep", action="store_true", help="also measure the sparse/dense crossover")
    p.add_argument("--sweep-hidden", type=int, nargs="+", default=[200, 500, 1000, 1500, 2500])
    p.add_argument("--sweep-density", type=float, nargs="+", default=[0.01, 0.03, 0.05, 0.1, 0.33])
    p.add_argument("--quick", action="store_true", help="few samples: checks the script, not for results")
    p.add_argument("--out", default="small_lstm_cpu.md")
    args = p.parse_args()
    args.repeat, args.min_time = (3, 0.0) if args.quick else (7, 0.5)
    sections = {}
    main_table(args, [], sections)
    if args.sweep:
        sweep(args, sections)


if __name__ == "__main__":
    main()
