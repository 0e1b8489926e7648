"""The weights of the sparse layers, and what every layer's constructor and conversions share:
the argument checks of a constructor (:func:`check_positive_int`, :func:`check_dropout`), which
matrices are sparse (:func:`sparse_flags`) and at what density (:func:`resolve_density`), a new
matrix or bias (:func:`make_weight`, :func:`make_bias`) and its initialisation drawn again
(:func:`reset_weights`, :func:`init_values_uniform`), and the conversions from and to torch's
dense modules (:func:`sparsify`, :func:`load_dense`, :func:`nonzero_masks`, :func:`fill_dense`,
:func:`refuse_dense_weights`).

The modules (:mod:`.rnn`, :mod:`.cells`, :mod:`.linear`, :mod:`.rhn`, :mod:`.onlstm`,
:mod:`.ode_rnn`, :mod:`.lm`, :mod:`.mlp`) import these from here; how a weight is handed to the
products is :mod:`.products`, how a sequence's input and states are read :mod:`.sequences`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import init as _init
from ..sparse import SparseWeight

__all__ = ["EMPTY", "SELECTIONS", "check_positive_int", "check_dropout", "sparse_flags", "resolve_density",
           "make_weight", "make_bias", "reset_weights", "init_values_uniform", "sparsify", "load_dense",
           "nonzero_masks", "fill_dense", "refuse_dense_weights", "TorchConversion"]

_SPARSE_CHOICES = {"both": (True, True), "recurrent": (False, True), "input": (True, False)}


# ------------------------------------------------------- constructor arguments
def check_positive_int(name: str, v) -> None:
    """ValueError naming ``name`` unless ``v`` is a positive int (not a bool)."""
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v!r}")


def check_saved_dtype(dtype) -> torch.dtype | None:
    """The recurrent modules' ``saved_dtype``: None, torch.bfloat16 or torch.float16 (ValueError naming it)."""
    if dtype is not None and dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"saved_dtype must be None, torch.bfloat16 or torch.float16, got {dtype!r}")
    return dtype


def check_recompute_every(k) -> int | None:
    """The modules' ``recompute_every``: None, or a positive int (ValueError naming it otherwise)."""
    if k is not None:
        check_positive_int("recompute_every", k)
    return k


def check_dropout(name: str, p) -> float:
    """``p`` as a float, or ValueError naming ``name`` unless it is a number in [0, 1)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {p!r}")
    return float(p)


def sparse_flags(sparse: str) -> tuple[bool, bool]:
    """(input sparse, recurrent sparse) for ``sparse='both'|'recurrent'|'input'``."""
    if sparse not in _SPARSE_CHOICES:
        raise ValueError(f"sparse must be one of {sorted(_SPARSE_CHOICES)}, got {sparse!r}")
    return _SPARSE_CHOICES[sparse]


#: A density that rounds to nnz=0: from_dense builds empty sparse weights and replaces them at once.
EMPTY = 1e-300


def resolve_density(rows: int, cols: int, density: float | None, epsilon: float | None) -> float:
    """The density a layer gets from ``density=`` or ``epsilon=`` (Erdos-Renyi, SET's
    default epsilon=20 when neither is given)."""
    if density is not None and epsilon is not None:
        raise ValueError("give at most one of density= and epsilon=")
    if density is not None:
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        return float(density)
    return _init.erdos_renyi_density(rows, cols, 20.0 if epsilon is None else epsilon)


# ----------------------------------------------------------------- new weights
def make_weight(rows, cols, is_sparse, hidden, density, epsilon, device, dtype):
    """A SparseWeight (random pattern) or a dense Parameter with torch's RNN init."""
    if is_sparse:
        w = SparseWeight.random(rows, cols, resolve_density(rows, cols, density, epsilon), dtype=dtype)
        return w.to(device) if device is not None else w
    k = 1.0 / math.sqrt(hidden)
    return nn.Parameter(torch.empty(rows, cols, device=device, dtype=dtype).uniform_(-k, k))


def make_bias(rows, hidden, device, dtype):
    """A dense bias Parameter with torch's RNN init, U(-1/sqrt(hidden), 1/sqrt(hidden))."""
    k = 1.0 / math.sqrt(hidden)
    return nn.Parameter(torch.empty(rows, device=device, dtype=dtype).uniform_(-k, k))


