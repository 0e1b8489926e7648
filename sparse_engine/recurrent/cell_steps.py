"""The recurrent cells as one table: per mode its gate layout, its fused step op pair and its
composed step and step-backward, behind one calling convention.

Feature-major throughout (states (H x B), gate blocks of H rows stacked in torch's order, see
:data:`sparse_engine.kernels.constants.GATE_NAMES`). A weight is either sparse (``values`` plus the 5
index tensors of a SparseWeight) or dense (an ordinary matrix, index ``None``): the pair
:func:`sparse_engine.recurrent.products.weight_args` makes, whose products (:mod:`.products`) the composed
steps call. Which of a cell's two steps runs, for each direction, is decided here once per run
(:func:`fused_steps`).

The calling convention is the fused ops' (``csrc/cpu/rnn_step_cpu.cpp``; the CUDA kernels implement
the same), with ``(w, idx)`` in place of ``(*idx, w)``::

    step(w, idx, gx, h, [c], [b_hh], *params)            -> h' | (h', [c'], acts)
    step_backward(w, idx, *saved, dh, [dc], *params, values_t=None)
                                                         -> ([dgx], dG, dh_prev, [dc_prev])

(``values_t``: W_hh's values in column order, :func:`~sparse_engine.recurrent.products.transposed`, made
once per sequence.)

``[c]``/``[dc]`` only for a cell with a cell state (LSTM), ``[b_hh]`` only where the hidden
bias enters the step (GRU's n gate), ``[dgx]`` only where the input-side gate gradient differs
from the hidden-side one (GRU); ``saved`` are the forward's buffers the backward reads
(:attr:`Cell.saved`) and ``params`` the cell's scalars (:attr:`Cell.params`). A composed step is
written with the same torch ops in the same order as before; :meth:`Cell.forward_step` and
:meth:`Cell.backward_step` unpack either kind the same way, so the loops of
:class:`~sparse_engine.recurrent.sequence.Recurrence` do not branch per mode.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..kernels import has_kernel
from ..kernels.choose import choose_fused
from ..kernels.constants import GATE_NAMES, GATES, SAVED_ACTS
from .products import mm, mm_t

_ops = torch.ops.sparse_engine


# --------------------------------------------------------------- composed steps
_LSTM = {name: k for k, name in enumerate(GATE_NAMES["LSTM"])}  # i 0, f 1, g 2, o 3
_GRU = {name: k for k, name in enumerate(GATE_NAMES["GRU"])}  # r 0, z 1, n 2


def _block(g, H, k):
    """Gate block k (rows k*H .. (k+1)*H) of stacked gates."""
    return g[k * H:(k + 1) * H]


# The composed forward steps write their saved activations in place into one new tensor (the
# pre-activations' own, LSTM; one of 4H rows, GRU): no per-gate temporaries and no torch.cat copy
# of them. They run inside the Recurrence's forward, where autograd records nothing.
def lstm_step(w, idx, gx, h, c):
    g = gx + mm(w, idx, h)  # becomes the saved activations [i, f, g, o]
    H = h.shape[0]
    i, f, gg, o = (_block(g, H, _LSTM[k]) for k in "ifgo")
    i.sigmoid_(), f.sigmoid_(), gg.tanh_(), o.sigmoid_()
    c2 = torch.addcmul(f * c, i, gg)
    h2 = o * torch.tanh(c2)
    return h2, c2, g


def lstm_step_backward(w, idx, acts, c_prev, c, dh, dc, values_t=None):
    i, f, g, o = acts.chunk(SAVED_ACTS["LSTM"])
    tc = torch.tanh(c)
    dct = dc + dh * o * (1 - tc * tc)
    dG = torch.cat([dct * g * i * (1 - i), dct * c_prev * f * (1 - f), dct * i * (1 - g * g),
                    dh * tc * o * (1 - o)])
    return dG, mm_t(w, idx, dG, values_t), dct * f


def gru_step(w, idx, gx, h, b_hh):
    gh = mm(w, idx, h)
    if b_hh is not None:
        gh.add_(b_hh[:, None])
    H = h.shape[0]
    acts = gh.new_empty(4 * H, h.shape[1])  # the saved activations [r, z, n, W_hn h + b_hn]
    r, z, n, ghn = (_block(acts, H, k) for k in range(4))
    torch.add(_block(gx, H, _GRU["r"]), _block(gh, H, _GRU["r"]), out=r).sigmoid_()
    torch.add(_block(gx, H, _GRU["z"]), _block(gh, H, _GRU["z"]), out=z).sigmoid_()
    ghn.copy_(_block(gh, H, _GRU["n"]))
    torch.addcmul(_block(gx, H, _GRU["n"]), r, ghn, out=n).tanh_()
    h2 = n + z * (h - n)
    return h2, acts


def gru_step_backward(w, idx, acts, h_prev, dh, values_t=None):
    r, z, n, ghn = acts.chunk(SAVED_ACTS["GRU"])
    dn = dh * (1 - z) * (1 - n * n)
    dr = dn * ghn * r * (1 - r)
    dz = dh * (h_prev - n) * z * (1 - z)
    dgx = torch.cat([dr, dz, dn])
    dgh = torch.cat([dr, dz, dn * r])
    return dgx, dgh, dh * z + mm_t(w, idx, dgh, values_t)


def rnn_step(w, idx, gx, h, relu):
    pre = gx + mm(w, idx, h)
    return torch.relu(pre) if relu else torch.tanh(pre)


def rnn_step_backward(w, idx, h2, dh, relu, values_t=None):
    dpre = dh * (h2 > 0) if relu else dh * (1 - h2 * h2)
    return dpre, mm_t(w, idx, dpre, values_t)


def ctrnn_step(w, idx, gx, h, dt, tau):
    a = torch.tanh(gx + mm(w, idx, h))
    return h * (1 - dt / tau) + dt * a, a


def ctrnn_step_backward(w, idx, a, dh, dt, tau, values_t=None):
    dpre = dh * dt * (1 - a * a)
    return dpre, dh * (1 - dt / tau) + mm_t(w, idx, dpre, values_t)


# ------------------------------------------------------------------- the table
#: What a step's backward reads of its forward: (buffer, step offset) into the Recurrence's
#: buffers "h" and "c" (states 0..S, processing order) and "acts" (saved activations 0..S-1).
ACTS, H_PREV, H_NEW, C_PREV, C_NEW = ("acts", 0), ("h", 0), ("h", 1), ("c", 0), ("c", 1)


def _index_first(op):
    """An op taking (*idx, w, ...) as a step taking (w, idx, ...)."""
    return lambda w, idx, *args, **kwargs: op(*idx, w, *args, **kwargs)


def _no_params(cfg) -> tuple:
    return ()


@dataclass(frozen=True)
class Cell:
    """One recurrent cell: the fused ops ``torch.ops.sparse_engine.<kernel>_step`` and
    ``<kernel>_step_backward``, the composed ``step``/``step_backward`` with the same contract
    (see the module docstring), and what sets this cell's calls apart."""

    mode: str
    kernel: str
    step: Callable
    step_backward: Callable
    saved: tuple                      # the forward's buffers step_backward takes before dh
    params: Callable = _no_params     # cfg -> the scalars both steps take last
    cell_state: bool = False          # LSTM: c is carried next to h
    hidden_bias: bool = False         # GRU: b_hh enters the step (n gate), not folded into gx
    input_grad: bool = False          # GRU: step_backward returns the input-side gate gradient first
    continuous: bool = False          # CT-RNN: cfg.unfolds Euler sub-steps per input step

    @property
    def gates(self) -> int:
        """Gate blocks of H rows in W_ih / W_hh."""
        return GATES[self.mode]

    @property
    def gate_names(self) -> tuple:
        return GATE_NAMES[self.mode]

    @property
    def saved_acts(self) -> int:
        """Blocks of H rows of the activations a step saves (0: h' is enough)."""
        return SAVED_ACTS[self.mode]

    def unfolds(self, cfg) -> int:
        """Steps per input step."""
        return cfg.unfolds if self.continuous else 1

    def fused_ops(self) -> tuple:
        """(step op, step-backward op) of the compiled library, (*idx, w, ...) convention."""
        return getattr(_ops, f"{self.kernel}_step"), getattr(_ops, f"{self.kernel}_step_backward")

    def steps(self, fused: bool) -> tuple:
        """(step, step_backward) in the (w, idx, ...) convention: the fused ops or the composed steps."""
        if fused:
            return tuple(_index_first(op) for op in self.fused_ops())
        return self.step, self.step_backward

    def forward_step(self, step, w, idx, gx, h, c, tail):
        """One step: (h', c' (``c`` unchanged without a cell state), saved activations or None).
        ``tail``: ``(b_hh,)`` where the hidden bias enters the step, then the params."""
        out = step(w, idx, gx, h, c, *tail) if self.cell_state else step(w, idx, gx, h, *tail)
        if isinstance(out, torch.Tensor):  # h' alone (nothing saved)
            out = (out,)
        return out[0], (out[1] if self.cell_state else c), (out[-1] if self.saved_acts else None)

    def backward_step(self, step_backward, w, idx, saved, dh, dc, params, values_t=None, **weight_grad):
        """One step back: (input-side gate gradient, hidden-side gate gradient, dh_prev, dc_prev
        (``dc`` unchanged without a cell state)). ``values_t``: ``transposed`` W_hh (:mod:`.products`), or None.
        ``weight_grad``: ``h_in=, dw_t=`` for a fused step backward, which then adds W_hh's gradient
        of the step to ``dw_t`` (in the transposed index's order; csrc/ops.cpp)."""
        if self.cell_state:
            out = step_backward(w, idx, *saved, dh, dc, *params, values_t=values_t, **weight_grad)
        else:
            out = step_backward(w, idx, *saved, dh, *params, values_t=values_t, **weight_grad)
        k = 1 if self.input_grad else 0
        return out[0], out[k], out[k + 1], (out[k + 2] if self.cell_state else dc)

    def saved_at(self, s: int, bufs: dict) -> list:
        """What step s's backward reads, from the buffers {"h", "c", "acts"}."""
        return [bufs[b][s + o] for b, o in self.saved]


