"""One topology update of one layer by a controller (SET, RigL, Selfish-RNN): how many
``torch.ops.sparse_engine`` calls it makes and how long it takes, for this checkout and, with
``--baseline DIR``, for another checkout of the package (an older commit) in the same run.

    PYTHONPATH=. python benchmarks/bench_topology_one_pass.py [--baseline /tmp/base] [--runs 5]

Each case is one SparseLinear layer of the given size and nnz with Adam state and a gradient,
updated through the controller's public API: ``SET.end_epoch()`` (zeta 0.3, new weights at zero),
``RigL.step()`` at an update step (fraction 0.3, exact growth by gradient from a batch of 16),
``SelfishRNN.end_epoch()`` (magnitude death at rate 0.3, random growth, NT-ASGD averaging on, so
its averages are remapped too); and SET-MLP's evolution, ``SETMLP.end_epoch()`` over the four
layers of a 784-20000-20000-20000-10 SparseMLP (epsilon 13, SETSGD, new weights N(0, 0.1^2)). Before each timed update, untimed: the values are redrawn in
place (else the entries regrown at zero would be the next ones pruned), and for RigL a forward
and backward give the gradient factors. Times: the fastest update of ``--updates`` after a
warm-up, per process; the checkouts run in alternating child processes ``--runs`` times each and
the table keeps each one's fastest (the machine is shared). Calls: counted with a
TorchDispatchMode in a separate, untimed update.

The table (topology_one_pass.md) is rewritten after every round of child processes: without --out
a fresh file benchmarks/results/local/topology_one_pass-<UTC time>.md (named at the start and the
end); the committed table is rewritten only with --out topology_one_pass.md. The console shows the
table's header, then a line as each child process starts and one (its times) as it ends.

    python benchmarks/bench_topology_one_pass.py --runs 1 --updates 1   # one child: checks the script
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
CASES = [("SET", 10_000, 10_000, 1_000_000), ("RigL", 10_000, 10_000, 1_000_000),
         ("Selfish-RNN", 10_000, 10_000, 1_000_000), ("SET", 10_000, 10_000, 100_000),
         ("RigL", 10_000, 10_000, 100_000), ("Selfish-RNN", 10_000, 10_000, 100_000),
         ("SET-MLP", 0, 0, 0)]
BATCH = 16
#: SET-MLP's evolution (every layer, N(0, 0.1^2) values): 60,000 hidden neurons, about 1.6M connections
MLP_SIZES = (784, 20_000, 20_000, 20_000, 10)


def child(root: str, updates: int) -> None:
    """Measures every case with the package of ``root``; prints one JSON line."""
    sys.path.insert(0, root)
    import sparse_engine  # first: passive OpenMP waiting (sparse_engine/runtime/threads.py)
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from sparse_engine.nn import SparseLinear, SparseMLP
    from sparse_engine.runtime.timing import best_of
    from sparse_engine.training import SET, SETMLP, SETSGD, RigL, SelfishRNN

    assert Path(sparse_engine.__file__).resolve().is_relative_to(Path(root).resolve()), sparse_engine.__file__

    class Calls(TorchDispatchMode):
        """Counts the operators called from Python (not those a kernel calls inside)."""

        def __init__(self):
            super().__init__()
            self.ours = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ours += func.namespace == "sparse_engine"
            return func(*args, **(kwargs or {}))

    def case(algo, rows, cols, nnz):
        torch.manual_seed(0)
        if algo == "SET-MLP":
            lin = SparseMLP(MLP_SIZES, epsilon=13, dropout=0.0, generator=torch.Generator().manual_seed(0))
            cols = MLP_SIZES[0]
            opt = SETSGD(lin.parameters(), lr=0.01)
        else:
            lin = SparseLinear(cols, rows, density=nnz / (rows * cols))
            opt = torch.optim.Adam(lin.parameters(), lr=1e-3)
        weights = [m.weight for m in lin.modules() if isinstance(m, SparseLinear)]
        x = torch.randn(BATCH, cols)
        if algo == "SET-MLP":
            ctl = SETMLP(lin, opt, epochs=10**9, seed=0)
            update = ctl.end_epoch
        elif algo == "SET":
            ctl = SET(lin, opt, zeta=0.3, seed=0)
            update = ctl.end_epoch
        elif algo == "RigL":
            ctl = RigL(lin, opt, end_step=10**9, update_fraction=0.6, update_every=1, grad_method="exact", seed=0)
            update = ctl.step  # update_fraction 0.6: f_t = 0.3 at the first steps
        else:
            ctl = SelfishRNN(lin, opt, total_steps=10**9, death_rate=0.3, death_rate_min=0.3, seed=0)
            ctl.start_averaging()
            update = ctl.end_epoch
        gen = torch.Generator().manual_seed(1)

        def prepare():
            opt.zero_grad()
            lin(x).square().mean().backward()
            opt.step()
            with torch.no_grad():
                for w in weights:
                    w.values.normal_(generator=gen)

        prepare()
        update()  # warm-up
        times = []
        for _ in range(updates):
            prepare()
            times.append(best_of(update, repeat=1))
        prepare()
        with Calls() as calls:
            update()
        return {"s": min(times), "calls": calls.ours, "nnz": sum(w.nnz for w in weights)}

    out = {f"{a} {r}x{c} {n}": case(a, r, c, n) for a, r, c, n in CASES}
    print(json.dumps(out))


def run_child(root: str, updates: int) -> dict:
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.run([sys.executable, str(HERE), "--child", root, "--updates", str(updates)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", help="root of another checkout (with its built _C) to measure beside this one")
    p.add_argument("--runs", type=int, default=5, help="child processes per checkout")
    p.add_argument("--updates", type=int, default=3, help="timed updates per case and process")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="results file: a name, written in benchmarks/results/ (the committed "
                   "table's, topology_one_pass.md, rewrites it), a path with a folder (as given) or a folder ending in "
                   "/; default: a fresh file benchmarks/results/local/topology_one_pass-<UTC time>.md")
    args = p.parse_args()
    if args.child:
        return child(args.child, args.updates)
    sys.path.insert(0, str(HERE.parent))
    from common import announce, cell, finish, results_path  # only here: it imports this checkout's package

    args.path = results_path(args.out, "topology_one_pass.md")
    roots = {"this": str(HERE.parents[1])}
    if args.baseline:
        roots = {"baseline": args.baseline, **roots}
    announce(TITLE, columns(list(roots)), args.path)
    load0 = os.getloadavg()
    best: dict[str, dict] = {k: {} for k in roots}
    for run in range(args.runs):
        for label, root in roots.items():
            with cell(f"run {run + 1} of {args.runs}, {label} checkout ({root})") as c:
                got = run_child(root, args.updates)
                c.result = ", ".join(f"{name} {1e3 * r['s']:.1f} ms" for name, r in got.items())
            for name, r in got.items():
                if name not in best[label] or r["s"] < best[label][name]["s"]:
                    best[label][name] = r
        write(args, roots, best, load0, os.getloadavg())
    print(args.path.read_text(), flush=True)
    finish(args.path)


TITLE = "One topology update of one layer: operator calls and time (CPU)"


def columns(labels: list[str]) -> list[str]:
    head = ["case", "layer", "nnz"] + [f"calls ({lb})" for lb in labels] + [f"ms ({lb})" for lb in labels]
    if len(labels) == 2:
        head.append("baseline / this")
    return head


def write(args, roots, best, load0, load1) -> None:
    import torch

    labels = list(roots)
    head = columns(labels)
    rows = []
    for a, r, c, n in CASES:
        name = f"{a} {r}x{c} {n}"
        layer = "-".join(map(str, MLP_SIZES)) + " (4 layers)" if a == "SET-MLP" else f"{r:,} x {c:,}"
        cells = [a, layer, f"{best[labels[-1]][name]['nnz']:,}"]
        cells += [str(best[lb][name]["calls"]) for lb in labels]
        cells += [f"{1e3 * best[lb][name]['s']:.1f}" for lb in labels]
        if len(labels) == 2:
            cells.append(f"{best[labels[0]][name]['s'] / best[labels[1]][name]['s']:.2f}x")
        rows.append("| " + " | ".join(cells) + " |")
    lines = [
        f"# {TITLE}", "",
        f"- machine: {platform.processor() or 'cpu'}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"python {platform.python_version()}",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load average "
        f"{load0[0]:.1f} at the start, {load1[0]:.1f} at the end (shared machine)",
        f"- written by `benchmarks/bench_topology_one_pass.py --runs {args.runs} --updates {args.updates}`"
        + (" --baseline <checkout>" if args.baseline else "") + "; checkouts: "
        + ", ".join(f"{lb} = {'the commit before the one-pass update' if lb == 'baseline' else 'this commit'}"
                    for lb in labels),
        "- calls: `torch.ops.sparse_engine` operators called from Python in one update of the layer; "
        "ms: the fastest update (see the script's docstring)", "",
        "| " + " | ".join(head) + " |", "|" + "|".join(" --- " if i < 2 else " ---: " for i in range(len(head))) + "|",
        *rows, ""]
    args.path.parent.mkdir(parents=True, exist_ok=True)
    args.path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
