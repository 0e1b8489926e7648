"""Topology controllers: dynamic sparse training algorithms as one small API.

    ctl = SET(model, optimizer, zeta=0.3, seed=0, callbacks=[recorder])
    for epoch in range(E):
        for batch in loader:
            loss.backward(); optimizer.step(); ctl.step()
        ctl.end_epoch()

Every controller works on every SparseWeight of the model (``model.modules()``), is
deterministic given ``seed``, and after each topology update calls each callback as
``cb(step: int, weights: dict[str, SparseWeight])`` (``step`` = optimizer steps so far).
Updates keep rows sorted and unique, rebuild the transposed index and remap the optimizer
state (see :func:`~sparse_engine.training.topology.rewire`).

Resuming: ``ctl.state_dict()`` holds everything a controller needs to continue bit for bit
(counters, its generator, schedule options, per-weight state such as DEEP R's signs or
Selfish-RNN's averages). Save it with the model's and the optimizer's between training steps,
after ``ctl.step()`` or ``ctl.end_epoch()`` (with Selfish-RNN's growth by gradient not between an
epoch's last step and ``end_epoch()``: that growth uses the last batch's gradient factors, which
are not saved). Load it into a controller built the same way on the reloaded model:
``model.load_state_dict(...)``, ``optimizer.load_state_dict(...)``, ``ctl.load_state_dict(...)``.
As for torch's LR schedulers, the saved schedule options win over the new controller's.
"""
from __future__ import annotations

import copy
import logging
import math
from typing import Callable, Iterable

import torch
from torch import nn

from .. import init as _init
from ..sparse import SparseWeight
from .density import sparse_weights
from .grad_factors import GradFactorRecorder
from .schedules import cosine_decay, cubic_density, narang_threshold
from .topology import (INIT_CHOICES, Remap, _compacted, global_magnitude_keep, gradient_growth, magnitude_keep,
                       random_empty, rewire, set_keep, threshold_keep)

__all__ = ["TopologyController", "SET", "RigL", "GradualMagnitudePruning", "DeepR"]

Callback = Callable[[int, dict], None]
_log = logging.getLogger("sparse_engine.training")


