"""Selfish-RNN (Liu et al., ICML 2021): sparse RNN training with cosine-decayed death rate,
redistribution across layers and Sparse NT-ASGD.

Masks cover whole weight matrices: a SparseLSTM's 4 gates share one CSR of 4H rows, so the
stacked gate matrix is one layer here, as in Selfish-RNN. Every SparseWeight of the model is
updated (embedding and decoder too, if they are sparse).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterable

import torch

from .controllers import Callback, TopologyController
from .schedules import cosine_decay
from .topology import Remap, magnitude_keep, set_keep, threshold_keep

__all__ = ["SelfishRNN", "SparseNTASGD", "redistribute"]


def redistribute(total: int, scores: list[float], caps: list[int]) -> list[int]:
    """Splits ``total`` new connections over layers in proportion to ``scores``, never giving a
    layer more than its ``caps`` (empty positions); what a full layer cannot take goes to the
    others. Integer shares by largest remainder (ties: earlier layer), so the sum is exact."""
    L = len(scores)
    if total > sum(caps):
        raise ValueError(f"cannot place {total} connections in {sum(caps)} empty positions")
    alloc = [0] * L
    remaining = total
    active = [i for i in range(L) if caps[i] > 0 and scores[i] > 0]
    if not active:
        active = [i for i in range(L) if caps[i] > 0]
        scores = [1.0] * L
    while remaining > 0 and active:
        s = sum(scores[i] for i in active)
        share = {i: remaining * scores[i] / s for i in active}
        full = [i for i in active if alloc[i] + share[i] >= caps[i]]
        if full:
            for i in full:
                remaining -= caps[i] - alloc[i]
                alloc[i] = caps[i]
                active.remove(i)
            continue
        floors = {i: int(math.floor(share[i])) for i in active}
        left = remaining - sum(floors.values())
        order = sorted(active, key=lambda i: (-(share[i] - floors[i]), i))
        for i in active:
            alloc[i] += floors[i]
        for i in order[:left]:
            alloc[i] += 1
        remaining = 0
    if remaining > 0:  # only layers with score 0 had room left
        for i in range(L):
            take = min(remaining, caps[i] - alloc[i])
            alloc[i] += take
            remaining -= take
    return alloc


class SparseNTASGD:
    """Sparse NT-ASGD averaging (Selfish-RNN): each weight keeps its own step counter, which
    restarts when the weight is (re)born, and its average over its current lifetime:
    counter += 1; mu = 1/(counter - 1) once counter >= 3, else 1 (copy); ax += mu (w - ax).
    Averages of removed weights are dropped; new ones start with counter 0."""

    def __init__(self, weights: dict):
        self.weights = weights
        self.active = False
        self.ax: dict[str, torch.Tensor] = {}
        self.count: dict[str, torch.Tensor] = {}

    def start(self) -> None:
        if self.active:
            return
        self.active = True
        for name, w in self.weights.items():
            self.ax[name] = w.values.detach().clone()
            self.count[name] = torch.zeros(w.nnz, dtype=torch.int64, device=w.values.device)

    @torch.no_grad()
    def update(self) -> None:
        if not self.active:
            return
        for name, w in self.weights.items():
            c = self.count[name]
            c += 1
            mu = torch.where(c >= 3, 1.0 / (c - 1).clamp(min=1).to(w.values.dtype), torch.ones_like(w.values))
            self.ax[name] += mu * (w.values.detach() - self.ax[name])

    def state_dict(self) -> dict:
        """``active``, and the averages ``ax`` and per-weight counters ``count`` (name -> tensor)."""
        return {"active": self.active, "ax": {n: t.clone() for n, t in self.ax.items()},
                "count": {n: t.clone() for n, t in self.count.items()}}

    def load_state_dict(self, state: dict) -> None:
        device = {n: w.values.device for n, w in self.weights.items()}
        self.active = bool(state["active"])
        self.ax = {n: t.clone().to(device[n]) for n, t in state["ax"].items()}
        self.count = {n: t.clone().to(device[n]) for n, t in state["count"].items()}

    def remap(self, name: str, remap: Remap) -> None:
        if self.active:
            self.ax[name] = remap.apply(self.ax[name])
            self.count[name] = remap.apply(self.count[name])

    def averages(self, name: str) -> torch.Tensor:
        """The averaged values (the current value where a weight has no average yet)."""
        w = self.weights[name]
        return torch.where(self.count[name] > 0, self.ax[name], w.values.detach())

    @contextmanager
    def averaged(self):
        """Evaluation with the averaged weights swapped in; the trained values come back after."""
        if not self.active:
            yield
            return
        saved = {}
        with torch.no_grad():
            for name, w in self.weights.items():
                saved[name] = w.values.detach().clone()
                w.values.copy_(self.averages(name))
        try:
            yield
        finally:
            with torch.no_grad():
                for name, w in self.weights.items():
                    w.values.copy_(saved[name])


class SelfishRNN(TopologyController):
    """Selfish-RNN controller.

    * death rate p_t = cosine from ``death_rate`` down to ``death_rate_min`` (0.005) over
      ``total_steps`` (all training batches), advanced by ``step()``;
    * once per epoch (``end_epoch``) each layer loses weights by ``death``: "magnitude"
      (ceil(p_t nnz) smallest |w|, as sparselearning), "SET" (fraction p_t of each sign nearest
      zero) or "threshold" (|w| < ``threshold``);
    * the removed total is regrown across layers by ``redistribution``: "none" (each layer its
      own), "magnitude" (mean |w|), "nonzeros" (nnz), "momentum" (mean |momentum| of the
      optimizer state: SGD momentum_buffer or Adam exp_avg), capped by each layer's empty positions;
    * growth "random" (exactly the count, uniformly among empty positions) or "gradient" (largest
      |dL/dW| at empty positions, from the factors of the last batch; the recorder is kept armed).
      "momentum" growth needs a momentum at empty positions, which a truly sparse model does
      not have: it is refused;
    * Sparse NT-ASGD (:class:`SparseNTASGD`) is switched on by the non-monotone trigger: at
      ``end_epoch(val_loss=...)``, when more than ``nonmono`` losses were seen and the new one is
      worse than the best before the last ``nonmono`` (AWD-LSTM's rule); ``nt_asgd=False`` never
      averages; ``start_averaging()`` switches it on by hand. Evaluate with ``with ctl.averaged():``.
    Defaults: death_rate=0.5 (sparselearning), init "zero" (Selfish-RNN).

    ``state_dict()``: the common keys of :class:`TopologyController`, options ``total_steps``,
    ``death_rate0``, ``death_rate_min``, ``death``, ``growth`` (must match on load),
    ``redistribution``, ``threshold``, ``nt_asgd``, ``nonmono``, ``grad_options``, and
    ``val_losses`` (the losses the NT-ASGD trigger has seen) and ``averager``
    (:meth:`SparseNTASGD.state_dict`)."""

    _options = ("total_steps", "death_rate0", "death_rate_min", "death", "growth", "redistribution", "threshold",
                "nt_asgd", "nonmono", "grad_options")
    _fixed = ("growth",)

    def __init__(self, model, optimizer, *, total_steps: int, death_rate: float = 0.5,
                 death_rate_min: float = 0.005, death: str = "magnitude", growth: str = "random",
                 redistribution: str = "none", threshold: float = 1e-3, nt_asgd: bool = True, nonmono: int = 5,
                 init="zero", init_scale: float = 0.1, grad_method: str = "auto", max_flops: float = 2.0 ** 34,
                 sample_factor: int = 8, seed: int = 0, callbacks: Iterable[Callback] = ()):
        super().__init__(model, optimizer, seed=seed, callbacks=callbacks, init=init, init_scale=init_scale)
        if not (isinstance(total_steps, int) and total_steps > 0):
            raise ValueError(f"total_steps must be a positive int (all training batches), got {total_steps!r}")
        if not 0.0 <= death_rate_min <= death_rate <= 1.0:
            raise ValueError(f"need 0 <= death_rate_min <= death_rate <= 1, got {death_rate_min}, {death_rate}")
        if death not in ("magnitude", "SET", "threshold"):
            raise ValueError(f"death must be 'magnitude', 'SET' or 'threshold', got {death!r}")
        if growth == "momentum":
            raise ValueError("growth='momentum' needs the momentum at empty positions, which a truly sparse "
                             "optimizer does not keep; use growth='gradient'")
        if growth not in ("random", "gradient"):
            raise ValueError(f"growth must be 'random' or 'gradient', got {growth!r}")
        if redistribution not in ("none", "magnitude", "nonzeros", "momentum"):
            raise ValueError(f"redistribution must be 'none', 'magnitude', 'nonzeros' or 'momentum', "
                             f"got {redistribution!r}")
        if not (isinstance(nonmono, int) and nonmono >= 0):
            raise ValueError(f"nonmono must be an int >= 0, got {nonmono!r}")
        self.total_steps, self.death_rate0, self.death_rate_min = total_steps, float(death_rate), float(death_rate_min)
        self.death, self.growth, self.redistribution = death, growth, redistribution
        self.threshold, self.nt_asgd, self.nonmono = float(threshold), bool(nt_asgd), nonmono
        self._set_grad_options(grad_method, max_flops, sample_factor)
        self.val_losses: list[float] = []
        self.averager = SparseNTASGD(self.weights)
        if growth == "gradient":
            self._use_gradients(model)
            self.recorder.armed = True

    @property
    def death_rate(self) -> float:
        return cosine_decay(self.step_count, self.total_steps, self.death_rate0, self.death_rate_min)

    def start_averaging(self) -> None:
        self.averager.start()

    def averaged(self):
        """Context manager: the NT-ASGD averages are the weights inside it (no-op when off)."""
        return self.averager.averaged()

    def _after_step(self) -> None:
        self.averager.update()
        if self.recorder is not None:
            self.recorder.new_step()

    def end_epoch(self, val_loss: float | None = None) -> None:
        """Call at the end of every epoch, with the validation loss for the NT-ASGD trigger."""
        if val_loss is not None:
            h = self.val_losses
            earlier = h[:len(h) - self.nonmono]  # all but the last nonmono (all of them for nonmono=0)
            if self.nt_asgd and not self.averager.active and earlier and val_loss > min(earlier):
                self.averager.start()
            h.append(float(val_loss))
        super().end_epoch()

    def _scores(self) -> list[float]:
        out = []
        for w in self.weights.values():
            if self.redistribution == "nonzeros":
                out.append(float(w.nnz))
            elif self.redistribution == "magnitude":
                out.append(float(w.values.detach().abs().mean()) if w.nnz else 0.0)
            else:  # momentum
                st = self.optimizer.state.get(w.values, {}) if self.optimizer is not None else {}
                m = st.get("momentum_buffer", st.get("exp_avg"))
                if m is None:
                    raise ValueError("redistribution='momentum' needs an optimizer with momentum state "
                                     "(SGD momentum_buffer or Adam exp_avg)")
                out.append(float(m.abs().mean()) if w.nnz else 0.0)
        return out

    def _after_epoch(self) -> None:
        p = self.death_rate
        scores = self._scores() if self.redistribution != "none" else None
        keeps, removed = {}, {}
        for name, w in self.weights.items():
            if self.death == "magnitude":
                keep = magnitude_keep(w.values, min(w.nnz, math.ceil(p * w.nnz)))
            elif self.death == "SET":
                keep = set_keep(w.values, p)
            else:
                keep = threshold_keep(w.values, self.threshold)
            keeps[name], removed[name] = keep, w.nnz - int(keep.sum())
        names = list(self.weights)
        if scores is None:
            grow = [removed[n] for n in names]
        else:
            caps = [self.weights[n].shape[0] * self.weights[n].shape[1] - self.weights[n].nnz + removed[n]
                    for n in names]
            grow = redistribute(sum(removed.values()), scores, caps)
        for name, n in zip(names, grow):
            w = self.weights[name]
            if self.growth == "gradient":
                g = self._gradient_grow(w, n)
            else:
                g = self._random_grow(w, n)
            self._rewire(name, keeps[name], g)
        self._notify()

    def _on_remap(self, name: str, remap: Remap) -> None:
        self.averager.remap(name, remap)

    def _own_state(self) -> dict:
        return {"val_losses": list(self.val_losses), "averager": self.averager.state_dict()}

    def _load_own_state(self, state: dict) -> None:
        self.val_losses = [float(v) for v in state["val_losses"]]
        self.averager.load_state_dict(state["averager"])
