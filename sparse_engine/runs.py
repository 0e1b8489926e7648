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

import contextlib
import math
import numbers
import os
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from torch import nn

from .kernels import HAS_CUDA_KERNELS
from .data.files import input_path_problem, output_path_problem
from .data.tasks import TASK_DATA, TASKS, load_task, task_data_problem
from .models import MODELS, SequenceModel
from .io.resume import TrainProgress
from .sparse import SparseWeight, sparse_weights
from .runtime.timing import best_of
from .training.recipes import ALGORITHMS, RECIPES, get_recipe, make_controller, make_recipe_controller, zhang_init


def _config(cls, config, options):
    """``config`` with ``options`` overriding its fields, or ``cls(**options)`` without one."""
    return cls(**options) if config is None else replace(config, **options)


# ----------------------------------------------------------------------- config checks
class ConfigError(ValueError):
    """A config value a recipe cannot run with. ``field`` names the config field (the command
    line's option is ``--`` + field with ``-`` for ``_``, or the positional ``path``);
    ``reason`` says what was expected and what was given."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


class ConfigPathError(ConfigError):
    """A path option names an input that is missing or unreadable, or an output that cannot be
    written; found before any work starts."""


SPARSE_CHOICES = ("recurrent", "input", "both")
DEVICES = ("auto", "cpu", "cuda")


def _one_of(choices):
    def check(value):
        if value not in choices:
            return f"expected one of {', '.join(choices)}; got {value!r}"
    return check


def _integer(low: int):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            return f"expected an integer >= {low}, got {value!r}"
    return check


def _fraction(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        return f"expected a number in (0, 1], got {value!r}"


def _positive(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < value < math.inf):
        return f"expected a finite number > 0, got {value!r}"


def _path(value):
    if not isinstance(value, (str, os.PathLike)) or str(value) == "":
        return f"expected a path, got {value!r}"


def _path_or_none(value):
    return None if value is None else _path(value)


def _checkpoint_or_none(value):
    """A checkpoint path ``analyze`` can read back: a checkpoint suffix."""
    if value is None or _path(value) is not None:
        return _path_or_none(value)
    from .analysis.recurrent import CHECKPOINT_SUFFIXES

    if Path(value).suffix.lower() not in CHECKPOINT_SUFFIXES:
        return f"expected a checkpoint file name ending in {', '.join(CHECKPOINT_SUFFIXES)}, got {str(value)!r}"


def _str_or_none(value):
    if value is not None and not isinstance(value, str):
        return f"expected a string, got {value!r}"


def _flag(value):
    if not isinstance(value, bool):
        return f"expected True or False, got {value!r}"


def _hidden(value):
    """Hidden units: one int (per layer), or for --model mlp a list of layer sizes."""
    if isinstance(value, (tuple, list)):
        if not value or any(_integer(1)(v) for v in value):
            return f"expected integers >= 1 separated by commas, got {','.join(map(str, value)) or 'nothing'}"
        return None
    return _integer(1)(value)


def _fraction_below_one(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        return f"expected a number in [0, 1), got {value!r}"


def _unit(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        return f"expected a number in [0, 1], got {value!r}"


def _recipe_or_none(value):
    return None if value is None else _one_of(tuple(RECIPES))(value)


def _null_method(value):
    from .analysis.nulls import METHODS

    return _one_of(METHODS)(value)


def _convention(value):
    from .analysis.balance import CONVENTIONS

    return _one_of(CONVENTIONS)(value)


# One rule per field name, shared by the three configs (a name means the same in each).
_FIELD_RULES = {
    "task": _one_of(TASKS), "model": _one_of(MODELS), "sparse": _one_of(SPARSE_CHOICES),
    "algorithm": _one_of(ALGORITHMS), "device": _one_of(DEVICES), "null_method": _null_method,
    "hidden": _hidden, "layers": _integer(1), "epochs": _integer(1), "batch_size": _integer(1),
    "n": _integer(1), "batch": _integer(1), "null": _integer(0), "seed": _integer(0),
    "density": _fraction, "lr": _positive,
    "path": _path, "data": _path_or_none, "save": _checkpoint_or_none, "record_balance": _path_or_none,
    "plot": _path_or_none, "export_csv": _path_or_none, "key": _str_or_none, "resume": _path_or_none,
    "checkpoint_every": _integer(0), "gate": _str_or_none, "convention": _convention, "lesion": _integer(0),
    "quiet": _flag, "transpose": _flag, "recipe": _recipe_or_none,
    # --model mlp
    "epsilon": _positive, "zeta": _unit, "dropout": _fraction_below_one, "momentum": _fraction_below_one,
    "weight_decay": _fraction_below_one, "importance": _fraction_below_one, "faithful": _flag,
    "evolve_output": _flag,
    "label_column": _str_or_none,
}


def _train_combinations(cfg):
    """(field, reason) for options that cannot go together, or None."""
    problem = task_data_problem(cfg.task, cfg.data)
    if problem is not None:
        return "data", problem
    if cfg.model == "ctrnn" and cfg.layers != 1:
        return "layers", f"model 'ctrnn' has one layer, got {cfg.layers}"
    mlp_problem = _mlp_combinations(cfg)
    if mlp_problem is not None:
        return mlp_problem
    if cfg.recipe is not None and cfg.algorithm != RECIPES[cfg.recipe].train["algorithm"]:
        return "algorithm", (f"recipe {cfg.recipe!r} trains with {RECIPES[cfg.recipe].train['algorithm']!r}, "
                             f"got {cfg.algorithm!r}")
    if cfg.checkpoint_every and cfg.save is None and cfg.resume is None:
        return "checkpoint_every", "needs a checkpoint to write to: save or resume (--save PATH or --resume PATH)"
    return None


MLP_TASKS = ("digits", "mnist", "table")
MLP_ALGORITHMS = ("none", "set")
MLP_FIELDS = ("epsilon", "zeta", "dropout", "momentum", "weight_decay", "faithful", "importance", "evolve_output",
              "label_column")


def _mlp_combinations(cfg):
    """(field, reason) for options that do not go with --model mlp (or need it), or None."""
    if cfg.model != "mlp":
        if isinstance(cfg.hidden, (tuple, list)):
            return "hidden", f"a list of layer sizes needs --model mlp, got --model {cfg.model}"
        if cfg.task == "table":
            return "task", f"task 'table' (a feature matrix) needs --model mlp, got --model {cfg.model}"
        for field in MLP_FIELDS:
            if getattr(cfg, field) != getattr(TrainConfig, field):
                return field, f"applies to --model mlp only, got --model {cfg.model}"
        return None
    if cfg.importance and cfg.algorithm != "set":
        return "importance", "prunes neurons when SET evolves the network: needs --algorithm set"
    if cfg.task not in MLP_TASKS:
        return "task", f"model 'mlp' trains on {', '.join(MLP_TASKS)}; got {cfg.task!r}"
    if cfg.algorithm not in MLP_ALGORITHMS:
        return "algorithm", f"model 'mlp' trains with {' or '.join(MLP_ALGORITHMS)} (SET-MLP); got {cfg.algorithm!r}"
    if cfg.record_balance is not None:
        return "record_balance", "records recurrent matrices; model 'mlp' has none"
    if (cfg.task == "table") != (cfg.label_column is not None):
        return "label_column", ("task 'table' needs the name of its label column" if cfg.task == "table"
                                else f"names the label column of task 'table', got task {cfg.task!r}")
    return None


def mlp_sizes(cfg, n_in: int, n_out: int) -> tuple[int, ...]:
    """The layer sizes of --model mlp: inputs, --hidden (a list, or one size repeated --layers
    times), outputs."""
    hidden = tuple(cfg.hidden) if isinstance(cfg.hidden, (tuple, list)) else (cfg.hidden,) * cfg.layers
    return (n_in, *hidden, n_out)


class _Checked:
    """Base of the configs: constructing one (or ``replace``-ing a field) checks every field
    with :data:`_FIELD_RULES` and raises :class:`ConfigError` naming the first bad one."""

    def __post_init__(self):
        for f in fields(self):
            rule = _FIELD_RULES.get(f.name)
            problem = rule(getattr(self, f.name)) if rule is not None else None
            if problem is not None:
                raise ConfigError(f.name, problem)
        combination = _train_combinations(self) if isinstance(self, TrainConfig) else None
        if combination is not None:
            raise ConfigError(*combination)


def resolve_device(name: str) -> torch.device:
    """``auto``: a CUDA GPU when torch sees one and this build has the CUDA kernels, else the CPU.
    ConfigError (field ``device``) when ``cuda`` is asked for and cannot be had."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and HAS_CUDA_KERNELS else "cpu")
    if name not in DEVICES:
        raise ConfigError("device", _one_of(DEVICES)(name))
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "'cuda' asked for, but torch sees no CUDA device (use 'cpu' or 'auto')")
    if name == "cuda" and not HAS_CUDA_KERNELS:
        raise ConfigError("device", "'cuda' asked for, but this build of sparse_engine has no CUDA kernels "
                                    "(reinstall with a CUDA torch and nvcc present, or use 'cpu')")
    return torch.device(name)


