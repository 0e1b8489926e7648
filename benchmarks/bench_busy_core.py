"""What a busy core costs: forward + backward of spmm at N = 16,384, density 1%, B = 32 (spmm, then
spmm_t and sddmm as its backward: bench_ops.py's fwd+bwd cell, what `sparse-engine bench` times)
for ours on 2 threads and for torch.sparse (its CSR matmul, 2 threads), on a quiet machine and
beside a busy process (``python -c 'while True: pass'``, pinned to one core with --pin), for two
builds of the kernels in the same run: the one before the thread pool (OpenMP's teams; a checkout
built in place, given by --before) and this checkout's (csrc/cpu/thread_pool.h). Each
configuration runs in a fresh interpreter that imports sparse_engine first (OMP_WAIT_POLICY=PASSIVE
for libgomp), in alternating rounds; the table gives the medians over the rounds and the slowdown
busy / quiet of each.

    python benchmarks/bench_busy_core.py --before /tmp/base_pool          # quiet and 1 busy process
    python benchmarks/bench_busy_core.py --before /tmp/base_pool --pin 1 --rounds 1 --out /tmp/busy.md

Without --out the table goes to a fresh file under benchmarks/results/local/; ``--out
pool_busy_core_cpu.md`` rewrites the committed one.
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
BUSY_LOOP = "while True: pass"
N, DENSITY, B = 16384, 0.01, 32
DEFAULT_OUT = "pool_busy_core_cpu.md"
#: --out's help (common.out_help's words: common is not imported before --child, whose interpreter
#: must import the build it times first)
OUT_HELP = (f"results file (benchmarks/common.py's rule): a name in benchmarks/results/ ({DEFAULT_OUT} rewrites "
            "the committed table), a path, or a folder ending in /; default: a fresh file under benchmarks/results/local/")
TITLE = "A busy core: forward + backward at N = 16,384, 1%, B = 32"


def child(package_root: str, torch_sparse: bool) -> None:
    """Times ours (and torch.sparse) fwd+bwd in this interpreter; prints JSON {name: ms} (medians)."""
    sys.path.insert(0, package_root)
    import sparse_engine  # noqa: F401  (first: libgomp's wait policy, huge pages)
    import torch
    sys.path.append(str(HERE))
    from bench_ops import baselines, make_weight, ours  # noqa: E402
    from sparse_engine.runtime.timing import times_of

    torch.set_num_threads(2)
    W = make_weight(N, DENSITY, "uniform")
    g = torch.Generator().manual_seed(1)
    X, G = torch.randn(N, B, generator=g), torch.randn(N, B, generator=g)
    ours_fn, sparse_baseline = ours("fwd+bwd", W, X, G)[0], baselines("fwd+bwd", W, X, G)["torch.sparse CSR"]
    out = {"ours": statistics.median(times_of(ours_fn, 15, 2)) * 1e3}
    if torch_sparse:
        out["torch.sparse"] = statistics.median(times_of(sparse_baseline(), 3, 1)) * 1e3
    out["package"] = sparse_engine.__file__
    print(json.dumps(out))


def run_child(package_root: str, torch_sparse: bool, hog: int | None) -> tuple[dict, float, int]:
    """(the child's times, others' CPUs while it ran, runs): rerun while others took > 0.15 CPU."""
    from quiet import run_clean

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "PYTHONPATH")}
    env["PYTHONPATH"] = package_root
    cmd = [sys.executable, __file__, "--child", package_root] + (["--torch-sparse"] if torch_sparse else [])
    out, others, runs = run_clean(cmd, env, hog=hog)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.splitlines()[-1]), others, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=False, help="a checkout of the build before the pool, built in place")
    parser.add_argument("--after", default=str(ROOT), help="the build with the pool (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pin", type=int, default=None, help="pin the busy process to this CPU (taskset)")
    parser.add_argument("--out", help=OUT_HELP)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--torch-sparse", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(args.child, args.torch_sparse)
    sys.path.insert(0, str(HERE))
    from common import announce, cell, finish, markdown_table, results_path, write_result  # noqa: E402
    from quiet import wait_quiet  # noqa: E402

    path = results_path(args.out, DEFAULT_OUT)
    announce(TITLE, ["round", "condition", "build", "ours ms", "torch.sparse ms", "others' CPUs", "runs"], path)

    builds = {"before (OpenMP)": args.before, "after (pool)": args.after} if args.before else {"after (pool)": args.after}
    conditions = ["quiet", "busy"]
    times = {(b, c): {"ours": [], "torch.sparse": []} for b in builds for c in conditions}
    loads, idles = {c: [] for c in conditions}, {c: [] for c in conditions}
    others = {c: [] for c in conditions}
    for r in range(args.rounds):
        for condition in conditions:
            hog = None
            idles[condition].append(wait_quiet())
            if condition == "busy":
                cmd = [sys.executable, "-c", BUSY_LOOP]
                if args.pin is not None:
                    cmd = ["taskset", "-c", str(args.pin)] + cmd
                hog = subprocess.Popen(cmd)
                time.sleep(2)
            try:
                for b, root in builds.items():
                    with cell(f"round {r + 1}, {condition}, {b}") as c:
                        res, other, runs = run_child(root, True, hog.pid if hog else None)
                        others[condition].append(other)
                        for name in ("ours", "torch.sparse"):
                            times[(b, condition)][name].append(res[name])
                        c.result = [r + 1, condition, b, f"{res['ours']:.1f}", f"{res['torch.sparse']:.1f}",
                                    f"{other:.2f}", runs]
                loads[condition].append(os.getloadavg()[0])
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    rows = []
    for b in builds:
        for name in ("ours", "torch.sparse"):
            q = statistics.median(times[(b, "quiet")][name])
            s = statistics.median(times[(b, "busy")][name])
            rows.append([b, name, f"{q:.1f}", f"{s:.1f}", f"{s / q:.2f}x",
                         " / ".join(f"{t:.0f}" for t in times[(b, "quiet")][name]),
                         " / ".join(f"{t:.0f}" for t in times[(b, "busy")][name])])
    pin = f"pinned to CPU {args.pin}" if args.pin is not None else "not pinned"
    body = (f"{__doc__.split(chr(10) + chr(10))[0]}\n\n"
            f"Rounds: {args.rounds}; each child times ours over 15 calls and torch.sparse over 3 (medians), "
            f"after warm-up. The busy process: `python -c '{BUSY_LOOP}'`, {pin}, started 2 s before its "
            f"condition's children. 1-minute load average after each round: quiet "
            f"{', '.join(f'{x:.2f}' for x in loads['quiet'])}; busy {', '.join(f'{x:.2f}' for x in loads['busy'])} "
            f"(the busy process counts 1). Each condition's children started once the CPUs were at least "
            f"90% idle over 0.5 s (before the busy process started), waiting up to 5 minutes: idle then "
            f"{', '.join(f'{x:.0%}' for x in idles['quiet'])} (quiet), "
            f"{', '.join(f'{x:.0%}' for x in idles['busy'])} (busy). A child whose run saw other processes "
            f"(not it, not the busy process) take over 0.15 CPU on average was run again, up to 4 times "
            f"(benchmarks/quiet.py): others' CPUs during the kept runs, at most "
            f"{max(others['quiet'], default=0):.2f} (quiet) and {max(others['busy'], default=0):.2f} (busy).\n\n"
            + markdown_table(["build", "fwd+bwd of", "quiet ms", "busy ms", "busy / quiet", "quiet, each round",
                              "busy, each round"], rows))
    write_result(path, TITLE, body)
    finish(path)


if __name__ == "__main__":
    main()
