"""Does structural balance emerge at scale? A size sweep on tasks that use the units (issue #31).

Trains a sparse tanh RNN (only the recurrent matrix sparse, as Zhang et al. 2023) for every
(task, algorithm, hidden size, seed) of the sweep, with gradual magnitude pruning and with SET,
and records at the start and at the end of every epoch (above 10,000 units at the start and the end):

* task performance (test accuracy);
* how far the recurrent weights moved since the start: ``moved`` = ||w_end - w_start|| /
  ||w_start|| over the connections present at both times, ``dropped`` = the fraction of the
  starting connections gone, ``new`` = the fraction of the current connections not there at the
  start (SET's regrown ones; 0 under pruning);
* semicycle, triad and weighted balance, each against two nulls of ``--null`` K copies (sign
  shuffle: same edges, weights permuted; swap: degree-preserving rewiring, signs kept on the
  edges; :func:`sparse_engine.analysis.null_model_test` through ``BalanceRecorder``): null mean,
  std, z and the balance ratio observed / null mean.

Constant degree. Every size keeps ``--degree`` connections per unit at the end (default 10: the
earlier 100,000-unit runs' 1e-4): an Erdos-Renyi graph has about k^3 transitive triads whatever
its size, so the nulls are about as tight at 128 units as at 100,000 and a difference across
sizes is not one of triad counts. Pruning starts at 4x that degree and ends at it (cubic
schedule over the first 75% of the steps); SET keeps it (zeta 0.1, one rewiring per epoch).

Budgets (``--budget``; any flag given overrides its preset):

* ``full``: hidden 128, 1,000, 10,000 (3 seeds) and 100,000 (1 seed), MNIST rows and gesture,
  both algorithms, 6 epochs of the whole training set at every size (the 100,000-unit runs train
  as long as the others, so their weights move as far: see ``moved``), K = 20;
* ``small``: hidden 128 and 1,000, 1 seed, 2 epochs, K = 10 (minutes on a laptop).

Writes into ``--out`` as it goes (a stopped sweep keeps what it finished; rerunning skips the
runs already in ``runs.csv``): ``runs.csv`` (one row per run), ``records.csv`` (every record of
every run and null: :func:`sparse_engine.analysis.read_record` reads it), ``results.md`` (tables,
mean +- std over seeds), ``balance_vs_size.png/.svg`` and ``balance_vs_movement.png/.svg``.

    python examples/balance_at_scale.py --budget full --data ../shared/data --out docs/balance_at_scale
    python examples/balance_at_scale.py --budget small --data ../shared/data --out /tmp/balance
    python examples/balance_at_scale.py --estimate --hidden 100000 --data ../shared/data

``--estimate`` builds one ``--hidden`` model, takes one balance record with both nulls (the
analysis reads the CSR: peak memory before and after it), times ``--estimate-batches`` steps and
prints what a run costs, without training it. ``--data`` is the folder holding ``mnist_test/``
and ``gesture/`` (the project's ``../shared/data``, or what ``sparse_engine.data.fetch`` wrote).
"""
from __future__ import annotations

import sparse_engine  # noqa: F401  (before torch: OpenMP's idle threads then sleep, not spin)

import argparse
import csv
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sparse_engine.analysis import BalanceRecorder, recurrent_weights
from sparse_engine.analysis import plots
from sparse_engine.cli import run_handled
from sparse_engine.data.tasks import load_task
from sparse_engine.models import SequenceModel
from sparse_engine.training import SET, GradualMagnitudePruning

ALGORITHMS = ("pruning", "set")
NULLS = ("sign_shuffle", "swap")
MEASURES = ("semicycle", "triad")  # in the tables and figures; records.csv holds "weighted" too
TASK_DATA = {"mnist": "mnist_test", "gesture": "gesture", "digits": None}  # under --data
LARGE = 10_000  # sizes above: --large-seeds, --large-epochs, --large-epoch-steps, records at start and end only
BUDGETS = {"full": dict(sizes="128,1000,10000,100000", tasks="mnist,gesture", seeds=3, epochs=6, null=20),
           "small": dict(sizes="128,1000", tasks="mnist,gesture", seeds=1, epochs=2, null=10)}