class TopologyController:
    """Base class: finds the sparse weights, holds the generator, the callbacks and the
    counters, and offers prune/grow helpers. Subclasses override ``_after_step`` and
    ``_after_epoch``."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, *, seed: int = 0,
                 callbacks: Iterable[Callback] = (), init="zero", init_scale: float = 0.1):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
        self.weights: dict[str, SparseWeight] = sparse_weights(model)
        if not self.weights:
            raise ValueError("model has no SparseWeight to update")
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not callable(cb):
                raise TypeError(f"callbacks must be callables cb(step, weights), got {type(cb).__name__}")
        if not (callable(init) or init in INIT_CHOICES):
            raise ValueError(f"init must be one of {INIT_CHOICES} or a callable, got {init!r}")
        self.model, self.optimizer = model, optimizer
        self.init, self.init_scale = init, float(init_scale)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.step_count = 0
        self.epoch = 0
        self.recorder: GradFactorRecorder | None = None

    # ------------------------------------------------------------------ driving
    def step(self) -> None:
        """Call after every ``optimizer.step()``."""
        self.step_count += 1
        self._after_step()

    def end_epoch(self) -> None:
        """Call at the end of every epoch."""
        self.epoch += 1
        self._after_epoch()

    def _after_step(self) -> None:
        pass

    def _after_epoch(self) -> None:
        pass

    # ------------------------------------------------------------------ helpers
    def _seed(self) -> int:
        return int(torch.randint(0, 2**62, (1,), generator=self.generator))

    def _notify(self) -> None:
        for cb in self.callbacks:
            cb(self.step_count, dict(self.weights))

    def _random_grow(self, weight: SparseWeight, n: int):
        seed, cols = self._seed(), weight.shape[1]
        return lambda rp, ci: random_empty(rp, ci, cols, n, seed)

    def _use_gradients(self, model: nn.Module) -> None:
        self.recorder = GradFactorRecorder(model, self.weights)
        missing = [n for n, w in self.weights.items() if not self.recorder.supports(w)]
        if missing:
            raise ValueError(f"gradient growth needs (G, X) factors for {missing}: their modules must be SparseLinear "
                             "or implement dense_grad_factors(name) (see sparse_engine.training.grad_factors)")

    def _gradient_grow(self, weight: SparseWeight, n: int):
        if self.recorder.is_global():  # data-parallel: the gradient of the global batch
            G, X, method, reduce = self.recorder.growth_inputs(weight, self.grad_options["method"],
                                                               self.grad_options["max_flops"])
            seed, kw = self._seed(), dict(self.grad_options, method=method)
            return lambda rp, ci: gradient_growth(rp, ci, G, X, n, seed=seed, reduce_grads=reduce, **kw)
        G, X = self.recorder.factors(weight)
        seed, kw = self._seed(), self.grad_options
        return lambda rp, ci: gradient_growth(rp, ci, G, X, n, seed=seed, **kw)

    def _set_grad_options(self, method: str, max_flops: float, sample_factor: int) -> None:
        if method not in ("auto", "exact", "sample"):
            raise ValueError(f"grad_method must be 'auto', 'exact' or 'sample', got {method!r}")
        if not (isinstance(sample_factor, int) and sample_factor >= 1):
            raise ValueError(f"sample_factor must be an int >= 1, got {sample_factor!r}")
        self.grad_options = dict(method=method, max_flops=max_flops, sample_factor=sample_factor)

    def _rewire(self, name: str, keep: torch.Tensor, grow=None, values=None) -> Remap:
        remap = rewire(self.weights[name], keep, grow, init=self.init, init_scale=self.init_scale,
                       generator=self.generator, optimizer=self.optimizer, values=values)
        self._on_remap(name, remap)
        return remap

    def _on_remap(self, name: str, remap: Remap) -> None:
        """Hook for subclasses holding their own per-entry state."""

    def close(self) -> None:
        """Removes the hooks this controller put on the model."""
        if self.recorder is not None:
            self.recorder.remove()

    # ------------------------------------------------------------------ state
    #: attributes holding a subclass's schedule and options: saved, and restored on load
    _options: tuple[str, ...] = ()
    #: options fixed when the controller is built (hooks, recorders): must match on load
    _fixed: tuple[str, ...] = ()

    def state_dict(self) -> dict:
        """Everything needed to continue bit for bit (a deep copy, safe to keep while training
        goes on; only tensors, numbers, strings, lists and dicts, so ``torch.load(...,
        weights_only=True)`` reads it). Keys: ``controller`` (class name), ``weights`` (their
        names), ``step_count``, ``epoch``, ``generator`` (the CPU generator's state), ``init``
        (None for a callable), ``init_scale``, ``options`` (the subclass's schedule and options),
        ``recorder`` (the gradient-factor recorder's settings, or None) and the subclass's own
        state (see each class)."""
        state = {"controller": type(self).__name__, "weights": list(self.weights),
                 "step_count": self.step_count, "epoch": self.epoch, "generator": self.generator.get_state(),
                 "init": None if callable(self.init) else self.init, "init_scale": self.init_scale,
                 "options": {k: getattr(self, k) for k in self._options if hasattr(self, k)},
                 "recorder": None if self.recorder is None else self.recorder.state_dict()}
        state.update(self._own_state())
        return copy.deepcopy(state)

    def load_state_dict(self, state: dict) -> None:
        """Restores :meth:`state_dict`'s output into a controller of the same class over a model
        with the same sparse weights (load the model's state first). ValueError when the
        controller class, the weights or a construction-time option differ."""
        if not isinstance(state, dict) or "controller" not in state:
            raise ValueError("state must be a dict from TopologyController.state_dict()")
        if state["controller"] != type(self).__name__:
            raise ValueError(f"state is of a {state['controller']} controller, not {type(self).__name__}")
        if list(state["weights"]) != list(self.weights):
            raise ValueError(f"state is of the sparse weights {list(state['weights'])}, this controller has "
                             f"{list(self.weights)}")
        for k in self._fixed:
            if state["options"].get(k) != getattr(self, k):
                raise ValueError(f"state has {k}={state['options'].get(k)!r}, this controller {k}={getattr(self, k)!r}"
                                 " (fixed when the controller is built)")
        if (state["recorder"] is None) != (self.recorder is None):
            raise ValueError("state and controller differ in whether they record gradient factors")
        state = copy.deepcopy(state)
        self.step_count, self.epoch = int(state["step_count"]), int(state["epoch"])
        self.generator.set_state(state["generator"])
        if state["init"] is not None:
            self.init = state["init"]
        self.init_scale = float(state["init_scale"])
        for k, v in state["options"].items():
            setattr(self, k, v)
        if self.recorder is not None:
            self.recorder.load_state_dict(state["recorder"])
        self._load_own_state(state)

    def _own_state(self) -> dict:
        """A subclass's per-weight state for :meth:`state_dict`."""
        return {}

    def _load_own_state(self, state: dict) -> None:
        """Restores what :meth:`_own_state` saved."""

    def _on_device(self, tensors: dict) -> dict:
        """``tensors`` (name -> tensor) moved to the devices of the weights of the same names."""
        return {n: t.to(self.weights[n].values.device) for n, t in tensors.items()}


# ============================================================================ SET
class SET(TopologyController):
    """Sparse Evolutionary Training (Mocanu et al. 2018). After each epoch every layer drops the
    fraction ``zeta`` of its positive weights nearest zero and, separately, of its negative
    weights nearest zero (exact zeros are always dropped, as in the reference code), then
    regrows the same number at uniformly random empty positions.

    ``epsilon``: None keeps the model's topology (SparseLinear is Erdos-Renyi with SET's
    epsilon=20 by default); a number re-draws every sparse weight as Erdos-Renyi(epsilon) with
    fresh values at construction (do it before the optimizer has state).
    ``init``: value of new weights, "zero" by default (Keras SET, Selfish-RNN); "normal" with
    init_scale=0.1 is the scipy SET code; "he_uniform"/"xavier_uniform" later SET code.
    ``rewire_every``: "epoch" (SET) or a number of optimizer steps (Zhang et al.'s MNIST script
    rewires every 50 batches, its unit of an "epoch")."""

    def __init__(self, model, optimizer, zeta: float = 0.3, epsilon: float | None = None, *, init="zero",
                 init_scale: float = 0.1, rewire_every="epoch", seed: int = 0, callbacks: Iterable[Callback] = ()):
        super().__init__(model, optimizer, seed=seed, callbacks=callbacks, init=init, init_scale=init_scale)
        if not 0.0 <= zeta <= 1.0:
            raise ValueError(f"zeta must be in [0, 1], got {zeta}")
        if not (rewire_every == "epoch" or (isinstance(rewire_every, int) and not isinstance(rewire_every, bool)
                                            and rewire_every > 0)):
            raise ValueError(f"rewire_every must be 'epoch' or a positive int, got {rewire_every!r}")
        self.zeta, self.rewire_every = float(zeta), rewire_every
        if epsilon is not None:
            for w in self.weights.values():
                rows, cols = w.shape
                nnz = int(round(_init.erdos_renyi_density(rows, cols, epsilon) * rows * cols))
                rp, ci = _init.random_pattern(rows, cols, nnz, self.generator)
                vals = _init.default_values(nnz, rows, w.values.dtype, self.generator)
                dev = w.values.device
                w.set_pattern(rp.to(dev), ci.to(dev), vals.to(dev), validate=False)

    def _after_step(self) -> None:
        if isinstance(self.rewire_every, int) and self.step_count % self.rewire_every == 0:
            self._rewire_all()

    def _after_epoch(self) -> None:
        if self.rewire_every == "epoch":
            self._rewire_all()

    def _rewire_all(self) -> None:
        for name, w in self.weights.items():
            keep = set_keep(w.values, self.zeta)
            n = w.nnz - int(keep.sum())
            self._rewire(name, keep, self._random_grow(w, n))
        self._notify()


# ============================================================================ RigL
class RigL(TopologyController):
    """RigL (Evci et al. 2020). Every ``update_every`` steps until ``end_step``, each layer drops
    floor(f_t * nnz) weights of smallest |w| and grows as many at the empty positions of largest
    |gradient|, f_t = update_fraction/2 (1 + cos(pi t / end_step)). New weights start at
    ``init`` (zero, as in RigL). The gradient comes from the last batch's factors (see
    :mod:`~sparse_engine.training.grad_factors`), recorded only before update steps;
    ``grad_method``/``max_flops``/``sample_factor``: see :func:`~sparse_engine.training.topology.gradient_growth`.
    ``state_dict()``: the common keys (``recorder``: whether it is armed for the next batch),
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
        self.recorder.armed = self._is_update(1)

    def _is_update(self, t: int) -> bool:
        return t % self.update_every == 0 and t < self.end_step

    def fraction(self, t: int) -> float:
        return cosine_decay(t, self.end_step, self.update_fraction, 0.0)

    def _after_step(self) -> None:
        t = self.step_count
        if self._is_update(t):
            f = self.fraction(t)
            for name, w in self.weights.items():
                n = int(f * w.nnz)
                grow = self._gradient_grow(w, n)
                self._rewire(name, magnitude_keep(w.values, n), grow)
            self.recorder.clear()
            self._notify()
        self.recorder.new_step()
        self.recorder.armed = self._is_update(t + 1)


# ============================================================= gradual pruning
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
        if not 0.0 <= final_density <= 1.0:
            raise ValueError(f"final_density must be in [0, 1], got {final_density}")
        if not (isinstance(frequency, int) and frequency > 0):
            raise ValueError(f"frequency must be a positive int, got {frequency!r}")
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
        elif q is not None or requantile:
            raise ValueError("q and requantile belong to schedule='narang'")
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

    def _is_update(self, t: int) -> bool:
        return self.start_step <= t <= self.end_step and ((t - self.start_step) % self.frequency == 0
                                                          or t == self.end_step)

    def _after_step(self) -> None:
        t = self.step_count
        if not self._is_update(t):
            return
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


# ============================================================================ DEEP R
class DeepR(TopologyController):
    """DEEP R rewiring (Bellec et al. 2018), with Zhang et al. 2023's variant as an option.

    Each connection has a fixed sign s (its sign when it was first born; a random sign for a
    position that never lived) and is dormant when its value would have the opposite sign
    (w * s < 0). A rewiring removes the dormant connections and activates as many at uniformly
    random empty positions, with their fixed sign and value s * |init| (init "zero": w = 0), so
    the number of connections stays the same.

    * ``rule="bellec"`` (default; the published rule, Algorithm 1 of the paper): after every
      optimizer step (which does the gradient part, -lr dE/dw), each connection gets the L1 and
      noise terms w <- w - lr * l1 * s + sqrt(2 * lr * temperature) * N(0, 1), lr the learning
      rate of the parameter's group at that step; the rewiring runs after every step
      (``rewire_every=1``).
    * ``rule="zhang"`` (Zhang et al.'s public code, MNIST/SMS/Gesture/Mackey-Glass rewiring
      scripts): once per epoch (``rewire_every="epoch"``), before the rewiring, each connection
      gets w <- w + noise * N(0, 1) - l1 * s, not scaled by the learning rate; in between, the
      optimizer trains the values freely.

    ``rewire_every``: None for the rule's own (1 for "bellec", "epoch" for "zhang"), or "epoch"
    or a number of steps. Signs of dead positions are kept in a sorted key list (memory
    O(positions that died)); a rewiring with nothing dormant changes nothing and calls no
    callback, unless it is the epoch's. The learning rate is read from the optimizer's param
    groups at every step, so an LR scheduler (or ``optimizer.load_state_dict``) is followed.

    ``state_dict()``: the common keys, options ``rule``, ``l1``, ``temperature``, ``noise``,
    ``rewire_every``, and ``sign``, ``dead_keys``, ``dead_sign`` (name -> tensor) and
    ``device_generators`` (device -> the state of the generator drawing the noise there, for
    weights off the CPU).
    """

    _options = ("rule", "l1", "temperature", "noise", "rewire_every")
    RULES = ("bellec", "zhang")

    def __init__(self, model, optimizer, *, rule: str = "bellec", l1: float = 1e-5, temperature: float | None = None,
                 noise: float | None = None, rewire_every=None, init="zero", init_scale: float = 0.1, seed: int = 0,
                 callbacks: Iterable[Callback] = ()):
        super().__init__(model, optimizer, seed=seed, callbacks=callbacks, init=init, init_scale=init_scale)
        if rule not in self.RULES:
            raise ValueError(f"rule must be one of {self.RULES}, got {rule!r}")
        if optimizer is None and rule == "bellec":
            raise ValueError("DeepR rule='bellec' needs the optimizer (its learning rate scales the L1 and noise terms)")
        if rule == "bellec" and noise is not None:
            raise ValueError("noise is the per-rewiring noise std of rule='zhang'; rule='bellec' takes temperature "
                             "(noise std sqrt(2 * lr * temperature))")
        if rule == "zhang" and temperature is not None:
            raise ValueError("temperature belongs to rule='bellec'; rule='zhang' takes noise (the std per rewiring)")
        temperature = 0.0 if temperature is None else temperature
        noise = 0.0 if noise is None else noise
        for k, v in (("l1", l1), ("temperature", temperature), ("noise", noise)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
                raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")
        if rewire_every is None:
            rewire_every = 1 if rule == "bellec" else "epoch"
        if not (rewire_every == "epoch" or (isinstance(rewire_every, int) and not isinstance(rewire_every, bool)
                                            and rewire_every > 0)):
            raise ValueError(f"rewire_every must be 'epoch' or a positive int, got {rewire_every!r}")
        self.rule, self.rewire_every = rule, rewire_every
        self.l1, self.temperature, self.noise = float(l1), float(temperature), float(noise)
        self.sign: dict[str, torch.Tensor] = {}
        self._dead_keys: dict[str, torch.Tensor] = {}
        self._dead_sign: dict[str, torch.Tensor] = {}
        for name, w in self.weights.items():
            s = torch.sign(w.values.detach()).to(torch.int8)
            zero = s == 0
            s[zero] = self._random_signs(int(zero.sum())).to(s.device)
            self.sign[name] = s
            self._dead_keys[name] = torch.empty(0, dtype=torch.int64, device=s.device)
            self._dead_sign[name] = torch.empty(0, dtype=torch.int8, device=s.device)
        self._device_generators: dict[torch.device, torch.Generator] = {}

    def _own_state(self) -> dict:
        return {"sign": dict(self.sign), "dead_keys": dict(self._dead_keys), "dead_sign": dict(self._dead_sign),
                "device_generators": {str(d): g.get_state() for d, g in self._device_generators.items()}}

    def _load_own_state(self, state: dict) -> None:
        self.sign = self._on_device(state["sign"])
        self._dead_keys = self._on_device(state["dead_keys"])
        self._dead_sign = self._on_device(state["dead_sign"])
        self._device_generators = {}
        for d, g_state in state["device_generators"].items():
            g = torch.Generator(device=torch.device(d))
            g.set_state(g_state)
            self._device_generators[torch.device(d)] = g

    def _generator_on(self, device: torch.device) -> torch.Generator:
        """The controller's generator on CPU; elsewhere one generator per device, seeded once from
        it, so the per-step noise (nnz numbers) is drawn where the weights are."""
        if device.type == "cpu":
            return self.generator
        if device not in self._device_generators:
            self._device_generators[device] = torch.Generator(device=device).manual_seed(self._seed())
        return self._device_generators[device]

    def _random_signs(self, n: int) -> torch.Tensor:
        return (torch.randint(0, 2, (n,), generator=self.generator) * 2 - 1).to(torch.int8)

    def dead(self, name: str) -> torch.Tensor:
        """Bool mask of the connections of weight ``name`` whose sign has flipped."""
        w = self.weights[name]
        return w.values.detach() * self.sign[name].to(w.values.dtype) < 0

    def _add_terms(self, name: str, w: SparseWeight, l1: float, std: float) -> None:
        """w <- w - l1 * s + std * N(0, 1) over the connections of weight ``name``."""
        s = self.sign[name].to(w.values.dtype)
        noise = torch.randn(w.nnz, generator=self._generator_on(w.values.device), dtype=w.values.dtype,
                            device=w.values.device)
        w.values.add_(s * -l1 + noise * std)

    def _after_step(self) -> None:
        if self.rule == "bellec":
            # the groups are looked up now: optimizer.load_state_dict replaces them, schedulers change lr
            lrs = {id(p): g["lr"] for g in self.optimizer.param_groups for p in g["params"]}
            with torch.no_grad():
                for name, w in self.weights.items():
                    lr = lrs.get(id(w.values), 0.0)
                    self._add_terms(name, w, lr * self.l1, math.sqrt(2.0 * lr * self.temperature))
        if isinstance(self.rewire_every, int) and self.step_count % self.rewire_every == 0:
            self._rewire_all()

    def _after_epoch(self) -> None:
        if self.rewire_every == "epoch":
            self._rewire_all()

    def _rewire_all(self) -> None:
        if self.rule == "zhang":
            with torch.no_grad():
                for name, w in self.weights.items():
                    self._add_terms(name, w, self.l1, self.noise)
        changed = False
        for name, w in self.weights.items():
            dev = w.values.device
            dead = self.dead(name)
            n = int(dead.sum())
            if n == 0:  # nothing dormant: no update (Bellec's rule checks after every step)
                continue
            changed = True
            rows, cols = w.shape
            row, col, _ = w.coo()
            keys_dead = (row * cols + col)[dead]
            sign_dead = self.sign[name][dead]
            grow_seed = self._seed()
            nr, nc = random_empty(*_compacted(w, ~dead), cols, n, grow_seed)
            new_keys = nr * cols + nc.long()
            # dead record (sorted keys of positions that lived and died, with their signs) plus
            # the ones that die now; regrown positions take their stored sign and leave it
            keys = torch.cat([self._dead_keys[name], keys_dead])
            signs = torch.cat([self._dead_sign[name], sign_dead])
            order = torch.argsort(keys)
            keys, signs = keys[order], signs[order]
            pos = torch.searchsorted(keys, new_keys).clamp(max=max(keys.numel() - 1, 0))
            found = (keys[pos] == new_keys) if keys.numel() else torch.zeros(n, dtype=torch.bool, device=dev)
            new_sign = self._random_signs(n).to(dev)
            new_sign[found] = signs[pos[found]]
            mag = torch.as_tensor(self._init_magnitudes(w, n)).to(dev)
            values = new_sign.to(w.values.dtype) * mag.abs()
            stay = torch.ones(keys.numel(), dtype=torch.bool, device=dev)
            stay[pos[found]] = False
            self._dead_keys[name], self._dead_sign[name] = keys[stay], signs[stay]
            self._pending_sign = new_sign
            self._rewire(name, ~dead, lambda rp, ci, nr=nr, nc=nc: (nr, nc), values=values)
        if changed or self.rewire_every == "epoch":  # callbacks: after each update, and at each epoch's rewiring
            self._notify()

    def _init_magnitudes(self, w: SparseWeight, n: int) -> torch.Tensor:
        from .topology import new_values
        return new_values(n, w, self.init, init_scale=self.init_scale, generator=self.generator)

    def _on_remap(self, name: str, remap: Remap) -> None:
        s = remap.apply(self.sign[name])
        s[remap.new] = self._pending_sign.to(s.device)
        self.sign[name] = s
