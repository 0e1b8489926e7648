"""The dense-compute path's GRU on the CPU: torch's GRU recurrence with each layer-direction's
steps fused in C++ (the ops ``gru_sequence``/``gru_sequence_backward``,
``csrc/cpu/dense_rnn_cpu.cpp``).

torch fuses only the LSTM on the CPU (oneDNN); its GRU runs about ten ops per step, each with its
dispatch and, when training, its autograd node. :func:`gru` computes what ``torch.gru`` computes
for a time-major, unpacked input, with torch's formulas and torch's dropout between layers (the
same random numbers under the same seed), in one product per step plus one pass of gate math.
Measured at hidden 200, T=35, one thread (benchmarks/bench_small_lstm.py): see
docs/compute_paths.md. Double backward works: a differentiated backward recomputes the
recurrence with torch's ops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_ops = torch.ops.sparse_engine

__all__ = ["gru", "fused_gru_applies"]


def fused_gru_applies(x: torch.Tensor) -> bool:
    """Whether :func:`gru` runs for this input (the dense path calls ``torch.gru`` otherwise):
    on the CPU, float32 or float64."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def gru(x: torch.Tensor, hx: torch.Tensor, weights: list, has_biases: bool, num_layers: int, dropout: float,
        train: bool, bidirectional: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.gru(x, hx, weights, has_biases, num_layers, dropout, train, bidirectional, False)``
    for a time-major ``x`` (T, B, I) and ``hx`` (num_layers * D, B, H): (output (T, B, D * H),
    h_n (num_layers * D, B, H)). ``weights`` in torch's flat order (per layer-direction w_ih,
    w_hh(, b_ih, b_hh)), dense tensors."""
    D = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    layer_x, h_n = x, []
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            w_ih, w_hh, *b = weights[k * per:(k + 1) * per]
            b_ih, b_hh = b if has_biases else (None, None)
            gx = F.linear(layer_x, w_ih, b_ih)  # the input side of every step in one product
            y = _GruSequence.apply(gx, hx[k], w_hh, b_hh, bool(d))
            outs.append(y)
            h_n.append(y[0] if d else y[-1])
        layer_x = outs[0] if D == 1 else torch.cat(outs, 2)
        if dropout and train and layer < num_layers - 1:
            layer_x = F.dropout(layer_x, dropout, training=True)
    return layer_x, torch.stack(h_n)


def _gru_steps(gx, h0, w_hh, b_hh, reverse: bool) -> torch.Tensor:
    """The recurrence of ``gru_sequence`` with torch's differentiable ops (for double backward)."""
    T, H = gx.shape[0], h0.shape[1]
    h, ys = h0, [None] * T
    for i in range(T):
        t = T - 1 - i if reverse else i
        gh = F.linear(h, w_hh, b_hh)
        r = torch.sigmoid(gx[t, :, :H] + gh[:, :H])
        z = torch.sigmoid(gx[t, :, H:2 * H] + gh[:, H:2 * H])
        n = torch.tanh(gx[t, :, 2 * H:] + r * gh[:, 2 * H:])
        h = ys[t] = (h - n) * z + n
    return torch.stack(ys)


class _GruSequence(torch.autograd.Function):
    """(gx (T, B, 3H), h0 (B, H), w_hh (3H, H), b_hh (3H) or None, reverse) -> y (T, B, H). Of the
    ``forward(ctx, ...)`` kind: ``Function.apply`` binds a ``setup_context`` Function's
    arguments with ``inspect.signature`` at every call."""

    @staticmethod
    def forward(ctx, gx, h0, w_hh, b_hh, reverse):
        y, acts = _ops.gru_sequence(gx, h0, w_hh, b_hh, reverse)
        ctx.save_for_backward(gx, h0, w_hh, b_hh, y, acts)
        ctx.reverse = reverse
        return y

    @staticmethod
    def backward(ctx, dy):
        gx, h0, w_hh, b_hh, y, acts = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a backward that can itself be differentiated
            args = (gx, h0, w_hh, b_hh)
            wanted = [i for i, t in enumerate(args) if t is not None and t.requires_grad]
            grads = [None] * 5
            if wanted:
                again = _gru_steps(*args, ctx.reverse)
                found = torch.autograd.grad(again, [args[i] for i in wanted], dy, create_graph=True, allow_unused=True)
                for i, g in zip(wanted, found):
                    grads[i] = g
            return tuple(grads)
        dgx, dh0, dw_hh, db_hh = _ops.gru_sequence_backward(dy.contiguous(), acts, y, h0, w_hh, ctx.reverse,
                                                            b_hh is not None)
        return dgx, dh0, dw_hh, db_hh, None