# ----------------------------------------------------------------------------- train
@dataclass
class TrainConfig(_Checked):
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
    resume: str | None = None       # continue the run saved in this checkpoint (see sparse_engine.io.resume)
    checkpoint_every: int = 0       # also checkpoint to --save every this many steps inside an epoch (0: epoch ends)
    # --model mlp only (SET-MLP, docs/set_mlp.md; SET implementation 2's values but for lr/batch_size)
    epsilon: float = 13.0           # Erdos-Renyi: about epsilon*(in+out) connections per layer
    zeta: float = 0.3               # fraction of each sign's weights SET replaces after an epoch
    dropout: float = 0.2            # dropout of the hidden activations
    momentum: float = 0.9           # SGD momentum (the MLP trains with SGD, not Adam)
    weight_decay: float = 2e-4      # w -= weight_decay * w each step, outside the momentum
    faithful: bool = False          # SET implementation 2's quirks (sigmoid + MSE, dropout scaling, duplicates)
    importance: float = 0.0         # importance pruning: fraction of hidden neurons dropped after an epoch
    evolve_output: bool = True      # SET also evolves the output layer (implementation 2); False: the later code
    label_column: str | None = None  # task 'table': the label column's name
    recipe: str | None = None       # a published set-up (sparse_engine.training.recipes.RECIPES); see recipe_config


