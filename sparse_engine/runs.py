"""The recipes behind ``sparse-engine train | bench | analyze`` as plain functions, so that a
notebook or a script runs exactly what the command line runs, without argparse:

    from sparse_engine.runs import train
    result = train(task="mackey-glass", model="gru", hidden=16, epochs=2, quiet=True)
    result.history[-1]["test_loss"], result.model

Each takes a config dataclass (:class:`TrainConfig`, :class:`BenchConfig`,
:class:`AnalyzeConfig`), keyword options, or a config plus options that override it; the
dataclass defaults are the command line's defaults. :mod:`sparse_engine.cli` only parses
arguments into these configs and calls these functions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ._ext import HAS_CUDA_KERNELS
from .data.tasks import load_task
from .models import SequenceModel
from .resume import TrainProgress
from .sparse import SparseWeight, sparse_weights
from .timing import best_of
from .training.recipes import make_controller


def _config(cls, config, options):
    """``config`` with ``options`` overriding its fields, or ``cls(**options)`` without one."""
    return cls(**options) if config is None else replace(config, **options)


def resolve_device(name: str) -> torch.device:
    """``auto``: a CUDA GPU when torch sees one and this build has the CUDA kernels, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and HAS_CUDA_KERNELS else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    if name == "cuda" and not HAS_CUDA_KERNELS:
        raise SystemExit("--device cuda: this build of sparse_engine has no CUDA kernels "
                         "(reinstall with a CUDA torch and nvcc present)")
    return torch.device(name)


# ----------------------------------------------------------------------------- train
@dataclass
class TrainConfig:
    """``sparse-engine train`` options (the same names, ``-`` as ``_``, and defaults)."""
    task: str = "digits"            # one of sparse_engine.data.TASKS
    data: str | None = None         # dataset file or directory (mnist, sms, gesture; optional for mackey-glass)
    model: str = "lstm"             # one of sparse_engine.models.MODELS
    hidden: int = 128
    layers: int = 1
    density: float = 0.2            # density of the sparse matrices
    sparse: str = "both"            # recurrent, input or both
    algorithm: str = "none"         # one of sparse_engine.training.recipes.ALGORITHMS
    epochs: int = 5
    batch_size: int = 64
    lr: float = 5e-3
    seed: int = 0
    save: str | None = None         # checkpoint path (written atomically)
    record_balance: str | None = None  # CSV of structural balance after topology updates and each epoch
    plot: str | None = None         # PNG of the loss curves
    device: str = "auto"            # auto, cpu or cuda
    quiet: bool = False             # no progress bars and no results table
    resume: str | None = None       # continue the run saved in this checkpoint (see sparse_engine.resume)
    checkpoint_every: int = 0       # also checkpoint to --save every this many steps inside an epoch (0: epoch ends)


@dataclass
class TrainResult:
    """The trained model and one metrics dict per epoch (epoch, train_loss, test_loss,
    test_acc (nan for regression), nnz, density)."""
    model: SequenceModel
    history: list[dict]

    @property
    def last(self) -> dict:
        """The last epoch's metrics (what the command line's ``run`` returns)."""
        return self.history[-1]


def evaluate(model, X, y, kind, batch=256, device="cpu"):
    """(mean loss, accuracy) of ``model`` on (X, y); accuracy is nan for ``kind='regress'``."""
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


