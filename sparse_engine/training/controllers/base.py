"""The base of every topology controller: finds the sparse weights, holds the generator, the
callbacks and the counters, decides when an update runs (one schedule), runs each layer's update
as one :func:`~sparse_engine.training.topology.rewire` call, and saves and restores all of it.

    ctl = SET(model, optimizer, zeta=0.3, seed=0, callbacks=[recorder])
    for epoch in range(E):
        for batch in loader:
            loss.backward(); optimizer.step(); ctl.step()
        ctl.end_epoch()

Every controller works on every SparseWeight of the model (``model.modules()``), is
deterministic given ``seed``, and after each topology update calls each callback as
``cb(step: int, weights: dict[str, SparseWeight])`` (``step`` = optimizer steps so far).
Updates keep rows sorted and unique, rebuild the transposed index and remap the optimizer
state and the controller's own per-entry state (see :func:`~sparse_engine.training.topology.rewire`).

The schedule: ``rewire_every`` is "epoch" (:meth:`~TopologyController._update` at ``end_epoch``) or
a number of optimizer steps (at ``step``); :meth:`~TopologyController._due` says whether the update
runs at a given step or epoch (every ``rewire_every``, or a window a subclass narrows it to).

Resuming: ``ctl.state_dict()`` holds everything a controller needs to continue bit for bit
(counters, its generator, schedule options, per-weight state such as DEEP R's signs or
Selfish-RNN's averages). Save it with the model's and the optimizer's between training steps,
after ``ctl.step()`` or ``ctl.end_epoch()`` (with Selfish-RNN's growth by gradient not between an
epoch's last step and ``end_epoch()``: that growth uses the last batch's gradient factors, which
are not saved). To resume, build the model, the optimizer and the controller the same way, then
load their states: ``model.load_state_dict(...)``, ``optimizer.load_state_dict(...)``,
``ctl.load_state_dict(...)`` (in that order, after the controller is built: ``SET(epsilon=...)``
draws new weights when built, and the model's state replaces them).
As for torch's LR schedulers, the saved schedule options win over the new controller's.
"""
from __future__ import annotations

import copy
import math
import numbers
import warnings
from typing import Callable, Iterable

import torch
from torch import nn

from ...sparse import SparseWeight
from ..density import sparse_weights
from ..grad_factors import GradFactorRecorder
from ..topology import (INIT_CHOICES, GradientGrowth, RandomGrowth, Remap, _Probe, new_values, rewire,
                        sharded_gradient_growth)

__all__ = ["TopologyController", "Callback"]

Callback = Callable[[int, dict], None]

#: exact growth by gradient warns (once) above this many times ``max_flops`` an update (2^34: about
#: a second on two CPU cores)
EXACT_GROWTH_WARN_FACTOR = 16


def check_int(name: str, value, least: int | None = 0) -> int:
    """``int(value)``, or ValueError naming ``name`` unless it is an integer (numpy's too, not a
    bool) >= ``least``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (least is not None and value < least):
        raise ValueError(f"{name} must be an int{'' if least is None else f' >= {least}'}, got {value!r}")
    return int(value)


def check_number(name: str, value, low: float = 0.0, high: float = math.inf) -> float:
    """``float(value)``, or ValueError naming ``name`` unless it is a real number (numpy's too, not
    a bool) in [low, high] (NaN never is; ``high`` inf: finite numbers >= low)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high \
            or value == math.inf:
        within = f"in [{low:g}, {high:g}]" if high < math.inf else f"a finite number >= {low:g}"
        raise ValueError(f"{name} must be {'a number ' if high < math.inf else ''}{within}, got {value!r}")
    return float(value)


def check_rewire_every(value) -> str | int:
    """``value`` when it is "epoch" or a positive int, else ValueError."""
    if not (value == "epoch" or (isinstance(value, int) and not isinstance(value, bool) and value > 0)):
        raise ValueError(f"rewire_every must be 'epoch' or a positive int, got {value!r}")
    return value