def recipe_config(recipe: str, **options) -> TrainConfig:
    """The :class:`TrainConfig` of the published set-up ``recipe`` (task, model, sizes, epochs,
    batch, lr, algorithm of :data:`~sparse_engine.training.recipes.RECIPES`), with ``options``
    overriding any field (``data``, a shorter ``epochs``, ``seed``, ...)."""
    try:
        fields_ = get_recipe(recipe).train
    except ValueError:
        raise ConfigError("recipe", _recipe_or_none(recipe)) from None
    return TrainConfig(**{**fields_, **options, "recipe": recipe})


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


def check_paths(cfg, inputs: dict, outputs) -> None:
    """ConfigPathError naming the first of ``cfg``'s fields that is set and cannot be used: an
    input (``inputs``: field -> the kind of path :func:`~sparse_engine.data.files.input_path_problem`
    expects) that cannot be read, or an output (``outputs``: fields) that cannot be written."""
    for field, kind in inputs.items():
        path = getattr(cfg, field)
        problem = None if path is None else input_path_problem(path, kind)
        if problem is not None:
            raise ConfigPathError(field, problem)
    for field in outputs:
        path = getattr(cfg, field)
        problem = None if path is None else output_path_problem(path)
        if problem is not None:
            raise ConfigPathError(field, problem)


