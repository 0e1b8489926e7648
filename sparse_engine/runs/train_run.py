"""``sparse-engine train`` as a function, :func:`train`: a sparse recurrent model (or a SET-MLP)
trained on a task, with its progress lines, checkpoints and plot. What a run builds from its
options, its data (:func:`load_run_task`) and its model (:func:`sequence_model`), is written
once here: ``analyze --lesion`` rebuilds a trained run's model and test set with the same two
functions, and scores it with the same :func:`evaluate`."""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..data.tasks import load_task
from ..io.resume import TrainProgress
from ..models import SequenceModel
from ..sparse import sparse_weights
from ..training.recipes import get_recipe, make_controller, make_recipe_controller, zhang_init
from .config import TrainConfig, mlp_sizes, recipe_config, resolve_device, resume_config, with_options
from .memory_run import plan_training
from .paths import check_train_paths


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


def sequence_loss(out, target):
    """Cross-entropy of class scores ``out`` (B, C), or (B, T, C) against a target per step
    (B, T): then the mean over every step of every sequence, as Zhang et al.'s Gesture cost."""
    if out.dim() == 3:
        return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))
    return nn.functional.cross_entropy(out, target)


def softmax_score_loss(out, target):
    """Cross-entropy of the class probabilities softmax(``out``) taken as scores: a softmax applied
    twice, as Zhang et al.'s SMS net (its cost feeds tf.nn.softmax's output to
    sparse_softmax_cross_entropy_with_logits)."""
    return sequence_loss(torch.softmax(out, dim=-1), target)


def evaluate(model, X, y, kind, batch=256, device="cpu"):
    """(mean loss, accuracy) of ``model`` on (X, y); accuracy is nan for ``kind='regress'``.
    With a class target per step (y (N, T)) both are means over all N*T steps."""
    model.eval()
    total, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, len(X), batch):
            out = model(X[i:i + batch].to(device))
            t = y[i:i + batch].to(device)
            if kind == "classify" and hasattr(model, "loss"):  # SparseMLP: its mode's loss (a batch mean)
                total += model.loss(out, t).item() * len(t)
                correct += (out.argmax(1) == t).sum().item()
            elif kind == "classify":
                if out.dim() == 3:  # a class per step: every step counts as one example
                    out, t = out.reshape(-1, out.shape[-1]), t.reshape(-1)
                total += nn.functional.cross_entropy(out, t, reduction="sum").item()
                correct += (out.argmax(1) == t).sum().item()
            else:
                total += nn.functional.mse_loss(out, t, reduction="sum").item() / t[0].numel()
            n += len(t)
    model.train()
    return total / n, (correct / n if kind == "classify" else math.nan)



# ------------------------------------------------ what a run builds from its options
def run_recipe(options: Mapping):
    """The :class:`~sparse_engine.training.recipes.Recipe` a run follows, or None. ``options``:
    a run's options as its checkpoint saves them (``asdict`` of its :class:`TrainConfig`)."""
    return get_recipe(options["recipe"]) if options.get("recipe") else None


def load_run_task(options: Mapping, recipe=None):
    """(train, test, meta) of :func:`~sparse_engine.data.tasks.load_task` for a run's options
    (as :func:`run_recipe`), with its recipe's variant of the data."""
    return load_task(options["task"], options["data"], options["seed"], label_column=options.get("label_column"),
                     variant=recipe.variant if recipe is not None else None)


def sequence_model(options: Mapping, meta: dict, recompute_every: int | None = None) -> SequenceModel:
    """The (freshly initialised) :class:`~sparse_engine.models.SequenceModel` of a run's options
    (as :func:`run_recipe`) for its task's ``meta``; ``recompute_every``: the interval the run's
    memory plan chose (:func:`~sparse_engine.runs.memory_run.plan_training`; it changes no result)."""
    return SequenceModel(options["model"], meta["n_in"], meta["n_out"], options["hidden"], options["layers"],
                         options["density"], options["sparse"], meta["kind"], meta.get("vocab"),
                         readout=meta.get("readout"), recompute_every=recompute_every)


def progress_postfix(loss: float, samples: int, seconds: float) -> str:
    """What the progress bar shows after its counts: the running mean loss of the epoch so far
    and the throughput, e.g. ``loss 0.4213, 1,523 samples/s``."""
    rate = samples / seconds if seconds > 0 else math.inf
    return f"loss {loss:.4f}, {rate:,.0f} samples/s"


_EPOCH_COLUMNS = (("epoch", 5), ("train loss", 10), ("test loss", 9), ("test acc", 8), ("nnz", 11),
                  ("density", 7), ("samples/s", 9))


def epoch_header() -> str:
    """The header of the per-epoch lines :func:`train` prints (see :func:`epoch_line`)."""
    return "  ".join(name.rjust(width) for name, width in _EPOCH_COLUMNS)


