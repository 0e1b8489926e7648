"""The SET-MLP recipe as SET implementation 2 (Mocanu et al. 2018, scipy code) runs it:
SGD with momentum and a weight decay applied outside the momentum, and SET evolution of every
layer after each epoch except the last, optionally with the neuron importance pruning of
Curci, Mocanu and Pechenizkiy (2021). See docs/set_mlp.md.

    model = SparseMLP((784, 1000, 1000, 1000, 10), epsilon=13, dropout=0.2)
    opt = SETSGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-4)
    ctl = SETMLP(model, opt, epochs=E, zeta=0.3, seed=0)
    for epoch in range(E):
        for x, y in batches:
            opt.zero_grad(); model.loss(model(x), y).backward(); opt.step()
        ctl.end_epoch()          # evolves unless this was the last epoch
"""
from __future__ import annotations

from typing import Iterable

import torch

from ..topology import set_keep
from .set import SET

__all__ = ["SET_MLP_SETTINGS", "SETSGD", "SETMLP", "importance_keep"]

#: SET implementation 2's tutorial settings (MNIST-like data, 3 hidden layers of 1,000)
SET_MLP_SETTINGS = dict(batch_size=40, lr=0.05, momentum=0.9, weight_decay=2e-4, dropout=0.2, epsilon=13.0,
                        zeta=0.3)


class SETSGD(torch.optim.SGD):
    """SGD with momentum whose weight decay acts outside the momentum, as the scipy SET code:
    buf = momentum * buf + grad;  w <- w - weight_decay * w - lr * buf  (biases too).
    ``torch.optim.SGD(weight_decay=...)`` would add the decay to the gradient, inside the
    momentum. The momentum buffers are SGD's (``momentum_buffer``), so topology updates remap
    them and ``state_dict`` is SGD's plus the group's ``decay``. On the CPU a step is one pass of
    the ``sgd_step`` kernel per parameter (csrc/cpu/mlp_cpu.cpp); otherwise the decay, then
    torch's SGD."""

    def __init__(self, params, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 2e-4):
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not 0 <= weight_decay < 1:
            raise ValueError(f"weight_decay must be a number in [0, 1), got {weight_decay!r}")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=0.0)
        for group in self.param_groups:
            group["decay"] = float(weight_decay)

    @torch.no_grad()
    def step(self, closure=None):
        if all(self._fusable(group) for group in self.param_groups):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if state.get("momentum_buffer") is None:  # SGD's first step: buf = grad
                        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                    torch.ops.sparse_engine.sgd_step(p, state["momentum_buffer"], p.grad, group["lr"],
                                                     group["momentum"], group["decay"])
            return loss
        for group in self.param_groups:
            if group["decay"]:
                params = [p for p in group["params"] if p.grad is not None]
                if params:
                    torch._foreach_mul_(params, 1.0 - group["decay"])
        return super().step(closure)

    def _fusable(self, group) -> bool:
        """Whether the group's step is the one pass of the ``sgd_step`` kernel (CPU, dense
        contiguous gradients, plain momentum): instead of 4 passes of torch's ops over every
        weight (25 million at a million neurons)."""
        if group["dampening"] or group["nesterov"] or group["maximize"] or not group["momentum"]:
            return False
        if isinstance(group["lr"], torch.Tensor):
            return False
        for p in group["params"]:
            if p.grad is None:
                continue
            buf = self.state[p].get("momentum_buffer") if p in self.state else None
            if (p.device.type != "cpu" or p.grad.is_sparse or not p.is_contiguous() or not p.grad.is_contiguous()
                    or p.grad.dtype != p.dtype or (buf is not None and not buf.is_contiguous())):
                return False
        return True


