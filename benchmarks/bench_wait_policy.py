"""How OpenMP's idle threads wait, measured: passive waiting, what ``import sparse_engine`` sets
(``OMP_WAIT_POLICY=PASSIVE``: sleep at once), against a short spin (``GOMP_SPINCOUNT=1000``: spin,
then sleep), libgomp's own default (what a program gets when torch is imported first: a long spin)
and one thread, on a quiet machine and with busy-loop processes started beside it. Each
configuration runs in a fresh interpreter (libgomp reads the variables once), in alternating
rounds; the table gives each one's median over the rounds. The table (wait_policy_cpu.md) is
rewritten after every load level: without --out a fresh file
benchmarks/results/local/wait_policy_cpu-<UTC time>.md (named at the start and the end); the
committed table is rewritten only with --out wait_policy_cpu.md. The console shows the table's
header, then a line as each configuration's child starts and one (its times) as it ends.

    python benchmarks/bench_wait_policy.py --out wait_policy_cpu.md   # loads 0 and 2 busy processes
    python benchmarks/bench_wait_policy.py --busy 0 --rounds 1        # a quick check (a fresh file)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: name -> (threads, environment variables). "passive" is what ``import sparse_engine`` sets.
DEFAULT = "2 threads, passive (default)"
CONFIGS = {
    "1 thread": (1, {}),
    DEFAULT: (2, {}),
    "2 threads, short spin (GOMP_SPINCOUNT=1000)": (2, {"GOMP_SPINCOUNT": "1000"}),
    "2 threads, libgomp's default spin": (2, {"GOMP_SPINCOUNT": "300000"}),
}
WORKLOADS = ["LSTM step 1,500 / 5%", "LSTM step 4,096 / 1%", "35 x (spmm + spmm_t) 1,024 / 1%"]
BUSY_LOOP = "while True: pass"


def child(threads: int) -> None:
    """Times the workloads in this interpreter and prints them as JSON (ms, median of 5)."""
    sys.path.insert(0, str(ROOT))
    import sparse_engine  # noqa: F401  (first: it sets the waiting policy unless one is set)
    import torch
    from sparse_engine import ops
    from sparse_engine.nn import SparseLSTM
    from sparse_engine.testing import random_weight
    from sparse_engine.runtime.timing import times_of

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    def median_ms(fn) -> float:
        return statistics.median(times_of(fn, repeat=5, warmup=1)) * 1e3

    def lstm_step(hidden: int, density: float):
        model, x = SparseLSTM(hidden, hidden, density=density), torch.randn(35, 20, hidden)

        def step():  # T = 35, B = 20: forward, loss, backward
            model(x)[0].sum().backward()
        return step

    W = random_weight(1024, 1024, 0.01, dtype=torch.float32, seed=0)
    X = torch.randn(1024, 20)
    values_t = ops.transposed_values(W)

    def small_calls():
        with torch.no_grad():
            for _ in range(35):
                ops.spmm_t(W, ops.spmm(W, X), values_t)

    times = [median_ms(lstm_step(1500, 0.05)), median_ms(lstm_step(4096, 0.01)), median_ms(small_calls)]
    print(json.dumps(times))


def run_config(name: str) -> list[float]:
    threads, env = CONFIGS[name]
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, __file__, "--child", str(threads)], env={**base, **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 2],
                        help="numbers of busy-loop processes to run beside the benchmark")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None, help="results file: a name, written in benchmarks/results/ (the "
                        "committed table's, wait_policy_cpu.md, rewrites it), a path with a folder (as given) or a "
                        "folder ending in /; default: a fresh file benchmarks/results/local/wait_policy_cpu-<UTC "
                        "time>.md")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(args.child)
    if args.rounds < 1 or min(args.busy) < 0:
        parser.error("--rounds must be >= 1 and --busy counts >= 0")

    sys.path.insert(0, str(HERE))
    # imports torch: only here, after the children's env is set
    from common import announce, cell, finish, markdown_table, results_path, write_result

    header = ["busy processes", "configuration", *[f"{w} (ms)" for w in WORKLOADS],
              *[f"{w}: vs default" for w in WORKLOADS], "load"]
    rows: list[list] = []
    path = results_path(args.out, "wait_policy_cpu.md")
    title = "OpenMP waiting policies on the CPU kernels"
    announce(title, header, path)

    def write() -> None:
        write_result(
            path, title,
            f"{__doc__.split(chr(10) + chr(10))[0]}\n\n"
            "Medians over the rounds of each child's median of 5 calls. 'vs default': this "
            "configuration's time / the default's (passive, 2 threads); > 1 means slower than "
            "the default. Busy processes are Python busy loops in the benchmark's own session "
            "(they share its CPU time fairly). Load: 1-minute load average after the level's last "
            "round.\n\n" + markdown_table(header, rows))

    for busy in args.busy:
        hogs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
        try:
            time.sleep(5 if busy else 0)
            times: dict[str, list[list[float]]] = {name: [] for name in CONFIGS}
            for r in range(args.rounds):
                for name in CONFIGS:
                    with cell(f"busy {busy}, round {r + 1} of {args.rounds}: {name}") as c:
                        times[name].append(run_config(name))
                        c.result = " / ".join(f"{t:.1f}" for t in times[name][-1]) + " ms"
            load = f"{os.getloadavg()[0]:.1f}"
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
        medians = {name: [statistics.median(r[i] for r in runs) for i in range(len(WORKLOADS))]
                   for name, runs in times.items()}
        default = medians[DEFAULT]
        for name, m in medians.items():
            rows.append([busy, name, *[f"{t:.1f}" for t in m], *[f"{t / d:.2f}" for t, d in zip(m, default)], load])
        for row in rows[-len(medians):]:
            print("| " + " | ".join(str(v) for v in row) + " |", flush=True)
        write()
    finish(path)


if __name__ == "__main__":
    main()
