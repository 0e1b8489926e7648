"""``sparse-engine train`` as a function, :func:`train`: a sparse recurrent model (or a SET-MLP)
trained on a task, with its progress lines, checkpoints and plot. What it builds from its
options (data, model, loss, scoring) is :mod:`sparse_engine.runs.rebuild`, which ``analyze
--lesion`` uses again to rebuild a trained run; where a run stands and its resumable checkpoints,
:mod:`sparse_engine.runs.resume`."""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from ..memory import SAVED_DTYPES
from ..models import SequenceModel
from ..runtime.cuda_allocator import prefer_expandable_segments
from ..sparse import sparse_weights
from ..training.compact_adam import CompactAdam
from ..training.recipes import make_controller, make_recipe_controller, zhang_init
from .config import TrainConfig, mlp_sizes, recipe_config, resolve_device, with_options
from .memory_run import plan_training
from .paths import check_train_paths
from .rebuild import evaluate, load_run_task, run_recipe, sequence_loss, sequence_model, softmax_score_loss
from .resume import TrainProgress, resume_config


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
    checkpoint's (:func:`~sparse_engine.runs.resume.resume_config`); with a ``config`` its options
    that shape the computation must equal the checkpoint's."""
    from rich.console import Console

    cfg = _train_config(config, options)
    args = asdict(cfg)  # the options as its checkpoint saves them (what analyze --lesion rebuilds from)
    recipe = run_recipe(args)
    check_train_paths(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cuda":  # the plan counts tensors: segments that grow, not fragments between them
        prefer_expandable_segments()
    torch.manual_seed(cfg.seed)
    (Xtr, ytr), (Xte, yte), meta = load_run_task(args, recipe)
    batches, trained = _epoch_size(meta, len(Xtr), cfg.batch_size)
    console = Console()
    if cfg.model == "mlp":
        Xtr, Xte = Xtr.reshape(len(Xtr), -1), Xte.reshape(len(Xte), -1)
        parts = _mlp_parts(cfg, meta, Xtr.shape[1], device)
    else:
        parts = _sequence_parts(cfg, args, recipe, meta, (Xtr.shape[1], len(Xte)), device, batches, console)
        # the checkpoint keeps the moments' dtype the plan chose: a resumed run computes the same
        cfg = replace(cfg, adam_state="bfloat16" if isinstance(parts.optimizer, CompactAdam) else "float32",
                      saved_dtype="float32" if getattr(parts.model.rnn, "saved_dtype", None) is None else "bfloat16")
    progress = TrainProgress.start(cfg, parts.model, parts.optimizer, parts.controller, parts.recorder, device,
                                   len(Xtr), shuffle=meta.get("shuffle", True), drop_last=meta.get("drop_last", False),
                                   epoch_batches=meta.get("epoch_batches"))  # restores with --resume
    if not cfg.quiet:
        _print_start(console, cfg, device, progress.history)
    try:
        for epoch in range(progress.epoch + 1, cfg.epochs + 1):
            running, samples_per_s = _train_epoch(cfg, parts, progress, epoch, (Xtr, ytr), recipe, device)
            row = _end_epoch(cfg, parts, epoch, running / trained, (Xte, yte, meta), recipe, batches, device)
            progress.end_epoch(row)  # appends to history; the checkpoint at every epoch end
            if not cfg.quiet:
                console.print(epoch_line(row, samples_per_s), markup=False, highlight=False)
    except KeyboardInterrupt as exc:
        exc.resume_from = progress.resume_from()  # what the command line names for --resume
        raise
    _print_outputs(console, cfg, recipe, parts.recorder, progress)
    return TrainResult(parts.model, progress.history)


def _train_config(config: TrainConfig | None, options: dict) -> TrainConfig:
    """The run's config: ``config`` with ``options``; with ``resume`` and no ``config`` the
    checkpoint's options where not given, with ``recipe`` and no ``config`` the recipe's."""
    if config is None and options.get("resume") is not None:  # the checkpoint's options, where not given
        return resume_config(**options)
    if config is None and options.get("recipe") is not None:
        return recipe_config(**options)
    cfg = with_options(TrainConfig, config, options)
    if cfg.resume is not None:  # every option given: those that must match are checked against the checkpoint
        cfg = resume_config(cfg.resume, **{k: v for k, v in asdict(cfg).items() if k != "resume"})
    return cfg


def _epoch_size(meta: dict, n_train: int, batch_size: int) -> tuple[int, int]:
    """(batches an epoch, examples it trains on). The paper's code skips an epoch's last partial
    batch where meta says so (Zhang et al.'s Gesture), or its epoch is a number of batches drawn
    from shuffled passes (Zhang et al.'s MNIST)."""
    if meta.get("epoch_batches"):
        return meta["epoch_batches"], meta["epoch_batches"] * batch_size
    batches = n_train // batch_size if meta.get("drop_last") else math.ceil(n_train / batch_size)
    return batches, min(n_train, batches * batch_size)


@dataclass
class _Parts:
    """What a run trains: its model, optimizer, topology controller (None: a fixed topology),
    loss and balance recorder (None without ``record_balance``)."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    controller: object
    loss: Callable
    recorder: object = None
    eval_batch: int | None = None  # recurrent models: the memory plan's (None: the batch size)


def _mlp_parts(cfg: TrainConfig, meta: dict, n_in: int, device) -> _Parts:
    """SET-MLP: SGD with decay outside the momentum, SET after each epoch but the last."""
    from ..nn import SparseMLP
    from ..training import SETMLP, SETSGD

    model = SparseMLP(mlp_sizes(cfg, n_in, meta["n_out"]), cfg.epsilon, cfg.dropout, faithful=cfg.faithful).to(device)
    opt = SETSGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    ctl = None if cfg.algorithm == "none" else SETMLP(model, opt, cfg.epochs, cfg.zeta, importance=cfg.importance,
                                                      seed=cfg.seed, evolve_output=cfg.evolve_output)
    return _Parts(model, opt, ctl, model.loss)


def _sequence_parts(cfg: TrainConfig, args: dict, recipe, meta: dict, sizes: tuple[int, int], device, batches: int,
                    console) -> _Parts:
    """A recurrent model with Adam, its controller and loss. The memory plan first (``sizes``:
    steps per sequence, test examples): a run that would not fit is refused before anything is built."""
    plan = plan_training(cfg, meta, *sizes, device)
    if plan.line is not None and not cfg.quiet:
        console.print(plan.line, markup=False, highlight=False, soft_wrap=True)
    model = sequence_model(args, meta, plan.recompute_every, SAVED_DTYPES[plan.saved_dtype])
    if recipe is not None and recipe.zhang_init:
        zhang_init(model, cfg.seed, **recipe.init)
    model = model.to(device)
    if plan.adam_state == "bfloat16":  # the memory plan's pick, or the user's (docs/memory.md)
        opt = CompactAdam(model.parameters(), lr=cfg.lr, seed=cfg.seed)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    callbacks, recorder = [], None
    if cfg.record_balance:  # after each topology update and at each epoch's end (analysis/record.py)
        from ..analysis import BalanceRecorder, recurrent_weights

        recorder = BalanceRecorder(layers=list(recurrent_weights(model)), path=cfg.record_balance)  # written as it goes
        callbacks.append(recorder)
    if recipe is not None:
        ctl = make_recipe_controller(recipe, model, opt, batches, cfg.epochs, cfg.seed, callbacks)
    else:
        ctl = make_controller(cfg.algorithm, model, opt, cfg.epochs * batches, cfg.seed, callbacks)
    loss = sequence_loss if meta["kind"] == "classify" else nn.functional.mse_loss
    if recipe is not None and recipe.softmax_loss:
        loss = softmax_score_loss
    return _Parts(model, opt, ctl, loss, recorder, plan.eval_batch)


def _print_start(console, cfg: TrainConfig, device, history: list[dict]) -> None:
    """The run's title and the header of its epoch lines, and the epochs a resumed run had finished."""
    title = f"sparse {cfg.model.upper()} on {cfg.task} ({cfg.recipe or cfg.algorithm}, {device})"
    console.print(title, markup=False, highlight=False)
    console.print(epoch_header(), markup=False, highlight=False)
    for row in history:
        console.print(epoch_line(row, None), markup=False, highlight=False)


def _train_epoch(cfg: TrainConfig, parts: _Parts, progress: TrainProgress, epoch: int, train_set, recipe,
                 device) -> tuple[float, float]:
    """Trains on the batches of epoch ``epoch`` still to run: (its summed train loss, samples/s)."""
    from tqdm import tqdm

    (Xtr, ytr), model, opt, ctl = train_set, parts.model, parts.optimizer, parts.controller
    order, running = progress.begin_epoch(epoch)
    if parts.recorder is not None:
        parts.recorder.epoch = epoch
    done = progress.batch  # batches of this epoch a resumed run had done (full ones)
    seen, start = done * cfg.batch_size, time.perf_counter()
    # no bar where stderr is not a terminal (a log file, a pipe): its carriage returns would fill it;
    # the line after each epoch says how it went
    bar = tqdm(order, desc=f"epoch {epoch}", unit="batch", initial=done, total=done + len(order), leave=False,
               disable=True if cfg.quiet else None)
    for idx in bar:
        opt.zero_grad()
        loss = parts.loss(model(Xtr[idx].to(device)), ytr[idx].to(device))
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
    return running, (seen - done * cfg.batch_size) / max(time.perf_counter() - start, 1e-9)


def _end_epoch(cfg: TrainConfig, parts: _Parts, epoch: int, train_loss: float, test_set, recipe, batches: int,
               device) -> dict:
    """After epoch ``epoch``'s steps: its test score, the controller's and the recorder's epoch end;
    the epoch's row of the history."""
    (Xte, yte, meta), model, ctl = test_set, parts.model, parts.controller
    # Selfish-RNN evaluates on the NT-ASGD averages once averaging has started, as its paper;
    # an MLP's hidden layers can be wide (10^5-10^6 units): its test batches are training-sized; a
    # recurrent model's are the memory plan's (up to 256)
    averaged = ctl.averaged() if hasattr(ctl, "averaged") else contextlib.nullcontext()
    with averaged:
        test_loss, test_acc = evaluate(model, Xte, yte, meta["kind"], batch=parts.eval_batch or cfg.batch_size,
                                       device=device)
    if ctl is not None:
        ctl.end_epoch(val_loss=test_loss) if cfg.algorithm == "selfish" else ctl.end_epoch()
    if recipe is not None and recipe.fresh_optimizer(epoch, cfg.epochs):
        parts.optimizer.state.clear()  # the code builds a new Adam (moments, step count from zero) for the next epoch
    if parts.recorder is not None:
        from ..analysis import recurrent_weights

        parts.recorder.end_epoch(epoch * batches, recurrent_weights(model), epoch)
    weights = sparse_weights(model).values()
    nnz = sum(w.nnz for w in weights)
    size = sum(w.shape[0] * w.shape[1] for w in weights)
    return dict(epoch=epoch, train_loss=train_loss, test_loss=test_loss, test_acc=test_acc, nnz=nnz,
                density=nnz / size)


def _print_outputs(console, cfg: TrainConfig, recipe, recorder, progress: TrainProgress) -> None:
    """After the last epoch: the recipe's published number beside ours, and the files written."""
    if recipe is not None and not cfg.quiet:
        console.print(recipe_summary(recipe, progress.history[-1], cfg.epochs), markup=False, highlight=False,
                      soft_wrap=True)
    if progress.save_path:
        console.print(f"checkpoint: {progress.save_path}")
    if recorder is not None:
        recorder.to_csv(cfg.record_balance)
        console.print(f"balance records: {cfg.record_balance}")
    if cfg.plot:
        plot_history(progress.history, cfg.plot)
        console.print(f"plot: {cfg.plot}")


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

