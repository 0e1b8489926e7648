"""DEEP R rewiring (Bellec et al. 2018), with Zhang et al. 2023's variant: fixed signs, dormant
connections replaced at random."""
from __future__ import annotations

import math
from typing import Iterable

import torch

from ...sparse import SparseWeight
from ..topology import new_values
from .base import Callback, TopologyController, check_rewire_every

__all__ = ["DeepR"]


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
        self.rule, self.rewire_every = rule, check_rewire_every(rewire_every)
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
        here = {w.values.device for w in self.weights.values()}
        for d, g_state in state["device_generators"].items():
            if torch.device(d) not in here:  # a run moved off that device (a GPU checkpoint on the CPU):
                continue                     # the noise is drawn by the generator of where it is now
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

    def _update(self) -> None:
        if self.rule == "zhang":
            with torch.no_grad():
                for name, w in self.weights.items():
                    self._add_terms(name, w, self.l1, self.noise)
        changed = False
        for name, w in self.weights.items():
            dead = self.dead(name)
            n = int(dead.sum())
            if n == 0:  # nothing dormant: no update (Bellec's rule checks after every step)
                continue
            changed = True
            row, col, _ = w.coo()
            died = ((row * w.shape[1] + col)[dead], self.sign[name][dead])
            born = {}
            grow = self._random_grow(w, n)
            remap = self._rewire(name, ~dead, grow, values=lambda r, c: self._reborn(name, w, r, c, died, born))
            self.sign[name][remap.new] = born["sign"]
        if changed or self.rewire_every == "epoch":  # callbacks: after each update, and at each epoch's rewiring
            self._notify()

    def _reborn(self, name: str, w: SparseWeight, new_row, new_col, died, born: dict) -> torch.Tensor:
        """Values of the connections activated at (new_row, new_col): their fixed sign times |init|.
        A position that lived takes its stored sign (and leaves the dead record, which gains the
        connections that die now, ``died``: their keys and signs); others draw one. The signs go in
        ``born["sign"]``."""
        dev, n = w.values.device, new_row.numel()
        new_keys = new_row * w.shape[1] + new_col.long()
        # dead record (sorted keys of positions that lived and died, with their signs) plus
        # the ones that die now; regrown positions take their stored sign and leave it
        keys = torch.cat([self._dead_keys[name], died[0]])
        signs = torch.cat([self._dead_sign[name], died[1]])
        order = torch.argsort(keys)
        keys, signs = keys[order], signs[order]
        pos = torch.searchsorted(keys, new_keys).clamp(max=max(keys.numel() - 1, 0))
        found = (keys[pos] == new_keys) if keys.numel() else torch.zeros(n, dtype=torch.bool, device=dev)
        new_sign = self._random_signs(n).to(dev)
        new_sign[found] = signs[pos[found]]
        mag = torch.as_tensor(new_values(n, w, self.init, init_scale=self.init_scale, generator=self.generator))
        stay = torch.ones(keys.numel(), dtype=torch.bool, device=dev)
        stay[pos[found]] = False
        self._dead_keys[name], self._dead_sign[name] = keys[stay], signs[stay]
        born["sign"] = new_sign
        return new_sign.to(w.values.dtype) * mag.to(dev).abs()

    def _entry_state(self, name: str) -> list[tuple[dict, str]]:
        return [(self.sign, name)]
