"""The memory model (sparse_engine.memory) against measured peaks at scale: SparseLSTM, T=35, B=20,
32 nonzeros per recurrent row (density 32/hidden), sparse='recurrent' (dense W_ih of 28 inputs), Adam.

    python benchmarks/bench_memory_model.py --recompute-every none,5 --out memory_model_cpu.md   # the committed table
    python benchmarks/bench_memory_model.py --huge --out memory_model_cpu.md   # then 1,000,000 (about 16 GB
                                                                               # with k=4, minutes), appended
    python benchmarks/bench_memory_model.py --sizes 10k --recompute-every none   # a fresh file, one row

Each size runs three times in fresh subprocesses, two training steps each (the first builds the
transposed index and Adam's state; the model predicts the steady step, the second), measured three
ways:

* resident memory: the process's peak RSS (``timing.peak_rss_bytes``) minus its RSS before the
  model was built, what the machine must have; it includes what glibc's malloc keeps or rounds and
  torch's 2 MiB alignment of large tensors (huge pages, ``runtime/threads.py``). A process's first
  training steps also make what it keeps whatever the model (OpenMP's threads, BLAS and autograd
  buffers, code pages: about 85 MB here, the "runtime" column): a hidden-64 LSTM trains two steps
  before "before" is read;
* the same with glibc's mmap threshold fixed at 128 KiB (``GLIBC_TUNABLES``, :data:`FIXED_MMAP`): by
  default malloc raises the threshold to the largest block freed, then serves blocks below it from
  its heap, where freed ones stay resident; fixed, a freed tensor goes back to the system at once;
* allocation events: the peak of the tensors alive (``testing.TensorMemoryTrace``, torch's
  profiler), what the model replays, independent of malloc.

The prediction is made in this process from the sizes alone (``RecurrentSizes.build``), without
building anything. A size whose stored run the budget (``--budget``, default: the memory available
now) cannot hold is run with the recompute interval :func:`recompute_for_budget` picks, and
``--recompute-every K`` forces one. The markdown table is rewritten after every row: without --out
a fresh file benchmarks/results/local/memory_model_cpu-<UTC time>.md (named at the start and the
end); the committed table is rewritten only with --out memory_model_cpu.md. ``--append`` (and
``--huge``) keeps the rows of --out's file, or without --out those of the committed table (read,
not written). The console shows the table's header, then a line as each row and each of its three
measurements starts and ends.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# sparse_engine before torch (which common imports): passive OpenMP waiting, torch's huge pages
from sparse_engine.runtime.timing import available_memory_bytes, peak_rss_bytes, rss_bytes  # noqa: E402
from common import (announce, cell, finish, markdown_table, out_help, parse_hidden, previous_results,  # noqa: E402
                    results_path, shown, write_result)

#: the hidden size of the LSTM a child trains first, for the process's one-time costs
WARM_UP_HIDDEN = 64
#: glibc's malloc with a fixed mmap threshold: every block of 128 KiB and more mapped on its own and
#: given back when freed (by default the threshold rises to the largest block freed, up to 32 MiB,
#: and blocks below it come from the heap, where freed ones stay resident)
FIXED_MMAP = "glibc.malloc.mmap_threshold=131072"
DEFAULT = "memory_model_cpu.md"
TITLE = "Memory model against measured peaks (CPU)"
HEADER = ["hidden", "W_hh nnz", "recompute_every", "predicted peak (phase)", "traced peak", "predicted / traced",
          "peak RSS - RSS before", "predicted / RSS", f"RSS, {FIXED_MMAP}", "predicted / RSS (fixed threshold)",
          "predicted: weights / index / grads / Adam / activations / workspace / batch (MiB)",
          "runtime (first steps of the process)", "load avg"]


def mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.1f} MiB"


def sizes(args, hidden: int, k: int | None):
    from sparse_engine.memory import RecurrentSizes

    return RecurrentSizes.build("lstm", args.input, hidden, row_nnz=args.row_nnz, sparse="recurrent",
                                recompute_every=k)


def kept_rows(path: Path) -> list[list[str]]:
    """The rows of the table in an earlier results file (none if there is no file or table)."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")][1:]  # after the header
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def child(args) -> None:
    """One size, one way of measuring: prints one JSON line."""
    import torch

    from sparse_engine.nn import SparseLSTM
    from sparse_engine.memory import predict
    from sparse_engine.testing import TensorMemoryTrace

    torch.set_num_threads(args.threads)
    hidden, k, T, B = args.child, args.k, args.steps, args.batch

    def train(hidden, trace=None):
        torch.manual_seed(0)
        data = torch.Generator().manual_seed(0)
        model = SparseLSTM(args.input, hidden, density=min(1.0, args.row_nnz / hidden), sparse="recurrent",
                           compute="sparse", recompute_every=k)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for step in range(2):
            opt.zero_grad()
            with trace.phase(f"step{step}") if trace else contextlib.nullcontext():
                x = torch.randn(T, B, args.input, generator=data)
                out = model(x)[0]
                out.sum().backward()
                opt.step()
                del x, out
        return model

    # the process's first training steps make what it keeps whatever the model (OpenMP's threads, the
    # BLAS and autograd engine's buffers, code pages): a tiny LSTM trains first, so that "before"
    # holds them and the difference is the model's
    start = rss_bytes()
    train(WARM_UP_HIDDEN)
    before = rss_bytes()
    got = {"runtime": before - start}
    if args.mode == "trace":
        with TensorMemoryTrace() as trace:
            model = train(hidden, trace)
        got["traced"] = trace.peak("step1")
    else:
        model = train(hidden)
        got["rss"] = peak_rss_bytes() - before
    got["predicted_from_module"] = predict(model, T, B, "adam").peak
    print(json.dumps(got), flush=True)


