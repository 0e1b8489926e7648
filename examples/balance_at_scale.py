"""Does structural balance rise under sparsification at 100x the papers' scale?

Trains a sparse RNN (vanilla, tanh; only the recurrent matrix sparse, as Zhang et al. 2023) on a
sequence task twice, once with gradual magnitude pruning and once with SET rewiring, at the
papers' size (150 hidden units on MNIST rows, 128 on Mackey-Glass) and at ``--hidden`` (default
100,000), and records the structural balance of the recurrent matrix at the end of every epoch
(epoch 0: before training) with null-model z-scores (``--null`` sign-shuffled copies per record).

Sizes and densities. At the papers' size the pruning run starts dense and ends at 5% (their
p = 0.05) and the SET run keeps 5%. A dense 100,000 x 100,000 start does not fit in memory, so at
scale the pruning run starts at ``4 * --density`` and ends at ``--density`` (default 1e-4, ten
connections per unit) and the SET run keeps ``--density``.

Writes into ``--out``: ``<size>_<algorithm>.csv`` (the balance records, written as they are
taken: :func:`sparse_engine.analysis.read_record`), ``<size>_<algorithm>_balance.png/.svg`` (the
balance over epochs with the null band), ``balance_comparison.png/.svg`` (the semicycle balance
of all four runs side by side), ``results.md`` (one row per run: accuracy or loss, balance
before and after with the z-scores, wall time, recording time, peak memory).

    python examples/balance_at_scale.py --task mnist --data data/mnist_test \\
        --epochs 10 --out docs/balance_at_scale
    python examples/balance_at_scale.py --estimate     # times a few 100k batches and one record

``--estimate`` builds the large model, times ``--estimate-batches`` training steps and one
balance record with its nulls, and prints what the full run would cost, without training it.
"""
from __future__ import annotations

import sparse_engine  # noqa: F401  (before torch: OpenMP's idle threads then sleep, not spin)

import argparse
import math
import resource
import time
from pathlib import Path

import torch
from torch import nn

from sparse_engine.analysis import BalanceRecorder, DEFINITIONS, recurrent_weights
from sparse_engine.analysis import plots
from sparse_engine.data.tasks import load_task
from sparse_engine.models import SequenceModel
from sparse_engine.training import SET, GradualMagnitudePruning

PAPER_SIZE = {"mnist": 150, "mackey-glass": 128, "digits": 150}
PAPER_DENSITY = 0.05
ALGORITHMS = ("pruning", "set")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(task_meta, hidden: int, density: float, algorithm: str, seed: int):
    """The model (at its starting density) and the density the run ends at."""
    start = density
    if algorithm == "pruning":  # the papers' pruning starts fully connected; at scale from 4x the end density
        start = 1.0 if density >= PAPER_DENSITY else min(1.0, 4 * density)
    torch.manual_seed(seed)
    model = SequenceModel("rnn", task_meta["n_in"], task_meta["n_out"], hidden, 1, start, "recurrent",
                          task_meta["kind"])
    return model, density


