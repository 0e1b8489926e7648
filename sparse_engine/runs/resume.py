"""Resumable ``sparse-engine train`` runs: where a run stands, written into its checkpoint and
read back so that a run cut off (Ctrl-C, ``kill -9``, out of time) continues bit for bit.

What a resumable checkpoint holds (``payload["extra"]``, beside the model's and the optimizer's
``state_dict``): ``args`` (the run's options), ``history`` (one row per finished epoch) and
``resume``:

* ``epoch``: finished epochs; ``batch``: batches done of the next epoch (0 at an epoch end);
  ``perm``: that epoch's shuffle (None at an epoch end); ``running``: its summed train loss so far;
  ``steps``: optimizer steps in all;
* ``controller``: the topology controller's ``state_dict()`` (None for ``--algorithm none``);
* ``rng``: the states of torch's CPU generator, of every CUDA device's (when training on CUDA),
  and of Python's and numpy's global generators;
* ``balance_records``: what ``--record-balance`` has recorded so far (None without it).

It is written atomically to ``--save`` after every epoch and, with ``--checkpoint-every STEPS``,
also every STEPS optimizer steps inside an epoch, always between two steps. ``--resume PATH``
rebuilds the run from its options, loads all of that and goes on from the next step with the
saved shuffle of the interrupted epoch (its done batches skipped) and then the restored generator,
so it computes what the uninterrupted run would have (the same device and thread count).
The run's options are the saved ones (:func:`saved_options`; :func:`resume_config` fills in
those not given); options given that shape the computation must equal the saved ones
(:data:`MUST_MATCH`, the :class:`~sparse_engine.runs.config.TrainConfig` fields not declared
``may_change``); only ``--epochs`` may grow (the controller keeps the schedule of the saved run:
its state holds it).
"""
from __future__ import annotations

import hashlib
import random
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import torch

from ..data.files import input_path_problem
from ..io.checkpoint import load_checkpoint, save_checkpoint
from . import validators as valid
from .config import ConfigError, ConfigPathError, TrainConfig

__all__ = ["MUST_MATCH", "TrainProgress", "resume_config", "saved_options"]

#: TrainConfig fields a resumed run must share with the saved one: those its declaration does not
#: mark ``may_change`` (--save, --plot, --quiet, --device, --checkpoint-every, ... may change;
#: --epochs may grow)
MUST_MATCH = tuple(f.name for f in fields(TrainConfig) if not f.metadata["may_change"])
VERSION = 1


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def same_option(field: str, old, new) -> bool:
    """Whether option ``field`` given as ``new`` is the checkpoint's ``old``. A ``--data`` path is
    the same when it names the same file written another way, or files of the same contents (a copy
    on another machine), or when the checkpoint's path is gone (the data moved: the new one is taken)."""
    if old == new:
        return True
    if field == "data" and old is not None and new is not None:
        a, b = Path(old).expanduser().resolve(), Path(new).expanduser().resolve()
        return a == b or not a.exists() or _contents(a) == _contents(b)
    return False


def _contents(path: Path) -> list[tuple[str, str]]:
    """(relative name, SHA-256) of ``path``'s files (the file itself, or every file below a folder)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [("" if f == path else str(f.relative_to(path)), hashlib.sha256(f.read_bytes()).hexdigest()) for f in files]


def saved_options(path) -> dict:
    """The options (TrainConfig fields) of the resumable run saved in the checkpoint ``path``.
    CheckpointError (a ValueError) for a file that is not a sparse-engine checkpoint or is
    damaged; ValueError for a checkpoint with no resumable state."""
    extra = load_checkpoint(path)["extra"]
    args = extra.get("args")
    if extra.get("resume") is None or not isinstance(args, dict) or args.get("command", "train") != "train":
        raise ValueError(f"{path}: this checkpoint holds no resumable state (it was not written by sparse-engine "
                         "train, or by a version before --resume)")
    return {k: v for k, v in args.items() if k != "command"}


def _shown(value) -> str:
    """An option's value as typed on the command line (``1000,1000`` for a list of sizes)."""
    if value is None:
        return "none"
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def resume_config(resume, **given) -> TrainConfig:
    """The :class:`TrainConfig` that continues the run saved in the checkpoint ``resume``: the
    options it was saved with, ``given`` (the options a user typed) overriding those that may
    change (``epochs`` may grow; ``save``, ``plot``, ``record_balance``, ``device``, ``quiet``,
    ``checkpoint_every``). ``save`` and ``quiet`` are not taken from the checkpoint: without
    ``save`` the checkpoints go to ``resume``. ConfigError naming the first given option that conflicts with the
    checkpoint's (one of :data:`MUST_MATCH`, or fewer ``epochs``),
    ConfigPathError for a missing file, CheckpointError (a ValueError) for a file that is not a
    sparse-engine checkpoint or is damaged, ValueError for a checkpoint with no resumable state."""
    problem = valid.path(resume)
    if problem is None:
        problem = input_path_problem(resume, "file")
    if problem is not None:
        raise ConfigPathError("resume", problem)
    saved = saved_options(resume)
    for name in ("adam_state", "saved_dtype"):  # auto: the dtype the saved run's plan chose
        if given.get(name) == "auto" and name in saved:
            given = {**given, name: saved[name]}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(f"resume_config() got an unexpected keyword argument {unknown[0]!r}")
    for field in MUST_MATCH:
        if field in given and field in saved and not same_option(field, saved[field], given[field]):
            flag = _flag(field)
            raise ConfigError(field, f"{_shown(given[field])} differs from the checkpoint's {flag} "
                                     f"{_shown(saved[field])} ({resume}): a resumed run keeps the options it was "
                                     f"saved with (leave {flag} out)")
    if valid.integer(1)(given.get("epochs")) is None and given["epochs"] < saved.get("epochs", 0):
        raise ConfigError("epochs", f"{given['epochs']} is less than the checkpoint's --epochs {saved['epochs']} "
                                    f"({resume}): --epochs may only grow")
    options = {k: v for k, v in saved.items() if k in known and k not in ("save", "resume", "quiet")}
    if given.get("data") is None and options.get("data") is not None and not Path(options["data"]).exists():
        raise ConfigPathError("data", f"{options['data']} (the checkpoint's --data) does not exist: give --data with "
                                      "where the data is now")
    return TrainConfig(**{**options, **given, "resume": resume})


