"""Single-step cells (``nn.RNNCell``/``nn.LSTMCell``/``nn.GRUCell`` with CSR weights) and the
continuous-time RNN (cell and layer) of Zhang et al. 2023.

Cells share parameter names (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``), shapes and
state handling with torch's cells, and the ``density=``/``epsilon=``/``sparse=``/``fused=`` options of
:mod:`sparse_engine.nn.rnn` (``fused``: the fused step ops where they apply and, on the CPU, the
measured rule picks them, composed otherwise; see there). A step runs the same
:class:`~sparse_engine.recurrent.sequence.Recurrence` as the layers with T=1, handed the cell's weights
as they are (:func:`~sparse_engine.recurrent.sequence.recurrence`). Inputs are
``(B, I)`` or unbatched ``(I,)`` as for torch's cells; a ``PackedSequence`` is refused with a
TypeError naming it, by the cells as by torch's and by :class:`SparseCTRNN` (no torch twin to
follow; the other layers take one, see :mod:`sparse_engine.nn.rnn`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..kernels.constants import GATES
from ..recurrent import Config, RecordsGradFactors, batch_rows, recurrence, weight_args
from .sequences import caller_layout, check_input_dtype, check_not_packed, time_major
from .weights import (EMPTY, check_positive_int, check_recompute_every, fill_dense, load_dense, make_bias,
                      make_weight, nonzero_masks, refuse_dense_weights, reset_weights, sparse_flags)

__all__ = ["SparseRNNCell", "SparseLSTMCell", "SparseGRUCell", "SparseCTRNNCell", "SparseCTRNN"]


class _SparseCellBase(RecordsGradFactors, nn.Module):
    _DENSE: type = nn.Module
    _bias_names = ("bias_ih", "bias_hh")
    fused = True  # see SparseRNNBase.fused
    proj_size = 0  # no projection in a cell; the attribute as on the layers

    def __init__(self, mode, input_size, hidden_size, bias=True, *, density=None, epsilon=None, sparse="both",
                 fused: bool = True, device=None, dtype=None):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        self.mode, self.input_size, self.hidden_size, self.bias = mode, input_size, hidden_size, bool(bias)
        self.has_bias = bool(bias)  # self.bias is a Parameter in SparseCTRNNCell, the paper's name
        self.sparse = sparse
        self.fused = bool(fused)
        sp_ih, sp_hh = sparse_flags(sparse)
        dtype = dtype or torch.get_default_dtype()
        G = GATES[mode] * hidden_size
        self.weight_ih = make_weight(G, input_size, sp_ih, hidden_size, density, epsilon, device, dtype)
        self.weight_hh = make_weight(G, hidden_size, sp_hh, hidden_size, density, epsilon, device, dtype)
        for name in self._bias_names:
            setattr(self, name, make_bias(G, hidden_size, device, dtype) if bias else None)

    @property
    def _flat_weights_names(self):
        return ["weight_ih", "weight_hh", *(self._bias_names if self.has_bias else ())]

    def _config(self, B: int, T: int = 1) -> Config:
        """The settings of a run of T input steps of B columns (the weights go to ``recurrence``)."""
        return Config(self.mode, self.hidden_size, B, T, fused=self.fused)

    def _check(self, input, hx_list, names):
        check_not_packed(input, type(self).__name__)
        if input.dim() not in (1, 2) or input.shape[-1] != self.input_size:
            raise ValueError(f"input must have shape (batch, {self.input_size}) or ({self.input_size},), "
                             f"got {tuple(input.shape)}")
        ref = weight_args(self.weight_ih)[0]
        check_input_dtype(input, ref)
        want = input.shape[:-1] + (self.hidden_size,)
        for t, name in zip(hx_list, names):
            if t is not None and (not isinstance(t, torch.Tensor) or t.shape != want):
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name} must have shape {tuple(want)}, got {got}")
            if t is not None:
                check_input_dtype(t, ref, name)

    def _run(self, input, h, c, b_ih, b_hh):
        """One input step through the Recurrence: returns (h', c') feature-major -> batch-major."""
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        B = x.shape[0]
        if h is None:
            h = x.new_zeros(B, self.hidden_size)
        elif not batched:
            h = h.unsqueeze(0)
        if self.mode == "LSTM":
            c = x.new_zeros(B, self.hidden_size) if c is None else (c if batched else c.unsqueeze(0))
        _, h2, c2 = recurrence(self._config(B), x.t()[None], h.t(), c.t() if c is not None else None, self.weight_ih,
                               self.weight_hh, b_ih, b_hh, self._factor_sink(""))
        h2 = h2.t()
        c2 = c2.t() if self.mode == "LSTM" else None
        if not batched:
            h2 = h2.squeeze(0)
            c2 = c2.squeeze(0) if c2 is not None else None
        return h2, c2

    @classmethod
    def from_dense(cls, cell: nn.Module, density: float | None = None, mask: dict | None = None,
                   sparse: str = "both", selection: str = "magnitude", generator: torch.Generator | None = None):
        """A sparse copy of torch's cell (see :meth:`SparseRNNBase.from_dense` for the options)."""
        if type(cell) is not cls._DENSE:
            raise TypeError(f"{cls.__name__}.from_dense expects a torch.nn.{cls._DENSE.__name__}, "
                            f"got {type(cell).__name__}")
        kw = {"nonlinearity": cell.nonlinearity} if cls is SparseRNNCell else {}
        new = cls(cell.input_size, cell.hidden_size, bias=cell.bias, density=EMPTY, sparse=sparse,
                  device=cell.weight_ih.device, dtype=cell.weight_ih.dtype, **kw)
        if density is None and mask is None:
            mask = nonzero_masks(cell)
        new.load_dense_state_dict(cell.state_dict(), density, mask=mask, selection=selection, generator=generator)
        return new

    def load_dense_state_dict(self, state_dict: dict, density: float | None = None, *, mask: dict | None = None,
                              selection: str = "magnitude", generator: torch.Generator | None = None) -> None:
        """Loads torch's cell's dense ``state_dict`` (see :meth:`SparseRNNBase.load_dense_state_dict`)."""
        load_dense(self, state_dict, density, mask, selection, generator)

    def _load_from_state_dict(self, state_dict, prefix, *args):
        refuse_dense_weights(self, state_dict, prefix, args[-1])  # a torch state_dict: say what to call
        super()._load_from_state_dict(state_dict, prefix, *args)

    def reset_parameters(self) -> None:
        """As torch's: every weight drawn again (see :func:`~sparse_engine.nn.weights.reset_weights`)."""
        reset_weights(self)

    def to_dense(self) -> nn.Module:
        """torch's cell with the same weights, requires_grad and training mode (O(H^2) memory: tests
        and export)."""
        ref = weight_args(self.weight_ih)[0]
        kw = {"nonlinearity": self.nonlinearity} if isinstance(self, SparseRNNCell) else {}
        dense = self._DENSE(self.input_size, self.hidden_size, bias=self.has_bias, device=ref.device, dtype=ref.dtype,
                            **kw)
        return fill_dense(dense, self, self._flat_weights_names)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, bias={self.has_bias}, sparse={self.sparse!r}"
                + ("" if self.fused else ", fused=False"))