def check_train_paths(cfg: TrainConfig) -> None:
    """ConfigPathError unless ``cfg.data`` and ``cfg.resume`` (when set) can be read and every
    output path (``save``, ``record_balance``, ``plot``; ``resume`` without ``save``) can be
    written; :func:`train` runs it before any work, so a typo in an output path fails at once
    rather than after the last epoch."""
    # a resumed run without --save writes its checkpoints over the one it resumed from
    check_paths(cfg, {"data": TASK_DATA.get(cfg.task, (None,))[0], "resume": "file"},
                ("save", "record_balance", "plot") + (() if cfg.save is not None else ("resume",)))
    if cfg.plot is not None:
        try:
            from matplotlib.backend_bases import FigureCanvasBase
        except ImportError:
            raise ConfigError("plot", "needs matplotlib (pip install matplotlib)") from None
        suffix = Path(cfg.plot).suffix.lower().lstrip(".")
        formats = FigureCanvasBase.get_supported_filetypes()
        if suffix not in formats:
            raise ConfigError("plot", f"expected an image file name matplotlib writes (.png, .pdf, .svg, .jpg, "
                                      f"...), got {str(cfg.plot)!r}")


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
    beside ours."""
    from rich.console import Console
    from tqdm import tqdm

    if config is None and options.get("recipe") is not None:
        cfg = recipe_config(**options)
    else:
        cfg = _config(TrainConfig, config, options)
    recipe = get_recipe(cfg.recipe) if cfg.recipe else None
    check_train_paths(cfg)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    (Xtr, ytr), (Xte, yte), meta = load_task(cfg.task, cfg.data, cfg.seed, label_column=cfg.label_column,
                                             variant=recipe.variant if recipe is not None else None)
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
    if cfg.model == "mlp":  # SET-MLP: SGD with decay outside the momentum, SET after each epoch but the last
        from .nn import SparseMLP
        from .training.set_mlp import SETMLP, SETSGD

        Xtr, Xte = Xtr.reshape(len(Xtr), -1), Xte.reshape(len(Xte), -1)
        model = SparseMLP(mlp_sizes(cfg, Xtr.shape[1], meta["n_out"]), cfg.epsilon, cfg.dropout,
                          faithful=cfg.faithful).to(device)
        opt = SETSGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        ctl = None if cfg.algorithm == "none" else SETMLP(model, opt, cfg.epochs, cfg.zeta, importance=cfg.importance,
                                                          seed=cfg.seed, evolve_output=cfg.evolve_output)
        loss_fn = model.loss
    else:
        model = SequenceModel(cfg.model, meta["n_in"], meta["n_out"], cfg.hidden, cfg.layers, cfg.density,
                              cfg.sparse, meta["kind"], meta.get("vocab"), readout=meta.get("readout"))
        if recipe is not None and recipe.zhang_init:
            zhang_init(model, cfg.seed, **recipe.init)
        model = model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        if cfg.record_balance:  # after each topology update and at each epoch's end (analysis/record.py)
            from .analysis import BalanceRecorder, recurrent_weights

            recorder = BalanceRecorder(layers=list(recurrent_weights(model)), path=cfg.record_balance)  # written as it goes
            callbacks.append(recorder)
        if recipe is not None:
            ctl = make_recipe_controller(recipe, model, opt, batches, cfg.epochs, cfg.seed, callbacks)
        else:
            ctl = make_controller(cfg.algorithm, model, opt, cfg.epochs * batches, cfg.seed, callbacks)
        loss_fn = sequence_loss if meta["kind"] == "classify" else nn.functional.mse_loss
        if recipe is not None and recipe.softmax_loss:
            loss_fn = softmax_score_loss
    console = Console()
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
        bar = tqdm(order, desc=f"epoch {epoch}", unit="batch", initial=done, total=done + len(order), leave=False,
                   disable=cfg.quiet)
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


# ----------------------------------------------------------------------------- bench
@dataclass
class BenchConfig(_Checked):
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
class AnalyzeConfig(_Checked):
    """``sparse-engine analyze`` options."""
    path: str                       # checkpoint (.pt), Gephi edge list (.csv) or scipy matrix (.npz)
    key: str | None = None          # which matrix of a checkpoint (default: the first recurrent one)
    transpose: bool = False         # the matrix is used as h @ W (rows presynaptic)
    null: int = 0                   # compare with this many randomised networks
    null_method: str = "sign_shuffle"
    seed: int = 0
    export_csv: str | None = None   # write the graph here as a Gephi edge list
    gate: str | None = None         # one gate block of an LSTM/GRU (i f g o / r z n) or "sum"; default all
    plot: str | None = None         # write the figures (PNG and SVG) into this directory
    convention: str = "default"     # "seed": the paper's code's balance mean and node count
    lesion: int = 0                 # remove up to this many motifs per run (a train checkpoint's model)


def load_matrix(path: str, key: str | None = None):
    """The recurrent matrix to analyse, as a :class:`~sparse_engine.analysis.RecurrentMatrix`
    (:func:`~sparse_engine.analysis.load_recurrent`): from a checkpoint (.pt/.pth/.ckpt;
    default key: the first hidden-to-hidden weight, ``rnn.weight_hh_l0`` or a CT-RNN's
    ``rnn.weight_hh``, sparse or dense), a Gephi edge list (.csv) or a scipy matrix (.npz).
    FileNotFoundError for a missing file, ValueError naming the file for anything unreadable."""
    from .analysis import load_recurrent

    return load_recurrent(path, key)


def plot_dir_problem(path) -> str | None:
    """Why the figures cannot go into the directory ``path`` (created if missing, its parent must
    exist; matplotlib must be installed), or None."""
    from .data.files import output_path_problem

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "needs matplotlib (pip install 'sparse-engine[analysis]')"
    p = Path(path)
    if p.is_dir():
        return None if os.access(p, os.W_OK | os.X_OK) else f"directory {p} is not writable"
    if p.exists():
        return f"{p} is a file, expected a directory for the figures"
    return output_path_problem(p)


def is_balance_record(path) -> bool:
    """True for a CSV whose header is a balance record's (``--record-balance``), not an edge list."""
    p = Path(path)
    if p.suffix.lower() != ".csv" or not p.is_file():
        return False
    with open(p, newline="", encoding="utf-8-sig", errors="replace") as f:
        header = f.readline().strip().split(",")
    return {"step", "layer", "gate", "balance_semicycle"} <= set(header)


