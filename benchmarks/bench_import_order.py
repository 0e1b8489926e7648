"""Whether the kernels' speed depends on what a script imports first: the same cells in an
interpreter that imports torch first (libgomp then keeps its default spinning waits, which
sparse_engine can no longer change) and in one that imports sparse_engine first
(OMP_WAIT_POLICY=PASSIVE), on a quiet machine and beside a busy process, for this checkout's
build (the thread pool, csrc/cpu/thread_pool.h) and optionally the one before it (--before: a
checkout built in place, the kernels on OpenMP's teams). Cells, 2 threads: forward + backward of
spmm (bench_ops.py's fwd+bwd) at N = 16,384, 1%, B = 32 and at N = 1,024, 1%, B = 32 for ours, the
first for torch.sparse too, and one training epoch of a word language model: the loop of
tests/nn/test_word_lm_loop.py (train_epoch: truncated BPTT, clipping, SGD on p.grad) with a
2-layer SparseLSTM at the sizes of PyTorch's word_language_model example's medium model (650
units, embedding 650, BPTT 35, batch 20) at density 5%, on a synthetic corpus of 2,000 words.
Each configuration runs in a fresh interpreter, in alternating rounds; the table gives the
medians over the rounds and the ratio torch first / sparse_engine first.

    python benchmarks/bench_import_order.py                          # quiet and 1 busy process
    python benchmarks/bench_import_order.py --before /tmp/base_pool --rounds 3

Without --out the table goes to a fresh file under benchmarks/results/local/; ``--out
pool_import_order_cpu.md`` rewrites the committed one.
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
ORDERS = ["torch first", "sparse_engine first"]
CELLS = ["ours fwd+bwd 16,384 / 1%, B 32", "ours fwd+bwd 1,024 / 1%, B 32", "torch.sparse fwd+bwd 16,384 / 1%, B 32",
         "word LM epoch (ours)"]
DEFAULT_OUT = "pool_import_order_cpu.md"
#: --out's help (common.out_help's words: common is not imported before --child, whose interpreter
#: must import torch or sparse_engine first, as its configuration says)
OUT_HELP = (f"results file (benchmarks/common.py's rule): a name in benchmarks/results/ ({DEFAULT_OUT} rewrites "
            "the committed table), a path, or a folder ending in /; default: a fresh file under benchmarks/results/local/")
TITLE = "Import order: torch first against sparse_engine first"
VOCAB, EMB, HID, LAYERS, BPTT, BATCH, DENSITY, TOKENS = 2000, 650, 650, 2, 35, 20, 0.05, 20_000


def word_lm_epoch():
    """A callable running one training epoch of tests/nn/test_word_lm_loop.py's loop at medium sizes."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from sparse_engine.nn import SparseLSTM

    g = torch.Generator().manual_seed(0)
    succ = torch.randint(VOCAB, (VOCAB, 2), generator=g)
    u = torch.rand(TOKENS, generator=g)
    toks = [0]
    for x in u[1:].tolist():  # a Markov chain: two likely successors per word
        toks.append(int(succ[toks[-1], 0] if x < 0.45 else succ[toks[-1], 1] if x < 0.9 else int(x * 1e6) % VOCAB))
    data = torch.tensor(toks)
    steps = data.numel() // BATCH
    source = data[:steps * BATCH].view(BATCH, steps).t().contiguous()

    class WordLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.5)
            self.embed = nn.Embedding(VOCAB, EMB)
            self.rnn = SparseLSTM(EMB, HID, LAYERS, dropout=0.5, density=DENSITY, compute="sparse")
            self.head = nn.Linear(HID, VOCAB)

        def forward(self, tokens, state):
            out, state = self.rnn(self.drop(self.embed(tokens)), state)
            return F.log_softmax(self.head(self.drop(out)).view(-1, VOCAB), dim=1), state

    torch.manual_seed(0)
    model = WordLM()

    def epoch(lr=20.0, clip=0.25):
        model.train()
        h = torch.zeros(LAYERS, BATCH, HID)
        state = (h, h.clone())
        for i in range(0, source.shape[0] - 1, BPTT):
            n = min(BPTT, source.shape[0] - 1 - i)
            x, y = source[i:i + n], source[i + 1:i + 1 + n].reshape(-1)
            state = tuple(s.detach() for s in state)
            model.zero_grad()
            logp, state = model(x, state)
            F.nll_loss(logp, y).backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
    return epoch


def child(package_root: str, torch_first: bool) -> None:
    """Times the cells in this interpreter; prints JSON {cell: ms} (medians)."""
    sys.path.insert(0, package_root)
    if torch_first:
        import torch  # noqa: F401  (first: libgomp keeps spinning)
    import sparse_engine
    import torch
    sys.path.append(str(HERE))
    from bench_ops import baselines, make_weight, ours  # noqa: E402
    from sparse_engine.runtime.timing import times_of

    torch.set_num_threads(2)
    out = {}
    for n in (16384, 1024):
        W = make_weight(n, 0.01, "uniform")
        g = torch.Generator().manual_seed(1)
        X, G = torch.randn(n, 32, generator=g), torch.randn(n, 32, generator=g)
        ours_fn, torch_sparse = ours("fwd+bwd", W, X, G)[0], baselines("fwd+bwd", W, X, G)["torch.sparse CSR"]
        reps = 15 if n > 1024 else 201
        out[f"ours fwd+bwd {n:,} / 1%, B 32"] = statistics.median(times_of(ours_fn, reps, 3)) * 1e3
        if n > 1024:
            out[f"torch.sparse fwd+bwd {n:,} / 1%, B 32"] = \
                statistics.median(times_of(torch_sparse(), 3, 1)) * 1e3
        del W, ours_fn, torch_sparse
    epoch = word_lm_epoch()
    epoch()  # warm-up epoch (allocations, the index)
    out["word LM epoch (ours)"] = statistics.median(times_of(epoch, 2)) * 1e3
    out["package"] = sparse_engine.__file__
    out["policy"] = os.environ.get("OMP_WAIT_POLICY")
    print(json.dumps(out))