class SparseRNNCell(_SparseCellBase):
    """Sparse ``nn.RNNCell``: h' = act(W_ih x + b_ih + W_hh h + b_hh)."""
    _DENSE = nn.RNNCell

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", **kwargs):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_" + nonlinearity.upper(), input_size, hidden_size, bias, **kwargs)

    def forward(self, input, hx=None):
        self._check(input, [hx], ["hx"])
        return self._run(input, hx, None, self.bias_ih, self.bias_hh)[0]


class SparseLSTMCell(_SparseCellBase):
    """Sparse ``nn.LSTMCell``: ``h', c' = cell(x, (h, c))``."""
    _DENSE = nn.LSTMCell

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, **kwargs):
        super().__init__("LSTM", input_size, hidden_size, bias, **kwargs)

    def forward(self, input, hx=None):
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError("hx must be a tuple (h, c)")
        h, c = hx if hx is not None else (None, None)
        self._check(input, [h, c], ["h", "c"])
        return self._run(input, h, c, self.bias_ih, self.bias_hh)


class SparseGRUCell(_SparseCellBase):
    """Sparse ``nn.GRUCell``."""
    _DENSE = nn.GRUCell

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, **kwargs):
        super().__init__("GRU", input_size, hidden_size, bias, **kwargs)

    def forward(self, input, hx=None):
        self._check(input, [hx], ["hx"])
        return self._run(input, hx, None, self.bias_ih, self.bias_hh)[0]


