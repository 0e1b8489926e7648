"""SparseONLSTM: the ordered-neurons LSTM (Shen et al., ICLR 2019) with CSR weights, as
Selfish-RNN trains it on PTB (its ``ONLSTM/`` code, after the authors' public ON-LSTM).

The H hidden units form n = H / chunk_size chunks. Per step, with gates from
``W_ih x + b_ih + W_hh h + b_hh`` (rows [master input (n); master forget (n); o; c; i; f (H each)]):

    F~ = cumsoftmax(master forget),  I~ = 1 - cumsoftmax(master input)    (one value per chunk)
    w = F~ * I~
    f' = sigmoid(f) * w + (F~ - w),  i' = sigmoid(i) * w + (I~ - w)
    c_t = f' * c_{t-1} + i' * tanh(c),  h_t = sigmoid(o) * tanh(c_t)

``dropconnect`` (Selfish-RNN's ``--wdrop``) drops entries of W_hh as the original's
LinearDropConnect: in training each stored weight is zeroed with probability p, one mask per
forward, without rescaling; in eval W_hh is scaled by (1 - p). ``dropout`` is the locked
(variational) dropout between stacked layers (the original's ``dropouth``), not after the last.

Parameters and shapes follow :class:`~sparse_engine.nn.SparseLSTM`: ``weight_ih_l{k}``,
``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``; input (T, B, I), batch-first or
unbatched; ``hx = (h_0, c_0)`` and ``(h_n, c_n)`` each (num_layers, B, H) (unbatched
(num_layers, H)); one direction. The chunk distances the original returns for analysis are
not computed. Steps are composed from :func:`sparse_engine.ops.spmm` and torch's ops.
torch has no ON-LSTM, so there is no ``from_dense``/``to_dense``.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import locked_dropout
from ..recurrent import matmul, weight_args
from .sequences import caller_layout, initial_state, sequence_input
from .weights import check_dropout, check_positive_int, make_bias, make_weight, sparse_flags

__all__ = ["SparseONLSTM", "cumsoftmax"]


def cumsoftmax(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Cumulative softmax along ``dim``: a soft, monotone step from 0 to 1."""
    return torch.cumsum(torch.softmax(x, dim=dim), dim=dim)


class SparseONLSTM(nn.Module):
    """Stacked ON-LSTM: ``output, (h_n, c_n) = onlstm(input, (h_0, c_0))``."""

    def __init__(self, input_size: int, hidden_size: int, chunk_size: int = 10, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, dropconnect: float = 0.0, *,
                 density: float | None = None, epsilon: float | None = None, sparse: str = "both",
                 device=None, dtype=None):
        super().__init__()
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("chunk_size", chunk_size),
                        ("num_layers", num_layers)):
            check_positive_int(name, v)
        if hidden_size % chunk_size:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of chunk_size ({chunk_size})")
        self.input_size, self.hidden_size, self.chunk_size, self.num_layers = (input_size, hidden_size,
                                                                                chunk_size, num_layers)
        self.n_chunk = hidden_size // chunk_size
        self.has_bias, self.batch_first = bool(bias), bool(batch_first)
        self.dropout = check_dropout("dropout", dropout)
        self.dropconnect = check_dropout("dropconnect", dropconnect)
        self.sparse = sparse
        sp_ih, sp_hh = sparse_flags(sparse)
        dtype = dtype or torch.get_default_dtype()
        G = 4 * hidden_size + 2 * self.n_chunk
        for k in range(num_layers):
            layer_in = input_size if k == 0 else hidden_size
            setattr(self, f"weight_ih_l{k}", make_weight(G, layer_in, sp_ih, hidden_size, density, epsilon, device,
                                                         dtype))
            setattr(self, f"weight_hh_l{k}", make_weight(G, hidden_size, sp_hh, hidden_size, density, epsilon,
                                                         device, dtype))
            for name in (f"bias_ih_l{k}", f"bias_hh_l{k}"):
                setattr(self, name, make_bias(G, hidden_size, device, dtype) if bias else None)

    def _hh_values(self, w):
        """W_hh's values (sparse) or matrix (dense) after DropConnect."""
        v = weight_args(w)[0]
        if not self.dropconnect:
            return v
        if not self.training:
            return v * (1 - self.dropconnect)
        return v * torch.empty_like(v).bernoulli_(1 - self.dropconnect)

    def _step(self, g, c):
        """One cell update from the gate pre-activations g (G, B) and c (H, B)."""
        n, H, cs = self.n_chunk, self.hidden_size, self.chunk_size
        B = g.shape[1]
        cin = 1 - cumsoftmax(g[:n], 0)
        cforget = cumsoftmax(g[n:2 * n], 0)
        o, cell, i, f = g[2 * n:].reshape(4, n, cs, B)
        cin, cforget = cin[:, None], cforget[:, None]  # (n, 1, B): one value per chunk
        overlap = cforget * cin
        f = torch.sigmoid(f) * overlap + (cforget - overlap)
        i = torch.sigmoid(i) * overlap + (cin - overlap)
        c = f * c.view(n, cs, B) + i * torch.tanh(cell)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h.reshape(H, B), c.reshape(H, B)

    def forward(self, input, hx=None):
        ref = weight_args(self.weight_ih_l0)[0]
        x, batched = sequence_input(type(self).__name__, input, self.input_size, self.batch_first, ref)
        T, B, _ = x.shape
        L, H = self.num_layers, self.hidden_size
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError("hx must be a tuple (h_0, c_0)")
        want = (L, B, H) if batched else (L, H)
        h0 = initial_state(None if hx is None else hx[0], "h_0", want, batched, ref, x)
        c0 = initial_state(None if hx is None else hx[1], "c_0", want, batched, ref, x)
        layer_in = x
        h_n, c_n = [], []
        for k in range(L):
            w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
            b_ih, b_hh = getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")
            gx = matmul(w_ih, layer_in.reshape(T * B, -1).t())
            if b_ih is not None:
                gx = gx + b_ih[:, None]
            gx = gx.view(-1, T, B)
            v_hh = self._hh_values(w_hh)
            h, c = h0[k].t(), c0[k].t()
            outs = []
            for t in range(T):
                g = gx[:, t] + matmul(w_hh, h, v_hh)
                if b_hh is not None:
                    g = g + b_hh[:, None]
                h, c = self._step(g, c)
                outs.append(h)
            layer_in = torch.stack(outs).transpose(1, 2)  # (T, B, H)
            if k < L - 1:
                layer_in = locked_dropout(layer_in, self.dropout, self.training)
            h_n.append(h.t())
            c_n.append(c.t())
        h_n, c_n = torch.stack(h_n), torch.stack(c_n)
        if not batched:
            h_n, c_n = h_n[:, 0], c_n[:, 0]
        return caller_layout(layer_in, self.batch_first, batched), (h_n, c_n)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, chunk_size={self.chunk_size}, num_layers={self.num_layers}, "
                f"bias={self.has_bias}, sparse={self.sparse!r}"
                + (f", dropout={self.dropout}" if self.dropout else "")
                + (f", dropconnect={self.dropconnect}" if self.dropconnect else "")
                + (", batch_first=True" if self.batch_first else ""))