RUN_KEY = ("task", "algorithm", "hidden", "seed")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- training
def build(meta, hidden: int, degree: float, algorithm: str, seed: int):
    """The model at its starting density, and the density it ends at (``degree`` per unit)."""
    final = min(1.0, degree / hidden)
    start = min(1.0, 4 * final) if algorithm == "pruning" else final
    torch.manual_seed(seed)
    model = SequenceModel("rnn", meta["n_in"], meta["n_out"], hidden, 1, start, "recurrent", meta["kind"])
    return model, final


def controller(algorithm: str, model, opt, steps: int, final_density: float, seed: int):
    if algorithm == "set":
        return SET(model, opt, zeta=0.1, seed=seed)
    return GradualMagnitudePruning(model, opt, final_density=final_density, end_step=max(2, int(0.75 * steps)),
                                   frequency=max(1, steps // 20), seed=seed)


def evaluate(model, X, y, batch: int = 256) -> float:
    """Test accuracy."""
    model.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(X), batch):
            right += (model(X[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return right / len(X)


# --------------------------------------------------------------------------- weight movement
def snapshot(w):
    """(sorted flat indices, float64 values) of a SparseWeight's stored connections."""
    r, c, v = w.coo()
    keys = r.long() * w.shape[1] + c.long()
    order = torch.argsort(keys)
    return keys[order].numpy(), v.detach()[order].double().numpy()


def movement(start, now) -> dict:
    """How far the connections moved from ``start`` to ``now`` (two :func:`snapshot`s): ``moved``
    (relative change of the values of the connections in both), ``dropped`` (fraction of the
    start's connections gone), ``new`` (fraction of now's connections not in the start)."""
    (ks, vs), (kn, vn) = start, now
    _, i, j = np.intersect1d(ks, kn, assume_unique=True, return_indices=True)
    base = float(np.linalg.norm(vs[i]))
    moved = float(np.linalg.norm(vn[j] - vs[i])) / base if base > 0 else math.nan
    return {"moved": moved, "dropped": 1 - len(i) / max(1, len(ks)), "new": 1 - len(i) / max(1, len(kn))}


# --------------------------------------------------------------------------- one run
class Recorder:
    """Both nulls' BalanceRecorders of one run, flattened into rows of records.csv."""

    def __init__(self, name: str, K: int, seed: int, meta: dict):
        self.recorders = {m: BalanceRecorder(layers=[name], null=K, null_method=m, seed=seed) for m in NULLS}
        self.name, self.K, self.meta, self.seconds = name, K, meta, 0.0

    def take(self, step: int, epoch: int, weight, extra: dict) -> dict:
        """One record per null; returns {null: record}."""
        t = time.perf_counter()
        out = {}
        for m, rec in self.recorders.items():
            rec.end_epoch(step, {self.name: weight}, epoch=epoch)
            out[m] = {**self.meta, "null_method": m, "null_K": self.K, **extra, **rec.records[-1]}
        self.seconds += time.perf_counter() - t
        return out


def run(task: str, data, meta, hidden: int, algorithm: str, seed: int, epochs: int, epoch_steps, args, log) -> dict:
    (Xtr, ytr), (Xte, yte) = data
    t0 = time.perf_counter()
    model, final = build(meta, hidden, args.degree, algorithm, seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    batches = math.ceil(len(Xtr) / args.batch_size)
    per_epoch = min(batches, epoch_steps or batches)
    ctl = controller(algorithm, model, opt, epochs * per_epoch, final, seed)
    name = next(iter(recurrent_weights(model)))
    weight = lambda: recurrent_weights(model)[name]  # noqa: E731  (pruning replaces the pattern)
    key = dict(task=task, algorithm=algorithm, hidden=hidden, seed=seed)
    rec = Recorder(name, args.null, seed, key)
    start = snapshot(weight())
    g = torch.Generator().manual_seed(seed)
    records = [rec.take(0, 0, weight(), {"score": evaluate(model, Xte, yte), "moved": 0.0, "dropped": 0.0,
                                         "new": 0.0})]
    log(records[-1])
    for epoch in range(1, epochs + 1):
        for idx in torch.randperm(len(Xtr), generator=g).split(args.batch_size)[:per_epoch]:
            opt.zero_grad()
            nn.functional.cross_entropy(model(Xtr[idx]), ytr[idx]).backward()
            opt.step()
            ctl.step()
        ctl.end_epoch()
        if hidden <= LARGE or epoch == epochs:  # above 10,000 units a record with swap nulls costs minutes
            extra = {"score": evaluate(model, Xte, yte), **movement(start, snapshot(weight()))}
            records.append(rec.take(epoch * per_epoch, epoch, weight(), extra))
            log(records[-1])
    first, last = records[0], records[-1]
    row = {**key, "degree": args.degree, "epochs": epochs, "steps": epochs * per_epoch, "null_K": args.null,
           "edges_start": first["swap"]["edges"], "edges_end": last["swap"]["edges"],
           "stored_end": last["swap"]["stored"], "score_start": first["swap"]["score"],
           "score_end": last["swap"]["score"], "moved": last["swap"]["moved"],
           "dropped": last["swap"]["dropped"], "new": last["swap"]["new"]}
    for m in NULLS:
        for d in MEASURES:
            b = f"balance_{d}"
            row[f"{d}_start"], row[f"{d}_end"] = first[m][b], last[m][b]
            row[f"{m}_z_{d}_start"], row[f"{m}_z_{d}_end"] = first[m][f"z_{b}"], last[m][f"z_{b}"]
            row[f"{m}_mean_{d}_end"], row[f"{m}_std_{d}_end"] = last[m][f"null_mean_{b}"], last[m][f"null_std_{b}"]
    row.update(wall_s=time.perf_counter() - t0, record_s=rec.seconds, peak_mib=peak_mib())
    return row, [r for rs in records for r in rs.values()]


# --------------------------------------------------------------------------- files
def read_csv(path: Path) -> list[dict]:
    from sparse_engine.analysis.record import _value

    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: _value(v) for k, v in r.items()} for r in csv.DictReader(f)]


def write_csv(path: Path, rows: list[dict]) -> None:
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, cols)
        out.writeheader()
        out.writerows(rows)


def _ms(values, fmt="{:.3f}") -> str:
    """mean +- std (or the one value) of the non-NaN values."""
    v = np.array([x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))], float)
    if not len(v):
        return "-"
    return fmt.format(v.mean()) + (" ± " + fmt.format(v.std(ddof=1)) if len(v) > 1 else "")


