"""Gradient factors of sparse weights, for growth by gradient (RigL, Selfish-RNN).

The gradient of a weight at EMPTY positions is not stored anywhere in a truly sparse model,
but for every layer it is a product dL/dW = G X^T of two thin factors the layer already has:
G (rows x M) the gradient with respect to the layer's pre-activation output and X (cols x M)
its input, feature-major, M = all batch (and time) columns. Growth needs only these.

Protocol (what a module must do so its sparse weights can grow by gradient):

* ``SparseLinear`` needs nothing: the recorder hooks its forward (input) and the output's
  gradient. ``SparseRNN``/``SparseLSTM``/``SparseGRU``, their cells and ``SparseCTRNN``
  implement the method below (``sparse_engine.recurrent.sequence.RecordsGradFactors``).
* Any other module owning a SparseWeight as attribute ``name`` (e.g. an RNN's ``weight_hh``)
  implements ``dense_grad_factors(name) -> (G, X)`` returning the factors of the most recent
  backward pass (detached; G: rows x M, X: cols x M, dL/dW = G @ X.T; for an RNN, the stacked
  per-step gate gradients and the matching hidden states / inputs, the same tensors its one
  sddmm uses), or None when nothing was recorded. It should keep them only while its attribute
  ``record_grad_factors`` is True (the recorder sets it to True before a step whose gradient is
  needed and to False afterwards) so that no memory is held otherwise.

Data-parallel training (torch.distributed): each rank records the factors of its own batch, but
a topology update must see the gradient of the global batch and come out the same on every rank.
When torch.distributed is initialized with more than one process (or ``global_factors=True``),
:meth:`GradFactorRecorder.factors` all-gathers G and X along M (rank order) and divides G by the
world size, so G X^T = (1/W) sum_r G_r X_r^T: the gradient DDP's averaging gives the values.
Every rank must then call it (the controllers do, at the same step); it costs W times the factors'
memory, (rows + cols) x global M. Sampled growth needs less: :meth:`GradFactorRecorder.growth_inputs`
keeps the local factors and sums the candidates' gradients over the ranks instead.
``global_factors=False`` keeps the local factors.
"""
from __future__ import annotations

import torch
from torch import nn

from ..sparse import SparseWeight

__all__ = ["GradFactorRecorder"]