CELLS = {c.mode: c for c in (
    Cell("LSTM", "lstm", lstm_step, lstm_step_backward, (ACTS, C_PREV, C_NEW), cell_state=True),
    Cell("GRU", "gru", gru_step, gru_step_backward, (ACTS, H_PREV), hidden_bias=True, input_grad=True),
    Cell("RNN_TANH", "rnn", rnn_step, rnn_step_backward, (H_NEW,), params=lambda cfg: (False,)),
    Cell("RNN_RELU", "rnn", rnn_step, rnn_step_backward, (H_NEW,), params=lambda cfg: (True,)),
    Cell("CTRNN", "ctrnn", ctrnn_step, ctrnn_step_backward, (ACTS,), params=lambda cfg: (cfg.dt, cfg.tau),
         continuous=True),
)}

#: The fused step ops of every cell, forward and backward.
FUSED_OPS = tuple(f"{k}_step{sfx}" for k in dict.fromkeys(c.kernel for c in CELLS.values())
                  for sfx in ("", "_backward"))


def _registered_fused_devices() -> frozenset:
    """The device types whose dispatch key has every fused step op in this build."""
    if not hasattr(_ops, "lstm_step"):
        return frozenset()
    return frozenset(dev for dev in ("cpu", "cuda") if all(has_kernel(op, dev) for op in FUSED_OPS))