def reset_weights(module: nn.Module) -> None:
    """``reset_parameters`` of the layers and cells: the construction's initialisation drawn
    again on the current patterns (sparse values U(-b, b), b = 1/sqrt(stored entries per row);
    dense matrices and biases U(-1/sqrt(H), 1/sqrt(H)), torch's)."""
    k = 1.0 / math.sqrt(module.hidden_size)
    for _, w in _init.named_weights(module):
        if isinstance(w, SparseWeight):
            b = 1.0 / math.sqrt(max(1.0, w.nnz / max(w.shape[0], 1)))
            _init.uniform_(w, -b, b)
        else:
            _init.uniform_(w, -k, k)


def init_values_uniform(w, bound: float) -> None:
    """U(-bound, bound) on a SparseWeight's values or a dense Parameter, in place."""
    target = w.values if isinstance(w, SparseWeight) else w
    with torch.no_grad():
        target.uniform_(-bound, bound)


# ------------------------------------------------- from and to torch's modules
SELECTIONS = ("magnitude", "random")


def sparsify(dense: torch.Tensor, density: float | None, mask: torch.Tensor | None, selection: str = "magnitude",
             generator: torch.Generator | None = None) -> SparseWeight:
    """Keeps ``mask`` (if given), else round(density * numel) entries chosen by ``selection``
    ('magnitude': the largest |w|; 'random': uniformly random positions, drawn with
    ``generator``), else the nonzeros."""
    if mask is not None:
        return SparseWeight.from_dense(dense, mask)
    if density is None:
        return SparseWeight.from_dense(dense)
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    k = int(round(density * dense.numel()))
    if selection == "magnitude":
        chosen = dense.abs().flatten().topk(k).indices
    else:
        chosen = torch.randperm(dense.numel(), generator=generator)[:k].to(dense.device)
    keep = torch.zeros(dense.numel(), dtype=torch.bool, device=dense.device)
    keep[chosen] = True
    return SparseWeight.from_dense(dense, keep.view(dense.shape))


def load_dense(module: nn.Module, state_dict: dict, density: float | None, mask: dict | None, selection: str,
               generator: torch.Generator | None) -> None:
    """The body of ``load_dense_state_dict`` (layers and cells): ``state_dict`` holds torch's
    dense tensors under ``module._flat_weights_names``; each sparse matrix keeps ``mask[name]``,
    else ``density`` (None: its current density) chosen by ``selection``, in place (the values
    Parameter object is kept, so an optimizer holding it stays valid); dense ones are copied."""
    if density is not None and mask is not None:
        raise ValueError("give at most one of density= and mask=")
    if mask is not None and not isinstance(mask, dict):
        raise TypeError("mask must be a dict {parameter name: bool tensor}")
    if not hasattr(state_dict, "keys"):
        raise TypeError(f"state_dict must be a dict of tensors, got {type(state_dict).__name__}")
    names = module._flat_weights_names
    missing = [n for n in names if n not in state_dict]
    unexpected = [k for k in state_dict if k not in names]
    if missing or unexpected:
        raise ValueError(f"state_dict must hold a dense torch.nn.{module._DENSE.__name__}'s parameters "
                         f"{names}; missing {missing}, unexpected {unexpected} (a sparse-engine state_dict "
                         "loads with load_state_dict)")
    for name in names:
        dst, src = getattr(module, name), state_dict[name]
        want = tuple(dst.shape)
        if not isinstance(src, torch.Tensor) or tuple(src.shape) != want:
            got = tuple(src.shape) if isinstance(src, torch.Tensor) else type(src).__name__
            raise ValueError(f"state_dict[{name!r}] must be a tensor of shape {want}, got {got}")
        if not isinstance(dst, SparseWeight):
            with torch.no_grad():
                dst.copy_(src)
            continue
        m = None if mask is None else mask.get(name)
        if mask is not None and m is None:
            raise ValueError(f"mask has no entry for the sparse matrix {name!r}")
        d = dst.density if density is None and m is None else density
        src = src.detach().to(dst.values.device, dst.values.dtype)
        new = sparsify(src, d, None if m is None else m.to(src.device), selection, generator)
        dst.set_pattern(new.row_ptr, new.col_idx, new.values.detach())


def nonzero_masks(module: nn.Module) -> dict:
    """{name: weight != 0} for every parameter of a torch module (from_dense keeping the nonzeros)."""
    return {name: p.detach() != 0 for name, p in module.named_parameters()}


def fill_dense(dense: nn.Module, source: nn.Module, names) -> nn.Module:
    """``dense`` (a fresh torch module, the ``to_dense()`` of ``source``) given ``source``'s
    parameters ``names`` (zeros where a sparse matrix has no entry), their ``requires_grad`` and
    ``source``'s training/eval mode, so the copy behaves as the module it replaces."""
    with torch.no_grad():
        for name in names:
            src = getattr(source, name)
            if src is None:
                continue
            values = src.values if isinstance(src, SparseWeight) else src
            dst = getattr(dense, name)
            dst.copy_(src.to_dense() if isinstance(src, SparseWeight) else src)
            dst.requires_grad_(values.requires_grad)
    return dense.train(source.training)