def _analyze_record(cfg, console):
    """``analyze`` of a recorded run: the balance per epoch as a table, and its figures."""
    from rich.table import Table

    from .analysis import DEFINITIONS, plots, read_record

    rows = read_record(cfg.path)
    if not rows:
        raise ValueError(f"{cfg.path} holds no records (only a header)")
    t = Table(title=f"recorded balance of {cfg.path} ({len(rows)} records; the last of each epoch)")
    for col in ("layer", "gate", "epoch", *DEFINITIONS):
        t.add_column(col, justify="right")
    for layer, gate in dict.fromkeys((r["layer"], r["gate"]) for r in rows):
        s = plots.balance_series(rows, layer=layer, gate=gate)
        for i, x in enumerate(s["x"]):
            t.add_row(layer, gate, str(x), *(f"{s[d][i]:.3f}" for d in DEFINITIONS))
    console.print(t)
    if cfg.plot:
        for path in plots.plot_record(rows, cfg.plot):
            console.print(f"figure: {path}")
    return rows


def _analyze_nnstd(cfg, console) -> dict:
    """``analyze`` of a directory: the NNSTD between every two networks found in it (folders of
    ``weight_l<i>.npz`` layers), as a table and, with ``plot``, a heat map."""
    from rich.table import Table

    from .analysis import find_nnstd_networks, load_nnstd_layers, nnstd_matrix, plots

    found = find_nnstd_networks(cfg.path)
    if len(found) < 2:
        raise ValueError(f"{cfg.path} is a directory: expected at least two networks in it (folders of NNSTD layers "
                         f"weight_l0.npz, weight_l1.npz, ...), found {len(found)}")
    labels = list(found)
    D = nnstd_matrix([load_nnstd_layers(d) for d in found.values()])
    t = Table(title=f"NNSTD between the {len(labels)} networks in {cfg.path} (mean over layers)")
    t.add_column("network", no_wrap=True)
    for i in range(len(labels)):
        t.add_column(str(i), justify="right")
    for i, label in enumerate(labels):
        t.add_row(f"{i}: {label}", *(f"{x:.3f}" for x in D[i]))
    console.print(t)
    if cfg.plot:
        for path in plots.save(plots.nnstd_figure(D, labels), cfg.plot, "nnstd"):
            console.print(f"figure: {path}")
    return {"labels": labels, "distance": D}


LESION_KINDS = ("balanced", "unbalanced", "random", "edges")


