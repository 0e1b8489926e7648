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

* ``config``: the three configs, the rule each field is checked with, :class:`ConfigError`;
* ``paths``: every check of the paths a run reads and writes (:class:`ConfigPathError`);
* ``train_run``: :func:`train`, and what a run builds from its options (its data, its model,
  :func:`evaluate`), which ``analyze --lesion`` uses again to rebuild a trained run;
* ``bench_run``: :func:`bench`;
* ``analyze_run``: :func:`analyze`.

Every name is importable from ``sparse_engine.runs`` itself, as when this was one module (the names that
module imported from elsewhere with a DeprecationWarning, until 0.2.0: ``sparse_engine._moved``).
"""
from .. import _moved
from .config import (DEVICES, MLP_ALGORITHMS, MLP_FIELDS, MLP_TASKS, SPARSE_CHOICES, AnalyzeConfig, BenchConfig,
                     ConfigError, ConfigPathError, TrainConfig, mlp_sizes, recipe_config, resolve_device,
                     resume_config)
from .paths import check_analyze_paths, check_paths, check_train_paths, plot_dir_problem
from .train_run import (TrainResult, epoch_header, epoch_line, evaluate, load_run_task, plot_history,
                        progress_postfix, recipe_summary, run_recipe, sequence_loss, sequence_model,
                        softmax_score_loss, train)
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

__getattr__ = _moved.old_name(__name__)  # its old names, answered with a warning (sparse_engine._moved)
