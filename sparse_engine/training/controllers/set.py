"""SET, Sparse Evolutionary Training (Mocanu et al. 2018): magnitude pruning per sign, random regrowth."""
from __future__ import annotations

from typing import Iterable

from ... import init as _init
from ..topology import set_keep
from .base import Callback, TopologyController, check_number, check_rewire_every

__all__ = ["SET"]


class SET(TopologyController):
    """Sparse Evolutionary Training (Mocanu et al. 2018). After each epoch every layer drops the
    fraction ``zeta`` of its positive weights nearest zero and, separately, of its negative
    weights nearest zero (exact zeros are always dropped, as in the reference code), then
    regrows the same number at uniformly random empty positions. A weight split across ranks by
    ``shard_rows`` gets the unsharded update, each rank its rows of it (collectives of its group:
    call ``step``/``end_epoch`` on every rank).

    ``epsilon``: None keeps the model's topology (SparseLinear is Erdos-Renyi with SET's
    epsilon=20 by default); a number re-draws every sparse weight as Erdos-Renyi(epsilon) with
    fresh values at construction (do it before the optimizer has state; to resume, build the
    controller before loading the model's state, which load_state_dict checks).
    ``init``: value of new weights, "zero" by default (Keras SET, Selfish-RNN); "normal" with
    init_scale=0.1 is the scipy SET code; "he_uniform"/"xavier_uniform" later SET code.
    ``rewire_every``: "epoch" (SET) or a number of optimizer steps (Zhang et al.'s MNIST script
    rewires every 50 batches, its unit of an "epoch")."""

    def __init__(self, model, optimizer, zeta: float = 0.3, epsilon: float | None = None, *, init="zero",
                 init_scale: float = 0.1, rewire_every="epoch", seed: int = 0, callbacks: Iterable[Callback] = ()):
        super().__init__(model, optimizer, seed=seed, callbacks=callbacks, init=init, init_scale=init_scale)
        self.zeta, self.rewire_every = check_number("zeta", zeta, 0.0, 1.0), check_rewire_every(rewire_every)
        if epsilon is not None:
            for w in self.weights.values():
                rows, cols = w.shape
                nnz = int(round(_init.erdos_renyi_density(rows, cols, epsilon) * rows * cols))
                rp, ci = _init.random_pattern(rows, cols, nnz, self.generator)
                vals = _init.default_values(nnz, rows, w.values.dtype, self.generator)
                dev = w.values.device
                w.set_pattern(rp.to(dev), ci.to(dev), vals.to(dev), validate=False)
        # what it drew, to tell a resume that loaded the model's state before building the controller
        self._drawn = {n: (id(w.values), w.values._version) for n, w in self.weights.items()} if epsilon else {}

    def _load_own_state(self, state: dict) -> None:
        if self._drawn and all((id(w.values), w.values._version) == self._drawn[n] for n, w in self.weights.items()):
            raise ValueError("SET(epsilon=...) re-drew the weights when it was built, after the model's state was "
                             "loaded: build the controller first, then load the model's, the optimizer's and the "
                             "controller's states")
        self._drawn = {}

    def _update(self) -> None:
        for name, w in self.weights.items():
            shard = self.shards.get(name)  # sharded by rows: the whole matrix's update, this rank's rows
            if shard is None:
                keep = set_keep(w.values, self.zeta)
                self._rewire(name, keep, self._random_grow(w, w.nnz - int(keep.sum())))
            else:
                keep = shard.set_keep(w, self.zeta)
                nnz = shard.total(w.nnz)  # SET keeps the whole matrix's nnz
                self._rewire(name, keep, self._random_grow(w, shard.total(w.nnz - int(keep.sum())), shard),
                             values=self._sharded_values(w, shard, nnz))
        self._notify()
