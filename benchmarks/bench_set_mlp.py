"""SET-MLP at scale on the CPU: 784 - three hidden layers of N/3 neurons - 10, epsilon 13, batch 40,
the 8,000 training images of the shipped MNIST test set (load_task's 80/20 split; 2,000 held out).

    python benchmarks/bench_set_mlp.py --sizes 10k,100k,1M,max --epochs 2 --threads 2 --out set_mlp_cpu.md
    python benchmarks/bench_set_mlp.py --sizes 3000 --epochs 1 --train 400   # seconds: checks the script

Each size runs in a fresh subprocess, so its peak memory (``timing.peak_rss_bytes``: the resident
high-water mark, read after every epoch) is its own. Per epoch it records the training time, the
SET evolution time (none after the last epoch, as SET-MLP does), the peak RSS, the test accuracy,
nnz, and bytes per connection: of the network as trained (values + CSR + the transposed index of
the layers whose backward needs W^T, i.e. all but the first; row pointers included) and of the peak RSS (minus the RSS before the network existed); the SGD
momentum (4 bytes a connection) is counted in the peak but not in the network's bytes. ``max`` is
the largest size whose peak, extrapolated linearly in nnz from the sizes run before it, fits in
``--max-gb``. The markdown table (with the load average) is rewritten after every epoch, so a
run cut short keeps what it measured: without --out a fresh file
benchmarks/results/local/set_mlp_cpu-<UTC time>.md (named at the start and the end); the committed
table is rewritten only with --out set_mlp_cpu.md. The console shows the table's header, then a
line as each epoch of each size starts and one (its row) as it ends.

    python benchmarks/bench_set_mlp.py --accuracy 1000 --epochs 60 --seeds 3

compares instead the test accuracy of SET-MLP 784-H-H-H-10 with a dense MLP of the same sizes
(PyTorch's default init; the same SGD, dropout, weight decay, batches and epochs) on the same
split, scoring each run by the mean of its last ``--last`` epochs (no selection on the test set),
and writes the table set_mlp_accuracy_H.md with both learning curves (without --out a fresh file
under benchmarks/results/local/, the committed one only with --out set_mlp_accuracy_H.md).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# sparse_engine before torch (which common imports): it sets passive OpenMP waiting and torch's
# huge pages (sparse_engine/runtime/threads.py), read once when torch loads
from sparse_engine.runtime.timing import peak_rss_bytes, rss_bytes, times_of  # noqa: E402
from common import (announce, cell, cell_ends, cell_starts, finish, machine, markdown_table, out_help,  # noqa: E402
                    results_path)

MNIST = ROOT / ".." / "shared" / "data" / "mnist_test"
HEADER = ["neurons", "sizes", "epoch", "train s", "evolution s", "epoch s", "evolution %", "peak RSS MB",
          "test acc", "nnz", "bytes/conn (network)", "bytes/conn (peak)", "load avg"]


def parse_size(text: str) -> int | str:
    text = text.strip().lower()
    if text == "max":
        return "max"
    scale = {"k": 10**3, "m": 10**6}.get(text[-1:], 1)
    try:
        value = int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 10k,100k,1M,max; got {text!r}") from None
    if value < 3:
        raise argparse.ArgumentTypeError(f"a size needs at least 3 hidden neurons, got {text!r}")
    return value


def hidden_sizes(neurons: int) -> tuple[int, int, int]:
    third = neurons // 3
    return third, third, neurons - 2 * third


def child(args) -> None:
    """One size: prints one JSON line per epoch."""
    import torch

    from sparse_engine.data.tasks import load_task
    from sparse_engine.nn import SparseMLP
    from sparse_engine.training import SETMLP, SETSGD

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    (Xtr, ytr), (Xte, yte), meta = load_task("mnist", str(MNIST), 0)
    Xtr, Xte = Xtr.reshape(len(Xtr), -1)[:args.train], Xte.reshape(len(Xte), -1)
    ytr = ytr[:args.train]
    base_rss = rss_bytes()
    sizes = (Xtr.shape[1], *hidden_sizes(args.child), 10)
    model = SparseMLP(sizes, epsilon=args.epsilon, dropout=0.2)
    nnz = model.nnz
    opt = SETSGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-4)
    ctl = SETMLP(model, opt, epochs=args.epochs, zeta=0.3, seed=0)

    def train_epoch():
        for idx in torch.randperm(len(Xtr)).split(args.batch):
            opt.zero_grad(set_to_none=False)
            model.loss(model(Xtr[idx]), ytr[idx]).backward()
            opt.step()

    for epoch in range(1, args.epochs + 1):
        train_s = times_of(train_epoch, 1)[0]
        # the weights as trained: values, CSR, and the transposed index where the backward built it
        network = sum(b.numel() * b.element_size() for layer in model.layers
                      for b in (layer.weight.values, *layer.weight.buffers()))
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(Xte[i:i + args.batch]).argmax(1) == yte[i:i + args.batch]).sum())
                          for i in range(0, len(Xte), args.batch))  # one training batch's activations
        model.train()
        evo_s = times_of(ctl.end_epoch, 1)[0]
        peak = peak_rss_bytes()
        print(json.dumps(dict(neurons=args.child, sizes=sizes, epoch=epoch, train_s=train_s, evolution_s=evo_s,
                              peak=peak, base=base_rss, acc=correct / len(Xte), nnz=nnz, network=network,
                              load=os.getloadavg()[0])), flush=True)


def accuracy_curve(name: str, H: int, seed: int, args, data) -> tuple[list[float], int, float]:
    """Train one model (``name``: "SET-MLP" or "dense MLP") for ``args.epochs`` epochs from ``seed``
    (initial weights, dropout, batch order, SET's draws); returns the test accuracy after every
    epoch, the parameter count and the seconds it took."""
    import torch
    from torch import nn

    from sparse_engine.nn import SparseMLP
    from sparse_engine.training import SETMLP, SETSGD

    (Xtr, ytr), (Xte, yte) = data
    torch.manual_seed(seed)
    if name == "SET-MLP":
        model = SparseMLP((784, H, H, H, 10), epsilon=args.epsilon, dropout=0.2)
        loss_fn = model.loss
    else:
        model = nn.Sequential(nn.Linear(784, H), nn.ReLU(), nn.Dropout(0.2), nn.Linear(H, H), nn.ReLU(),
                              nn.Dropout(0.2), nn.Linear(H, H), nn.ReLU(), nn.Dropout(0.2), nn.Linear(H, 10))
        loss_fn = nn.functional.cross_entropy
    opt = SETSGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-4)
    ctl = SETMLP(model, opt, epochs=args.epochs, zeta=0.3, seed=seed) if name == "SET-MLP" else None
    accs = []

    def run():
        for epoch in range(args.epochs):
            for idx in torch.randperm(len(Xtr)).split(args.batch):
                opt.zero_grad()
                loss_fn(model(Xtr[idx]), ytr[idx]).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                accs.append(float((model(Xte).argmax(1) == yte).float().mean()))
            model.train()
            if ctl is not None:
                ctl.end_epoch()

    seconds = times_of(run, 1)[0]
    params = model.nnz + sum(l.bias.numel() for l in model.layers) if ctl else sum(p.numel() for p in model.parameters())
    return accs, params, seconds


def mean_std(values: list[float]) -> str:
    m = sum(values) / len(values)
    if len(values) < 2:
        return f"{m:.4f}"
    return f"{m:.4f} ± {(sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5:.4f}"


def accuracy_vs_dense(args) -> None:
    """Test accuracy of SET-MLP and of a dense MLP with the same hidden sizes, the same protocol for
    both: ``--epochs`` epochs, no model selection; the score of a run is the mean of its last
    ``--last`` epochs' test accuracies (an epoch's accuracy on 2,000 images moves by about a point
    from one epoch to the next), averaged over ``--seeds`` seeds (``--dense-seeds`` for the dense
    model, which is the expensive one at large H). The results file is rewritten after every run."""
    import torch

    from sparse_engine.data.tasks import load_task

    torch.set_num_threads(args.threads)
    (Xtr, ytr), (Xte, yte), _ = load_task("mnist", str(MNIST), 0)
    data = ((Xtr.reshape(len(Xtr), -1)[:args.train], ytr[:args.train]), (Xte.reshape(len(Xte), -1), yte))
    H, K = args.accuracy, min(args.last, args.epochs)
    seeds = {"SET-MLP": args.seeds, "dense MLP": args.dense_seeds or args.seeds}
    runs = {name: [] for name in seeds}  # name -> [(accs, params, seconds)]
    out = results_path(args.out, f"set_mlp_accuracy_{H}.md")
    title = "SET-MLP against a dense MLP of the same sizes"
    columns = ["model", "sizes", "parameters", "epochs", "seeds", f"mean of last {K} epochs", "last epoch",
               "best epoch (on test)", "s/epoch"]
    command = (f"python benchmarks/bench_set_mlp.py --accuracy {H} --epochs {args.epochs} --seeds {args.seeds}"
               + (f" --dense-seeds {args.dense_seeds}" if args.dense_seeds else "") + f" --last {args.last} --threads {args.threads}")

    def write() -> None:
        rows, curves = [], {}
        for name, done in runs.items():
            if not done:
                continue
            curves[name] = [sum(r[0][e] for r in done) / len(done) for e in range(args.epochs)]
            rows.append([name, f"784-{H}-{H}-{H}-10", f"{done[0][1]:,}", args.epochs, len(done),
                         mean_std([sum(r[0][-K:]) / K for r in done]), mean_std([r[0][-1] for r in done]),
                         mean_std([max(r[0]) for r in done]), f"{sum(r[2] for r in done) / len(done) / args.epochs:.1f}"])
        every = max(1, args.epochs // 10)
        curve_rows = [[e] + [f"{sum(c[e - K:e]) / K:.4f}" if e >= K else "" for c in curves.values()]
                      for e in range(every, args.epochs + 1, every)]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            f"# {title}\n\n"
            f"Machine: {machine()}, load average {os.getloadavg()[0]:.2f} at the end "
            "(2 cores, shared; seconds are indicative)\n\n"
            "MNIST: the shipped 10,000-image test set split 80/20 (8,000 train, 2,000 test, split seed 0). Both: "
            f"SGD lr 0.05, momentum 0.9, weight decay 2e-4 outside the momentum, dropout 0.2, batch {args.batch}, "
            f"cross-entropy, {args.epochs} epochs; SET-MLP: epsilon {args.epsilon:g}, zeta 0.3, default mode. "
            "A run's seed sets its initial weights, dropout, batch order and SET's draws.\n\n"
            f"Protocol, the same for both models: no model selection; a run's score is the mean test accuracy of "
            f"its last {K} epochs (one point is 20 test images), given as mean ± standard deviation over seeds. "
            "'best epoch' is the highest single-epoch test accuracy, chosen on the test set: shown only "
            "to compare with earlier reports, not a fair score.\n\n"
            f"Command: `{command}`\n\n"
            + markdown_table(columns, rows)
            + f"\n\nLearning curves: mean test accuracy of the {K} epochs up to epoch e (mean over seeds), "
            "i.e. the score each model would get with a budget of e epochs (SET-MLP's evolution schedule is that "
            f"of the {args.epochs}-epoch run).\n\n"
            + markdown_table(["epoch e", *curves], curve_rows) + "\n")

    announce(title, columns, out)
    for name, n in seeds.items():
        for seed in range(n):
            with cell(f"{name} 784-{H}-{H}-{H}-10, seed {seed}, {args.epochs} epochs") as c:
                runs[name].append(accuracy_curve(name, H, seed, args, data))
                accs = runs[name][-1][0]
                c.result = f"last {K}: {sum(accs[-K:]) / K:.4f}, curve {[round(a, 4) for a in accs]}"
            write()
    finish(out)


def row_of(r: dict) -> list:
    epoch_s = r["train_s"] + r["evolution_s"]
    return [f"{r['neurons']:,}", "-".join(map(str, r["sizes"])), r["epoch"], f"{r['train_s']:.1f}",
            f"{r['evolution_s']:.2f}", f"{epoch_s:.1f}", f"{100 * r['evolution_s'] / epoch_s:.1f}",
            f"{r['peak'] / 2**20:,.0f}", f"{r['acc']:.4f}", f"{r['nnz']:,}", f"{r['network'] / r['nnz']:.1f}",
            f"{(r['peak'] - r['base']) / r['nnz']:.1f}", f"{r['load']:.2f}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10k,100k,1M,max", help="hidden neurons in all (10k, 100k, 1M, 2.5M, max)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per size; SET evolves after all but the last")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=40)
    p.add_argument("--epsilon", type=float, default=13.0)
    p.add_argument("--train", type=int, default=8000, help="training images (of the 8,000 of the split)")
    p.add_argument("--max-gb", type=float, default=16.0, help="memory the 'max' size may use")
    p.add_argument("--out", default=None, help=out_help("set_mlp_cpu.md, with --accuracy H set_mlp_accuracy_H.md"))
    p.add_argument("--accuracy", type=int, metavar="H",
                   help="instead: compare SET-MLP 784-H-H-H-10 with a dense MLP of the same sizes")
    p.add_argument("--seeds", type=int, default=1, help="--accuracy: seeds per model (0, 1, ...)")
    p.add_argument("--dense-seeds", type=int, default=0, help="--accuracy: seeds of the dense model (default: --seeds)")
    p.add_argument("--last", type=int, default=5, help="--accuracy: a run's score is the mean of its last N epochs")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.accuracy:
        return accuracy_vs_dense(args)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    out, rows, fit = results_path(args.out, "set_mlp_cpu.md"), [], []
    title = "SET-MLP on the CPU: time and memory per epoch"

    def write():
        body = ("Per epoch: training (forward, backward, SGD step), then SET evolution of every layer (none after "
                "the last epoch). Peak RSS: the process's resident high-water mark; bytes/conn (peak): (peak - "
                "RSS before the network) / nnz, momentum and one batch's activations included; bytes/conn "
                "(network): values + CSR + transposed index (all layers but the first, whose input needs no gradient) as trained. Load avg: 1-minute load average at the "
                "epoch's end (2 cores: above 2 the numbers are slowed by other work).\n\n"
                f"Command: `python benchmarks/bench_set_mlp.py --sizes {args.sizes} --epochs {args.epochs} "
                f"--threads {args.threads}" + (f" --train {args.train}" if args.train != 8000 else "") +
                f" --max-gb {args.max_gb:g}`\n\n" + markdown_table(HEADER, [row_of(r) for r in rows]))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"# {title}\n\nMachine: {machine()}, "
                       f"{args.threads} threads for the runs\n\n{body}\n")

    announce(title, HEADER, out)
    for size in sizes:
        if size == "max":
            if not fit:
                print("max: run at least one size before it (to extrapolate its memory)", file=sys.stderr)
                continue
            (n1, m1), (n2, m2) = fit[0], fit[-1]
            per_neuron = (m2 - m1) / (n2 - n1) if n2 != n1 else m2 / n2
            size = int(n2 + (args.max_gb * 2**30 * 0.9 - m2) / per_neuron) // 3 * 3
            print(f"max: {size:,} neurons (extrapolated)", flush=True)
        cmd = [sys.executable, __file__, "--child", str(size)] + [f"--{k}={getattr(args, k)}" for k in
                                                                   ("epochs", "threads", "batch", "epsilon", "train")]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as proc:
            epoch = cell_starts(f"{size:,} neurons, epoch 1 of {args.epochs}")
            for line in proc.stdout:
                r = json.loads(line)
                rows.append(r)
                cell_ends(epoch, row_of(r))
                write()
                if r["epoch"] < args.epochs:
                    epoch = cell_starts(f"{size:,} neurons, epoch {r['epoch'] + 1} of {args.epochs}")
        if proc.returncode != 0:
            cell_ends(epoch, f"failed (exit {proc.returncode})")
            print(f"size {size:,} failed (exit {proc.returncode})", file=sys.stderr)
            break
        fit.append((size, rows[-1]["peak"]))
    finish(out)


if __name__ == "__main__":
    main()