def lesion_curves(cfg, m, console) -> dict:
    """``analyze CHECKPOINT --lesion N``: the model of a ``train`` checkpoint is rebuilt from its
    saved options, and up to N motifs of each kind in :data:`LESION_KINDS` are cut from its
    recurrent matrix as the paper does (one shuffled list, cumulative, 10 runs), scoring the
    test set after each cut (accuracy, or MSE for regression tasks). {kind: LesionRuns}."""
    from rich.table import Table

    from .analysis import lesion_ffls, plots
    from .io.checkpoint import load_checkpoint
    from .sparse import SparseWeight

    payload = load_checkpoint(cfg.path)
    args = payload.get("extra", {}).get("args") or {}
    if args.get("command") != "train":
        raise ValueError(f"{cfg.path}: --lesion needs a checkpoint written by sparse-engine train (its options rebuild "
                         "the model and its test set)")
    if args.get("model") == "mlp":
        raise ValueError(f"{cfg.path}: --lesion needs a recurrent model's checkpoint (train --model rnn or ctrnn); "
                         "this one is an mlp")
    recipe = get_recipe(args["recipe"]) if args.get("recipe") else None
    _, (Xte, yte), meta = load_task(args["task"], args["data"], args["seed"], label_column=args.get("label_column"),
                                    variant=recipe.variant if recipe is not None else None)
    model = SequenceModel(args["model"], meta["n_in"], meta["n_out"], args["hidden"], args["layers"], args["density"],
                          args["sparse"], meta["kind"], meta.get("vocab"), readout=meta.get("readout"))
    model.load_state_dict(payload["model"])
    W = model.get_submodule(m.key) if isinstance(m.matrix, SparseWeight) else None
    if not isinstance(W, SparseWeight) or len(m.gates) != 1:
        what = f"an {m.cell} gate stack" if len(m.gates) != 1 else "stored dense"
        raise ValueError(f"{cfg.path}: --lesion needs a sparse one-block recurrent matrix (train --model rnn or "
                         f"ctrnn, --sparse recurrent or both); {m.key} is {what}")
    classify = meta["kind"] == "classify"

    def score():
        loss, acc = evaluate(model, Xte, yte, meta["kind"])
        return acc if classify else loss

    runs = {kind: lesion_ffls(W, score, kind=kind, max_removals=cfg.lesion, transpose=cfg.transpose, seed=cfg.seed)
            for kind in LESION_KINDS}
    what = "test accuracy" if classify else "test MSE"
    t = Table(title=f"motif lesions of {m.key}: {what}, mean of {len(runs['edges'].curves)} runs")
    for col in ("kind", "removed", "intact", "after"):
        t.add_column(col, justify="right")
    for kind, res in runs.items():
        t.add_row(kind, str(res.n_removed[-1]), f"{res.mean[0]:.4f}", f"{res.mean[-1]:.4f}")
    console.print(t)
    if cfg.plot:
        fig = plots.lesion_figure(runs, ylabel=what, title=f"motif lesions of {m.key}")
        for path in plots.save(fig, cfg.plot, "lesions"):
            console.print(f"figure: {path}")
    return runs


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
    console = Console()
    mode = "a directory of networks" if Path(cfg.path).is_dir() else (
        "a recorded run" if is_balance_record(cfg.path) else None)
    if mode is not None:  # only --plot (and --seed) apply there: refuse the rest rather than ignore them
        for f in fields(AnalyzeConfig):
            if f.name not in ("path", "plot", "seed") and getattr(cfg, f.name) != f.default:
                raise ConfigError(f.name, f"does not apply to {mode} ({cfg.path})")
        return _analyze_nnstd(cfg, console) if Path(cfg.path).is_dir() else _analyze_record(cfg, console)
    m = load_matrix(cfg.path, cfg.key)
    graphs = m.graphs(cfg.gate, transpose=cfg.transpose)
    primary = cfg.gate if cfg.gate is not None else m.primary
    console.print(m.describe())
    nodes = "edges" if cfg.convention == "seed" else "all"
    census = {g: A.signed_triad_census(w, nodes=nodes) for g, w in graphs.items()}
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
            bal = A.structural_balance(c, d, convention=cfg.convention)
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
            nulls[g] = res = A.null_model_test(w, cfg.null_method, K=cfg.null, seed=cfg.seed, nodes=nodes,
                                               convention=cfg.convention)
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
    if cfg.plot:
        from .analysis import plots

        for g, w in graphs.items():  # census_<gate>, distributions_<gate> when there are several
            name = "" if len(graphs) == 1 else f"{g}_"
            for path in plots.plot_matrix(w, cfg.plot, census=census[g], null=nulls.get(g), name=name):
                console.print(f"figure: {path}")
    lesions = lesion_curves(cfg, m, console) if cfg.lesion else {}
    return A.AnalysisResult(per_graph[primary], matrix=m, primary=primary, graphs=per_graph, census=census,
                            null=nulls, lesions=lesions)
