"""Parametrizations of a SparseWeight's values: weight drop (AWD-LSTM's DropConnect) and a
sparse-aware weight norm, for ``torch.nn.utils.parametrize``.

A recurrent module's ``weight_hh_l0`` is a :class:`~sparse_engine.SparseWeight` child module, not a
tensor, so torch's recipes reach it through its values::

    parametrize.register_parametrization(lstm.weight_hh_l0, "values", WeightDrop(0.5))
    weight_drop(lstm, 0.5)             # the same on every weight_hh* (AWD-LSTM's default)
    sparse_weight_norm(lstm.weight_hh_l0)

The products then use the parametrized values; the gradient reaches the stored ones
(``weight.parametrizations["values"].original``, the Parameter the optimizer holds). A recurrent
module evaluates its parametrizations once per forward (``parametrize.cached``), so one forward
sees one dropout mask for all steps and all length groups of a PackedSequence, as AWD-LSTM's
WeightDrop (a cell, called once per step, draws a mask per call).

Topology updates must see the stored values, not a dropped or normalised view of them, so
``SparseWeight.set_pattern`` refuses a parametrized weight; run the update inside
:func:`unparametrized`, which takes the parametrizations off (the stored Parameter objects, which
the optimizer holds, become ``values`` again) and puts the same ones back::

    with unparametrized(model):
        controller.end_epoch()
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..sparse import SparseWeight
from .weights import check_dropout

__all__ = ["WeightDrop", "SparseWeightNorm", "weight_drop", "sparse_weight_norm", "unparametrized"]


class WeightDrop(nn.Module):
    """DropConnect on the values (Wan et al. 2013; AWD-LSTM, Merity et al. 2018, drops the
    hidden-to-hidden weights): each stored weight is zeroed with probability ``p`` and the others
    scaled by 1/(1-p), in training mode only. AWD-LSTM samples one mask per forward over the
    dense matrix; here over the stored entries, which is the same on the nonzeros (the absent
    entries are zero either way)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = check_dropout("p", p)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return F.dropout(values, self.p, self.training)

    def right_inverse(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SparseWeightNorm(nn.Module):
    """Weight normalisation (Salimans & Kingma 2016) of a CSR weight, per output row as torch's
    ``weight_norm(module, name, dim=0)``: W[r, :] = g[r] * V[r, :] / ||V[r, :]||, the norm over the
    row's stored entries (the absent ones are zero, so this is the dense row norm). The magnitudes
    ``g`` (one per row, initialised to the rows' norms so the weight is unchanged) are a Parameter
    of this module; the direction V is the stored values. torch's own ``weight_norm`` cannot be
    used on ``values``: it is 1-D, so its norm would be per entry."""

    def __init__(self, weight: SparseWeight):
        super().__init__()
        if not isinstance(weight, SparseWeight):
            raise TypeError(f"weight must be a SparseWeight, got {type(weight).__name__}")
        self.__dict__["_weight"] = weight  # not a child module: the weight owns this parametrization
        v = weight.values.detach()
        self.g = nn.Parameter(torch.zeros(weight.shape[0], dtype=v.dtype, device=v.device).index_add_(
            0, self._rows(), v * v).sqrt())

    def _rows(self) -> torch.Tensor:
        w = self._weight
        return torch.repeat_interleave(torch.arange(w.shape[0], device=w.row_ptr.device), w.row_ptr.diff(),
                                       output_size=w.nnz)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        rows = self._rows()
        sq = values.new_zeros(self.g.shape).index_add(0, rows, values * values)
        return values * (self.g / sq.sqrt())[rows]

    def right_inverse(self, values: torch.Tensor) -> torch.Tensor:
        return values


def weight_drop(module: nn.Module, p: float = 0.5, names=None) -> nn.Module:
    """Registers :class:`WeightDrop` on the values of ``module``'s sparse weights named in
    ``names`` (default: every ``weight_hh*``, AWD-LSTM's choice). Returns ``module``."""
    if names is None:
        targets = [m for n, m in module.named_children() if isinstance(m, SparseWeight) and n.startswith("weight_hh")]
        if not targets:
            raise ValueError("the module has no sparse weight_hh* to drop; name the weights with names=")
    else:
        targets = [getattr(module, n, None) for n in names]
        bad = [n for n, m in zip(names, targets) if not isinstance(m, SparseWeight)]
        if bad:
            raise ValueError(f"names must name SparseWeight children of the module, got {bad}")
    for w in targets:
        parametrize.register_parametrization(w, "values", WeightDrop(p))
    return module


def sparse_weight_norm(weight: SparseWeight) -> SparseWeight:
    """Registers :class:`SparseWeightNorm` on ``weight.values``. Returns ``weight``."""
    parametrize.register_parametrization(weight, "values", SparseWeightNorm(weight))
    return weight


@contextlib.contextmanager
def unparametrized(module: nn.Module):
    """Inside the block every SparseWeight of ``module`` has its plain stored values (for topology
    updates: pruning reads magnitudes, regrowth replaces the pattern); on exit the same
    parametrization modules are registered again, on the same Parameter objects."""
    taken = []
    for w in module.modules():
        if isinstance(w, SparseWeight) and parametrize.is_parametrized(w, "values"):
            chain = list(w.parametrizations["values"])
            parametrize.remove_parametrizations(w, "values", leave_parametrized=False)
            taken.append((w, chain))
    try:
        yield module
    finally:
        for w, chain in taken:
            for p in chain:
                parametrize.register_parametrization(w, "values", p)
