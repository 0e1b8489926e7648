"""Every check of the paths a run reads and writes, in one place, run before any work starts so
that a missing input or an output that cannot be written fails at once
(:class:`~sparse_engine.runs.config.ConfigPathError`, exit code 1) rather than after the last
epoch: ``train`` runs :func:`check_train_paths` itself, the command line runs
:func:`check_analyze_paths` before ``analyze`` (``bench`` takes no paths). Whether one file can
be read or written is :func:`~sparse_engine.data.files.input_path_problem` /
:func:`~sparse_engine.data.files.output_path_problem`; this module says which option is which.
Every output path option (``--save``, ``--record-balance``, ``--plot``, ``--export-csv``) gets
its missing parent directories created, as most command line tools do, once every check passed."""
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
        problem = None if path is None else output_problem(path)
        if problem is not None:
            raise ConfigPathError(field, problem)


def output_problem(path) -> str | None:
    """Why a file cannot be written at ``path``, or None: as
    :func:`~sparse_engine.data.files.output_path_problem`, but a missing parent directory is no
    problem when it can be created (its nearest existing ancestor is a writable directory)."""
    p = Path(path)
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor == p.parent or p.name in ("", ".", ".."):
        return output_path_problem(path)
    if not ancestor.is_dir():
        return f"{ancestor} is not a directory (cannot create {p.parent})"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"directory {ancestor} is not writable (cannot create {p.parent})"
    return None


def create_parents(cfg, outputs) -> None:
    """Creates the missing parent directories of ``cfg``'s output paths (``outputs``: fields);
    ConfigPathError naming the field when one cannot be created."""
    for field in outputs:
        path = getattr(cfg, field)
        if path is None:
            continue
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigPathError(field, f"cannot create directory {Path(path).parent} ({exc.strerror or exc})") from None


def check_train_paths(cfg: TrainConfig) -> None:
    """ConfigPathError unless ``cfg.data`` and ``cfg.resume`` (when set) can be read and every
    output path (``save``, ``record_balance``, ``plot``; ``resume`` without ``save``) can be
    written, their missing parent directories created; :func:`~sparse_engine.runs.train` runs it
    before any work, so an output path that cannot be written fails at once rather than after
    the last epoch."""
    # a resumed run without --save writes its checkpoints over the one it resumed from
    outputs = ("save", "record_balance", "plot") + (() if cfg.save is not None else ("resume",))
    check_paths(cfg, {"data": TASK_DATA.get(cfg.task, (None,))[0], "resume": "file"}, outputs)
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
    create_parents(cfg, outputs)



def check_analyze_paths(cfg: AnalyzeConfig) -> None:
    """ConfigPathError unless ``cfg.path`` (a file, or a directory of NNSTD networks) can be read,
    ``cfg.export_csv`` written (its missing parent directories are created) and ``cfg.plot`` hold
    the figures (created with its parents by the figures' writer). The command line runs it before
    :func:`~sparse_engine.runs.analyze`; called from Python, ``analyze`` itself reports a missing
    or unreadable ``path`` as its loaders do (FileNotFoundError, or ValueError naming the file),
    and checks the file's type and content when it loads the matrix."""
    check_paths(cfg, {"path": None}, ("export_csv",))
    if cfg.plot is not None and (problem := plot_dir_problem(cfg.plot)) is not None:
        raise ConfigPathError("plot", problem)
    create_parents(cfg, ("export_csv",))


def plot_dir_problem(path) -> str | None:
    """Why the figures cannot go into the directory ``path`` (created with its missing parents;
    matplotlib must be installed), or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "needs matplotlib (pip install 'sparse-engine[analysis]')"
    p = Path(path)
    if p.is_dir():
        return None if os.access(p, os.W_OK | os.X_OK) else f"directory {p} is not writable"
    if p.exists():
        return f"{p} is a file, expected a directory for the figures"
    return output_problem(p)