def measure(args, hidden: int, k: int | None, mode: str, tunables: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", str(hidden), "--mode", mode, "--steps", str(args.steps),
           "--batch", str(args.batch), "--input", str(args.input), "--row-nnz", str(args.row_nnz),
           "--threads", str(args.threads)] + (["--k", str(k)] if k else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10k,100k", help="hidden sizes (default: %(default)s)")
    p.add_argument("--huge", action="store_true",
                   help="the hidden 1,000,000 row alone (about 16 GB with recomputation, minutes), added to the rows "
                        "already in --out")
    p.add_argument("--recompute-every", default="auto",
                   help="K, none, or auto: none where the stored run fits --budget, else the interval "
                        "recompute_for_budget picks; several, comma-separated, give a row each (default: %(default)s)")
    p.add_argument("--budget", default=None, help="memory a run may use, e.g. 16G (default: available now)")
    p.add_argument("--steps", type=int, default=35)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--input", type=int, default=28)
    p.add_argument("--row-nnz", type=int, default=32, help="nonzeros per row of W_hh")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help=out_help(DEFAULT))
    p.add_argument("--append", action="store_true",
                   help="keep the rows already in --out (without --out: in the committed table, which is read, not "
                        "written), e.g. add the --huge row to those of 10k and 100k")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("rss", "trace"), help=argparse.SUPPRESS)
    p.add_argument("--k", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    from sparse_engine.memory import parse_size, predict, recompute_for_budget

    hiddens = [1_000_000] if args.huge else [parse_hidden(h) for h in args.sizes.split(",")]
    args.append = args.append or args.huge
    budget = parse_size(args.budget) if args.budget else available_memory_bytes()
    path = results_path(args.out, DEFAULT)
    rows = kept_rows(previous_results(args.out, DEFAULT)) if args.append else []
    announce(TITLE, HEADER, path)
    if rows:
        print(f"kept {len(rows)} rows of {shown(previous_results(args.out, DEFAULT))}", flush=True)
    for hidden, choice in [(h, c) for h in hiddens for c in args.recompute_every.split(",")]:
        with cell(f"hidden {hidden:,}, recompute_every {choice}") as row:
            if choice == "auto":
                k = recompute_for_budget(sizes(args, hidden, None), args.steps, args.batch, budget)[0]
            else:
                k = None if choice == "none" else int(choice)
            pred = predict(sizes(args, hidden, k), args.steps, args.batch, "adam")
            got = {}
            for name, mode, tunables in (("traced", "trace", None), ("rss", "rss", None),
                                         ("fixed", "rss", FIXED_MMAP)):
                with cell(f"  hidden {hidden:,}: {'tensor trace' if mode == 'trace' else 'peak RSS'}"
                          + (", fixed mmap threshold" if tunables else "")) as c:
                    got[name] = measure(args, hidden, k, mode, tunables)
                    c.result = mb(got[name]["traced" if mode == "trace" else "rss"])
            traced, rss, fixed = got["traced"], got["rss"], got["fixed"]
            assert traced["predicted_from_module"] == rss["predicted_from_module"] == pred.peak, (traced, rss, pred)
            mib = " / ".join(f"{getattr(pred, kind) / 2**20:,.0f}" for kind in
                             ("weights", "index", "gradients", "optimizer", "activations", "workspace", "batch"))
            row.result = [f"{hidden:,}", f"{4 * args.row_nnz * hidden:,}", k or "-", f"{mb(pred.peak)} ({pred.phase})",
                          mb(traced["traced"]), f"{pred.peak / traced['traced']:.3f}", mb(rss["rss"]),
                          f"{pred.peak / rss['rss']:.3f}", mb(fixed["rss"]), f"{pred.peak / fixed['rss']:.3f}", mib,
                          mb(rss["runtime"]), f"{os.getloadavg()[0]:.1f}"]
        rows.append(row.result)
        body = (f"SparseLSTM({args.input}, hidden, density={args.row_nnz}/hidden, sparse='recurrent'), T={args.steps}, "
                f"B={args.batch}, Adam, {args.threads} threads; the second of two training steps "
                "(benchmarks/bench_memory_model.py; what is counted: docs/memory.md).\n\n"
                + markdown_table(HEADER, rows))
        write_result(path, TITLE, body)
    finish(path)


if __name__ == "__main__":
    main()