def _check_ct(dt, tau, unfolds):
    for name, v in (("dt", dt), ("tau", tau)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    check_positive_int("unfolds", unfolds)


class SparseCTRNNCell(_SparseCellBase):
    """Continuous-time RNN, Euler-unfolded (Zhang et al. 2023): per input step, ``unfolds`` times
    h <- h + dt * (-h / tau + tanh(W_ih x + W_hh h + bias)). Defaults dt=0.1, tau=0.5, 6 unfolds.
    One bias (``bias``) as in the paper."""
    _bias_names = ("bias",)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dt: float = 0.1, tau: float = 0.5,
                 unfolds: int = 6, **kwargs):
        _check_ct(dt, tau, unfolds)
        super().__init__("CTRNN", input_size, hidden_size, bias, **kwargs)
        self.dt, self.tau, self.unfolds = float(dt), float(tau), unfolds

    def _config(self, B: int, T: int = 1) -> Config:
        return Config(self.mode, self.hidden_size, B, T, dt=self.dt, tau=self.tau, unfolds=self.unfolds,
                      fused=self.fused)

    def forward(self, input, hx=None):
        self._check(input, [hx], ["hx"])
        return self._run(input, hx, None, self.bias, None)[0]

    @classmethod
    def from_dense(cls, *args, **kwargs):
        raise NotImplementedError("torch has no CT-RNN module to convert from")

    def load_dense_state_dict(self, *args, **kwargs):
        raise NotImplementedError("torch has no CT-RNN module whose state_dict to load")

    def to_dense(self):
        raise NotImplementedError("torch has no CT-RNN module; use weight.to_dense() per matrix")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", dt={self.dt}, tau={self.tau}, unfolds={self.unfolds}"


class SparseCTRNN(SparseCTRNNCell):
    """A CT-RNN layer over a sequence: ``output, h_n = layer(input, h_0)`` with torch's RNN shapes
    ((T, B, I) or batch_first (B, T, I), or unbatched (T, I) whatever batch_first says; h_0/h_n
    (1, B, H), unbatched (1, H)). ``output`` holds the state after the last unfold of each input
    step. One layer, one direction; no PackedSequence (TypeError)."""

    #: as SparseRNN's (:mod:`sparse_engine.nn.rnn`): the state kept every k Euler sub-steps, the
    #: rest recomputed in the backward; None: every sub-step kept
    recompute_every = None

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, batch_first: bool = False,
                 dt: float = 0.1, tau: float = 0.5, unfolds: int = 6, *, recompute_every: int | None = None,
                 **kwargs):
        super().__init__(input_size, hidden_size, bias, dt, tau, unfolds, **kwargs)
        self.batch_first = bool(batch_first)
        self.recompute_every = check_recompute_every(recompute_every)

    def _config(self, B: int, T: int = 1) -> Config:
        return Config(self.mode, self.hidden_size, B, T, dt=self.dt, tau=self.tau, unfolds=self.unfolds,
                      fused=self.fused, recompute_every=check_recompute_every(self.recompute_every))

    def forward(self, input, hx=None):
        check_not_packed(input, type(self).__name__)
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            got = tuple(input.shape)
            raise ValueError(f"input must be (T, B, {self.input_size}) or (T, {self.input_size}), got {got}")
        ref = weight_args(self.weight_ih)[0]
        check_input_dtype(input, ref)
        x, batched = time_major(input, self.batch_first)
        T, B, _ = x.shape
        want = (1, B, self.hidden_size) if batched else (1, self.hidden_size)
        if hx is None:
            h0 = x.new_zeros(self.hidden_size, B)
        else:
            if not isinstance(hx, torch.Tensor) or tuple(hx.shape) != want:
                got = tuple(hx.shape) if isinstance(hx, torch.Tensor) else type(hx).__name__
                raise ValueError(f"hx must have shape {want}, got {got}")
            check_input_dtype(hx, ref, "hx")
            h0 = (hx[0] if batched else hx[0].unsqueeze(0)).t()
        y, h_T, _ = recurrence(self._config(B, T), x.permute(0, 2, 1).contiguous(), h0, None, self.weight_ih,
                               self.weight_hh, self.bias, None, self._factor_sink(""))
        out = caller_layout(batch_rows(y), self.batch_first, batched)
        h_n = h_T.t().unsqueeze(0).contiguous()
        return out, (h_n if batched else h_n[:, 0])

    def extra_repr(self) -> str:
        return (super().extra_repr() + (", batch_first=True" if self.batch_first else "")
                + ("" if self.recompute_every is None else f", recompute_every={self.recompute_every}"))