def train(config: TrainConfig | None = None, **options) -> TrainResult:
    """Trains a sparse recurrent model on a sequence task (``sparse-engine train``): Adam,
    optional dynamic sparse training, a results table unless ``quiet``, and the checkpoint,
    balance records and plot when their paths are set."""
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    cfg = _config(TrainConfig, config, options)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    (Xtr, ytr), (Xte, yte), meta = load_task(cfg.task, cfg.data, cfg.seed)
    model = SequenceModel(cfg.model, meta["n_in"], meta["n_out"], cfg.hidden, cfg.layers, cfg.density,
                          cfg.sparse, meta["kind"], meta.get("vocab")).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches = math.ceil(len(Xtr) / cfg.batch_size)
    callbacks = []
    recorder = None
    if cfg.record_balance:  # after each topology update and at each epoch's end (analysis/record.py)
        from .analysis import BalanceRecorder, recurrent_weights

        recorder = BalanceRecorder(layers=list(recurrent_weights(model)))
        callbacks.append(recorder)
    ctl = make_controller(cfg.algorithm, model, opt, cfg.epochs * batches, cfg.seed, callbacks)
    loss_fn = nn.functional.cross_entropy if meta["kind"] == "classify" else nn.functional.mse_loss
    console = Console()
    table = Table(title=f"sparse {cfg.model.upper()} on {cfg.task} ({cfg.algorithm}, {device})")
    for col in ("epoch", "train loss", "test loss", "test acc", "nnz", "density"):
        table.add_column(col, justify="right")
    progress = TrainProgress.start(cfg, model, opt, ctl, recorder, device, len(Xtr))  # restores with --resume
    history = progress.history
    for row in history:
        _add_row(table, row)
    for epoch in range(progress.epoch + 1, cfg.epochs + 1):
        order, running = progress.begin_epoch(epoch)
        if recorder is not None:
            recorder.epoch = epoch
        for idx in tqdm(order, desc=f"epoch {epoch}", leave=False, disable=cfg.quiet):
            opt.zero_grad()
            loss = loss_fn(model(Xtr[idx].to(device)), ytr[idx].to(device))
            loss.backward()
            opt.step()
            if ctl is not None:
                ctl.step()
            running += loss.item() * len(idx)
            progress.after_step(running)
        test_loss, test_acc = evaluate(model, Xte, yte, meta["kind"], device=device)
        if ctl is not None:
            ctl.end_epoch(val_loss=test_loss) if cfg.algorithm == "selfish" else ctl.end_epoch()
        if recorder is not None:
            recorder.end_epoch(epoch * batches, recurrent_weights(model), epoch)
        weights = sparse_weights(model).values()
        nnz = sum(w.nnz for w in weights)
        size = sum(w.shape[0] * w.shape[1] for w in weights)
        row = dict(epoch=epoch, train_loss=running / len(Xtr), test_loss=test_loss, test_acc=test_acc, nnz=nnz,
                   density=nnz / size)
        progress.end_epoch(row)  # appends to history; the checkpoint at every epoch end
        _add_row(table, row)
    if not cfg.quiet:
        console.print(table)
    if progress.save_path:
        console.print(f"checkpoint: {progress.save_path}")
    if recorder is not None:
        recorder.to_csv(cfg.record_balance)
        console.print(f"balance records: {cfg.record_balance}")
    if cfg.plot:
        plot_history(history, cfg.plot)
        console.print(f"plot: {cfg.plot}")
    return TrainResult(model, history)


def _add_row(table, row):
    table.add_row(str(row["epoch"]), f"{row['train_loss']:.4f}", f"{row['test_loss']:.4f}",
                  "-" if math.isnan(row["test_acc"]) else f"{row['test_acc']:.3f}", f"{row['nnz']:,}",
                  f"{row['density']:.4f}")


def plot_history(history, path):
    """Train and test loss per epoch of a :func:`train` history, as an image at ``path``."""
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
@dataclass
class BenchConfig:
    """``sparse-engine bench`` options: an n x n matrix of this density, ``batch`` columns."""
    n: int = 16384
    density: float = 0.01
    batch: int = 32


def bench(config: BenchConfig | None = None, **options) -> list[dict]:
    """Times spmm and sddmm on the CPU against torch.sparse (MKL) and scipy on one shape
    (``sparse-engine bench``), prints a table and returns one dict per operator (seconds)."""
    from rich.console import Console
    from rich.table import Table

    from . import ops

    cfg = _config(BenchConfig, config, options)
    W = SparseWeight.random(cfg.n, cfg.n, cfg.density, generator=torch.Generator().manual_seed(0))
    X = torch.randn(cfg.n, cfg.batch)
    G = torch.randn(cfg.n, cfg.batch)
    csr = W.to_torch_sparse_csr()
    sci, Xn = W.to_scipy(), X.numpy()

    def best(fn):
        return best_of(fn, repeat=5, warmup=1)

    rows = [
        ("spmm", best(lambda: ops.spmm(W, X)), best(lambda: torch.sparse.mm(csr, X)), best(lambda: sci @ Xn)),
        ("sddmm", best(lambda: ops.sddmm(W, G, X)),
         best(lambda: torch.sparse.sampled_addmm(csr, G, X.T, beta=0.0)), None),
    ]
    table = Table(title=f"N={cfg.n:,}, density={cfg.density:g}, B={cfg.batch} ({torch.get_num_threads()} threads)")
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
@dataclass
class AnalyzeConfig:
    """``sparse-engine analyze`` options."""
    path: str                       # checkpoint (.pt), Gephi edge list (.csv) or scipy matrix (.npz)
    key: str | None = None          # which matrix of a checkpoint (default: the first recurrent one)
    transpose: bool = False         # the matrix is used as h @ W (rows presynaptic)
    null: int = 0                   # compare with this many randomised networks
    null_method: str = "sign_shuffle"
    seed: int = 0
    export_csv: str | None = None   # write the graph here as a Gephi edge list
    gate: str | None = None         # one gate block of an LSTM/GRU (i f g o / r z n) or "sum"; default all