#: Looked up once at import (the compiled library registers its kernels when it loads), so that a
#: forward under ``torch.compile`` reads a constant instead of querying the dispatcher (a graph break).
FUSED_DEVICES = _registered_fused_devices()
#: The values' dtypes the fused step ops take (fp16/bf16 storage composes the step).
FUSED_DTYPES = (torch.float32, torch.float64)


def has_fused_kernels(device_type: str) -> bool:
    """Whether this build registered the fused step ops for the device's dispatch key."""
    return device_type in FUSED_DEVICES


# ------------------------------------------------------- fused or composed: the one decision
def fused_ok(cfg, w_hh: torch.Tensor) -> bool:
    """Whether the fused step ops apply to a run at all: asked for (``cfg.fused``, the module's
    ``fused`` setting), a sparse W_hh (``cfg.idx_hh``), values ``w_hh`` in float32/float64, on a
    device whose build has the ops (:data:`FUSED_DEVICES`). The first test of :func:`fused_steps`."""
    return (cfg.fused and cfg.idx_hh is not None and w_hh.dtype in FUSED_DTYPES
            and w_hh.device.type in FUSED_DEVICES)


def fused_steps(cfg, w_hh: torch.Tensor) -> tuple[bool, bool]:
    """(forward, backward): whether each direction of a run's step is the fused op (else the
    composed step), for the run's :class:`~sparse_engine.recurrent.sequence.Config` and W_hh's values
    (or dense matrix) ``w_hh``: the one place that decides. Where the fused ops apply
    (:func:`fused_ok`) and, on the CPU, where the measured rule
    :func:`sparse_engine.kernels.choose.choose_fused` expects the fused op to be faster than the
    composed step for this W_hh (nonzeros per row) and batch; on other devices (not measured) both
    fused. The two directions share one calling convention, so either can be composed while the
    other is fused. Reads only constants and sizes, no dispatcher: safe inside ``torch.compile``."""
    if not fused_ok(cfg, w_hh):
        return False, False
    sizes = (cfg.hidden, cfg.batch)
    if w_hh.device.type != "cpu" or not all(isinstance(v, int) and v >= 1 for v in sizes):
        return True, True  # other devices: not measured; symbolic or empty sizes: no guard on them
    nnz = cfg.idx_hh[1].numel()
    return (choose_fused(cfg.mode, cfg.hidden, nnz, cfg.batch),
            choose_fused(cfg.mode, cfg.hidden, nnz, cfg.batch, backward=True))
