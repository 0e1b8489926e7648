"""RigL, Rigged Lottery (Evci et al. 2020): magnitude pruning, growth by gradient, cosine-decayed fraction."""
from __future__ import annotations

from typing import Iterable

from ..schedules import cosine_decay
from ..topology import magnitude_keep
from .base import Callback, TopologyController, check_int, check_number

__all__ = ["RigL"]


class RigL(TopologyController):
    """RigL (Evci et al. 2020). Every ``update_every`` steps until ``end_step``, each layer drops
    floor(f_t * nnz) weights of smallest |w| and grows as many at the empty positions of largest
    |gradient| (the just-dropped ones included), f_t = update_fraction/2 (1 + cos(pi t / end_step)).
    New weights start at ``init`` (zero, as in RigL); a weight dropped and grown again in the same
    update keeps its value and optimizer state, as RigL's code (``reinit_when_same=False``; its mask
    goes 1 -> 0 -> 1); ``reset_regrown=True`` starts it afresh like any new weight.

    An update iteration takes no gradient step (Algorithm 1: update the connections, else
    theta <- theta - alpha grad; the code's ``cond(mask_update, ..., apply_gradients)``): the
    controller hooks ``optimizer.step`` (``register_step_pre_hook``), runs the update there, before
    the step, so the drop ranks the weights as the batch found them, then clears every gradient of
    the optimizer's parameters, so the step leaves them and their state alone. The training loop
    stays ``optimizer.step(); ctl.step()`` (without an optimizer, or when a step is skipped, as
    GradScaler does on an overflow, ``ctl.step()`` runs the update). ``step_on_update=True`` takes the
    gradient step too (the earlier behaviour here). Unlike the code, an update iteration counts as a
    step of the schedule (``end_step`` and ``update_every`` count batches).

    The gradient comes from the last batch's factors (see :mod:`~sparse_engine.training.grad_factors`),
    recorded only before update steps. ``grad_method``: "exact" (RigL: the largest |gradient| over
    every empty position, computed tile by tile, rows*cols*M multiply-adds an update), "auto" or
    "sample" (candidates drawn at random, an approximation for layers where even the tiles are too
    many: see :func:`~sparse_engine.training.topology.gradient_growth`; ``max_flops``/``sample_factor``).
    A model sharded by ``shard_rows`` gets the unsharded update, each rank its rows of it
    (docs/distributed.md). ``state_dict()``: the common keys (``recorder``: whether it is armed for the next batch),
    options ``end_step``, ``update_fraction``, ``update_every``, ``grad_options``, ``reset_regrown``,
    ``step_on_update`` (a state saved before they existed loads as the behaviour then: True, True)."""

    _options = ("end_step", "update_fraction", "update_every", "grad_options", "reset_regrown", "step_on_update")

    def __init__(self, model, optimizer, *, end_step: int, update_fraction: float = 0.3, update_every: int = 100,
                 init="zero", init_scale: float = 0.1, reset_regrown: bool = False, step_on_update: bool = False,
                 grad_method: str = "exact", max_flops: float = 2.0 ** 34, sample_factor: int = 8, seed: int = 0,
                 callbacks: Iterable[Callback] = ()):
        super().__init__(model, optimizer, seed=seed, callbacks=callbacks, init=init, init_scale=init_scale)
        self._set_grad_options(grad_method, max_flops, sample_factor)
        check_number("update_fraction", update_fraction, 0.0, 1.0)
        check_int("update_every", update_every, 1)
        check_int("end_step", end_step, 1)
        for name, v in (("reset_regrown", reset_regrown), ("step_on_update", step_on_update)):
            if not isinstance(v, bool):
                raise ValueError(f"{name} must be True or False, got {v!r}")
        self.end_step, self.update_fraction, self.update_every = end_step, float(update_fraction), update_every
        self.reset_regrown, self.step_on_update = reset_regrown, step_on_update
        self._updated_at = 0  # the step whose update ran in the optimizer's pre-hook
        self._use_gradients(model)
        self.recorder.armed = self._records(1)
        self._hook = None if optimizer is None else optimizer.register_step_pre_hook(self._before_optimizer_step)

    @property
    def rewire_every(self) -> int:
        """The schedule's step: ``update_every``."""
        return self.update_every

    def _due(self, t: int) -> bool:
        return t % self.update_every == 0 and t < self.end_step and t != self._updated_at

    def fraction(self, t: int) -> float:
        return cosine_decay(t, self.end_step, self.update_fraction, 0.0)

    def _before_optimizer_step(self, optimizer, args, kwargs) -> None:
        """An update iteration: the update now, and no gradient step (the gradients cleared)."""
        t = self.step_count + 1
        if self.step_on_update or not self._due(t):
            return
        self.step_count = t  # the update of step t (its fraction, the callbacks' step)
        try:
            self._update()
        finally:
            self.step_count = t - 1
        self._updated_at = t
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None

    def _update(self) -> None:
        f = self.fraction(self.step_count)
        for name, w in self.weights.items():
            shard = self.shards.get(name)  # sharded by rows: the whole matrix's update, this rank's rows
            nnz = w.nnz if shard is None else shard.total(w.nnz)
            n = int(f * nnz)
            grow = self._gradient_grow(w, n, shard)
            keep = magnitude_keep(w.values, n) if shard is None else shard.magnitude_keep(w, n)
            # (sharded: a regrown position keeps its value, so only the new ones are drawn)
            values = None if shard is None else self._sharded_values(w, shard, nnz)
            self._rewire(name, keep, grow, values=values, keep_regrown=not self.reset_regrown)
        self.recorder.clear()
        self._notify()

    def _load_own_state(self, state: dict) -> None:
        options = state["options"]
        for k in ("reset_regrown", "step_on_update"):  # saved before these options: the behaviour then
            if k not in options:
                setattr(self, k, True)
        self._updated_at = 0

    def close(self) -> None:
        """Removes the hooks this controller put on the model and the optimizer."""
        super().close()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