def load_matrix(path: str, key: str | None = None):
    """The recurrent matrix to analyse, as a :class:`~sparse_engine.analysis.RecurrentMatrix`
    (:func:`~sparse_engine.analysis.load_recurrent`): from a checkpoint (.pt/.pth/.ckpt;
    default key: the first hidden-to-hidden weight, ``rnn.weight_hh_l0`` or a CT-RNN's
    ``rnn.weight_hh``, sparse or dense), a Gephi edge list (.csv) or a scipy matrix (.npz).
    FileNotFoundError for a missing file, ValueError naming the file for anything unreadable."""
    from .analysis import load_recurrent

    return load_recurrent(path, key)


def analyze(config: AnalyzeConfig | None = None, **options):
    """Signed triad census and structural balance of a recurrent matrix, with optional null
    models and edge-list export (``sparse-engine analyze``). An LSTM's or GRU's W_hh is
    analysed per gate block and as the sum of its blocks (``gate`` picks one); see
    :mod:`sparse_engine.analysis.recurrent`. Prints tables and returns an
    :class:`~sparse_engine.analysis.AnalysisResult`: the overall balance per definition of
    the chosen gate, else of the summed graph (gated cells) or the one block, with every
    graph's values in ``.graphs``."""
    from rich.console import Console
    from rich.table import Table

    from . import analysis as A

    cfg = _config(AnalyzeConfig, config, options)
    m = load_matrix(cfg.path, cfg.key)
    graphs = m.graphs(cfg.gate, transpose=cfg.transpose)
    primary = cfg.gate if cfg.gate is not None else m.primary
    console = Console()
    console.print(m.describe())
    census = {g: A.signed_triad_census(w) for g, w in graphs.items()}
    n = next(iter(census.values())).n
    t = Table(title=f"signed triad census of {m.key or cfg.path} (n={n:,})")
    t.add_column("type", justify="right")
    if len(graphs) == 1:
        c = census[primary]
        for col in ("count", "balanced", "unbalanced"):
            t.add_column(col, justify="right")
        for name in A.TRIAD_TYPES:
            t.add_row(name, f"{c.counts[name]:,}", f"{c.balanced.get(name, '')}", f"{c.unbalanced.get(name, '')}")
    else:
        for g in graphs:
            t.add_column(f"{g} count" if g != A.SUM else "sum count", justify="right")
        for name in A.TRIAD_TYPES:
            t.add_row(name, *(f"{census[g].counts[name]:,}" for g in graphs))
    console.print(t)
    b = Table(title="structural balance" + (" per gate and of the summed graph" if len(graphs) > 1 else ""))
    if len(graphs) > 1:
        b.add_column("graph")
    b.add_column("definition")
    for typ in A.TRANSITIVE_TYPES:
        b.add_column(typ, justify="right")
    b.add_column("overall", justify="right")
    per_graph = {}
    for g, c in census.items():
        per_graph[g] = {}
        for d in A.DEFINITIONS:
            bal = A.structural_balance(c, d)
            per_graph[g][d] = bal.value
            cells = (*(f"{bal.per_type[x]:.3f}" for x in A.TRANSITIVE_TYPES), f"{bal.value:.3f}")
            b.add_row(*((g,) if len(graphs) > 1 else ()), d, *cells)
    console.print(b)
    nulls = {}
    if cfg.null:
        nt = Table(title=f"{cfg.null} null models ({cfg.null_method})")
        cols = (("graph",) if len(graphs) > 1 else ()) + ("measure", "observed", "null mean", "z", "p (greater)")
        for col in cols:
            nt.add_column(col, justify="right")
        for g, w in graphs.items():
            nulls[g] = res = A.null_model_test(w, cfg.null_method, K=cfg.null, seed=cfg.seed)
            for row in res.table():
                if row["measure"].startswith("balance_"):
                    nt.add_row(*((g,) if len(graphs) > 1 else ()), row["measure"], f"{row['observed']:.3f}",
                               f"{row['null_mean']:.3f}", f"{row['z']:.2f}", f"{row['p_greater']:.3f}")
        console.print(nt)
    if cfg.export_csv:
        out = Path(cfg.export_csv)
        for g, w in graphs.items():  # one edge list per graph: name_<gate>.csv when there are several
            path = out if len(graphs) == 1 else out.with_name(f"{out.stem}_{g}{out.suffix}")
            A.write_edge_csv(w, path, ids=m.ids)
            console.print(f"edge list{'' if len(graphs) == 1 else f' ({g})'}: {path}")
    return A.AnalysisResult(per_graph[primary], matrix=m, primary=primary, graphs=per_graph, census=census,
                            null=nulls)