class GradFactorRecorder:
    """Records (G, X) for the given sparse weights of ``model`` while armed."""

    def __init__(self, model: nn.Module, weights: dict[str, SparseWeight]):
        from ..nn import SparseLinear

        #: None: gather across ranks when torch.distributed runs more than one process; True/False: force
        self.global_factors: bool | None = None
        #: the process group to gather over (None: the default group)
        self.process_group = None
        self._armed = False
        self._owner: dict[int, tuple[nn.Module, str]] = {}
        self._linear: dict[int, list] = {}
        self._handles = []
        self._fresh: set[int] = set()
        ids = {id(w) for w in weights.values()}
        for module in model.modules():
            for attr, child in module.named_children():
                if id(child) not in ids:
                    continue
                self._owner[id(child)] = (module, attr)
                if isinstance(module, SparseLinear) and attr == "weight":
                    self._linear[id(child)] = []
                    self._handles.append(module.register_forward_hook(self._hook(id(child))))

    def _hook(self, key: int):
        def hook(module, inputs, output):
            # forward passes without autograd (evaluation) are not training steps: ignored
            if not self._armed or not output.requires_grad:
                return
            if key in self._fresh:  # first recorded forward since the last optimizer step
                self._fresh.discard(key)
                self._linear[key].clear()
            slot = [None, inputs[0].detach().reshape(-1, module.in_features).t()]
            self._linear[key].append(slot)
            shard = getattr(module, "shard", None)  # sharded by rows (shard_rows): G of its own rows
            rows = slice(None) if shard is None else slice(shard.start, shard.end)

            def grad_hook(g, slot=slot, n=module.out_features, rows=rows):
                slot[0] = g.detach().reshape(-1, n)[:, rows].t()
            output.register_hook(grad_hook)
        return hook

    def new_step(self) -> None:
        """Marks an optimizer-step boundary: the next recorded forward replaces the factors
        kept so far (so only the last training batch is held)."""
        self._fresh = set(self._linear)

    @property
    def armed(self) -> bool:
        return self._armed

    @armed.setter
    def armed(self, on: bool) -> None:
        self._armed = bool(on)
        for key, (module, _) in self._owner.items():
            if key not in self._linear:
                module.record_grad_factors = self._armed

    def state_dict(self) -> dict:
        """The settings a resumed run needs: ``armed`` and ``global_factors``. Recorded factors
        are not saved: a controller's state is saved between steps, and the next training batch
        records anew before any update uses them (the process group is not saved either)."""
        return {"armed": self._armed, "global_factors": self.global_factors}

    def load_state_dict(self, state: dict) -> None:
        self.global_factors = state["global_factors"]
        self.armed = state["armed"]
        self.new_step()

    def clear(self) -> None:
        for slots in self._linear.values():
            slots.clear()

    def supports(self, weight: SparseWeight) -> bool:
        key = id(weight)
        return key in self._linear or (key in self._owner and hasattr(self._owner[key][0], "dense_grad_factors"))

    def _local(self, weight: SparseWeight):
        """This process's (G, X), or None when nothing was recorded."""
        key = id(weight)
        if key not in self._owner:
            raise RuntimeError("weight is not owned by a module of the model")
        module, attr = self._owner[key]
        if key in self._linear:
            slots = [s for s in self._linear[key] if s[0] is not None]
            return (torch.cat([s[0] for s in slots], 1), torch.cat([s[1] for s in slots], 1)) if slots else None
        if hasattr(module, "dense_grad_factors"):
            return module.dense_grad_factors(attr)
        raise RuntimeError(f"{type(module).__name__}.{attr}: gradient growth needs the module to implement "
                           "dense_grad_factors(name) -> (G, X) (see sparse_engine.training.grad_factors)")

    def factors(self, weight: SparseWeight) -> tuple[torch.Tensor, torch.Tensor]:
        """(G, X) of the last recorded backward pass; several calls of a shared layer are
        concatenated along M; under torch.distributed those of all ranks (see the module doc).
        RuntimeError when nothing was recorded (on every rank, if on any)."""
        got = self._local(weight)
        if self.is_global():
            return self._gathered(got)
        if got is None:
            module, attr = self._owner[id(weight)]
            raise RuntimeError(f"no gradient factors recorded for {type(module).__name__}.{attr}: run forward and "
                               "backward on a batch before the topology update")
        return got

    def _gathered(self, got):
        """All ranks' factors from this rank's ``got`` (None: nothing recorded here), G / W."""
        from ..distributed.data_parallel import all_gather_columns, dist

        G = all_gather_columns(None if got is None else got[0], self.process_group)
        X = all_gather_columns(None if got is None else got[1], self.process_group)
        return G / dist.get_world_size(self.process_group), X

    def growth_inputs(self, weight: SparseWeight, method: str, max_flops: float, rows: int | None = None):
        """(G, X, method, reduce_grads) for :func:`~sparse_engine.training.topology.gradient_growth`.
        One process: :meth:`factors`, ``method`` as given. Data-parallel: ``method`` is resolved
        with the global M ("auto": exact while rows*cols*M <= max_flops); "exact" gets the gathered
        factors, "sample" the local ones (G / W) and a ``reduce_grads`` that sums the candidates'
        gradients over the ranks: the same numbers, communicating O(candidates) instead of the factors.
        ``rows``: the whole matrix's rows that "auto" counts (a weight sharded by rows: more than its own)."""
        if not self.is_global():
            return (*self.factors(weight), method, None)
        from ..distributed.data_parallel import all_reduce_sum, dist, gather_batch_sizes

        got = self._local(weight)
        sizes = gather_batch_sizes(None if got is None else got[1].shape[1], self.process_group)
        rows, cols = weight.shape[0] if rows is None else rows, weight.shape[1]
        if method == "auto":
            method = "exact" if rows * cols * max(sum(sizes), 1) <= max_flops else "sample"
        if method == "exact":
            return (*self._gathered(got), method, None)
        group = self.process_group
        return got[0] / dist.get_world_size(group), got[1], method, lambda g: all_reduce_sum(g, group)

    def is_global(self) -> bool:
        """Whether :meth:`factors` gathers across ranks (``global_factors``, None: torch.distributed
        is initialized with more than one process)."""
        if self.global_factors is not None:
            return bool(self.global_factors)
        from ..distributed import is_distributed

        return is_distributed(self.process_group)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
