"""RigL, Rigged Lottery (Evci et al. 2020): magnitude pruning, growth by gradient, cosine-decayed fraction."""
from __future__ import annotations

from typing import Iterable

from ..schedules import cosine_decay
from ..topology import magnitude_keep
from .base import Callback, TopologyController

__all__ = ["RigL"]


class RigL(TopologyController):
    """RigL (Evci et al. 2020). Every ``update_every`` steps until ``end_step``, each layer drops
    floor(f_t * nnz) weights of smallest |w| and grows as many at the empty positions of largest
    |gradient|, f_t = update_fraction/2 (1 + cos(pi t / end_step)). New weights start at
    ``init`` (zero, as in RigL). The gradient comes from the last batch's factors (see
    :mod:`~sparse_engine.training.grad_factors`), recorded only before update steps;
    ``grad_method``/``max_flops``/``sample_factor``: see :func:`~sparse_engine.training.topology.gradient_growth`.
    A model sharded by ``shard_rows`` gets the unsharded update, each rank its rows of it
    (docs/distributed.md). ``state_dict()``: the common keys (``recorder``: whether it is armed for the next batch),
    options ``end_step``, ``update_fraction``, ``update_every``, ``grad_options``."""

    _options = ("end_step", "update_fraction", "update_every", "grad_options")

    def __init__(self, model, optimizer, *, end_step: int, update_fraction: float = 0.3, update_every: int = 100,
                 init="zero", init_scale: float = 0.1, grad_method: str = "auto", max_flops: float = 2.0 ** 34,
                 sample_factor: int = 8, seed: int = 0, callbacks: Iterable[Callback] = ()):
        super().__init__(model, optimizer, seed=seed, callbacks=callbacks, init=init, init_scale=init_scale)
        self._set_grad_options(grad_method, max_flops, sample_factor)
        if not 0.0 <= update_fraction <= 1.0:
            raise ValueError(f"update_fraction must be in [0, 1], got {update_fraction}")
        if not (isinstance(update_every, int) and update_every > 0):
            raise ValueError(f"update_every must be a positive int, got {update_every!r}")
        if not (isinstance(end_step, int) and end_step > 0):
            raise ValueError(f"end_step must be a positive int, got {end_step!r}")
        self.end_step, self.update_fraction, self.update_every = end_step, float(update_fraction), update_every
        self._use_gradients(model)
        self.recorder.armed = self._records(1)

    @property
    def rewire_every(self) -> int:
        """The schedule's step: ``update_every``."""
        return self.update_every

    def _due(self, t: int) -> bool:
        return t % self.update_every == 0 and t < self.end_step

    def fraction(self, t: int) -> float:
        return cosine_decay(t, self.end_step, self.update_fraction, 0.0)

    def _update(self) -> None:
        f = self.fraction(self.step_count)
        for name, w in self.weights.items():
            shard = self.shards.get(name)  # sharded by rows: the whole matrix's update, this rank's rows
            nnz = w.nnz if shard is None else shard.total(w.nnz)
            n = int(f * nnz)
            grow = self._gradient_grow(w, n, shard)
            if shard is None:
                self._rewire(name, magnitude_keep(w.values, n), grow)
            else:
                self._rewire(name, shard.magnitude_keep(w, n), grow, values=self._sharded_values(w, shard, nnz))
        self.recorder.clear()
        self._notify()
