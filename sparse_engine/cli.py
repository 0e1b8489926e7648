"""Command line: ``sparse-engine train | bench | analyze``.

* ``train``: a sparse RNN/LSTM/GRU/CT-RNN on a sequence task, with optional dynamic sparse
  training; default: a sparse LSTM reading scikit-learn's bundled digits row by row.
  Tasks on generated or bundled data: ``digits``, ``mackey-glass``; on files you point to
  with ``--data``: ``mnist`` (idx directory), ``sms`` (SMS Spam Collection file),
  ``gesture`` (UCI Gesture Phase Segmentation ``*_va3.csv`` files or their directory),
  ``mackey-glass`` (one value a line). ``--device`` picks the CPU or a CUDA GPU.
* ``bench``: the CPU operators against torch.sparse (MKL) and scipy on one shape.
* ``analyze``: signed triad census and structural balance of a recurrent matrix from a
  checkpoint, a Gephi edge-list CSV or a scipy ``.npz``, with optional null models.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch import nn

TASKS = ("digits", "mackey-glass", "mnist", "sms", "gesture")
MODELS = ("lstm", "gru", "rnn", "ctrnn")
ALGORITHMS = ("none", "set", "gmp", "deepr", "selfish", "rigl")


# ------------------------------------------------------------------------------ data
def load_task(task: str, data: str | None, seed: int):
    """(train, test, meta): train/test are (inputs, targets); inputs (N, T, F) float or (N, T)
    token ids; meta holds n_in, n_out, kind ('classify' or 'regress') and vocab size."""
    from . import data as D

    g = torch.Generator().manual_seed(seed)
    if task == "digits":
        X, y = D.digits()
        X = X.view(-1, 8, 8)
        meta = dict(n_in=8, n_out=10, kind="classify")
    elif task == "mnist":
        if data is None:
            raise SystemExit("--task mnist needs --data DIR holding the MNIST idx files")
        X, y = D.load_mnist(data)
        meta = dict(n_in=28, n_out=10, kind="classify")
    elif task == "sms":
        if data is None:
            raise SystemExit("--task sms needs --data FILE (the SMS Spam Collection)")
        texts, y = D.load_sms_spam(data)
        X, vocab = _word_ids(texts, length=40)
        meta = dict(n_in=50, n_out=2, kind="classify", vocab=vocab)
    elif task == "gesture":
        if data is None:
            raise SystemExit("--task gesture needs --data (a *_va3.csv file or a directory of them)")
        recordings = D.load_gesture(data)
        meta = dict(n_in=recordings[0][0].shape[1], n_out=len(D.GESTURE_PHASES), kind="classify")
        if len(recordings) >= 2:  # whole recordings held out: overlapping windows would leak
            n_test = max(1, round(0.2 * len(recordings)))
            train = _gesture_windows(recordings[:-n_test], recordings, GESTURE_WINDOW)
            return train, _gesture_windows(recordings[-n_test:], recordings, GESTURE_WINDOW), meta
        X, y = _gesture_windows(recordings, recordings, GESTURE_WINDOW)
    elif task == "mackey-glass":
        series = D.load_series(data) if data else D.mackey_glass(6000)
        X, y = D.sequence_windows(series[:6000], length=50)
        X, y = X[::5], y[::5]
        meta = dict(n_in=1, n_out=1, kind="regress")
    else:
        raise SystemExit(f"--task must be one of {TASKS}")
    perm = torch.randperm(len(X), generator=g)
    cut = int(0.8 * len(X))
    tr, te = perm[:cut], perm[cut:]
    return (X[tr], y[tr]), (X[te], y[te]), meta


GESTURE_WINDOW = 16  # frames per example: the phase of the last frame is the label


def _gesture_windows(recordings, all_recordings, length: int, stride: int = 2):
    """Windows of ``length`` frames (every ``stride``-th start) from each recording, labelled by
    the phase of their last frame; features standardised over the frames of all_recordings."""
    frames = torch.cat([f for f, _ in all_recordings])
    mean, std = frames.mean(0), frames.std(0).clamp_min(1e-6)
    xs, ys = [], []
    for feats, phases in recordings:
        if len(feats) < length:
            continue
        starts = torch.arange(0, len(feats) - length + 1, stride)
        idx = starts[:, None] + torch.arange(length)[None, :]
        xs.append((feats[idx] - mean) / std)
        ys.append(phases[idx[:, -1]])
    if not xs:
        raise SystemExit(f"gesture recordings are shorter than {length} frames")
    return torch.cat(xs), torch.cat(ys)


def _word_ids(texts, length: int, max_vocab: int = 5000):
    """Lower-cased word ids (0 = padding, 1 = unknown), left-padded to ``length``."""
    from collections import Counter

    words = [t.lower().split() for t in texts]
    vocab = {w: i + 2 for i, (w, _) in enumerate(Counter(w for ws in words for w in ws).most_common(max_vocab - 2))}
    ids = torch.zeros(len(texts), length, dtype=torch.int64)
    for r, ws in enumerate(words):
        seq = [vocab.get(w, 1) for w in ws][-length:]
        if seq:
            ids[r, length - len(seq):] = torch.tensor(seq)
    return ids, len(vocab) + 2


# ----------------------------------------------------------------------------- model
class SequenceModel(nn.Module):
    """[embedding] -> sparse recurrent layer(s) -> dense readout (as Zhang et al.: only the
    recurrent part is sparse by default). Classification reads the last step; regression
    predicts every step."""

    def __init__(self, model: str, n_in: int, n_out: int, hidden: int, layers: int, density: float,
                 sparse: str, kind: str, vocab: int | None = None):
        super().__init__()
        from . import nn as snn

        self.kind = kind
        self.embed = nn.Embedding(vocab, n_in, padding_idx=0) if vocab else None
        if model == "ctrnn":
            self.rnn = snn.SparseCTRNN(n_in, hidden, density=density, sparse=sparse, batch_first=True)
        else:
            cls = {"lstm": snn.SparseLSTM, "gru": snn.SparseGRU, "rnn": snn.SparseRNN}[model]
            self.rnn = cls(n_in, hidden, num_layers=layers, batch_first=True, density=density, sparse=sparse)
        self.readout = nn.Linear(hidden, n_out)

    def forward(self, x):
        if self.embed is not None:
            x = self.embed(x)
        out, _ = self.rnn(x)
        return self.readout(out[:, -1] if self.kind == "classify" else out)


def make_controller(name: str, model, opt, steps: int, seed: int, callbacks):
    from . import training as T

    if name == "none":
        return None
    if name == "set":
        return T.SET(model, opt, zeta=0.3, seed=seed, callbacks=callbacks)
    if name == "gmp":
        return T.GradualMagnitudePruning(model, opt, final_density=0.05, end_step=max(2, int(0.75 * steps)),
                                         frequency=max(1, steps // 20), seed=seed, callbacks=callbacks)
    if name == "deepr":
        return T.DeepR(model, opt, l1=1e-5, noise=1e-5, seed=seed, callbacks=callbacks)
    if name == "selfish":
        return T.SelfishRNN(model, opt, total_steps=steps, seed=seed, callbacks=callbacks)
    if name == "rigl":
        return T.RigL(model, opt, end_step=max(2, int(0.75 * steps)), update_every=max(1, steps // 20),
                      seed=seed, callbacks=callbacks)
    raise SystemExit(f"--algorithm must be one of {ALGORITHMS}")


def resolve_device(name: str) -> torch.device:
    """``auto``: a CUDA GPU when torch sees one and this build has the CUDA kernels, else the CPU."""
    from ._ext import HAS_CUDA_KERNELS

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and HAS_CUDA_KERNELS else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    if name == "cuda" and not HAS_CUDA_KERNELS:
        raise SystemExit("--device cuda: this build of sparse_engine has no CUDA kernels "
                         "(reinstall with a CUDA torch and nvcc present)")
    return torch.device(name)


def evaluate(model, X, y, kind, batch=256, device="cpu"):
    model.eval()
    total, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, len(X), batch):
            out = model(X[i:i + batch].to(device))
            t = y[i:i + batch].to(device)
            if kind == "classify":
                total += nn.functional.cross_entropy(out, t, reduction="sum").item()
                correct += (out.argmax(1) == t).sum().item()
            else:
                total += nn.functional.mse_loss(out, t, reduction="sum").item() / t[0].numel()
            n += len(t)
    model.train()
    return total / n, (correct / n if kind == "classify" else math.nan)


def cmd_train(args) -> dict:
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    from .checkpoint import save_checkpoint
    from .sparse import SparseWeight

    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    (Xtr, ytr), (Xte, yte), meta = load_task(args.task, args.data, args.seed)
    model = SequenceModel(args.model, meta["n_in"], meta["n_out"], args.hidden, args.layers, args.density,
                          args.sparse, meta["kind"], meta.get("vocab")).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    batches = math.ceil(len(Xtr) / args.batch_size)
    callbacks = []
    recorder = None
    if args.record_balance:
        from .analysis import BalanceRecorder

        recorder = BalanceRecorder()
        callbacks.append(recorder)
    ctl = make_controller(args.algorithm, model, opt, args.epochs * batches, args.seed, callbacks)
    loss_fn = nn.functional.cross_entropy if meta["kind"] == "classify" else nn.functional.mse_loss
    console = Console()
    table = Table(title=f"sparse {args.model.upper()} on {args.task} ({args.algorithm}, {device})")
    for col in ("epoch", "train loss", "test loss", "test acc", "nnz", "density"):
        table.add_column(col, justify="right")
    history = []
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(len(Xtr))
        running = 0.0
        for idx in tqdm(perm.split(args.batch_size), desc=f"epoch {epoch}", leave=False, disable=args.quiet):
            opt.zero_grad()
            loss = loss_fn(model(Xtr[idx].to(device)), ytr[idx].to(device))
            loss.backward()
            opt.step()
            if ctl is not None:
                ctl.step()
            running += loss.item() * len(idx)
        test_loss, test_acc = evaluate(model, Xte, yte, meta["kind"], device=device)
        if ctl is not None:
            ctl.end_epoch(val_loss=test_loss) if args.algorithm == "selfish" else ctl.end_epoch()
        weights = [w for w in model.modules() if isinstance(w, SparseWeight)]
        nnz = sum(w.nnz for w in weights)
        size = sum(w.shape[0] * w.shape[1] for w in weights)
        row = dict(epoch=epoch, train_loss=running / len(Xtr), test_loss=test_loss, test_acc=test_acc, nnz=nnz,
                   density=nnz / size)
        history.append(row)
        table.add_row(str(epoch), f"{row['train_loss']:.4f}", f"{test_loss:.4f}",
                      "-" if math.isnan(test_acc) else f"{test_acc:.3f}", f"{nnz:,}", f"{nnz / size:.4f}")
    if not args.quiet:
        console.print(table)
    if args.save:
        save_checkpoint(args.save, model, opt, args=vars(args), history=history)
        console.print(f"checkpoint: {args.save}")
    if recorder is not None:
        recorder.to_csv(args.record_balance)
        console.print(f"balance records: {args.record_balance}")
    if args.plot:
        _plot_history(history, args.plot)
        console.print(f"plot: {args.plot}")
    return history[-1]


def _plot_history(history, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax.plot(epochs, [h["test_loss"] for h in history], label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- bench
def cmd_bench(args) -> list[dict]:
    import time

    from rich.console import Console
    from rich.table import Table

    from . import ops
    from .sparse import SparseWeight

    W = SparseWeight.random(args.n, args.n, args.density, generator=torch.Generator().manual_seed(0))
    X = torch.randn(args.n, args.batch)
    G = torch.randn(args.n, args.batch)
    csr = W.to_torch_sparse_csr()
    sci, Xn = W.to_scipy(), X.numpy()

    def best(fn, reps=5):
        fn()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    rows = [
        ("spmm", best(lambda: ops.spmm(W, X)), best(lambda: torch.sparse.mm(csr, X)), best(lambda: sci @ Xn)),
        ("sddmm", best(lambda: ops.sddmm(W, G, X)),
         best(lambda: torch.sparse.sampled_addmm(csr, G, X.T, beta=0.0)), None),
    ]
    table = Table(title=f"N={args.n:,}, density={args.density:g}, B={args.batch} ({torch.get_num_threads()} threads)")
    for col in ("op", "ours ms", "torch.sparse ms", "scipy ms", "vs torch.sparse"):
        table.add_column(col, justify="right")
    out = []
    for op, ours, ts, sc in rows:
        table.add_row(op, f"{ours * 1e3:.2f}", f"{ts * 1e3:.2f}", "-" if sc is None else f"{sc * 1e3:.2f}",
                      f"{ts / ours:.2f}x")
        out.append(dict(op=op, ours=ours, torch_sparse=ts, scipy=sc))
    Console().print(table)
    print("Full benchmarks: python benchmarks/bench_ops.py (and the other scripts in benchmarks/).")
    return out


# --------------------------------------------------------------------------- analyze
def load_matrix(path: str, key: str | None):
    """A recurrent matrix from a checkpoint (.pt; default key: the first layer's
    ``weight_hh_l0``), a Gephi edge list (.csv) or a scipy matrix (.npz)."""
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"{p} does not exist")
    from . import analysis as A

    if p.suffix == ".csv":
        return A.read_edge_csv(p)
    if p.suffix == ".npz":
        import scipy.sparse as sp

        return sp.load_npz(p)
    state = torch.load(p, map_location="cpu", weights_only=True)
    if key is None:
        flat = state.get("model", state)
        recurrent = sorted(k[: -len(".row_ptr")] for k in flat if k.endswith("weight_hh_l0.row_ptr"))
        key = recurrent[0] if recurrent else None
    return A.load_sparse_weight(state, key=key)


def cmd_analyze(args) -> dict:
    from rich.console import Console
    from rich.table import Table

    from . import analysis as A

    W = load_matrix(args.path, args.key)
    census = A.signed_triad_census(W, transpose=args.transpose)
    console = Console()
    t = Table(title=f"signed triad census of {args.path} (n={census.n:,})")
    for col in ("type", "count", "balanced", "unbalanced"):
        t.add_column(col, justify="right")
    for name in A.TRIAD_TYPES:
        t.add_row(name, f"{census.counts[name]:,}", f"{census.balanced.get(name, '')}",
                  f"{census.unbalanced.get(name, '')}")
    console.print(t)
    b = Table(title="structural balance")
    b.add_column("definition")
    for typ in A.TRANSITIVE_TYPES:
        b.add_column(typ, justify="right")
    b.add_column("overall", justify="right")
    result = {}
    for d in A.DEFINITIONS:
        bal = A.structural_balance(census, d)
        result[d] = bal.value
        b.add_row(d, *(f"{bal.per_type[x]:.3f}" for x in A.TRANSITIVE_TYPES), f"{bal.value:.3f}")
    console.print(b)
    if args.null:
        res = A.null_model_test(W, args.null_method, K=args.null, seed=args.seed, transpose=args.transpose)
        n = Table(title=f"{args.null} null models ({args.null_method})")
        for col in ("measure", "observed", "null mean", "z", "p (greater)"):
            n.add_column(col, justify="right")
        for row in res.table():
            if row["measure"].startswith("balance_"):
                n.add_row(row["measure"], f"{row['observed']:.3f}", f"{row['null_mean']:.3f}", f"{row['z']:.2f}",
                          f"{row['p_greater']:.3f}")
        console.print(n)
    if args.export_csv:
        A.write_edge_csv(W, args.export_csv, transpose=args.transpose)
        console.print(f"edge list: {args.export_csv}")
    return result


# ------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparse-engine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a sparse recurrent model on a sequence task")
    t.add_argument("--task", choices=TASKS, default="digits")
    t.add_argument("--data", help="dataset file or directory (mnist, sms, gesture; optional for mackey-glass)")
    t.add_argument("--model", choices=MODELS, default="lstm")
    t.add_argument("--hidden", type=int, default=128)
    t.add_argument("--layers", type=int, default=1)
    t.add_argument("--density", type=float, default=0.2, help="density of the sparse matrices")
    t.add_argument("--sparse", choices=("recurrent", "input", "both"), default="both")
    t.add_argument("--algorithm", choices=ALGORITHMS, default="none", help="dynamic sparse training")
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=5e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--save", help="write a checkpoint here (atomically)")
    t.add_argument("--record-balance", metavar="CSV", help="record structural balance after topology updates")
    t.add_argument("--plot", metavar="PNG", help="plot the loss curves")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: a CUDA GPU when available (and built with the CUDA kernels), else the CPU")
    t.add_argument("--quiet", action="store_true")

    b = sub.add_parser("bench", help="quick CPU operator benchmark against torch.sparse and scipy")
    b.add_argument("--n", type=int, default=16384)
    b.add_argument("--density", type=float, default=0.01)
    b.add_argument("--batch", type=int, default=32)

    a = sub.add_parser("analyze", help="motifs and structural balance of a recurrent matrix")
    a.add_argument("path", help="checkpoint (.pt), Gephi edge list (.csv) or scipy matrix (.npz)")
    a.add_argument("--key", help="which sparse weight of a checkpoint (default: the first recurrent one)")
    a.add_argument("--transpose", action="store_true", help="matrix is used as h @ W (rows presynaptic)")
    a.add_argument("--null", type=int, default=0, metavar="K", help="compare with K randomised networks")
    a.add_argument("--null-method", default="sign_shuffle")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--export-csv", metavar="CSV", help="write the graph as a Gephi edge list")
    return p


def run(argv=None):
    """Runs one command and returns its result (the last epoch's metrics, the benchmark rows
    or the balance values)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "epochs", 1) <= 0 or getattr(args, "hidden", 1) <= 0:
        raise SystemExit("--epochs and --hidden must be positive")
    return {"train": cmd_train, "bench": cmd_bench, "analyze": cmd_analyze}[args.command](args)


def main(argv=None) -> int:
    """Console entry point (``sparse-engine``)."""
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
