"""The recipes behind ``sparse-engine train | bench | analyze`` as plain functions, so that a
notebook or a script runs exactly what the command line runs, without argparse:

    from sparse_engine.runs import train
    result = train(task="mackey-glass", model="gru", hidden=16, epochs=2, quiet=True)
    result.history[-1]["test_loss"], result.model

Each takes a config dataclass (:class:`TrainConfig`, :class:`BenchConfig`,
:class:`AnalyzeConfig`), keyword options, or a config plus options that override it; the
dataclass defaults are the command line's defaults. :mod:`sparse_engine.cli` only parses
arguments into these configs and calls these functions.

One module per command, and what they share:

* ``config``: the three configs, each field declared once with its rule and its help (the
  command line's parser is built from them), :class:`ConfigError`;
* ``options``: how a field is declared as an option (:func:`~.options.option`) and read back as an
  argparse argument; ``validators``: the rules a value is checked with;
* ``paths``: every check of the paths a run reads and writes (:class:`ConfigPathError`);
* ``rebuild``: what a run builds from its options (its data, its model, its loss,
  :func:`evaluate`), for ``train`` and again for ``analyze --lesion`` to rebuild a trained run;
* ``resume``: where a train run stands, its resumable checkpoints and the options a resumed run
  keeps (:func:`resume_config`);
* ``train_run``: :func:`train`;
* ``bench_run``: :func:`bench`;
* ``analyze_run``: :func:`analyze`.

Every name is importable from ``sparse_engine.runs`` itself, as when this was one module (the names that
module imported from elsewhere with a DeprecationWarning, until 0.2.0: ``sparse_engine._moved``).
"""
from .._moved import old_name
from .config import (DEVICES, MLP_ALGORITHMS, MLP_FIELDS, MLP_TASKS, SPARSE_CHOICES, AnalyzeConfig, BenchConfig,
                     ConfigError, ConfigPathError, TrainConfig, mlp_sizes, recipe_config, resolve_device)
from .paths import check_analyze_paths, check_paths, check_train_paths, plot_dir_problem
from .rebuild import evaluate, load_run_task, run_recipe, sequence_loss, sequence_model, softmax_score_loss
from .resume import resume_config
from .train_run import TrainResult, epoch_header, epoch_line, plot_history, progress_postfix, recipe_summary, train
from .bench_run import bench
from .analyze_run import LESION_KINDS, analyze, is_balance_record, lesion_curves, load_matrix

__all__ = [
    "DEVICES", "SPARSE_CHOICES", "MLP_ALGORITHMS", "MLP_FIELDS", "MLP_TASKS", "AnalyzeConfig", "BenchConfig",
    "ConfigError", "ConfigPathError", "TrainConfig", "mlp_sizes", "recipe_config", "resolve_device", "resume_config",
    "check_analyze_paths", "check_paths", "check_train_paths", "plot_dir_problem",
    "TrainResult", "epoch_header", "epoch_line", "evaluate", "load_run_task", "plot_history", "progress_postfix",
    "recipe_summary", "run_recipe", "sequence_loss", "sequence_model", "softmax_score_loss", "train",
    "bench", "LESION_KINDS", "analyze", "is_balance_record", "lesion_curves", "load_matrix",
]

__getattr__ = old_name(__name__)  # its old names, answered with a warning (sparse_engine._moved)
