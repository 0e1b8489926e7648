"""The options of ``sparse-engine train | bench | analyze`` as checked dataclasses
(:class:`TrainConfig`, :class:`BenchConfig`, :class:`AnalyzeConfig`; their defaults are the command
line's), each field declared once with its rule and its help (:func:`~.options.option`), the
options that cannot go together, and :class:`ConfigError`, the one error a bad value raises. The
rules are :mod:`sparse_engine.runs.validators`; the checks of the paths a run reads and writes are
:mod:`sparse_engine.runs.paths`; the options a resumed run keeps, :mod:`sparse_engine.runs.resume`."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from .._moved import old_name
from ..data.tasks import TASK_DATA, TASKS, task_data_problem
from ..kernels import HAS_CUDA_KERNELS
from ..memory import OPTIMIZERS as MEMORY_OPTIMIZERS  # what bench --memory predicts for
from ..models import MODELS
from ..training.recipes import ALGORITHMS, GMP_FINAL_DENSITY, RECIPES, get_recipe
from . import validators as valid
from .options import check_value, hidden_sizes, option, recompute_interval, shared_option


def with_options(cls, config, options):
    """``config`` with ``options`` overriding its fields, or ``cls(**options)`` without one."""
    return cls(**options) if config is None else replace(config, **options)


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


class _Checked:
    """Base of the configs: constructing one (or ``replace``-ing a field) checks every field
    with the rule it was declared with and raises :class:`ConfigError` naming the first bad one."""

    def __post_init__(self):
        for f in fields(self):
            problem = check_value(f, getattr(self, f.name))
            if problem is not None:
                raise ConfigError(f.name, problem)
        combination = _COMBINATIONS.get(type(self), lambda cfg: None)(self)
        if combination is not None:
            raise ConfigError(*combination)


SPARSE_CHOICES = ("recurrent", "input", "both")
DEVICES = ("auto", "cpu", "cuda")
#: the ``--help`` groups of the options that apply to --model mlp only, and to bench --memory only
MLP_OPTIONS = ("--model mlp (SET-MLP, docs/set_mlp.md; SET implementation 2 also uses --lr 0.05 --batch-size 40 "
               "--algorithm set)")
MEMORY_OPTIONS = ("--model / --memory: one training step of a recurrent model, timed against masked-dense and "
                  "torch.sparse (--model), or its memory predicted from its sizes alone (--memory: nothing is built; "
                  "docs/memory.md)")
#: what ``bench --model`` times: the cells with a masked-dense torch.nn twin
STEP_MODELS = ("lstm", "gru", "rnn")
_DATA_HELP = "; ".join(f"{task}: {what}{'' if required else ' (optional)'}"
                       for task, (_, what, required) in TASK_DATA.items())


# ---------------------------------------------------------------------------- configs
@dataclass
class TrainConfig(_Checked):
    """``sparse-engine train`` options (the same names, ``-`` as ``_``, and defaults)."""
    task: str = option("digits", choices=TASKS,
                       help="sequence task (default: %(default)s, scikit-learn's 8x8 digits read row by row)")
    data: str | None = option(None, check=valid.or_none(valid.path), metavar="PATH",
                              flags=("--data-dir", "--data-file"),
                              help=f"dataset file or directory ({_DATA_HELP}); default: none")
    model: str = option("lstm", choices=MODELS, help="recurrent layer (default: %(default)s)")
    hidden: int = option(128, check=valid.hidden, type=hidden_sizes, metavar="UNITS",
                         help="hidden units per layer, >= 1; for --model mlp also a list of layer sizes such as "
                              "1000,1000,1000 (default: %(default)s)")
    layers: int = option(1, check=valid.integer(1), metavar="N",
                         help="stacked recurrent layers, >= 1; ctrnn has one (default: %(default)s)")
    density: float = option(0.2, check=valid.fraction, metavar="FRACTION",
                            help="fraction of nonzero weights in the sparse matrices, in (0, 1] (default: %(default)s)")
    sparse: str = option("both", choices=SPARSE_CHOICES,
                         help="which matrices are sparse: the recurrent, the input or both (default: %(default)s)")
    algorithm: str = option("none", choices=ALGORITHMS,
                            help="dynamic sparse training: none (fixed topology), SET, gradual magnitude pruning, "
                                 "DEEP R, Selfish-RNN or RigL (default: %(default)s)")
    epochs: int = option(5, check=valid.integer(1), metavar="N", may_change=True,  # may grow only: resume_config
                         help="passes over the training set, >= 1 (default: %(default)s)")
    batch_size: int = option(64, check=valid.integer(1), metavar="N",
                             help="sequences per optimizer step, >= 1 (default: %(default)s)")
    lr: float = option(5e-3, check=valid.positive, metavar="RATE",
                       help="Adam learning rate, > 0 (default: %(default)s)")
    seed: int = option(0, check=valid.integer(0), metavar="N",
                       help="seed of the split, the initial weights and the topology updates, >= 0 "
                            "(default: %(default)s)")
    save: str | None = option(None, check=valid.checkpoint_or_none, metavar="PATH", may_change=True,
                              help="write the (resumable) checkpoint here, atomically, after every epoch: a .pt, "
                                   ".pth or .ckpt file; missing directories are created (default: none)")
    record_balance: str | None = option(None, check=valid.or_none(valid.path), metavar="CSV", may_change=True,
                                        help="write structural balance after each topology update and each epoch to "
                                             "this CSV (default: none)")
    plot: str | None = option(None, check=valid.or_none(valid.path), metavar="IMAGE", may_change=True,
                              help="plot the train and test loss per epoch to this image, e.g. loss.png; needs "
                                   "matplotlib (default: none)")
    device: str = option("auto", choices=DEVICES, may_change=True,
                         help="auto: a CUDA GPU when available (and built with the CUDA kernels), else the CPU "
                              "(default: %(default)s)")
    quiet: bool = option(False, may_change=True, help="no progress bar and no per-epoch results lines (default: off)")
    resume: str | None = option(None, check=valid.or_none(valid.path), metavar="PATH", may_change=True,
                                help="continue the run saved in this checkpoint bit for bit, with the options it was "
                                     "saved with (options given must agree with them; --epochs may grow; --save, "
                                     "--plot, --record-balance, --device, --quiet, --checkpoint-every, "
                                     "--recompute-every, --memory-budget may change); checkpoints then go to --save, "
                                     "or to PATH without it (default: none)")
    checkpoint_every: int = option(0, check=valid.integer(0), metavar="STEPS", may_change=True,
                                   help="also write the resumable checkpoint every STEPS training steps inside an "
                                        "epoch, >= 0; needs --save or --resume (default: %(default)s: after every "
                                        "epoch only)")
    # SET-MLP's (SET implementation 2's values but for lr/batch_size)
    epsilon: float = option(13.0, check=valid.positive, metavar="E", group=MLP_OPTIONS,
                            help="Erdos-Renyi sparsity: about E*(in+out) connections per layer, > 0 "
                                 "(default: %(default)s)")
    zeta: float = option(0.3, check=valid.unit, metavar="FRACTION", group=MLP_OPTIONS,
                         help="fraction of the positive and of the negative weights SET replaces after each epoch but "
                              "the last, in [0, 1] (default: %(default)s)")
    dropout: float = option(0.2, check=valid.fraction_below_one, metavar="P", group=MLP_OPTIONS,
                            help="dropout of the hidden activations, in [0, 1) (default: %(default)s)")
    momentum: float = option(0.9, check=valid.fraction_below_one, metavar="M", group=MLP_OPTIONS,
                             help="SGD momentum, in [0, 1) (default: %(default)s)")  # the MLP trains with SGD
    weight_decay: float = option(2e-4, check=valid.fraction_below_one, metavar="D", group=MLP_OPTIONS,
                                 help="w -= D*w every step, outside the momentum, in [0, 1) (default: %(default)s)")
    faithful: bool = option(False, group=MLP_OPTIONS,
                            help="SET implementation 2's quirks: sigmoid output with its MSE error, dropout without "
                                 "rescaling, duplicate connections collapsed (default: off)")
    importance: float = option(0.0, check=valid.fraction_below_one, metavar="FRACTION", group=MLP_OPTIONS,
                               help="importance pruning: drop this fraction of each hidden layer's neurons after each "
                                    "epoch but the last, in [0, 1) (default: %(default)s, off)")
    evolve_output: bool = option(True, group=MLP_OPTIONS,
                                 help="SET leaves the output layer's connections alone, as later SET code does; use it "
                                      "for wide last hidden layers, where the dense output layer's redrawn weights "
                                      "cost accuracy (default: evolve it, evolve_output=%(default)s, as "
                                      "implementation 2)")
    label_column: str | None = option(None, check=valid.or_none(valid.string), metavar="NAME", group=MLP_OPTIONS,
                                      help="task table: the name of the label column (default: none)")
    recipe: str | None = option(None, choices=tuple(RECIPES), metavar="NAME",  # see recipe_config
                                help="a published set-up: its task, model, sizes, epochs, batch, lr and sparsification "
                                     "schedule; other options given override it; ends with the published number "
                                     f"beside ours. One of: {', '.join(RECIPES)} (default: none; see docs/papers.md)")
    # the memory model (sparse_engine.memory): they change no result, so a resumed run may change them
    recompute_every: int | str | None = option(
        "auto", check=valid.recompute_every, type=recompute_interval, metavar="{K,auto,none}", may_change=True,
        help="keep the recurrent state every K steps and recompute the rest in the backward (same gradients, one "
             "more forward, activations O(T/K + K) steps instead of O(T)); none: store every step; auto: store every "
             "step where that fits the budget, else the K with the least memory (default: %(default)s)")
    adam_state: str = option(
        "auto", choices=("auto", "float32", "bfloat16"),
        help="the dtype of Adam's two moments (recurrent models): float32 is torch's Adam; bfloat16 "
             "(sparse_engine.training.CompactAdam, stochastic rounding) saves 4 bytes a parameter and trains within "
             "the spread of seeds in our tests (docs/memory.md); auto: bfloat16 only where float32 does not fit "
             "the budget even with recomputation; a checkpoint keeps the dtype chosen (default: %(default)s)")
    saved_dtype: str = option(
        "auto", choices=("auto", "float32", "bfloat16"),
        help="the dtype of the c's and gate activations a run that stores every step keeps for the backward "
             "(lstm, gru, rnn): bfloat16 halves their bytes and the backward reads them rounded (docs/memory.md); "
             "auto: bfloat16 only where nothing exact, nor bfloat16 Adam moments, fits the budget; not with "
             "--recompute-every K; a checkpoint keeps the dtype chosen (default: %(default)s)")
    memory_budget: int | str | None = option(
        None, check=valid.size_or_none, metavar="SIZE", may_change=True,
        help="memory a training step (and an evaluation batch) may take, e.g. 16G or 512M: --recompute-every auto "
             "and --adam-state auto pick what fits (exact choices first, the plan is printed), and the run is refused "
             "before it starts when the memory model (docs/memory.md) estimates more than any allowed choice; "
             "layers small enough for the dense path are not estimated, and the plan line says so "
             "(default: the memory available now; on a GPU its free memory)")


@dataclass
class BenchConfig(_Checked):
    """``sparse-engine bench`` options: an n x n matrix of this density, ``batch`` columns; with
    ``model`` one training step of that recurrent model at ``hidden`` and ``density`` instead, against
    masked-dense and torch.sparse (:func:`sparse_engine.runs.step_bench.step_bench`); with ``memory``
    the predicted memory of a training step (its sizes: ``model`` ... ``budget``;
    :func:`sparse_engine.runs.memory_run.memory_bench`)."""
    n: int = option(16384, check=valid.integer(1), metavar="N",
                    help="rows and columns of the square sparse matrix, >= 1 (default: %(default)s)")
    density: float = option(0.01, check=valid.fraction, metavar="FRACTION",
                            help="fraction of nonzero entries, in (0, 1] (default: %(default)s)")
    batch: int | None = option(None, check=valid.or_none(valid.integer(1)), type=int, metavar="N",
                               help="columns of the dense operand, >= 1; with --model or --memory the batch size "
                                    "(default: 32; 20 with --model)")
    memory: bool = option(False, group=MEMORY_OPTIONS,
                          help="print the step's peak by kind and phase instead of timing operators; with --budget "
                               "also the largest hidden size that fits (same nonzeros per row: --density x --hidden) "
                               "(default: off)")
    model: str | None = option(None, choices=tuple(m for m in MODELS if m != "mlp"), group=MEMORY_OPTIONS,
                               help="time one training step of this recurrent model (lstm, gru or rnn: one layer, "
                                    "input = hidden, --hidden and --density) against masked-dense and torch.sparse, "
                                    "instead of the operators; with --memory the model whose step is predicted "
                                    "(default: none; lstm with --memory)")
    hidden: int = shared_option(TrainConfig, "hidden", group=MEMORY_OPTIONS,
                                help="hidden units of the recurrent layer, >= 1 (default: %(default)s)")
    layers: int = shared_option(TrainConfig, "layers", group=MEMORY_OPTIONS)
    sparse: str = shared_option(TrainConfig, "sparse", group=MEMORY_OPTIONS)
    seq_len: int = option(35, check=valid.integer(1), metavar="T", group=MEMORY_OPTIONS,
                          help="steps per sequence, >= 1 (default: %(default)s)")
    input_size: int = option(28, check=valid.integer(1), metavar="N", group=MEMORY_OPTIONS,
                             help="input features per step, >= 1 (default: %(default)s)")
    optimizer: str = option("adam", choices=MEMORY_OPTIMIZERS, group=MEMORY_OPTIONS,
                            help="its state and temporaries (default: %(default)s)")
    recompute_every: int | str | None = option(
        None, check=valid.recompute_every, type=recompute_interval, metavar="{K,auto,none}", group=MEMORY_OPTIONS,
        help="predict a step that keeps the recurrent state every K steps (train's --recompute-every); auto: store "
             "every step where that fits --budget, else the K with the least memory (default: none)")
    device: str = shared_option(TrainConfig, "device", group=MEMORY_OPTIONS)
    budget: int | str | None = option(None, check=valid.size_or_none, metavar="SIZE", group=MEMORY_OPTIONS,
                                      help="memory a step may take, e.g. 16G or 80G for an 80 GB GPU (default: none)")
    repeats: int = option(3, check=valid.integer(1), metavar="N", group=MEMORY_OPTIONS,
                          help="with --model: steps timed per method, their median is shown (default: %(default)s)")


def _null_methods():
    from ..analysis.nulls import METHODS  # when first needed: the analysis package loads scipy

    return METHODS


def _conventions():
    from ..analysis.balance import CONVENTIONS

    return CONVENTIONS


@dataclass
class AnalyzeConfig(_Checked):
    """``sparse-engine analyze`` options."""
    path: str = option(check=valid.path,
                       help="checkpoint (.pt, .pth, .ckpt), Gephi edge list (.csv: Id,Source,Target,Weight), scipy "
                            "sparse matrix (.npz), a --record-balance CSV (balance over training), or a directory of "
                            "networks as NNSTD layers (weight_l<i>.npz: the NNSTD between them)")
    key: str | None = option(None, check=valid.or_none(valid.string),
                             help="which matrix of a checkpoint, e.g. rnn.weight_hh_l1 (default: the first "
                                  "hidden-to-hidden weight, weight_hh_l0)")
    transpose: bool = option(False, help="the matrix is used as h @ W, rows presynaptic (default: off, W @ h)")
    null: int = option(0, check=valid.integer(0), metavar="K",
                       help="compare with K randomised networks, >= 0 (default: %(default)s, none)")
    null_method: str = option("sign_shuffle", choices=_null_methods,
                              help="how the null networks are randomised: shuffle the signs, degree-preserving swaps, "
                                   "or both (default: %(default)s)")
    seed: int = option(0, check=valid.integer(0), metavar="N",
                       help="seed of the null models, >= 0 (default: %(default)s)")
    export_csv: str | None = option(None, check=valid.or_none(valid.path), metavar="CSV",
                                    help="also write the graph as a Gephi edge list (default: none)")
    gate: str | None = option(None, check=valid.or_none(valid.string), metavar="NAME",
                              help="one gate block of an LSTM (i f g o) or GRU (r z n) W_hh, or sum (the blocks "
                                   "added) (default: every gate and the sum)")
    plot: str | None = option(None, check=valid.or_none(valid.path), metavar="DIR",
                              help="write the figures (PNG and SVG) into this directory, created with its parents if "
                                   "missing: census against the null model (with --null) and degree/weight "
                                   "distributions; for a recorded run (a --record-balance CSV as PATH) the balance "
                                   "over epochs; for a directory the NNSTD heat maps (one per snapshot folder of "
                                   "RUN/SNAPSHOT networks); needs matplotlib (default: none)")
    convention: str = option("default", choices=_conventions,
                             help="default, or seed: the paper's code's (balance mean without types that have no "
                                  "balanced semicycle; census over the nodes that have edges) (default: %(default)s)")
    nnstd_layer: int | None = option(None, check=valid.or_none(valid.integer(0)), type=int, metavar="L",
                                     help="for a directory of NNSTD networks: the distances of layer L (0 = the "
                                          "first; the NNSTD paper's Figure 4 shows layer 0) instead of their mean over "
                                          "the layers (default: the mean)")
    lesion: int = option(0, check=valid.integer(0), metavar="N",
                         help="for a checkpoint of train with a sparse rnn/ctrnn: cut up to N motifs (balanced, "
                              "unbalanced, any; and N edge triples) from the recurrent matrix as the paper (one "
                              "shuffled list, cumulative, 10 runs) and score the test set after each cut; with --plot "
                              "the lesion curves, >= 0 (default: %(default)s, none)")


def _group(config, title: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(config) if f.metadata["group"] == title)


MLP_TASKS = ("digits", "mnist", "table")
MLP_ALGORITHMS = ("none", "set")
#: TrainConfig's options for --model mlp only
MLP_FIELDS = _group(TrainConfig, MLP_OPTIONS)
#: BenchConfig's fields that only bench --model and bench --memory read
MEMORY_FIELDS = tuple(name for name in _group(BenchConfig, MEMORY_OPTIONS) if name != "memory")
#: the ones bench --model reads (beside --density and --batch)
STEP_FIELDS = ("model", "hidden", "seq_len", "device", "repeats")


# ------------------------------------------------------------- options that do not go together
def _train_combinations(cfg):
    """(field, reason) for options that cannot go together, or None."""
    problem = task_data_problem(cfg.task, cfg.data)
    if problem is not None:
        return "data", problem
    if cfg.model == "ctrnn" and cfg.layers != 1:
        return "layers", f"model 'ctrnn' has one layer, got {cfg.layers}"
    if cfg.saved_dtype == "bfloat16" and cfg.model == "ctrnn":
        return "saved_dtype", "bfloat16 saved activations are for lstm, gru and rnn, got --model ctrnn"
    if cfg.saved_dtype == "bfloat16" and cfg.recompute_every not in ("auto", None):
        return "saved_dtype", (f"bfloat16 keeps every step's activations, --recompute-every {cfg.recompute_every} "
                               "only a few: give one of them (or --recompute-every auto)")
    mlp_problem = _mlp_combinations(cfg)
    if mlp_problem is not None:
        return mlp_problem
    if cfg.recipe is not None and cfg.algorithm != RECIPES[cfg.recipe].train["algorithm"]:
        return "algorithm", (f"recipe {cfg.recipe!r} trains with {RECIPES[cfg.recipe].train['algorithm']!r}, "
                             f"got {cfg.algorithm!r}")
    if cfg.algorithm == "gmp" and cfg.model != "mlp" and cfg.density <= GMP_FINAL_DENSITY:
        return "density", (f"--algorithm gmp prunes to density {GMP_FINAL_DENSITY}: the model must start denser, "
                           f"got --density {cfg.density}")
    if cfg.checkpoint_every and cfg.save is None and cfg.resume is None:
        return "checkpoint_every", "needs a checkpoint to write to: save or resume (--save PATH or --resume PATH)"
    return None


def _mlp_combinations(cfg):
    """(field, reason) for options that do not go with --model mlp (or need it), or None."""
    if cfg.model == "mlp":
        for field, default in (("recompute_every", "auto"), ("adam_state", "auto"), ("saved_dtype", "auto"),
                               ("memory_budget", None)):
            if getattr(cfg, field) != default:
                return field, "applies to the recurrent models (lstm, gru, rnn, ctrnn), got --model mlp"
        for field, why in (("density", "model 'mlp' sets its density with --epsilon (SET-MLP's Erdos-Renyi)"),
                           ("sparse", "model 'mlp' has no recurrent or input matrix to choose"),
                           ("layers", "model 'mlp' takes its layers from --hidden (a list of sizes)")):
            if getattr(cfg, field) != getattr(TrainConfig, field):
                return field, f"{why}, got --{field} {getattr(cfg, field)}"
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


def _bench_combinations(cfg):
    """(field, reason) for bench options that do not go together, or None."""
    if not cfg.memory and cfg.model is None:
        for field in MEMORY_FIELDS:
            if getattr(cfg, field) != getattr(BenchConfig, field):
                return field, ("applies to bench --memory or bench --model (a training step of a recurrent model), "
                               "not the operator benchmark")
        return None
    which = "bench --memory" if cfg.memory else "bench --model"
    if cfg.n != BenchConfig.n:
        return "n", f"applies to the operator benchmark, not {which} (which takes --hidden)"
    one_size = None if not isinstance(cfg.hidden, (tuple, list)) else (
        "hidden", f"expected one hidden size, got {','.join(map(str, cfg.hidden))}")
    if not cfg.memory:
        if cfg.model not in STEP_MODELS:
            return "model", (f"bench --model times {', '.join(STEP_MODELS)} against their masked-dense torch.nn twins, "
                             f"got {cfg.model!r}")
        if one_size:
            return one_size
        for field in MEMORY_FIELDS:
            if field not in STEP_FIELDS and getattr(cfg, field) != getattr(BenchConfig, field):
                return field, "applies to bench --memory, not bench --model"
        return None
    if cfg.repeats != BenchConfig.repeats:
        return "repeats", "applies to bench --model, not bench --memory"
    if cfg.model == "mlp":
        return "model", "the memory model covers the recurrent models (lstm, gru, rnn, ctrnn), got 'mlp'"
    if one_size:
        return one_size
    if cfg.model == "ctrnn" and cfg.layers != 1:
        return "layers", f"model 'ctrnn' has one layer, got {cfg.layers}"
    if cfg.recompute_every == "auto" and cfg.budget is None:
        return "recompute_every", "auto picks the interval for a budget: give --budget (e.g. 16G)"
    return None


_COMBINATIONS = {TrainConfig: _train_combinations, BenchConfig: _bench_combinations}


# ------------------------------------------------------------- what a config is turned into
def mlp_sizes(cfg, n_in: int, n_out: int) -> tuple[int, ...]:
    """The layer sizes of --model mlp: inputs, --hidden (a list, or one size repeated --layers
    times), outputs."""
    hidden = tuple(cfg.hidden) if isinstance(cfg.hidden, (tuple, list)) else (cfg.hidden,) * cfg.layers
    return (n_in, *hidden, n_out)


def resolve_device(name: str) -> torch.device:
    """``auto``: a CUDA GPU when torch sees one and this build has the CUDA kernels, else the CPU.
    ConfigError (field ``device``) when ``cuda`` is asked for and cannot be had."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and HAS_CUDA_KERNELS else "cpu")
    if name not in DEVICES:
        raise ConfigError("device", valid.one_of(DEVICES)(name))
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "'cuda' asked for, but torch sees no CUDA device (use 'cpu' or 'auto')")
    if name == "cuda" and not HAS_CUDA_KERNELS:
        raise ConfigError("device", "'cuda' asked for, but this build of sparse_engine has no CUDA kernels "
                                    "(reinstall with a CUDA torch and nvcc present, or use 'cpu')")
    return torch.device(name)


def recipe_config(recipe: str, **options) -> TrainConfig:
    """The :class:`TrainConfig` of the published set-up ``recipe`` (task, model, sizes, epochs,
    batch, lr, algorithm of :data:`~sparse_engine.training.recipes.RECIPES`), with ``options``
    overriding any field (``data``, a shorter ``epochs``, ``seed``, ...)."""
    try:
        fields_ = get_recipe(recipe).train
    except ValueError:
        raise ConfigError("recipe", valid.or_none(valid.one_of(tuple(RECIPES)))(recipe)) from None
    return TrainConfig(**{**fields_, **options, "recipe": recipe})


__getattr__ = old_name(__name__)  # its old names, answered with a warning (sparse_engine._moved)
