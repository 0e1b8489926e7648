"""What a run builds from its options: its recipe (:func:`run_recipe`), its data
(:func:`load_run_task`), its model (:func:`sequence_model`), its loss (:func:`sequence_loss`,
:func:`softmax_score_loss`) and its scoring (:func:`evaluate`). Written once here, for
:func:`~sparse_engine.runs.train` to build a run and for ``analyze --lesion`` to rebuild a
trained one from the options its checkpoint saved."""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from ..data.tasks import load_task
from ..models import SequenceModel
from ..training.recipes import get_recipe


def run_recipe(options: Mapping):
    """The :class:`~sparse_engine.training.recipes.Recipe` a run follows, or None. ``options``:
    a run's options as its checkpoint saves them (``asdict`` of its :class:`TrainConfig`)."""
    return get_recipe(options["recipe"]) if options.get("recipe") else None


def load_run_task(options: Mapping, recipe=None):
    """(train, test, meta) of :func:`~sparse_engine.data.tasks.load_task` for a run's options
    (as :func:`run_recipe`), with its recipe's variant of the data."""
    return load_task(options["task"], options["data"], options["seed"], label_column=options.get("label_column"),
                     variant=recipe.variant if recipe is not None else None)


def sequence_model(options: Mapping, meta: dict, recompute_every: int | None = None,
                   saved_dtype: torch.dtype | None = None) -> SequenceModel:
    """The (freshly initialised) :class:`~sparse_engine.models.SequenceModel` of a run's options
    (as :func:`run_recipe`) for its task's ``meta``; ``recompute_every``, ``saved_dtype``: what the
    run's memory plan chose (:func:`~sparse_engine.runs.memory_run.plan_training`)."""
    return SequenceModel(options["model"], meta["n_in"], meta["n_out"], options["hidden"], options["layers"],
                         options["density"], options["sparse"], meta["kind"], meta.get("vocab"),
                         readout=meta.get("readout"), recompute_every=recompute_every, saved_dtype=saved_dtype)


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