def controller(algorithm: str, model, opt, steps: int, final_density: float, seed: int):
    if algorithm == "set":
        return SET(model, opt, zeta=0.1, seed=seed)
    return GradualMagnitudePruning(model, opt, final_density=final_density, end_step=max(2, int(0.75 * steps)),
                                   frequency=max(1, steps // 20), seed=seed)


def evaluate(model, X, y, kind, batch=256) -> float:
    """Test accuracy (classification) or mean squared error (regression)."""
    model.eval()
    score, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(X), batch):
            out = model(X[i:i + batch])
            t = y[i:i + batch]
            score += ((out.argmax(1) == t).sum().item() if kind == "classify"
                      else nn.functional.mse_loss(out, t, reduction="sum").item() / t[0].numel())
            n += len(t)
    model.train()
    return score / n


def run(label: str, data, meta, hidden: int, density: float, algorithm: str, args, out: Path) -> dict:
    (Xtr, ytr), (Xte, yte) = data
    model, final_density = build(meta, hidden, density, algorithm, args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    batches = math.ceil(len(Xtr) / args.batch_size)
    ctl = controller(algorithm, model, opt, args.epochs * batches, final_density, args.seed)
    name = next(iter(recurrent_weights(model)))
    recorder = BalanceRecorder(layers=[name], null=args.null, seed=args.seed, path=out / f"{label}.csv")
    loss_fn = nn.functional.cross_entropy if meta["kind"] == "classify" else nn.functional.mse_loss
    g = torch.Generator().manual_seed(args.seed)
    record_s, start = 0.0, time.perf_counter()
    scores = [evaluate(model, Xte, yte, meta["kind"])]
    t = time.perf_counter()
    recorder.end_epoch(0, recurrent_weights(model), epoch=0)
    record_s += time.perf_counter() - t
    for epoch in range(1, args.epochs + 1):
        for idx in torch.randperm(len(Xtr), generator=g).split(args.batch_size):
            opt.zero_grad()
            loss_fn(model(Xtr[idx]), ytr[idx]).backward()
            opt.step()
            ctl.step()
        ctl.end_epoch()
        scores.append(evaluate(model, Xte, yte, meta["kind"]))
        t = time.perf_counter()
        recorder.end_epoch(epoch * batches, recurrent_weights(model), epoch=epoch)
        record_s += time.perf_counter() - t
        print(f"{label} epoch {epoch}: test {'accuracy' if meta['kind'] == 'classify' else 'mse'} "
              f"{scores[-1]:.4f}, balance {recorder.records[-1]['balance_semicycle']:.3f}", flush=True)
    wall = time.perf_counter() - start
    plots.save(plots.balance_figure(recorder.records, title=f"{label}: balance over training"), out,
               f"{label}_balance")
    first, last = recorder.records[0], recorder.records[-1]
    row = {"records": recorder.records, "run": label, "hidden": hidden, "algorithm": algorithm, "edges_start": first["edges"],
           "edges_end": last["edges"], "score_start": scores[0], "score_end": scores[-1], "wall_s": wall,
           "record_s": record_s, "peak_mib": peak_mib()}
    for d in DEFINITIONS:
        row[f"{d}_start"], row[f"{d}_end"] = first[f"balance_{d}"], last[f"balance_{d}"]
        row[f"z_{d}_start"], row[f"z_{d}_end"] = first.get(f"z_balance_{d}"), last.get(f"z_balance_{d}")
    return row


def results_table(rows: list[dict], kind: str, args) -> str:
    what = "test accuracy" if kind == "classify" else "test MSE"
    head = (f"| run | hidden | edges start -> end | {what} start -> end | semicycle balance start -> end "
            f"(z vs {args.null} sign shuffles) | triad balance start -> end | wall time (s) | recording (s) | "
            "peak memory (MiB) |")
    lines = [head, "|" + " --- |" * 9]
    f = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"  # noqa: E731
    score = (lambda v: f"{v:.3f}") if kind == "classify" else (lambda v: f"{v:.2g}")  # an MSE of 3e-4 is not 0.000
    for r in rows:
        lines.append(f"| {r['run']} | {r['hidden']:,} | {r['edges_start']:,} -> {r['edges_end']:,} | "
                     f"{score(r['score_start'])} -> {score(r['score_end'])} | {f(r['semicycle_start'])} "
                     f"(z {f(r['z_semicycle_start'])}) -> {f(r['semicycle_end'])} (z {f(r['z_semicycle_end'])}) | "
                     f"{f(r['triad_start'])} -> {f(r['triad_end'])} | {r['wall_s']:.1f} | {r['record_s']:.1f} | "
                     f"{r['peak_mib']:,.0f} |")
    return "\n".join(lines) + "\n"


def estimate(meta, data, args) -> dict:
    """Times a few training steps and one record of the large model; extrapolates one run."""
    (Xtr, ytr), _ = data
    t = time.perf_counter()
    model, final_density = build(meta, args.hidden, args.density, "set", args.seed)
    build_s = time.perf_counter() - t
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.functional.cross_entropy if meta["kind"] == "classify" else nn.functional.mse_loss
    times = []
    for b in range(args.estimate_batches):
        idx = torch.arange(b * args.batch_size, (b + 1) * args.batch_size) % len(Xtr)
        t = time.perf_counter()
        opt.zero_grad()
        loss_fn(model(Xtr[idx]), ytr[idx]).backward()
        opt.step()
        times.append(time.perf_counter() - t)
    step_s = min(times)
    rec = BalanceRecorder(layers=[next(iter(recurrent_weights(model)))], null=args.null, seed=args.seed)
    t = time.perf_counter()
    rec.end_epoch(0, recurrent_weights(model), epoch=0)
    record_s = time.perf_counter() - t
    batches = math.ceil(len(Xtr) / args.batch_size)
    epoch_s = batches * step_s
    out = {"hidden": args.hidden, "edges": rec.records[0]["edges"], "build_s": build_s, "step_s": step_s,
           "epoch_s": epoch_s, "record_s": record_s, "record_fraction": record_s / epoch_s,
           "run_s": 2 * args.epochs * (epoch_s + record_s), "peak_mib": peak_mib()}
    print(f"{args.hidden:,} hidden units, {out['edges']:,} recurrent edges: build {build_s:.1f} s, one step of "
          f"{args.batch_size} sequences {step_s:.2f} s -> one epoch ({batches} steps) ~{epoch_s / 60:.1f} min; "
          f"one balance record with {args.null} nulls {record_s:.2f} s ({100 * out['record_fraction']:.2f}% of an "
          f"epoch); both runs of {args.epochs} epochs ~{out['run_s'] / 3600:.1f} h; peak memory "
          f"{out['peak_mib']:,.0f} MiB")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("mnist", "mackey-glass", "digits"), default="mackey-glass")
    p.add_argument("--data", help="the task's data (mnist: an idx directory such as data/mnist_test)")
    p.add_argument("--hidden", type=int, default=100_000, help="hidden units of the large runs (default 100,000)")
    p.add_argument("--density", type=float, default=1e-4, help="recurrent density of the large runs at the end")
    p.add_argument("--paper-hidden", type=int, default=None, help="hidden units of the papers' size (default: "
                                                                  "150 for mnist, 128 for mackey-glass)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--null", type=int, default=20, help="sign-shuffled nulls per balance record (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="balance_at_scale", help="output directory (default ./balance_at_scale)")
    p.add_argument("--estimate", action="store_true", help="only time the large model (see the module doc)")
    p.add_argument("--estimate-batches", type=int, default=3)
    p.add_argument("--skip-large", action="store_true", help="only the papers' size")
    args = p.parse_args(argv)
    train, test, meta = load_task(args.task, args.data, args.seed)
    data = (train, test)
    if args.estimate:
        return estimate(meta, data, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paper = args.paper_hidden or PAPER_SIZE[args.task]
    sizes = [(paper, PAPER_DENSITY)] + ([] if args.skip_large else [(args.hidden, args.density)])
    rows = []
    for hidden, density in sizes:
        for algorithm in ALGORITHMS:
            rows.append(run(f"n{hidden}_{algorithm}", data, meta, hidden, density, algorithm, args, out))
    plots.save(plots.comparison_figure({r["run"]: r["records"] for r in rows}), out, "balance_comparison")
    table = results_table(rows, meta["kind"], args)
    (out / "results.md").write_text(f"# Balance at scale: {args.task}, {args.epochs} epochs, seed {args.seed}\n\n"
                                    + table)
    print(table)
    return rows


if __name__ == "__main__":
    main()
