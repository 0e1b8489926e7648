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

from ..compact_adam import CompactAdam
from ..schedules import cosine_decay
from ..topology import Remap, magnitude_keep
from .base import Callback, TopologyController, check_int, check_number

__all__ = ["SelfishRNN", "SparseNTASGD", "redistribute", "selfish_set_keep"]

SET_NEGATIVES = ("most_negative", "nearest_zero")


def selfish_set_keep(values: torch.Tensor, rate: float, negatives: str = "most_negative") -> torch.Tensor:
    """Keep mask of Selfish-RNN's "SET" death (``magnitude_and_negativity_death`` of its public
    code): n = ceil(rate * nnz) removals, split as k = ceil(n / 2) per sign (at most all of a
    sign); the k smallest positive weights go, and of the negative ones either the k most
    negative (``negatives="most_negative"``, what the code does) or the k nearest zero
    (``"nearest_zero"``, SET's own rule, Mocanu et al. 2018). Exact zeros always go.
    Ties: the lower index goes first."""
    if negatives not in SET_NEGATIVES:
        raise ValueError(f"negatives must be one of {SET_NEGATIVES}, got {negatives!r}")
    v = values.detach()
    v = v.float() if v.element_size() == 2 else v
    k = math.ceil(math.ceil(rate * v.numel()) / 2)
    keep = v != 0
    pos = torch.nonzero(v > 0).squeeze(1)
    drop = pos[torch.argsort(v[pos], stable=True)[:k]]
    neg = torch.nonzero(v < 0).squeeze(1)
    order = torch.argsort(v[neg] if negatives == "most_negative" else -v[neg], stable=True)
    keep[drop] = False
    keep[neg[order[:k]]] = False
    return keep


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


