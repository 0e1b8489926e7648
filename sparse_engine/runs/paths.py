"""Every check of the paths a run reads and writes, in one place, run before any work starts so
that a missing input or a typo in an output path fails at once
(:class:`~sparse_engine.runs.config.ConfigPathError`, exit code 1) rather than after the last
epoch: ``train`` runs :func:`check_train_paths` itself, the command line runs
:func:`check_analyze_paths` before ``analyze`` (``bench`` takes no paths). Whether one file can
be read or written is :func:`~sparse_engine.data.files.input_path_problem` /
:func:`~sparse_engine.data.files.output_path_problem`; this module says which option is which."""
from __future__ import annotations

import os
from pathlib import Path

from ..data.files import input_path_problem, output_path_problem
from ..data.tasks import TASK_DATA
from .config import AnalyzeConfig, ConfigError, ConfigPathError, TrainConfig


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
    written; :func:`~sparse_engine.runs.train` runs it before any work, so a typo in an output path fails at once
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



def check_analyze_paths(cfg: AnalyzeConfig) -> None:
    """ConfigPathError unless ``cfg.path`` (a file, or a directory of NNSTD networks) can be read,
    ``cfg.export_csv`` written and ``cfg.plot`` hold the figures. The command line runs it before
    :func:`~sparse_engine.runs.analyze`; called from Python, ``analyze`` itself reports a missing
    or unreadable ``path`` as its loaders do (FileNotFoundError, or ValueError naming the file),
    and checks the file's type and content when it loads the matrix."""
    check_paths(cfg, {"path": None}, ("export_csv",))
    if cfg.plot is not None and (problem := plot_dir_problem(cfg.plot)) is not None:
        raise ConfigPathError("plot", problem)


def plot_dir_problem(path) -> str | None:
    """Why the figures cannot go into the directory ``path`` (created if missing, its parent must
    exist; matplotlib must be installed), or None."""
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