def groups(runs: list[dict]) -> dict:
    out: dict = {}
    for r in sorted(runs, key=lambda r: (r["task"], r["algorithm"], r["hidden"], r["seed"])):
        out.setdefault((r["task"], r["algorithm"], r["hidden"]), []).append(r)
    return out


def results_table(runs: list[dict]) -> str:
    lines = ["| task | algorithm | hidden | seeds | edges end | test accuracy start -> end | moved | dropped / new | "
             "semicycle end | z sign shuffle | z swap | ratio to null (shuffle / swap) | triad end | z sign shuffle "
             "| z swap | wall (s) | recording (s) | peak (MiB) |", "|" + " --- |" * 18]
    for (task, alg, n), rs in groups(runs).items():
        c = lambda k, fmt="{:.3f}": _ms([r[k] for r in rs], fmt)  # noqa: E731
        ratio = lambda d, m: _ms([r[f"{d}_end"] / r[f"{m}_mean_{d}_end"] for r in rs])  # noqa: E731
        lines.append(f"| {task} | {alg} | {n:,} | {len(rs)} | {c('edges_end', '{:,.0f}')} | {c('score_start')} -> "
                     f"{c('score_end')} | {c('moved', '{:.2f}')} | {c('dropped', '{:.2f}')} / {c('new', '{:.2f}')} | "
                     f"{c('semicycle_end')} | {c('sign_shuffle_z_semicycle_end', '{:.1f}')} | "
                     f"{c('swap_z_semicycle_end', '{:.1f}')} | {ratio('semicycle', 'sign_shuffle')} / "
                     f"{ratio('semicycle', 'swap')} | {c('triad_end')} | {c('sign_shuffle_z_triad_end', '{:.1f}')} | "
                     f"{c('swap_z_triad_end', '{:.1f}')} | {c('wall_s', '{:,.0f}')} | {c('record_s', '{:,.1f}')} | "
                     f"{c('peak_mib', '{:,.0f}')} |")
    return "\n".join(lines) + "\n"