def run_child(package_root: str, torch_first: bool, hog: int | None) -> tuple[dict, float, int]:
    """(the child's times, others' CPUs while it ran, runs): rerun while others took > 0.15 CPU."""
    from quiet import run_clean

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "PYTHONPATH")}
    env["PYTHONPATH"] = package_root
    cmd = [sys.executable, "-W", "ignore", __file__, "--child", package_root] + (["--torch-first"] if torch_first else [])
    out, others, runs = run_clean(cmd, env, hog=hog)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.splitlines()[-1]), others, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a checkout of the build before the pool, built in place")
    parser.add_argument("--after", default=str(ROOT), help="the build with the pool (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pin", type=int, default=None, help="pin the busy process to this CPU (taskset)")
    parser.add_argument("--out", help=OUT_HELP)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--torch-first", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(args.child, args.torch_first)
    sys.path.insert(0, str(HERE))
    from common import announce, cell, finish, markdown_table, results_path, write_result  # noqa: E402
    from quiet import wait_quiet  # noqa: E402

    path = results_path(args.out, DEFAULT_OUT)
    announce(TITLE, ["round", "machine", "build", "order", "OMP_WAIT_POLICY", "others' CPUs", "runs"] + CELLS, path)

    builds = {"after (pool)": args.after}
    if args.before:
        builds = {"before (OpenMP)": args.before, **builds}
    conditions = ["quiet", "busy"]
    times = {(b, c, o): {cell: [] for cell in CELLS} for b in builds for c in conditions for o in ORDERS}
    loads, idles = {c: [] for c in conditions}, {c: [] for c in conditions}
    others = {c: [] for c in conditions}
    for r in range(args.rounds):
        for condition in conditions:
            idles[condition].append(wait_quiet())
            hog = None
            if condition == "busy":
                cmd = [sys.executable, "-c", BUSY_LOOP]
                if args.pin is not None:
                    cmd = ["taskset", "-c", str(args.pin)] + cmd
                hog = subprocess.Popen(cmd)
                time.sleep(2)
            try:
                for b, root in builds.items():
                    for order in ORDERS:
                        with cell(f"round {r + 1}, {condition}, {b}, {order}") as c:
                            res, other, runs = run_child(root, order == "torch first", hog.pid if hog else None)
                            others[condition].append(other)
                            for name in CELLS:
                                times[(b, condition, order)][name].append(res[name])
                            c.result = [r + 1, condition, b, order, res["policy"], f"{other:.2f}", runs] + \
                                [f"{res[name]:.3f}" for name in CELLS]
                loads[condition].append(os.getloadavg()[0])
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    rows = []
    for b in builds:
        for condition in conditions:
            for name in CELLS:
                tf = statistics.median(times[(b, condition, "torch first")][name])
                sf = statistics.median(times[(b, condition, "sparse_engine first")][name])
                rows.append([b, condition, name, f"{tf:.2f}", f"{sf:.2f}", f"{tf / sf:.2f}",
                             " / ".join(f"{t:.1f}" for t in times[(b, condition, "torch first")][name]),
                             " / ".join(f"{t:.1f}" for t in times[(b, condition, "sparse_engine first")][name])])
    pin = f"pinned to CPU {args.pin}" if args.pin is not None else "not pinned"
    body = (f"{__doc__.split(chr(10) + chr(10))[0]}\n\n"
            f"Rounds: {args.rounds}; in each child the fwd+bwd cells are medians of 15 (16,384) and 201 (1,024) "
            f"calls of ours and 3 of torch.sparse after warm-up, the epoch the median of 2 after a warm-up epoch. "
            f"The busy process: `python -c '{BUSY_LOOP}'`, {pin}, started 2 s before its condition's children. "
            f"Each condition's children started once the CPUs were at least 90% idle over 0.5 s (before the busy "
            f"process started; waiting up to 5 minutes): idle then {', '.join(f'{x:.0%}' for x in idles['quiet'])} "
            f"(quiet), {', '.join(f'{x:.0%}' for x in idles['busy'])} (busy). 1-minute load average after each "
            f"round: quiet {', '.join(f'{x:.2f}' for x in loads['quiet'])}; busy "
            f"{', '.join(f'{x:.2f}' for x in loads['busy'])} (the busy process counts 1). A child whose run saw "
            f"other processes (not it, not the busy process) take over 0.15 CPU on average was run again, up to "
            f"4 times (benchmarks/quiet.py): others' CPUs during the kept runs, at most "
            f"{max(others['quiet'], default=0):.2f} (quiet) and {max(others['busy'], default=0):.2f} (busy).\n\n"
            + markdown_table(["build", "machine", "cell", "torch first ms", "sparse_engine first ms",
                              "torch first / sparse_engine first", "torch first, each round",
                              "sparse_engine first, each round"], rows))
    write_result(path, TITLE, body)
    finish(path)


if __name__ == "__main__":
    main()