def rng_state(device: torch.device) -> dict:
    """The global generators' states (only tensors, numbers and lists: weights_only-readable)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "cuda": None, "python": list(random.getstate()),
             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)]}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:  # another machine: at least the device in use continues its sequence
            torch.cuda.set_rng_state(state["cuda"][0], device)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


class TrainProgress:
    """Where a :func:`sparse_engine.runs.train` run stands (finished epochs, the current
    epoch's shuffle and position, the history) and its resumable checkpoints.

    The train loop calls :meth:`begin_epoch` for the batches still to run and the loss summed so
    far, :meth:`after_step` after every training step (a checkpoint every ``checkpoint_every``
    steps) and :meth:`end_epoch` with the epoch's metrics (a checkpoint)."""

    def __init__(self, cfg, model, optimizer, controller, recorder, device, n_train: int, *, shuffle: bool = True,
                 drop_last: bool = False, epoch_batches: int | None = None):
        self.cfg, self.model, self.optimizer = cfg, model, optimizer
        self.controller, self.recorder, self.device = controller, recorder, device
        # TrainConfig has checked checkpoint_every (an int >= 0, with save or resume to write to)
        self.n_train, self.every = n_train, cfg.checkpoint_every
        # shuffle False: every epoch in the stored order; drop_last: the last partial batch skipped
        self.shuffle, self.drop_last = shuffle, drop_last
        self.batches = n_train // cfg.batch_size if drop_last else -(-n_train // cfg.batch_size)
        # epoch_batches: an epoch is that many full batches taken in turn from shuffled passes, a batch
        # running on into the next pass (tf's next_batch: Zhang et al.'s MNIST); ``stream``: what is
        # left of the current pass
        self.epoch_batches = epoch_batches
        if epoch_batches:
            self.batches = epoch_batches
        self.stream: torch.Tensor | None = None
        self.epoch, self.batch, self.steps = 0, 0, 0
        self.perm: torch.Tensor | None = None
        self.running = 0.0
        self.history: list[dict] = []
        self.save_path = cfg.save
        self.started = time.time()  # a checkpoint written since then is this run's

    # ------------------------------------------------------------------ driving
    def begin_epoch(self, epoch: int):
        """(the batches of epoch ``epoch`` still to run, as index tensors; the loss summed so
        far). A new epoch draws its shuffle; the interrupted one keeps the saved one."""
        if epoch != self.epoch + 1:
            raise RuntimeError(f"epoch {epoch} follows epoch {self.epoch}")
        if self.perm is None and self.epoch_batches:
            need, parts = self.batches * self.cfg.batch_size, []
            while need > 0:
                if self.stream is None or len(self.stream) == 0:
                    self.stream = self._pass()
                parts.append(self.stream[:need])
                self.stream, need = self.stream[need:], need - len(parts[-1])
            self.perm, self.batch, self.running = torch.cat(parts), 0, 0.0
        elif self.perm is None:
            perm = self._pass()
            self.perm, self.batch, self.running = perm[:self.batches * self.cfg.batch_size], 0, 0.0
        return list(self.perm.split(self.cfg.batch_size))[self.batch:], self.running

    def _pass(self) -> torch.Tensor:
        return torch.randperm(self.n_train) if self.shuffle else torch.arange(self.n_train)

    def after_step(self, running: float) -> None:
        """After a training step (optimizer and controller stepped, its loss added to ``running``)."""
        self.batch += 1
        self.steps += 1
        self.running = running
        if self.every and self.steps % self.every == 0 and self.batch < self.batches:
            self.save()  # at an epoch's last batch the epoch-end checkpoint follows at once

    def end_epoch(self, row: dict) -> None:
        """After an epoch's evaluation and its controller update."""
        self.history.append(row)
        self.epoch += 1
        self.batch, self.perm, self.running = 0, None, 0.0
        if self.save_path:
            self.save()

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        return {"version": VERSION, "epoch": self.epoch, "batch": self.batch, "steps": self.steps,
                "perm": None if self.perm is None else self.perm.clone(), "running": self.running,
                "stream": None if self.stream is None else self.stream.clone(),
                "controller": None if self.controller is None else self.controller.state_dict(),
                "rng": rng_state(self.device),
                "balance_records": None if self.recorder is None else list(self.recorder.records)}

    def save(self) -> Path:
        """Writes the resumable checkpoint (atomically) to the run's save path; an OSError that
        names the option (``--save``, or ``--resume`` for a resumed run writing over its checkpoint)."""
        # the options as the command line's namespace held them, so checkpoints read the same either way; --data
        # as an absolute path, so that the run resumes from any directory
        args = {"command": "train", **asdict(self.cfg)}
        if args.get("data") is not None:
            args["data"] = str(Path(args["data"]).expanduser().resolve())
        try:
            path = save_checkpoint(self.save_path, self.model, self.optimizer, args=args, history=list(self.history),
                                   resume=self.state())
        except OSError as exc:
            option = "--save" if self.cfg.save is not None or self.cfg.resume is None else "--resume"
            raise OSError(f"argument {option}: cannot write the checkpoint {self.save_path} "
                          f"({exc.strerror or exc})") from exc
        return path

    def resume_from(self) -> Path | None:
        """The checkpoint a run cut off now continues from: the one this run wrote (its file changed
        since the run started: a save cut off before its rename leaves the file as it was), else the
        one it resumed from; None when there is none."""
        if self.save_path and Path(self.save_path).is_file() and Path(self.save_path).stat().st_mtime >= self.started:
            return Path(self.save_path)
        return Path(self.cfg.resume) if self.cfg.resume is not None else None

    def restore(self, path) -> None:
        """Loads the run saved at ``path`` (after checking its options against this run's)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--resume {path}: no such checkpoint")
        payload = load_checkpoint(path)  # CheckpointError (a ValueError) names the file
        extra = payload["extra"]
        state = extra.get("resume")
        if state is None or "optimizer" not in payload:
            raise ValueError(f"--resume {path}: this checkpoint holds no resumable state (it was not written by "
                             "sparse-engine train, or by a version before --resume)")
        if state.get("version") != VERSION:
            raise ValueError(f"--resume {path}: resumable state version {state.get('version')}, this version "
                             f"reads {VERSION}")
        saved = extra.get("args", {})
        for field in MUST_MATCH:
            if field in saved and not same_option(field, saved[field], getattr(self.cfg, field)):
                raise ValueError(f"--resume {path}: {_flag(field)} {getattr(self.cfg, field)!r} differs from the "
                                 f"checkpoint's {_flag(field)} {saved[field]!r}; a resumed run must use the "
                                 "checkpoint's settings (only --epochs may be increased)")
        if self.cfg.epochs < saved.get("epochs", 0):
            raise ValueError(f"--resume {path}: --epochs {self.cfg.epochs} is less than the checkpoint's --epochs "
                             f"{saved['epochs']} (--epochs may only be increased)")
        if (state["controller"] is None) != (self.controller is None):
            raise ValueError(f"--resume {path}: the checkpoint's controller state does not fit --algorithm "
                             f"{self.cfg.algorithm}")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.controller is not None:
            self.controller.load_state_dict(state["controller"])
        if self.recorder is not None and state["balance_records"] is not None:
            self.recorder.records = list(state["balance_records"])
        self.history = list(extra.get("history", []))
        self.epoch, self.batch, self.steps = int(state["epoch"]), int(state["batch"]), int(state["steps"])
        self.perm, self.running, self.stream = state["perm"], float(state["running"]), state.get("stream")
        epoch_len = self.batches * self.cfg.batch_size
        epoch_len = epoch_len if self.epoch_batches else min(epoch_len, self.n_train)
        if len(self.history) != self.epoch or (self.perm is not None and len(self.perm) != epoch_len):
            raise ValueError(f"--resume {path}: the saved position (epoch {self.epoch}, batch {self.batch}) does "
                             "not fit its history or this data set")
        set_rng_state(state["rng"], self.device)  # last: building the run has drawn from the generators

    @classmethod
    def start(cls, cfg, model, optimizer, controller, recorder, device, n_train: int, *, shuffle: bool = True,
              drop_last: bool = False, epoch_batches: int | None = None) -> "TrainProgress":
        """A new run's progress, or with ``cfg.resume`` the saved run's; checkpoints go to
        ``cfg.save`` (``cfg.resume`` when no --save is given)."""
        resume = getattr(cfg, "resume", None)
        if resume and not cfg.save:
            cfg = replace(cfg, save=resume)
        progress = cls(cfg, model, optimizer, controller, recorder, device, n_train, shuffle=shuffle,
                       drop_last=drop_last, epoch_batches=epoch_batches)
        if resume:
            progress.restore(resume)
        return progress