def importance_keep(weight, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance pruning of neurons (Curci et al. 2021): a neuron's importance is the sum of
    |w| of its incoming connections (a row of ``weight``); the ``fraction`` of the neurons
    that have connections with the lowest importance lose every incoming connection.
    Returns (keep mask over the nonzeros, bool mask of the pruned rows)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    rows = weight.shape[0]
    counts = weight.row_ptr.diff()
    row = torch.repeat_interleave(torch.arange(rows, device=counts.device), counts)
    importance = torch.zeros(rows, dtype=torch.float64, device=counts.device)
    importance.index_add_(0, row, weight.values.detach().abs().double())
    alive = (counts > 0).nonzero().flatten()
    n = int(fraction * alive.numel())
    pruned = torch.zeros(rows, dtype=torch.bool, device=counts.device)
    if n:  # stable sort: ties go to the lower row
        order = torch.sort(importance[alive], stable=True).indices[:n]
        pruned[alive[order]] = True
    return ~pruned[row], pruned


class SETMLP(SET):
    """SET as SET-MLP runs it: after every epoch except the last (``epochs``: the run's length,
    so the model that was evaluated last is the one saved), each layer drops the ``zeta``
    fraction of its positive and, separately, of its negative weights nearest zero and regrows
    as many at random empty positions with N(0, 0.1^2) values (``init="normal"``, the scipy
    code's randn/10); their momentum starts at zero, the survivors keep theirs.

    ``importance``: with a fraction > 0, from epoch ``importance_start`` on, each hidden layer
    also drops that fraction of its neurons of lowest importance (:func:`importance_keep`: all
    their incoming and outgoing connections) before SET; those connections are not regrown, so
    the network shrinks. ``epochs`` is not saved in :meth:`state_dict` (a resumed run may
    train longer).

    ``evolve_output=False`` leaves the output layer's connections as they are, as later SET code
    does (SET-MLP-MPI/models/set_mlp_sequential.py: a dense output layer that SET never touches).
    The default evolves every layer, as implementation 2 does. Where epsilon (in + out)
    reaches in x out the output layer is dense, and SET only redraws ``zeta`` of its weights with
    fresh N(0, 0.1^2) values: noise in the logits that grows with the square root of the last
    hidden width (docs/set_mlp.md: at 333,334 units, 83.4% test accuracy after the next epoch against 88.0%)."""

    _options = ("importance", "importance_start", "evolve_output")

    def __init__(self, model, optimizer, epochs: int, zeta: float = 0.3, *, importance: float = 0.0,
                 importance_start: int = 1, init="normal", init_scale: float = 0.1, seed: int = 0,
                 evolve_output: bool = True, callbacks: Iterable = ()):
        super().__init__(model, optimizer, zeta=zeta, init=init, init_scale=init_scale, seed=seed,
                         callbacks=callbacks)
        if not isinstance(evolve_output, bool):
            raise ValueError(f"evolve_output must be True or False, got {evolve_output!r}")
        self.evolve_output = evolve_output
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
        if isinstance(importance, bool) or not isinstance(importance, (int, float)) or not 0 <= importance < 1:
            raise ValueError(f"importance must be a number in [0, 1), got {importance!r}")
        self.epochs, self.importance, self.importance_start = epochs, float(importance), int(importance_start)
        self.evolutions = 0

    def _due(self, epoch: int) -> bool:
        return epoch < self.epochs  # not after the last epoch

    def _update(self) -> None:
        names = list(self.weights)
        if self.importance > 0 and self.epoch >= self.importance_start:
            self._prune_neurons(names)
        for name in names if self.evolve_output else names[:-1]:
            w = self.weights[name]
            keep = set_keep(w.values, self.zeta)
            self._rewire(name, keep, self._random_grow(w, w.nnz - int(keep.sum())))
        self.evolutions += 1
        self._notify()

    def _prune_neurons(self, names) -> None:
        """Importance pruning of the hidden neurons: rows of every layer but the last, and the
        matching columns of the next layer."""
        for name, nxt in zip(names[:-1], names[1:]):
            keep, pruned = importance_keep(self.weights[name], self.importance)
            self._rewire(name, keep)
            nw = self.weights[nxt]
            self._rewire(nxt, ~pruned[nw.col_idx.long()])

    def _own_state(self) -> dict:
        return {"evolutions": self.evolutions}

    def _load_own_state(self, state: dict) -> None:
        self.evolutions = int(state.get("evolutions", 0))