def per_run_table(runs: list[dict]) -> str:
    lines = ["| task | algorithm | hidden | seed | epochs x steps | accuracy | moved | semicycle start -> end (z shuffle, "
             "z swap at the end) | triad start -> end (z shuffle, z swap) | wall (s) |", "|" + " --- |" * 10]
    f = lambda v, p=3: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{p}f}"  # noqa: E731
    for rs in groups(runs).values():
        for r in rs:
            lines.append(f"| {r['task']} | {r['algorithm']} | {r['hidden']:,} | {r['seed']} | {r['epochs']} x "
                         f"{r['steps'] // r['epochs']} | {f(r['score_start'])} -> {f(r['score_end'])} | "
                         f"{f(r['moved'], 2)} | {f(r['semicycle_start'])} -> {f(r['semicycle_end'])} "
                         f"({f(r['sign_shuffle_z_semicycle_end'], 1)}, {f(r['swap_z_semicycle_end'], 1)}) | "
                         f"{f(r['triad_start'])} -> {f(r['triad_end'])} ({f(r['sign_shuffle_z_triad_end'], 1)}, "
                         f"{f(r['swap_z_triad_end'], 1)}) | {r['wall_s']:,.0f} |")
    return "\n".join(lines) + "\n"


EARLIER = """## The earlier run: Mackey-Glass (one row, kept for what it is)

Mackey-Glass, one seed, 10 epochs, sign-shuffle null only (K = 20), pruning from dense at 128
units but from 4e-4 at 100,000, weight movement not measured (the 100,000-unit runs reach a low
error within two epochs): [mackey_glass/results.md](mackey_glass/results.md). Semicycle balance
at the end, z vs sign shuffle: 128 units pruning 0.594 (2.2), SET 0.729 (3.4); 100,000 units
pruning 0.492 (-0.3), SET 0.521 (1.1).
"""


def write_results(out: Path, runs: list[dict], records: list[dict], command: str) -> None:
    K = sorted({r["null_K"] for r in runs})
    text = (f"# Balance at scale: the size sweep\n\n`{command}`\n\n(Each run is seeded on its own and a rerun "
            "skips the runs already in `runs.csv`, so the sweep can be made in parts: see `epochs x steps` for each "
            "run's budget.) One row per (task, algorithm, hidden size): mean "
            f"± std over the seeds of the values at the end of training; z against K = {', '.join(map(str, K))} "
            "randomised copies per record of each null (sign shuffle; swap = degree-preserving rewiring, signs "
            "on their edges); ratio = observed / null mean. moved = ||w_end - w_start|| / ||w_start|| over the "
            "connections kept from start to end; dropped / new = fraction of the start's connections gone / of the "
            "end's connections not there at the start. Every record: `records.csv`; every run: `runs.csv`.\n\n"
            + results_table(runs) + "\n## Every run\n\n" + per_run_table(runs) + "\n" + EARLIER)
    (out / "results.md").write_text(text)
    try:
        figures(out, runs, records)
    except ImportError:  # no matplotlib: the tables are written, the figures are not
        pass