def refuse_dense_weights(module: nn.Module, state_dict, prefix: str, error_msgs: list) -> None:
    """For ``_load_from_state_dict``: an error (raised by ``load_state_dict`` even with
    strict=False) for each SparseWeight child of ``module`` that the state_dict gives as a dense
    tensor, as a torch.nn module's state_dict does, saying how to load it instead."""
    for name, child in module.named_children():
        if isinstance(child, SparseWeight) and isinstance(state_dict.get(prefix + name), torch.Tensor):
            error_msgs.append(
                f"{prefix + name!r} is a dense matrix (a torch.nn state_dict?) where {type(module).__name__} holds "
                "a SparseWeight: load a dense torch state_dict with load_dense_state_dict(state_dict, density=...) "
                "(recurrent layers and cells), or convert the torch module with from_dense(module, ...)")


class TorchConversion:
    """``from_dense``, ``load_dense_state_dict`` and ``to_dense`` of the recurrent layers
    (SparseRNN/LSTM/GRU, :mod:`.rnn`): torch's module to ours and back. A subclass names its torch
    class in ``_DENSE`` and has the layers' attributes (``mode``, sizes, ``_flat_weights_names``)."""

    _DENSE: type = nn.Module

    def _dense_kwargs(self) -> dict:
        kw = dict(num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                  dropout=self.dropout, bidirectional=self.bidirectional)
        if self.proj_size:
            kw["proj_size"] = self.proj_size
        if self.mode.startswith("RNN_"):
            kw["nonlinearity"] = self.mode[4:].lower()
        return kw

    @classmethod
    def _check_dense_source(cls, module, expected):
        if type(module) is not expected:
            raise TypeError(f"{cls.__name__}.from_dense expects a torch.nn.{expected.__name__}, "
                            f"got {type(module).__name__}")

    @classmethod
    def from_dense(cls, module: nn.Module, density: float | None = None, mask: dict | None = None,
                   sparse: str = "both", selection: str = "magnitude", generator: torch.Generator | None = None):
        """A sparse copy of a torch ``nn.RNN``/``nn.LSTM``/``nn.GRU``.

        Each matrix chosen by ``sparse=`` keeps the entries under ``mask[name]`` (a dict of bool
        tensors keyed by torch's parameter names), else the ``density`` fraction (per matrix, all
        gates together) chosen by ``selection`` ('magnitude': largest |w|, the default;
        'random': uniformly random positions from ``generator``), else its nonzeros. Other
        parameters are copied. (:meth:`load_dense_state_dict` does the same from a state_dict.)
        """
        cls._check_dense_source(module, cls._DENSE)
        w = module.weight_ih_l0
        kw = dict(num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
                  dropout=module.dropout, bidirectional=module.bidirectional)
        if cls._DENSE is nn.RNN:
            kw["nonlinearity"] = module.nonlinearity
        if getattr(module, "proj_size", 0):
            kw["proj_size"] = module.proj_size
        new = cls(module.input_size, module.hidden_size, density=EMPTY, sparse=sparse, device=w.device,
                  dtype=w.dtype, **kw)
        if density is None and mask is None:
            mask = nonzero_masks(module)
        new.load_dense_state_dict(module.state_dict(), density, mask=mask, selection=selection, generator=generator)
        return new

    def load_dense_state_dict(self, state_dict: dict, density: float | None = None, *, mask: dict | None = None,
                              selection: str = "magnitude", generator: torch.Generator | None = None) -> None:
        """Loads a dense torch ``nn.LSTM``/``GRU``/``RNN`` ``state_dict`` (same sizes) into this
        module: each sparse matrix keeps ``mask[name]``, else ``density`` of its entries (None:
        the density it has now) chosen by ``selection`` ('magnitude' or 'random', as
        :meth:`from_dense`); dense matrices and biases are copied. ``load_state_dict`` refuses a
        dense state_dict and points here."""
        load_dense(self, state_dict, density, mask, selection, generator)

    def to_dense(self) -> nn.Module:
        """The equivalent torch module (zeros where a sparse matrix has no entry; same
        requires_grad and training mode). O(H^2) memory: for tests and export."""
        first = getattr(self, "weight_ih_l0")
        ref = first.values if isinstance(first, SparseWeight) else first
        dense = self._DENSE(self.input_size, self.hidden_size, device=ref.device, dtype=ref.dtype,
                            **self._dense_kwargs())
        return fill_dense(dense, self, self._flat_weights_names)
