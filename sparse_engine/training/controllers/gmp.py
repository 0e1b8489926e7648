"""Gradual magnitude pruning without regrowth: Zhu and Gupta's cubic schedule, Narang et al.'s ramped threshold."""
from __future__ import annotations

import logging
import math
from typing import Iterable

import torch

from ...sparse import SparseWeight
from ..schedules import cubic_density, narang_threshold
from ..topology import global_magnitude_keep, magnitude_keep, threshold_keep
from .base import Callback, TopologyController, check_int, check_number

__all__ = ["GradualMagnitudePruning"]

_log = logging.getLogger("sparse_engine.training")


class GradualMagnitudePruning(TopologyController):
    """Gradual magnitude pruning, no regrowth. Every ``frequency`` steps from ``start_step`` to
    ``end_step`` (and at ``end_step``):

    * schedule="cubic" (Zhu and Gupta 2017): each layer is pruned by |w| to
      density d_t = d_f + (d_i - d_f)(1 - (t - start)/(end - start))^3, d_i its density at
      construction (or ``initial_density``); scope="global" prunes the same total with one
      magnitude threshold across layers.
    * schedule="narang" (Narang et al. 2017): weights with |w| < eps_t are removed, eps_t the
      ramped threshold of :func:`~sparse_engine.training.schedules.narang_threshold`. q, the |w|
      that would leave ``final_density``, is taken as the paper takes it: from the weights when
      pruning starts (the first update, at ``start_step``: the model has trained until then), or
      given as ``q`` (a number, or name -> number) read off a trained model. Option
      ``requantile=True`` recomputes q from the current weights at every update, as Zhang et
      al.'s public code does (Pruning_Algorithm is called with the current weights).
      A threshold schedule does not guarantee the density: :attr:`reached` holds each layer's
      density after the last update, and a log line (logger ``sparse_engine.training``) says
      it beside the target.

    ``state_dict()``: the common keys, options ``final_density``, ``start_step``, ``end_step``,
    ``frequency``, ``schedule``, ``scope``, ``initial`` (each layer's initial density), ``reached``
    and, for "narang", ``ramp_step``, ``requantile`` and ``q`` (each layer's q; None until pruning
    starts).
    """

    _options = ("final_density", "start_step", "end_step", "frequency", "schedule", "scope", "initial", "ramp_step",
                "q", "requantile", "reached")

    def __init__(self, model, optimizer, *, final_density: float, end_step: int, start_step: int = 0,
                 frequency: int = 100, initial_density: float | None = None, schedule: str = "cubic",
                 ramp_step: int | None = None, q=None, requantile: bool = False, scope: str = "layer",
                 seed: int = 0, callbacks: Iterable[Callback] = ()):
        super().__init__(model, optimizer, seed=seed, callbacks=callbacks)
        check_number("final_density", final_density, 0.0, 1.0)
        check_int("frequency", frequency, 1)
        check_int("start_step", start_step, 0)
        check_int("end_step", end_step, 1)
        if not end_step > start_step >= 0:
            raise ValueError(f"need end_step > start_step >= 0, got {start_step}, {end_step}")
        if schedule not in ("cubic", "narang"):
            raise ValueError(f"schedule must be 'cubic' or 'narang', got {schedule!r}")
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
        if initial_density is not None and not final_density <= initial_density <= 1.0:
            raise ValueError(f"initial_density must be in [final_density, 1], got {initial_density}")
        self.final_density, self.start_step, self.end_step = float(final_density), start_step, end_step
        self.frequency, self.schedule, self.scope = frequency, schedule, scope
        self.initial = {n: (initial_density if initial_density is not None else w.density)
                        for n, w in self.weights.items()}
        if schedule == "narang":
            if ramp_step is None or not start_step < ramp_step <= end_step:
                raise ValueError(f"schedule='narang' needs start_step < ramp_step <= end_step, got {ramp_step}")
            self.ramp_step, self.requantile = ramp_step, bool(requantile)
            self.q = self._given_q(q)
        elif q is not None or requantile or ramp_step is not None:
            raise ValueError("ramp_step, q and requantile belong to schedule='narang'")
        if initial_density is None and all(w.density <= final_density for w in self.weights.values()):
            raise ValueError(f"final_density {final_density} is not below the density of any sparse weight "
                             f"({', '.join(f'{n} {w.density:.4g}' for n, w in self.weights.items())}): gradual "
                             "pruning only removes weights")
        self.reached: dict[str, float] = {}

    def _given_q(self, q) -> dict | None:
        """``q`` as name -> float, or None (taken from the weights when pruning starts)."""
        if q is None:
            return None
        if isinstance(q, dict):
            if set(q) != set(self.weights):
                raise ValueError(f"q must give a number for each sparse weight {sorted(self.weights)}, got {sorted(q)}")
            values = {n: q[n] for n in self.weights}
        else:
            values = {n: q for n in self.weights}
        for n, v in values.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
                raise ValueError(f"q must be a finite number >= 0 (a |w| of a trained model), got {v!r} for {n}")
        return {n: float(v) for n, v in values.items()}

    def _quantile(self, w: SparseWeight) -> float:
        """Smallest |w| that is kept when the layer is pruned to final_density."""
        rows, cols = w.shape
        n_prune = w.nnz - int(round(self.final_density * rows * cols))
        if n_prune <= 0 or w.nnz == 0:
            return 0.0
        mags = w.values.detach().abs()
        if n_prune >= w.nnz:
            return float(mags.max()) * 2
        if mags.device.type == "cpu":
            return float(torch.kthvalue(mags, n_prune + 1).values)
        return float(torch.sort(mags).values[n_prune])  # CUDA kthvalue runs one block per slice

    def target_density(self, name: str, t: int) -> float:
        return cubic_density(t, self.start_step, self.end_step, self.initial[name], self.final_density)

    @property
    def rewire_every(self) -> int:
        """The schedule's step: ``frequency`` (from ``start_step``, and at ``end_step``)."""
        return self.frequency

    def _due(self, t: int) -> bool:
        return self.start_step <= t <= self.end_step and ((t - self.start_step) % self.frequency == 0
                                                          or t == self.end_step)

    def _update(self) -> None:
        t = self.step_count
        if self.schedule == "narang":
            if self.q is None or self.requantile:
                self.q = {n: self._quantile(w) for n, w in self.weights.items()}
            for name, w in self.weights.items():
                eps = narang_threshold(t, self.q[name], self.start_step, self.ramp_step, self.end_step, self.frequency)
                self._rewire(name, threshold_keep(w.values, eps))
        else:
            excess, target = {}, {}
            for name, w in self.weights.items():
                rows, cols = w.shape
                target[name] = int(round(self.target_density(name, t) * rows * cols))
                excess[name] = max(0, w.nnz - target[name])
            if self.scope == "global":
                names = list(self.weights)
                total = sum(self.weights[n].nnz for n in names) - sum(target.values())
                keeps = global_magnitude_keep([self.weights[n].values for n in names], max(0, total))
                for name, keep in zip(names, keeps):
                    self._rewire(name, keep)
            else:
                for name, w in self.weights.items():
                    self._rewire(name, magnitude_keep(w.values, excess[name]))
        if t == self.end_step:
            self.reached = {n: w.density for n, w in self.weights.items()}
            for n, d in self.reached.items():
                _log.info("gradual pruning (%s) ended: %s at density %.4f, target %.4f", self.schedule, n, d,
                          self.final_density)
        self._notify()