# --------------------------------------------------------------------------- figures
def figures(out: Path, runs: list[dict], records: list[dict]) -> None:
    from matplotlib.figure import Figure

    combos = sorted({(r["task"], r["algorithm"]) for r in runs})
    fig = Figure(figsize=(3.2 * len(combos), 5.4), layout="constrained")
    axes = np.array(fig.subplots(len(MEASURES), len(combos), squeeze=False))
    for col, (task, alg) in enumerate(combos):
        g = {n: rs for (t, a, n), rs in groups(runs).items() if (t, a) == (task, alg)}
        ns = np.array(sorted(g), float)
        for row, d in enumerate(MEASURES):
            ax = axes[row, col]
            for m, colour in zip(NULLS, ("tab:blue", "tab:orange")):
                mean = np.array([np.nanmean([r[f"{m}_mean_{d}_end"] for r in g[n]]) for n in sorted(g)])
                std = np.array([np.nanmean([r[f"{m}_std_{d}_end"] for r in g[n]]) for n in sorted(g)])
                ax.fill_between(ns, mean - 2 * std, mean + 2 * std, color=colour, alpha=0.2, linewidth=0,
                                label=f"{m.replace('_', ' ')} null ± 2 std")
            for when, style in (("start", dict(color="grey", ls="--")), ("end", dict(color="black"))):
                v = [[r[f"{d}_{when}"] for r in g[n]] for n in sorted(g)]
                ax.errorbar(ns, [np.nanmean(x) for x in v], [np.nanstd(x) for x in v], marker="o", ms=3,
                            capsize=2, label=f"{when} (mean ± std over seeds)", **style)
            ax.set_xscale("log")
            ax.set_xticks(ns, [f"{n:,.0f}" for n in ns], minor=False)
            ax.minorticks_off()
            ax.set_title(f"{task}, {alg}", fontsize=9)
            ax.set_xlabel("hidden units")
            ax.set_ylabel(f"{d} balance")
    axes[0, 0].legend(fontsize=6)
    plots.save(fig, out, "balance_vs_size")

    panels = [(t, m) for t in sorted({r["task"] for r in records}) for m in NULLS]
    fig = Figure(figsize=(3.3 * len(panels), 5.4), layout="constrained")
    axes = np.array(fig.subplots(len(MEASURES), len(panels), squeeze=False))
    sizes = sorted({r["hidden"] for r in records})
    cmap = {n: c for n, c in zip(sizes, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"))}
    for col, (task, m) in enumerate(panels):
        for row, d in enumerate(MEASURES):
            ax = axes[row, col]
            for alg, marker in zip(ALGORITHMS, ("o", "^")):
                for n in sizes:
                    pts = [(r["moved"], r[f"z_balance_{d}"]) for r in records
                           if (r["task"], r["algorithm"], r["hidden"], r["null_method"]) == (task, alg, n, m)]
                    if pts:
                        x, y = zip(*pts)
                        ax.scatter(x, y, s=10, marker=marker, color=cmap.get(n, "black"), alpha=0.7,
                                   label=f"{alg}, {n:,}")
            ax.axhspan(-2, 2, color="grey", alpha=0.15, linewidth=0)
            ax.set_xlabel("relative change of the kept weights")
            ax.set_ylabel(f"{d} balance: z")
            ax.set_title(f"{task}, vs {m.replace('_', ' ')} null", fontsize=9)
    handles = {lab: h for ax in axes.flat for h, lab in zip(*ax.get_legend_handles_labels())}
    axes[0, 0].legend(handles.values(), handles.keys(), fontsize=6, ncol=2)
    plots.save(fig, out, "balance_vs_movement")


# --------------------------------------------------------------------------- estimate
def estimate(meta, data, args) -> dict:
    """One record of the ``--hidden`` model with both nulls, then a few timed steps."""
    (Xtr, ytr), _ = data
    base = peak_mib()
    t = time.perf_counter()
    model, _ = build(meta, args.hidden, args.degree, "set", 0)
    build_s, built = time.perf_counter() - t, peak_mib()
    name = next(iter(recurrent_weights(model)))
    rec = Recorder(name, args.null, 0, {})
    rec.take(0, 0, recurrent_weights(model)[name], {})
    record_s, recorded = rec.seconds, peak_mib()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    times = []
    for b in range(args.estimate_batches):
        idx = torch.arange(b * args.batch_size, (b + 1) * args.batch_size) % len(Xtr)
        t = time.perf_counter()
        opt.zero_grad()
        nn.functional.cross_entropy(model(Xtr[idx]), ytr[idx]).backward()
        opt.step()
        times.append(time.perf_counter() - t)
    out = {"hidden": args.hidden, "edges": rec.recorders["swap"].records[0]["edges"], "build_s": build_s,
           "record_s": record_s, "step_s": min(times), "epoch_s": min(times) * math.ceil(len(Xtr) / args.batch_size),
           "peak_mib_start": base, "peak_mib_built": built, "peak_mib_recorded": recorded, "peak_mib": peak_mib()}
    print(f"{args.hidden:,} units, {out['edges']:,} recurrent edges: build {build_s:.1f} s ({built:,.0f} MiB peak); "
          f"one record with {args.null} sign-shuffle + {args.null} swap nulls {record_s:.1f} s (peak {recorded:,.0f} "
          f"MiB); one step of {args.batch_size} {min(times):.2f} s, an epoch ~{out['epoch_s'] / 60:.1f} min; "
          f"peak {out['peak_mib']:,.0f} MiB", flush=True)
    return out


# --------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=sorted(BUDGETS), default="small", help="preset (see above; default small)")
    p.add_argument("--tasks", help="comma-separated: mnist, gesture, digits")
    p.add_argument("--data", default="../shared/data", help="folder holding mnist_test/ and gesture/")
    p.add_argument("--sizes", help="comma-separated hidden sizes")
    p.add_argument("--algorithms", default="pruning,set")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 up to 10,000 units")
    p.add_argument("--large-seeds", type=int, default=1, help="seeds above 10,000 units (default 1)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--epoch-steps", type=int, default=None, help="steps per epoch (default: the training set)")
    p.add_argument("--large-epochs", type=int, help="epochs above 10,000 units (default: --epochs)")
    p.add_argument("--large-epoch-steps", type=int, help="steps per epoch above 10,000 units (default: --epoch-steps)")
    p.add_argument("--degree", type=float, default=10, help="recurrent connections per unit at the end (default 10)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--null", type=int, help="randomised copies per record of each null")
    p.add_argument("--out", default="balance_at_scale")
    p.add_argument("--estimate", action="store_true", help="only time one --hidden model (see above)")
    p.add_argument("--hidden", type=int, default=100_000)
    p.add_argument("--estimate-batches", type=int, default=3)
    args = p.parse_args(argv)
    for k, v in BUDGETS[args.budget].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    try:
        sizes = [int(s) for s in str(args.sizes).split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        p.error(f"--sizes: expected hidden sizes >= 1 separated by commas, got {args.sizes!r}")
    tasks = args.tasks.split(",")
    for t in tasks:
        if t not in TASK_DATA:
            p.error(f"--tasks: unknown task {t!r} (expected some of {', '.join(TASK_DATA)})")
        if TASK_DATA[t] and not (Path(args.data) / TASK_DATA[t]).is_dir():
            p.error(f"--data {args.data}: no {TASK_DATA[t]}/ in it (the folder holding mnist_test/ and gesture/; "
                    f"python -m sparse_engine.data.fetch {TASK_DATA[t]} --root DIR downloads it)")
    load = lambda t: load_task(t, TASK_DATA[t] and str(Path(args.data) / TASK_DATA[t]), 0)  # noqa: E731
    if args.estimate:
        train, test, meta = load(tasks[0])
        return estimate(meta, (train, test), args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs, records = read_csv(out / "runs.csv"), read_csv(out / "records.csv")
    done = {tuple(r[k] for k in RUN_KEY) for r in runs}
    preset = {**{k: p.get_default(k) for k in vars(args)}, **BUDGETS[args.budget]}  # the command, less sizes/seeds
    command = f"python examples/balance_at_scale.py --budget {args.budget} --data {args.data} --out {args.out}" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items()
        if k not in ("sizes", "seeds", "large_seeds", "data", "out", "budget") and v != preset[k])
    for hidden in sizes:  # small sizes first: a sweep stopped early has whole sizes
        large = hidden > LARGE
        for task in tasks:
            train, test, meta = load(task)
            for algorithm in args.algorithms.split(","):
                for seed in range(args.large_seeds if large else args.seeds):
                    if (task, algorithm, hidden, seed) in done:
                        continue
                    log = lambda r: print(  # noqa: E731
                        f"{task} {algorithm} n={hidden} seed={seed} epoch {r['swap']['epoch']}: acc "
                        f"{r['swap']['score']:.3f} moved {r['swap']['moved']:.2f} semicycle "
                        f"{r['swap']['balance_semicycle']:.3f} (z {r['sign_shuffle']['z_balance_semicycle']:.1f} / "
                        f"{r['swap']['z_balance_semicycle']:.1f}) {peak_mib():,.0f} MiB", flush=True)
                    row, recs = run(task, (train, test), meta, hidden, algorithm, seed,
                                    (args.large_epochs or args.epochs) if large else args.epochs,
                                    (args.large_epoch_steps or args.epoch_steps) if large else args.epoch_steps,
                                    args, log)
                    runs.append(row)
                    records.extend(recs)
                    write_csv(out / "runs.csv", runs)
                    write_csv(out / "records.csv", records)
                    write_results(out, runs, records, command)
    if runs:  # also when nothing was left to run: the tables and figures from the CSVs
        write_results(out, runs, records, command)
    return runs


if __name__ == "__main__":
    sys.exit(run_handled(main, "balance_at_scale.py"))
