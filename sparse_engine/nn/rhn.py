"""SparseRHN: a recurrent highway network layer (Zilly et al., ICML 2017) with CSR weights, as
Selfish-RNN (Liu et al., ICML 2021) trains it on PTB.

One time step is ``depth`` highway micro-steps on the state s (s_0 = the previous step's output):

    pre_l = R_l (s_{l-1} * m) + b_R_l  (+ W x_t + b_W  for l = 1 only)
    h_l = tanh(pre_l[H]);  t_l = sigmoid(pre_l[T]);  c_l = 1 - t_l (coupled carry gate, the default)
                                                     or sigmoid(pre_l[C]) (``couple=False``)
    s_l = h_l * t_l + s_{l-1} * c_l

and the step's output is s_depth. ``m`` is the variational dropout mask of the state
(``dropout_state``, Selfish-RNN's ``--dropouth``): one Bernoulli(1-p)/(1-p) mask per sequence
and unit, shared by every step and micro-step, applied to the state only where it enters R.

Weights: ``weight_ih`` (G*H x I) and ``weight_hh_d{l}`` (G*H x H) for l < depth, gates stacked
[H; T] (G=2) or [H; T; C] (G=3) in one CSR each, as Selfish-RNN masks each stacked matrix;
``bias_ih`` and ``bias_hh_d{l}`` (each highway block of the original has biases on its linear
maps). ``density=``/``epsilon=``/``sparse=`` as :class:`~sparse_engine.nn.SparseLSTM`
('both' default; 'recurrent' keeps W dense, 'input' keeps every R dense).

Shapes follow :class:`~sparse_engine.nn.SparseCTRNN`: input (T, B, I), batch-first (B, T, I) or
unbatched (T, I); ``hx`` and ``h_n`` (1, B, H) (unbatched (1, H)); output (T, B, H). Each step
is composed from :func:`sparse_engine.ops.spmm` and torch's elementwise ops, differentiated by
autograd (the input part of all T steps is one spmm). torch has no RHN, so there is no
``from_dense``/``to_dense``; ``weight.to_dense()`` gives each matrix.
"""
from __future__ import annotations

import torch
from torch import nn

from ..recurrent import matmul, weight_args
from .sequences import caller_layout, initial_state, sequence_input
from .weights import check_dropout, check_positive_int, make_bias, make_weight, sparse_flags

__all__ = ["SparseRHN"]


class SparseRHN(nn.Module):
    """Recurrent highway layer: ``output, h_n = rhn(input, hx)``. Defaults as Selfish-RNN's PTB
    run: depth 10, coupled carry gate."""

    def __init__(self, input_size: int, hidden_size: int, depth: int = 10, couple: bool = True, bias: bool = True,
                 batch_first: bool = False, dropout_state: float = 0.0, *, density: float | None = None,
                 epsilon: float | None = None, sparse: str = "both", device=None, dtype=None):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        check_positive_int("depth", depth)
        self.input_size, self.hidden_size, self.depth = input_size, hidden_size, depth
        self.couple, self.has_bias, self.batch_first = bool(couple), bool(bias), bool(batch_first)
        self.dropout_state = check_dropout("dropout_state", dropout_state)
        self.sparse = sparse
        sp_ih, sp_hh = sparse_flags(sparse)
        dtype = dtype or torch.get_default_dtype()
        G = (2 if self.couple else 3) * hidden_size
        self.weight_ih = make_weight(G, input_size, sp_ih, hidden_size, density, epsilon, device, dtype)
        self.bias_ih = make_bias(G, hidden_size, device, dtype) if bias else None
        for layer in range(depth):
            setattr(self, f"weight_hh_d{layer}",
                    make_weight(G, hidden_size, sp_hh, hidden_size, density, epsilon, device, dtype))
            setattr(self, f"bias_hh_d{layer}", make_bias(G, hidden_size, device, dtype) if bias else None)

    def forward(self, input, hx=None):
        ref = weight_args(self.weight_ih)[0]
        x, batched = sequence_input(type(self).__name__, input, self.input_size, self.batch_first, ref)
        T, B, _ = x.shape
        H = self.hidden_size
        want = (1, B, H) if batched else (1, H)
        s = initial_state(hx, "hx", want, batched, ref, x)[0].t()  # (H, B) feature-major
        if self.training and self.dropout_state:
            mask = s.new_empty(H, B).bernoulli_(1 - self.dropout_state) / (1 - self.dropout_state)
        else:
            mask = None
        gx = matmul(self.weight_ih, x.reshape(T * B, -1).t())  # all T steps in one product
        if self.bias_ih is not None:
            gx = gx + self.bias_ih[:, None]
        gx = gx.view(-1, T, B)
        outputs = []
        for t in range(T):
            for layer in range(self.depth):
                pre = matmul(getattr(self, f"weight_hh_d{layer}"), s if mask is None else s * mask)
                b = getattr(self, f"bias_hh_d{layer}")
                if b is not None:
                    pre = pre + b[:, None]
                if layer == 0:
                    pre = pre + gx[:, t]
                h = torch.tanh(pre[:H])
                gate = torch.sigmoid(pre[H:2 * H])
                carry = 1 - gate if self.couple else torch.sigmoid(pre[2 * H:])
                s = h * gate + s * carry
            outputs.append(s)
        out = torch.stack(outputs).transpose(1, 2)  # (T, B, H)
        h_n = s.t().unsqueeze(0).contiguous()
        return caller_layout(out, self.batch_first, batched), (h_n if batched else h_n[:, 0])

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, depth={self.depth}, couple={self.couple}, "
                f"bias={self.has_bias}, sparse={self.sparse!r}"
                + (f", dropout_state={self.dropout_state}" if self.dropout_state else "")
                + (", batch_first=True" if self.batch_first else ""))
