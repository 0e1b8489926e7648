"""Checkpoints written atomically and reloaded bit-exactly.

A checkpoint is one ``torch.save`` file holding the model's and (optionally) the optimizer's
``state_dict`` plus any extra picklable data. It is written to a temporary file in the same
directory, flushed to disk and renamed over the target, so a crash never leaves a torn file.
Sparse weights may hold a different nnz than a freshly built model: loading resizes them.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

FORMAT = "sparse-engine-checkpoint-v1"


def save_checkpoint(path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **extra) -> Path:
    """Atomically writes model (and optimizer) state and ``extra`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "model": model.state_dict(), "extra": extra}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path, model: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
                    map_location="cpu") -> dict:
    """Reads a checkpoint; loads it into ``model``/``optimizer`` when given. Returns the payload."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    payload = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a sparse-engine checkpoint (format {FORMAT})")
    if model is not None:
        model.load_state_dict(payload["model"])
    if optimizer is not None:
        if "optimizer" not in payload:
            raise ValueError(f"{path} holds no optimizer state")
        optimizer.load_state_dict(payload["optimizer"])
    return payload
