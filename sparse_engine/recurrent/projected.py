"""An LSTM layer-direction with a projection (``proj_size``), composed from the differentiable
products: the fused step kernels have none."""
from __future__ import annotations

import torch

from .config import Config
from .products import mm, weight_args

__all__ = ["projected_lstm"]


def projected_lstm(cfg: Config, x, h0, c0, w_ih, w_hh, w_hr, b_ih, b_hh, idx_hr=None):
    """An LSTM layer-direction with ``proj_size`` (torch's ``nn.LSTM(proj_size=P)``): per step
    c' = f c + i g, h' = W_hr (o tanh c'), so the recurrent product takes the P-dimensional h.
    Step-major like :class:`Recurrence`: x (T x I x B), h0 (P x B), c0 (H x B) ->
    (Y (T x P x B), h_T, c_T). The weights as :func:`recurrence` takes them (W_hr's index, when
    it is given as values, in ``idx_hr``).

    Composed from the differentiable products (``spmm``/``sddmm`` through their registered
    autograd formulas, or ``@`` for a dense matrix) and torch's elementwise ops under plain autograd:
    the fused step kernels have no projection, so this costs one sddmm per step and weight
    instead of one per sequence. Growth by gradient has no factors here (see ``SparseLSTM``)."""
    T = cfg.steps
    (w_ih, idx_ih), (w_hh, idx_hh) = weight_args(w_ih, cfg.idx_ih), weight_args(w_hh, cfg.idx_hh)
    w_hr, idx_hr = weight_args(w_hr, idx_hr)
    bias = None if b_ih is None else (b_ih + b_hh)[:, None]
    h, c = h0, c0
    out = [None] * T
    for t in (range(T - 1, -1, -1) if cfg.reverse else range(T)):
        gx = mm(w_ih, idx_ih, x[t])
        g = (gx if bias is None else gx + bias) + mm(w_hh, idx_hh, h)
        i, f, gg, o = g.chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = mm(w_hr, idx_hr, torch.sigmoid(o) * torch.tanh(c))
        out[t] = h
    return torch.stack(out), h, c
