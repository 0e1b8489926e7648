"""The options of ``sparse-engine train | bench | analyze`` as checked dataclasses
(:class:`TrainConfig`, :class:`BenchConfig`, :class:`AnalyzeConfig`; their defaults are the command
line's), the rule each field is checked with, and :class:`ConfigError`, the one error a bad value
raises. The checks of the paths a run reads and writes are :mod:`sparse_engine.runs.paths`."""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from ..data.tasks import TASKS, task_data_problem
from ..kernels import HAS_CUDA_KERNELS
from ..models import MODELS
from ..memory import OPTIMIZERS as MEMORY_OPTIMIZERS  # what bench --memory predicts for
from ..memory import parse_size
from ..training.recipes import ALGORITHMS, RECIPES, get_recipe


def with_options(cls, config, options):
    """``config`` with ``options`` overriding its fields, or ``cls(**options)`` without one."""
    return cls(**options) if config is None else replace(config, **options)


# ----------------------------------------------------------------------------- checks
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
    from ..analysis.recurrent import CHECKPOINT_SUFFIXES

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


def _recompute_every(value):
    """``--recompute-every``: None (store every step), a positive integer, or 'auto' (the budget picks)."""
    if value is None or value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        return f"expected an integer >= 1, auto or none, got {value!r}"


def _size_or_none(value):
    """A memory size: bytes (an int), or text such as 16G or 512M; None: the default."""
    if value is None:
        return None
    try:
        parse_size(value)
    except ValueError as exc:
        return str(exc)


def _recipe_or_none(value):
    return None if value is None else _one_of(tuple(RECIPES))(value)


def _null_method(value):
    from ..analysis.nulls import METHODS

    return _one_of(METHODS)(value)


def _convention(value):
    from ..analysis.balance import CONVENTIONS

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
    # the memory model (sparse_engine.memory): train's plan, bench --memory
    "recompute_every": _recompute_every, "memory_budget": _size_or_none, "budget": _size_or_none,
    "memory": _flag, "seq_len": _integer(1), "input_size": _integer(1), "optimizer": _one_of(MEMORY_OPTIMIZERS),
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
    if cfg.model == "mlp":
        for field in ("recompute_every", "memory_budget"):
            if getattr(cfg, field) is not None:
                return field, "applies to the recurrent models (lstm, gru, rnn, ctrnn), got --model mlp"
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
        combination = _COMBINATIONS.get(type(self), lambda cfg: None)(self)
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


# ---------------------------------------------------------------------------- configs
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
    # memory (sparse_engine.memory); they do not change what is computed, so a resumed run may change them
    recompute_every: int | str | None = None  # keep the state every K steps ('auto': the budget picks K)
    memory_budget: int | str | None = None    # bytes a step may use, e.g. 16G (None: available memory)


def recipe_config(recipe: str, **options) -> TrainConfig:
    """The :class:`TrainConfig` of the published set-up ``recipe`` (task, model, sizes, epochs,
    batch, lr, algorithm of :data:`~sparse_engine.training.recipes.RECIPES`), with ``options``
    overriding any field (``data``, a shorter ``epochs``, ``seed``, ...)."""
    try:
        fields_ = get_recipe(recipe).train
    except ValueError:
        raise ConfigError("recipe", _recipe_or_none(recipe)) from None
    return TrainConfig(**{**fields_, **options, "recipe": recipe})


def _shown(value) -> str:
    """An option's value as typed on the command line (``1000,1000`` for a list of sizes)."""
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def resume_config(resume, **given) -> TrainConfig:
    """The :class:`TrainConfig` that continues the run saved in the checkpoint ``resume``: the
    options it was saved with, ``given`` (the options a user typed) overriding those that may
    change (``epochs`` may grow; ``save``, ``plot``, ``record_balance``, ``device``, ``quiet``,
    ``checkpoint_every``). ``save`` and ``quiet`` are not taken from the checkpoint: without
    ``save`` the checkpoints go to ``resume``. ConfigError naming the first given option that conflicts with the
    checkpoint's (one of :data:`~sparse_engine.io.resume.MUST_MATCH`, or fewer ``epochs``),
    ConfigPathError for a missing file, CheckpointError (a ValueError) for a file that is not a
    sparse-engine checkpoint or is damaged, ValueError for a checkpoint with no resumable state."""
    from ..io.resume import MUST_MATCH, saved_options, same_option

    problem = _path(resume)
    if problem is None:
        from ..data.files import input_path_problem

        problem = input_path_problem(resume, "file")
    if problem is not None:
        raise ConfigPathError("resume", problem)
    saved = saved_options(resume)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(f"resume_config() got an unexpected keyword argument {unknown[0]!r}")
    for field in MUST_MATCH:
        if field in given and field in saved and not same_option(field, saved[field], given[field]):
            flag = "--" + field.replace("_", "-")
            raise ConfigError(field, f"{_shown(given[field])} differs from the checkpoint's {flag} "
                                     f"{_shown(saved[field])} ({resume}): a resumed run keeps the options it was "
                                     f"saved with (leave {flag} out)")
    if _integer(1)(given.get("epochs")) is None and given["epochs"] < saved.get("epochs", 0):
        raise ConfigError("epochs", f"{given['epochs']} is less than the checkpoint's --epochs {saved['epochs']} "
                                    f"({resume}): --epochs may only grow")
    options = {k: v for k, v in saved.items() if k in known and k not in ("save", "resume", "quiet")}
    return TrainConfig(**{**options, **given, "resume": resume})


@dataclass
class BenchConfig(_Checked):
    """``sparse-engine bench`` options: an n x n matrix of this density, ``batch`` columns; with
    ``memory`` the predicted memory of a training step of a recurrent model instead (its sizes:
    ``model`` ... ``budget``; :func:`sparse_engine.runs.memory_run.memory_bench`)."""
    n: int = 16384
    density: float = 0.01
    batch: int = 32
    memory: bool = False
    model: str = TrainConfig.model
    hidden: int = TrainConfig.hidden
    layers: int = TrainConfig.layers
    sparse: str = TrainConfig.sparse
    seq_len: int = 35
    input_size: int = 28
    optimizer: str = "adam"
    recompute_every: int | str | None = None
    device: str = TrainConfig.device
    budget: int | str | None = None


#: BenchConfig's fields that only bench --memory reads
MEMORY_FIELDS = ("model", "hidden", "layers", "sparse", "seq_len", "input_size", "optimizer", "recompute_every",
                 "device", "budget")


def _bench_combinations(cfg):
    """(field, reason) for bench options that do not go together, or None."""
    if not cfg.memory:
        for field in MEMORY_FIELDS:
            if getattr(cfg, field) != getattr(BenchConfig, field):
                return field, "applies to bench --memory (the memory of a training step), not the operator benchmark"
        return None
    if cfg.n != BenchConfig.n:
        return "n", "applies to the operator benchmark, not bench --memory (which takes --hidden)"
    if cfg.model == "mlp":
        return "model", "the memory model covers the recurrent models (lstm, gru, rnn, ctrnn), got 'mlp'"
    if isinstance(cfg.hidden, (tuple, list)):
        return "hidden", f"expected one hidden size, got {','.join(map(str, cfg.hidden))}"
    if cfg.model == "ctrnn" and cfg.layers != 1:
        return "layers", f"model 'ctrnn' has one layer, got {cfg.layers}"
    if cfg.recompute_every == "auto" and cfg.budget is None:
        return "recompute_every", "auto picks the interval for a budget: give --budget (e.g. 16G)"
    return None


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


_COMBINATIONS = {TrainConfig: _train_combinations, BenchConfig: _bench_combinations}