class TopologyController:
    """Base class. A subclass sets :attr:`rewire_every` (and narrows :meth:`_due` if its updates
    run in a window), implements :meth:`_update` (the keep masks and growth of every layer, each
    layer through :meth:`_rewire`), and may override :meth:`_after_step` / :meth:`_after_epoch`
    (work that is not an update), :meth:`_entry_state` (its own per-entry state, moved with the
    weights) and the state hooks (:attr:`_options`, :meth:`_own_state`, :meth:`_load_own_state`)."""

    #: when :meth:`_update` runs: "epoch" (at ``end_epoch``) or every that many optimizer steps
    rewire_every: str | int = "epoch"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, *, seed: int = 0,
                 callbacks: Iterable[Callback] = (), init="zero", init_scale: float = 0.1):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
        self.weights: dict[str, SparseWeight] = sparse_weights(model)
        if not self.weights:
            raise ValueError("model has no SparseWeight to update")
        #: the weights split by rows across ranks (``shard_rows``), by name: their row shards
        #: (sparse_engine/distributed/topology.py), for the updates that decide over the whole matrix
        shards = {f"{prefix}.{name}" if prefix else name: shard for prefix, m in model.named_modules()
                  for name, shard in getattr(m, "_row_shards", {}).items()}
        self.shards = {name: shards[name] for name in self.weights if name in shards}
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not callable(cb):
                raise TypeError(f"callbacks must be callables cb(step, weights), got {type(cb).__name__}")
        if not (callable(init) or init in INIT_CHOICES):
            raise ValueError(f"init must be one of {INIT_CHOICES} or a callable, got {init!r}")
        self.model, self.optimizer = model, optimizer
        self.init, self.init_scale = init, check_number("init_scale", init_scale)
        self.generator = torch.Generator().manual_seed(check_int("seed", seed, least=None))
        self.step_count = 0
        self.epoch = 0
        self.recorder: GradFactorRecorder | None = None

    # ------------------------------------------------------------------ driving
    def step(self) -> None:
        """Call after every ``optimizer.step()``."""
        self.step_count += 1
        self._after_step()
        if self.rewire_every != "epoch" and self._due(self.step_count):
            self._update()
        if self.recorder is not None:
            self.recorder.new_step()
            self.recorder.armed = self._records(self.step_count + 1)

    def end_epoch(self) -> None:
        """Call at the end of every epoch."""
        self.epoch += 1
        self._after_epoch()
        if self.rewire_every == "epoch" and self._due(self.epoch):
            self._update()

    def _due(self, t: int) -> bool:
        """Whether the update runs at step ``t`` (``rewire_every`` a number) or at the end of epoch
        ``t`` ("epoch"): every ``rewire_every`` steps, every epoch."""
        return self.rewire_every == "epoch" or t % self.rewire_every == 0

    def _records(self, t: int) -> bool:
        """Whether step ``t``'s backward records the gradient factors (with a recorder): before the
        steps that update (a subclass growing at the epoch's end records at every step)."""
        return self.rewire_every != "epoch" and self._due(t)

    def _after_step(self) -> None:
        """Per-step work that is not a topology update (it runs before a due update)."""

    def _after_epoch(self) -> None:
        """Per-epoch work that is not a topology update (it runs before a due update)."""

    def _update(self) -> None:
        """One topology update of every layer, then :meth:`_notify` (none here: a controller written
        for the earlier base, which updated in its own ``_after_step`` / ``_after_epoch``, still works)."""

    # ------------------------------------------------------------------ helpers
    def _seed(self) -> int:
        return int(torch.randint(0, 2**62, (1,), generator=self.generator))

    def _notify(self) -> None:
        for cb in self.callbacks:
            cb(self.step_count, dict(self.weights))

    def _random_grow(self, weight: SparseWeight, n: int, shard=None):
        """Growth at ``n`` random empty positions; for a weight sharded by rows (``shard``, its
        RowShard) ``n`` counts the whole matrix's and this rank's rows of the whole draw are taken
        (a collective)."""
        seed = self._seed()
        if shard is None:
            return RandomGrowth(n, seed)
        return lambda row_ptr, col_idx: shard.random_empty(row_ptr, col_idx, weight.shape[1], n, seed)

    def _sharded_values(self, weight: SparseWeight, shard, nnz: int):
        """The new values of a sharded weight's update (after :meth:`_random_grow` with its shard):
        this rank's of the whole matrix's, drawn as the unsharded update draws them, for the whole
        matrix's ``nnz`` after the update (the fan-in of he_uniform); None: zeros."""
        if self.init == "zero":
            return None
        probe = _Probe((shard.n_rows, weight.shape[1]), nnz, weight.values.dtype, weight.values.device)
        draw = lambda n: new_values(n, probe, self.init, init_scale=self.init_scale,  # noqa: E731
                                    generator=self.generator)
        return lambda rows, cols: shard.values_at(rows, cols, weight.shape[1], draw)

    def _use_gradients(self, model: nn.Module) -> None:
        self.recorder = GradFactorRecorder(model, self.weights)
        missing = [n for n, w in self.weights.items() if not self.recorder.supports(w)]
        if missing:
            raise ValueError(f"gradient growth needs (G, X) factors for {missing}: their modules must be SparseLinear "
                             "or implement dense_grad_factors(name) (see sparse_engine.training.grad_factors)")
        if self.shards:
            # the ranks of a shard group see the same batch: each keeps its rows' factors (with a
            # data-parallel dimension, set global_factors True and process_group to its group)
            self.recorder.global_factors = False

    def _gradient_grow(self, weight: SparseWeight, n: int, shard=None):
        """Growth at the ``n`` empty positions of largest |gradient|; for a weight sharded by rows
        (``shard``, its RowShard) ``n`` counts the whole matrix's, and this rank's rows of the whole
        matrix's choice are taken (:func:`~sparse_engine.training.topology.sharded_gradient_growth`)."""
        if self.recorder.is_global():  # data-parallel: the gradient of the global batch
            G, X, method, reduce = self.recorder.growth_inputs(
                weight, self.grad_options["method"], self.grad_options["max_flops"],
                rows=weight.shape[0] if shard is None else shard.n_rows)
            options = dict(self.grad_options, method=method)
        else:
            (G, X), reduce, options = self.recorder.factors(weight), None, self.grad_options
        self._warn_exact_cost(weight, X, options)
        seed = self._seed()
        if shard is None:
            return GradientGrowth(G, X, n, seed=seed, reduce_grads=reduce, **options)
        return lambda row_ptr, col_idx: sharded_gradient_growth(shard, row_ptr, col_idx, G, X, n, seed=seed,
                                                                reduce_grads=reduce, **options)

    def _warn_exact_cost(self, weight: SparseWeight, X: torch.Tensor, options: dict) -> None:
        """Once per controller: a warning where exact growth by gradient (the paper's) costs more than
        :data:`EXACT_GROWTH_WARN_FACTOR` times ``max_flops`` an update, naming the sampled option."""
        if options["method"] != "exact" or getattr(self, "_warned_exact", False):
            return
        cost = weight.shape[0] * weight.shape[1] * max(X.shape[1], 1)
        if cost > EXACT_GROWTH_WARN_FACTOR * options["max_flops"]:
            self._warned_exact = True
            warnings.warn(f"{type(self).__name__}: exact growth by gradient on a {weight.shape[0]} x {weight.shape[1]} "
                          f"weight takes {cost:.2g} multiply-adds an update (rows x cols x batch columns; about "
                          f"{cost / 2**34:.0f} s on two CPU cores); grad_method='auto' samples candidates above "
                          "max_flops instead (an approximation: docs/papers.md)", stacklevel=3)

    def _set_grad_options(self, method: str, max_flops: float, sample_factor: int) -> None:
        if method not in ("auto", "exact", "sample"):
            raise ValueError(f"grad_method must be 'auto', 'exact' or 'sample', got {method!r}")
        check_int("sample_factor", sample_factor, 1)
        if not check_number("max_flops", max_flops) > 0:
            raise ValueError(f"max_flops must be a finite number > 0, got {max_flops!r}")
        self.grad_options = dict(method=method, max_flops=max_flops, sample_factor=sample_factor)

    def _rewire(self, name: str, keep: torch.Tensor, grow=None, values=None, keep_regrown: bool = False) -> Remap:
        """One layer's update in one pass: :func:`~sparse_engine.training.topology.rewire` with this
        controller's init, generator and optimizer, moving :meth:`_entry_state` along."""
        places = self._entry_state(name)
        remap = rewire(self.weights[name], keep, grow, init=self.init, init_scale=self.init_scale,
                       generator=self.generator, optimizer=self.optimizer, values=values, keep_regrown=keep_regrown,
                       carry=[holder[key] for holder, key in places])
        for (holder, key), t in zip(places, remap.carried):
            holder[key] = t
        self._on_remap(name, remap)
        return remap

    def _entry_state(self, name: str) -> list[tuple[dict, str]]:
        """This controller's per-entry tensors of weight ``name`` (first dimension its nnz), as
        (dict, key) places: an update moves them with the weight (zero for new entries)."""
        return []

    def _on_remap(self, name: str, remap: Remap) -> None:
        """Hook after a layer's update (its per-entry state is moved already)."""

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