def _average_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype NT-ASGD averages weights of ``dtype`` in: float32 for 2-byte weights, else their own."""
    return torch.float32 if dtype.itemsize < 4 else dtype


#: death "threshold": how far the removals may stray from the death rate's count before the
#: threshold doubles or halves (the code's ``self.tolerance``)
THRESHOLD_TOLERANCE = 0.02


class SparseNTASGD:
    """Sparse NT-ASGD averaging (Selfish-RNN): each weight keeps its own step counter, which
    restarts when the weight is (re)born, and its average over its current lifetime:
    counter += 1; mu = 1/(counter - 1) once counter >= 3, else 1 (copy); ax += mu (w - ax).
    Averages of removed weights are dropped; new ones start with counter 0. The averages of 2-byte
    weights are kept in float32: in bfloat16 an average stops moving once mu (w - ax) is under half
    its spacing (after a few hundred steps), a sum the code's float32 weights never round away."""

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
            self.ax[name] = w.values.detach().to(_average_dtype(w.values.dtype), copy=True)
            self.count[name] = torch.zeros(w.nnz, dtype=torch.int64, device=w.values.device)

    @torch.no_grad()
    def update(self) -> None:
        if not self.active:
            return
        for name, w in self.weights.items():
            c = self.count[name]
            c += 1
            ax = self.ax[name]
            mu = torch.where(c >= 3, 1.0 / (c - 1).clamp(min=1).to(ax.dtype), torch.ones_like(ax))
            ax += mu * (w.values.detach().to(ax.dtype) - ax)

    def state_dict(self) -> dict:
        """``active``, and the averages ``ax`` and per-weight counters ``count`` (name -> tensor)."""
        return {"active": self.active, "ax": {n: t.clone() for n, t in self.ax.items()},
                "count": {n: t.clone() for n, t in self.count.items()}}

    def load_state_dict(self, state: dict) -> None:
        device = {n: w.values.device for n, w in self.weights.items()}
        self.active = bool(state["active"])
        self.ax = {n: t.to(device[n], _average_dtype(t.dtype), copy=True) for n, t in state["ax"].items()}
        self.count = {n: t.clone().to(device[n]) for n, t in state["count"].items()}

    def remap(self, name: str, remap: Remap) -> None:
        if self.active:
            self.ax[name] = remap.apply(self.ax[name])
            self.count[name] = remap.apply(self.count[name])

    def averages(self, name: str) -> torch.Tensor:
        """The averaged values (the current value where a weight has no average yet)."""
        w = self.weights[name]
        return torch.where(self.count[name] > 0, self.ax[name].to(w.values.dtype), w.values.detach())

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
    """Selfish-RNN controller. Defaults follow the public code (Shiweiliuiiiiiii/Selfish-RNN,
    ``sparse_rnn_core.py``; see docs/papers.md for each difference left and why).

    * death rate p_t = cosine from ``death_rate`` down to ``death_rate_min`` (0.005) over
      ``total_steps`` (all training batches), advanced by ``step()``;
    * once per epoch (``end_epoch``) each layer loses weights by ``death``: "magnitude"
      (ceil(p_t nnz) smallest |w|), "SET" (:func:`selfish_set_keep`: ceil(p_t nnz) removals
      split evenly over the signs; ``set_negatives`` "most_negative" as the code, or
      "nearest_zero", SET's rule) or "threshold" (|w| <= ``threshold``, the threshold then doubled
      or halved for the next update when the removals strayed more than 2% from ceil(p_t nnz)
      summed over the layers, as the code);
    * the removed total is regrown across layers by ``redistribution``: "none" (each layer its
      own), "magnitude" (mean |w|), "nonzeros" (the count of |w| > ``threshold``, as the code),
      "momentum" (mean over the layer's weights of the momentum magnitude as the code reads it:
      |exp_avg| / (sqrt(exp_avg_sq) + 1e-8) for Adam, |momentum_buffer| for SGD), capped by each
      layer's empty positions; the code's shares are rounded per layer, ours add up exactly;
    * growth "random" (exactly the count, uniformly among empty positions, the just-pruned ones
      included, as the code's mask), "gradient" (largest |dL/dW| at empty positions, from the
      factors of the last batch; the recorder is kept armed) or "momentum" (largest momentum
      magnitude at empty positions). The code's masked-dense optimizer has a momentum at every
      position; a truly sparse one does not, so "momentum" keeps what the code's optimizer would
      hold there: for Adam, dense exp_avg / exp_avg_sq buffers (rows x cols each, updated every
      step from the gradient factors, so the layer must be small: ``dense_momentum_max_bytes``
      caps their memory, ValueError beyond; new weights take their Adam state from them); for SGD
      with momentum, the code masks the buffer after every step, so only the just-pruned
      positions have one and the rest tie at zero (broken at random here, by sort order there);
    * a weight regrown at the position it was pruned from in the same update keeps its value,
      optimizer state and NT-ASGD average, as in the code (its mask goes 1 -> 0 -> 1 and nothing
      is reset); ``reset_regrown=True`` starts it afresh like any new weight;
    * Sparse NT-ASGD (:class:`SparseNTASGD`) is switched on by the non-monotone trigger: at
      ``end_epoch(val_loss=...)``, when more than ``nonmono`` losses were seen and the new one is
      worse than the best before the last ``nonmono`` (AWD-LSTM's rule); ``nt_asgd=False`` never
      averages; ``start_averaging()`` switches it on by hand. Evaluate with ``with ctl.averaged():``,
      as the code evaluates on the averages once averaging has started.
    Defaults: death_rate=0.5, death "magnitude", growth "random", redistribution "none" (the
    code's command-line defaults), init "zero" (new weights start at zero).

    ``state_dict()``: the common keys of :class:`TopologyController`, options ``total_steps``,
    ``death_rate0``, ``death_rate_min``, ``death``, ``growth`` (must match on load),
    ``redistribution``, ``threshold``, ``nt_asgd``, ``nonmono``, ``grad_options``,
    ``set_negatives``, ``reset_regrown``, and ``val_losses`` (the losses the NT-ASGD trigger has
    seen), ``averager`` (:meth:`SparseNTASGD.state_dict`) and ``dense_momentum`` (name -> (exp_avg,
    exp_avg_sq) dense, for growth "momentum" with Adam)."""

    _options = ("total_steps", "death_rate0", "death_rate_min", "death", "growth", "redistribution", "threshold",
                "nt_asgd", "nonmono", "grad_options", "set_negatives", "reset_regrown")
    _fixed = ("growth",)

    def __init__(self, model, optimizer, *, total_steps: int, death_rate: float = 0.5,
                 death_rate_min: float = 0.005, death: str = "magnitude", growth: str = "random",
                 redistribution: str = "none", threshold: float = 1e-3, nt_asgd: bool = True, nonmono: int = 5,
                 set_negatives: str = "most_negative", reset_regrown: bool = False,
                 dense_momentum_max_bytes: int = 2 ** 30, init="zero", init_scale: float = 0.1,
                 grad_method: str = "exact", max_flops: float = 2.0 ** 34, sample_factor: int = 8, seed: int = 0,
                 callbacks: Iterable[Callback] = ()):
        super().__init__(model, optimizer, seed=seed, callbacks=callbacks, init=init, init_scale=init_scale)
        if set_negatives not in SET_NEGATIVES:
            raise ValueError(f"set_negatives must be one of {SET_NEGATIVES}, got {set_negatives!r}")
        if isinstance(total_steps, bool) or not (isinstance(total_steps, int) and total_steps > 0):
            raise ValueError(f"total_steps must be a positive int (all training batches), got {total_steps!r}")
        if not 0.0 <= death_rate_min <= death_rate <= 1.0:
            raise ValueError(f"need 0 <= death_rate_min <= death_rate <= 1, got {death_rate_min}, {death_rate}")
        if death not in ("magnitude", "SET", "threshold"):
            raise ValueError(f"death must be 'magnitude', 'SET' or 'threshold', got {death!r}")
        if growth not in ("random", "gradient", "momentum"):
            raise ValueError(f"growth must be 'random', 'gradient' or 'momentum', got {growth!r}")
        if redistribution not in ("none", "magnitude", "nonzeros", "momentum"):
            raise ValueError(f"redistribution must be 'none', 'magnitude', 'nonzeros' or 'momentum', "
                             f"got {redistribution!r}")
        check_int("nonmono", nonmono, 0)
        check_number("threshold", threshold)
        if redistribution == "momentum" and optimizer is None:
            raise ValueError("redistribution='momentum' reads the optimizer's momentum: give the optimizer "
                             "(Adam/AdamW, or SGD with momentum > 0)")
        self.total_steps, self.death_rate0, self.death_rate_min = total_steps, float(death_rate), float(death_rate_min)
        self.death, self.growth, self.redistribution = death, growth, redistribution
        self.threshold, self.nt_asgd, self.nonmono = float(threshold), bool(nt_asgd), nonmono
        self.set_negatives, self.reset_regrown = set_negatives, bool(reset_regrown)
        self._set_grad_options(grad_method, max_flops, sample_factor)
        self.val_losses: list[float] = []
        self.averager = SparseNTASGD(self.weights)
        self.dense_momentum: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.shards and growth == "momentum":
            raise ValueError(f"Selfish-RNN's growth='momentum' keeps dense rows x cols momentum buffers, which a model "
                             f"sharded by shard_rows does not support ({', '.join(self.shards)}): use growth 'random' "
                             "or 'gradient' (docs/distributed.md)")
        if growth == "momentum":
            self._momentum_kind = self._check_momentum_growth(dense_momentum_max_bytes)
        if growth == "gradient" or (growth == "momentum" and self._momentum_kind == "adam"):
            self._use_gradients(model)
            self.recorder.armed = True

    def _check_momentum_growth(self, max_bytes: int) -> str:
        """"adam" or "sgd" (what growth "momentum" reads); ValueError when the optimizer has no
        momentum or the dense buffers would pass ``max_bytes``."""
        opt = self.optimizer
        if isinstance(opt, (torch.optim.Adam, torch.optim.AdamW, CompactAdam)):
            kind, per_entry = "adam", 2 * 4  # exp_avg and exp_avg_sq, float32, kept for the whole run
        elif isinstance(opt, torch.optim.SGD) and all(g.get("momentum", 0) > 0 for g in opt.param_groups):
            kind, per_entry = "sgd", 4  # one score at each update
        else:
            raise ValueError("growth='momentum' reads the optimizer's momentum: use Adam/AdamW or SGD with "
                             f"momentum > 0, got {type(opt).__name__}")
        need = sum(w.shape[0] * w.shape[1] for w in self.weights.values()) * per_entry
        if need > max_bytes:
            raise ValueError(f"growth='momentum' keeps dense rows x cols momentum buffers (as the masked-dense "
                             f"original): {need:,} bytes for these layers, over dense_momentum_max_bytes="
                             f"{max_bytes:,}; use growth='gradient' (truly sparse) or raise the limit")
        if kind == "adam":
            for name, w in self.weights.items():
                z = torch.zeros(w.shape, dtype=torch.float32, device=w.values.device)
                self.dense_momentum[name] = (z, z.clone())
        return kind

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
        if self.dense_momentum:
            self._update_dense_momentum()

    def _records(self, t: int) -> bool:
        return True  # growth at the epoch's end reads the last batch's factors, dense momentum every step's

    @torch.no_grad()
    def _update_dense_momentum(self) -> None:
        """Adam's moments at every position, from this step's gradient G X^T (no bias correction:
        the code's growth reads the raw exp_avg and exp_avg_sq)."""
        groups = {id(p): g for g in self.optimizer.param_groups for p in g["params"]}
        for name, w in self.weights.items():
            b1, b2 = groups[id(w.values)]["betas"]
            G, X = self.recorder.factors(w)
            g = (G.float() @ X.float().T)
            m, v = self.dense_momentum[name]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)

    def end_epoch(self, val_loss: float | None = None) -> None:
        """Call at the end of every epoch, with the validation loss for the NT-ASGD trigger."""
        if val_loss is not None:
            h = self.val_losses
            earlier = h[:len(h) - self.nonmono]  # all but the last nonmono (all of them for nonmono=0)
            if self.nt_asgd and not self.averager.active and earlier and val_loss > min(earlier):
                self.averager.start()
            h.append(float(val_loss))
        super().end_epoch()

    def _momentum(self, w) -> torch.Tensor:
        """The momentum magnitude of each stored weight as the code reads it: Adam
        |exp_avg| / (sqrt(exp_avg_sq) + 1e-8), SGD |momentum_buffer|."""
        st = self.optimizer.state.get(w.values, {}) if self.optimizer is not None else {}
        if "exp_avg" in st and "exp_avg_sq" in st:
            return (st["exp_avg"].float() / (st["exp_avg_sq"].float().sqrt() + 1e-8)).abs()
        if st.get("momentum_buffer") is not None:
            return st["momentum_buffer"].float().abs()
        raise ValueError("redistribution='momentum' needs an optimizer with momentum state (Adam exp_avg and "
                         "exp_avg_sq, or SGD with momentum > 0) after at least one step")

    def _scores(self) -> list[float]:
        """Each layer's redistribution score. A weight sharded by rows scores its whole matrix: the
        counts summed over the ranks, the means as float64 sums over float64 counts (torch's float32
        mean where it is whole: the same decision but where a rounding of the means tips a share)."""
        out = []
        for name, w in self.weights.items():
            shard = self.shards.get(name)
            if self.redistribution == "nonzeros":
                count = int((w.values.detach().abs() > self.threshold).sum())
                out.append(float(count if shard is None else shard.total(count)))
                continue
            v = w.values.detach().abs() if self.redistribution == "magnitude" else self._momentum(w)
            if shard is None:
                out.append(float(v.mean()) if w.nnz else 0.0)
            else:
                total, n = shard.sums(float(v.double().sum()), w.nnz)
                out.append(total / n if n else 0.0)
        return out

    def _update(self) -> None:
        """Death in each layer, the removed total regrown across the layers (redistribution), random
        (or gradient, momentum) growth. A weight sharded by rows takes its whole matrix's update: the
        death and the counts over all ranks, the regrowth the whole matrix's draw or its largest
        gradients (RowShard)."""
        p = self.death_rate
        scores = self._scores() if self.redistribution != "none" else None
        keeps, removed, caps, nnzs = {}, {}, {}, {}
        for name, w in self.weights.items():
            shard = self.shards.get(name)
            nnzs[name] = nnz = w.nnz if shard is None else shard.total(w.nnz)
            if self.death == "magnitude":
                n_prune = min(nnz, math.ceil(p * nnz))
                keep = magnitude_keep(w.values, n_prune) if shard is None else shard.magnitude_keep(w, n_prune)
            elif self.death == "SET":
                keep = (selfish_set_keep(w.values, p, self.set_negatives) if shard is None
                        else shard.selfish_set_keep(w, p, self.set_negatives))
            else:  # the code's threshold_death: |w| > threshold survive
                keep = w.values.detach().abs() > self.threshold
            gone = w.nnz - int(keep.sum())
            keeps[name], removed[name] = keep, gone if shard is None else shard.total(gone)
            rows = w.shape[0] if shard is None else shard.n_rows
            caps[name] = rows * w.shape[1] - nnz + removed[name]
        names = list(self.weights)
        if self.death == "threshold":  # the code: the next epoch's threshold from this one's removals
            self._adapt_threshold(sum(removed.values()), sum(math.ceil(p * nnzs[n]) for n in names))
        if scores is None:
            grow = [removed[n] for n in names]
        else:
            grow = redistribute(sum(removed.values()), scores, [caps[n] for n in names])
        for name, n in zip(names, grow):
            w, shard = self.weights[name], self.shards.get(name)
            values = None
            if self.growth == "gradient":
                g = self._gradient_grow(w, n, shard)
            elif self.growth == "momentum":  # (refused on a sharded weight at construction)
                g = self._momentum_grow(name, w, keeps[name], n)
            else:
                g = self._random_grow(w, n, shard)
            if shard is not None:  # (a revived position, keep_regrown, keeps its value: not drawn)
                values = self._sharded_values(w, shard, nnzs[name] - removed[name] + n)
            remap = self._rewire(name, keeps[name], g, values=values, keep_regrown=not self.reset_regrown)
            if self.growth == "momentum" and self._momentum_kind == "adam":
                self._adam_state_from_dense(name, w, remap)
        self._notify()

    def _adapt_threshold(self, removed: int, expected: int) -> None:
        """The code's rule (``truncate_weights``): the threshold doubles when an update removed fewer
        than (1 - tolerance) of the death rate's count, halves when it removed more than (1 +
        tolerance) of it (tolerance :data:`THRESHOLD_TOLERANCE`)."""
        if removed < (1.0 - THRESHOLD_TOLERANCE) * expected:
            self.threshold *= 2.0
        elif removed > (1.0 + THRESHOLD_TOLERANCE) * expected:
            self.threshold *= 0.5

    def _momentum_grow(self, name: str, w, keep: torch.Tensor, n: int):
        """The n empty positions (after death) of largest momentum magnitude (see the class doc)."""
        rows, cols = w.shape
        row, col, _ = w.coo()
        if self._momentum_kind == "adam":
            m, v = self.dense_momentum[name]
            score = (m / (v.sqrt() + 1e-8)).abs().flatten()
        else:  # SGD: only the just-pruned positions hold a momentum; the rest tie at zero, broken at random
            score = -torch.rand(rows * cols, generator=self.generator).to(w.values.device)
            pruned = ~keep
            score[(row * cols + col)[pruned]] = self._momentum(w)[pruned]
        score[(row * cols + col)[keep]] = -math.inf  # survivors are not empty
        top = torch.topk(score, n).indices.sort().values
        return top // cols, (top % cols).to(torch.int32)

    @torch.no_grad()
    def _adam_state_from_dense(self, name: str, w, remap: Remap) -> None:
        """New weights take the dense buffers' moments, as the code's dense Adam state has them."""
        st = self.optimizer.state.get(w.values)
        if not st or "exp_avg" not in st or remap.n_grown == 0:
            return
        keys = remap.new_row * w.shape[1] + remap.new_col.long()
        m, v = self.dense_momentum[name]
        st["exp_avg"][remap.new] = m.flatten()[keys].to(st["exp_avg"].dtype)
        st["exp_avg_sq"][remap.new] = v.flatten()[keys].to(st["exp_avg_sq"].dtype)

    def _entry_state(self, name: str) -> list[tuple[dict, str]]:
        return [(self.averager.ax, name), (self.averager.count, name)] if self.averager.active else []

    def _own_state(self) -> dict:
        return {"val_losses": list(self.val_losses), "averager": self.averager.state_dict(),
                "dense_momentum": {n: list(mv) for n, mv in self.dense_momentum.items()}}

    def _load_own_state(self, state: dict) -> None:
        self.val_losses = [float(v) for v in state["val_losses"]]
        self.averager.load_state_dict(state["averager"])
        self.dense_momentum = {n: tuple(t.to(self.weights[n].values.device) for t in mv)
                               for n, mv in state.get("dense_momentum", {}).items()}

