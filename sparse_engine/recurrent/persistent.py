"""The recurrence of a layer-direction as one op each way (``compute="persistent"``): on a GPU the
persistent kernels (one cooperative launch runs all T steps, a grid-wide barrier between steps:
``csrc/cuda/rnn_sequence_cuda.cu``), on the CPU the same ops' loop over the fused step ops (their
contract, ``csrc/cpu/rnn_sequence_cpu.cpp``).

Why: at a few thousand hidden units a step is microseconds of work, and the per-step path pays
its launches and the gaps between them T times over (Diamos et al. 2016, Persistent RNNs; Zhu et
al. 2018, Sparse Persistent RNNs). Around the two ops the run is the stacked one of
:class:`~sparse_engine.recurrent.sequence.Recurrence`: the input part of all steps as one product
before the forward, each weight's gradient as one product over all T*B columns after the backward
(growth by gradient takes its factors from there, as in the stacked run). What the forward keeps
for the backward: Y, LSTM's c's and the saved gate activations (T x 4H x B), like the stacked run.

It applies (:func:`applies`) where the fused step ops do (a sparse W_hh in float32/float64 on a
device with the ops, the module's ``fused``), to LSTM, GRU and the vanilla RNN, with every step's
activations kept (no ``recompute_every``); a run it does not apply to takes the per-step path. On
the CPU it gives the per-step path's bits (the same step calls; for a reverse direction the weight
gradients add the steps' columns in another order); on a GPU the same numbers up to the order of
each sum, and deterministic.
"""
from __future__ import annotations

import torch

from ..kernels.constants import GATES
from .cell_steps import fused_ok

_ops = torch.ops.sparse_engine

#: the cells with a sequence op (CT-RNN's sub-steps keep the per-step path)
MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")


def applies(cfg, w_hh: torch.Tensor) -> bool:
    """Whether a run takes the sequence ops: asked for (``cfg.persistent``), a mode of :data:`MODES`,
    where the fused step ops apply (:func:`~sparse_engine.recurrent.cell_steps.fused_ok`), no
    recomputation, no ``saved_dtype`` and at least one step."""
    return (cfg.persistent and cfg.mode in MODES and fused_ok(cfg, w_hh) and cfg.recompute_every is None
            and cfg.saved_dtype is None and not (isinstance(cfg.steps, int) and cfg.steps < 1))


def forward(cfg, w_hh, b_hh, gx, h0, c0):
    """The run's forward from its stacked input part ``gx`` ((G*H) x (T*B), biases in):
    (Y (T x H x B), h_T, c_T (LSTM, else None), saved: (cs, acts) for :func:`backward`)."""
    T, H, B = cfg.steps, cfg.hidden, cfg.batch
    y, cs, acts = _ops.rnn_sequence(*cfg.idx_hh, w_hh, cfg.mode, gx.view(GATES[cfg.mode] * H, T, B), h0,
                                    c0 if cfg.mode == "LSTM" else None, b_hh if cfg.mode == "GRU" else None,
                                    cfg.reverse)
    last = 0 if cfg.reverse else T - 1  # h_T and c_T: copies, not views of what the backward reads
    return y, y[last].clone(), cs[last].clone() if cfg.mode == "LSTM" else None, (cs, acts)


def backward(cfg, w_hh, w_hh_t, y, h0, c0, saved, dy, dh, dc):
    """The run's backward through time: (g_ih, g_hh, x_hh, dh_0, dc_0), the gate gradients of the
    input and the hidden side ((G*H) x (T*B), the same tensor but for GRU) and the states W_hh
    multiplied ((H) x (T*B), column t*B + b the state before step t), for the weight gradients."""
    T, H, B = cfg.steps, cfg.hidden, cfg.batch
    cs, acts = saved
    lstm = cfg.mode == "LSTM"
    dG, dgx, dh0, dc0 = _ops.rnn_sequence_backward(
        *cfg.idx_hh, w_hh, cfg.mode, y, h0, c0 if lstm else None, cs if lstm else None,
        acts if cfg.mode in ("LSTM", "GRU") else None, dy, dh, dc if lstm else None, cfg.reverse, w_hh_t)
    rows = GATES[cfg.mode] * H  # named: a view(-1, ...) cannot size an empty batch
    g_hh = dG.view(rows, T * B)
    g_ih = dgx.view(rows, T * B) if cfg.mode == "GRU" else g_hh
    before = (y[1:], h0[None]) if cfg.reverse else (h0[None], y[:-1])  # the state each step read
    x_hh = torch.cat(before).permute(1, 0, 2).reshape(H, T * B)
    return g_ih, g_hh, x_hh, dh0, dc0 if lstm else None