def epoch_line(row: dict, samples_per_s: float | None) -> str:
    """One epoch's metrics (a :class:`TrainResult` history row) under :func:`epoch_header`;
    ``samples_per_s`` None (an epoch a resumed run had finished) shows as ``-``."""
    acc = "-" if math.isnan(row["test_acc"]) else f"{row['test_acc']:.3f}"
    rate = "-" if samples_per_s is None else f"{samples_per_s:,.0f}"
    cells = (str(row["epoch"]), f"{row['train_loss']:.4f}", f"{row['test_loss']:.4f}", acc, f"{row['nnz']:,}",
             f"{row['density']:.4f}", rate)
    return "  ".join(cell.rjust(width) for cell, (_, width) in zip(cells, _EPOCH_COLUMNS))


def train(config: TrainConfig | None = None, **options) -> TrainResult:
    """Trains a sparse recurrent model on a sequence task (``sparse-engine train``): Adam,
    optional dynamic sparse training, unless ``quiet`` a progress bar (running loss,
    samples/s) and a results line per epoch, and the checkpoint, balance records and plot when
    their paths are set. ConfigError for a bad option, before any work. With ``recipe`` (a name
    of :data:`~sparse_engine.training.recipes.RECIPES`) the run is that published set-up
    (:func:`recipe_config`; the other options override it), ending with the published number
    beside ours. With ``resume`` (a checkpoint) and no ``config``, the options not given are the
    checkpoint's (:func:`~sparse_engine.runs.config.resume_config`); with a ``config`` its options
    that shape the computation must equal the checkpoint's."""
    from rich.console import Console
    from tqdm import tqdm

    if config is None and options.get("resume") is not None:  # the checkpoint's options, where not given
        cfg = resume_config(**options)
    elif config is None and options.get("recipe") is not None:
        cfg = recipe_config(**options)
    else:
        cfg = with_options(TrainConfig, config, options)
        if cfg.resume is not None:  # every option given: those that must match are checked against the checkpoint
            cfg = resume_config(cfg.resume, **{k: v for k, v in asdict(cfg).items() if k != "resume"})
    args = asdict(cfg)  # the options as its checkpoint saves them (what analyze --lesion rebuilds from)
    recipe = run_recipe(args)
    check_train_paths(cfg)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    (Xtr, ytr), (Xte, yte), meta = load_run_task(args, recipe)
    # the paper's code skips an epoch's last partial batch where meta says so (Zhang et al.'s Gesture),
    # or its epoch is a number of batches drawn from shuffled passes (Zhang et al.'s MNIST)
    if meta.get("epoch_batches"):
        batches = meta["epoch_batches"]
        trained = batches * cfg.batch_size
    else:
        batches = len(Xtr) // cfg.batch_size if meta.get("drop_last") else math.ceil(len(Xtr) / cfg.batch_size)
        trained = min(len(Xtr), batches * cfg.batch_size)  # the examples an epoch trains on
    callbacks = []
    recorder = None
    console = Console()
    if cfg.model == "mlp":  # SET-MLP: SGD with decay outside the momentum, SET after each epoch but the last
        from ..nn import SparseMLP
        from ..training import SETMLP, SETSGD

        Xtr, Xte = Xtr.reshape(len(Xtr), -1), Xte.reshape(len(Xte), -1)
        model = SparseMLP(mlp_sizes(cfg, Xtr.shape[1], meta["n_out"]), cfg.epsilon, cfg.dropout,
                          faithful=cfg.faithful).to(device)
        opt = SETSGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        ctl = None if cfg.algorithm == "none" else SETMLP(model, opt, cfg.epochs, cfg.zeta, importance=cfg.importance,
                                                          seed=cfg.seed, evolve_output=cfg.evolve_output)
        loss_fn = model.loss
    else:  # the memory plan first: a run that would not fit is refused before anything is built
        recompute_every, line = plan_training(cfg, meta, Xtr.shape[1], len(Xte), device)
        if line is not None and not cfg.quiet:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        model = sequence_model(args, meta, recompute_every)
        if recipe is not None and recipe.zhang_init:
            zhang_init(model, cfg.seed, **recipe.init)
        model = model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        if cfg.record_balance:  # after each topology update and at each epoch's end (analysis/record.py)
            from ..analysis import BalanceRecorder, recurrent_weights

            recorder = BalanceRecorder(layers=list(recurrent_weights(model)), path=cfg.record_balance)  # written as it goes
            callbacks.append(recorder)
        if recipe is not None:
            ctl = make_recipe_controller(recipe, model, opt, batches, cfg.epochs, cfg.seed, callbacks)
        else:
            ctl = make_controller(cfg.algorithm, model, opt, cfg.epochs * batches, cfg.seed, callbacks)
        loss_fn = sequence_loss if meta["kind"] == "classify" else nn.functional.mse_loss
        if recipe is not None and recipe.softmax_loss:
            loss_fn = softmax_score_loss
    progress = TrainProgress.start(cfg, model, opt, ctl, recorder, device, len(Xtr),  # restores with --resume
                                   shuffle=meta.get("shuffle", True), drop_last=meta.get("drop_last", False),
                                   epoch_batches=meta.get("epoch_batches"))
    history = progress.history
    if not cfg.quiet:
        title = f"sparse {cfg.model.upper()} on {cfg.task} ({cfg.recipe or cfg.algorithm}, {device})"
        console.print(title, markup=False, highlight=False)
        console.print(epoch_header(), markup=False, highlight=False)
        for row in history:  # the epochs a resumed run had finished
            console.print(epoch_line(row, None), markup=False, highlight=False)
    for epoch in range(progress.epoch + 1, cfg.epochs + 1):
        order, running = progress.begin_epoch(epoch)
        if recorder is not None:
            recorder.epoch = epoch
        done = progress.batch  # batches of this epoch a resumed run had done (full ones)
        seen, start = done * cfg.batch_size, time.perf_counter()
        # no bar where stderr is not a terminal (a log file, a pipe): its carriage returns would fill it;
        # the line after each epoch says how it went
        bar = tqdm(order, desc=f"epoch {epoch}", unit="batch", initial=done, total=done + len(order), leave=False,
                   disable=True if cfg.quiet else None)
        for idx in bar:
            opt.zero_grad()
            loss = loss_fn(model(Xtr[idx].to(device)), ytr[idx].to(device))
            loss.backward()
            if recipe is not None and recipe.clip_value is not None:
                nn.utils.clip_grad_value_(model.parameters(), recipe.clip_value)
            opt.step()
            if ctl is not None:
                ctl.step()
            running += loss.item() * len(idx)
            progress.after_step(running)
            seen += len(idx)
            if not cfg.quiet:
                bar.set_postfix_str(progress_postfix(running / seen, seen - done * cfg.batch_size,
                                                     time.perf_counter() - start), refresh=False)
        samples_per_s = (seen - done * cfg.batch_size) / max(time.perf_counter() - start, 1e-9)
        # Selfish-RNN evaluates on the NT-ASGD averages once averaging has started, as its paper;
        # an MLP's hidden layers can be wide (10^5-10^6 units): its test batches are training-sized
        averaged = ctl.averaged() if hasattr(ctl, "averaged") else contextlib.nullcontext()
        with averaged:
            test_loss, test_acc = evaluate(model, Xte, yte, meta["kind"],
                                           batch=cfg.batch_size if cfg.model == "mlp" else 256, device=device)
        if ctl is not None:
            ctl.end_epoch(val_loss=test_loss) if cfg.algorithm == "selfish" else ctl.end_epoch()
        if recipe is not None and recipe.fresh_optimizer(epoch, cfg.epochs):
            opt.state.clear()  # the code builds a new Adam (moments and step count from zero) for the next epoch
        if recorder is not None:
            recorder.end_epoch(epoch * batches, recurrent_weights(model), epoch)
        weights = sparse_weights(model).values()
        nnz = sum(w.nnz for w in weights)
        size = sum(w.shape[0] * w.shape[1] for w in weights)
        row = dict(epoch=epoch, train_loss=running / trained, test_loss=test_loss, test_acc=test_acc, nnz=nnz,
                   density=nnz / size)
        progress.end_epoch(row)  # appends to history; the checkpoint at every epoch end
        if not cfg.quiet:
            console.print(epoch_line(row, samples_per_s), markup=False, highlight=False)
    if recipe is not None and not cfg.quiet:
        console.print(recipe_summary(recipe, history[-1], cfg.epochs), markup=False, highlight=False, soft_wrap=True)
    if progress.save_path:
        console.print(f"checkpoint: {progress.save_path}")
    if recorder is not None:
        recorder.to_csv(cfg.record_balance)
        console.print(f"balance records: {cfg.record_balance}")
    if cfg.plot:
        plot_history(history, cfg.plot)
        console.print(f"plot: {cfg.plot}")
    return TrainResult(model, history)


def recipe_summary(recipe, last: dict, epochs: int) -> str:
    """The line a recipe ends with: our result beside the published one and where that comes from."""
    metric, value, where = recipe.published
    planned = recipe.train["epochs"]
    budget = "" if epochs == planned else f" after {epochs} of the recipe's {planned} epochs"
    published = "n/a" if value is None else f"{value:.4g}"
    return (f"{recipe.name}: ours {metric} {last[metric]:.4g} at density {last['density']:.4f}{budget}; "
            f"published {published} ({where}; source: {recipe.source})")


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

