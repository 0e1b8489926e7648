"""Whole models built from the sparse layers of :mod:`sparse_engine.nn`: the sequence
classifier/regressor that ``sparse-engine train`` trains, importable on its own so that a
notebook or a script builds the same network the command line does."""
from __future__ import annotations

import torch
from torch import nn

from . import nn as snn
from .nn.rnn import SparseRNNBase

MODELS = ("lstm", "gru", "rnn", "ctrnn", "mlp")  # mlp: sparse_engine.nn.SparseMLP (SET-MLP), not a SequenceModel


class SequenceModel(nn.Module):
    """[embedding] -> sparse recurrent layer(s) -> dense readout (as Zhang et al.: only the
    recurrent part is sparse by default). ``readout``: "last" reads the last step (B, n_out),
    "steps" every step (B, T, n_out); None: "last" for classification, "steps" for regression.
    ``recompute_every``: the recurrent module's (keep the state every k steps, recompute the rest
    in the backward; :mod:`sparse_engine.memory` picks k for a memory budget); ``saved_dtype``: the
    recurrent module's (lstm, gru, rnn: the kept c's and activations in bfloat16)."""

    def __init__(self, model: str, n_in: int, n_out: int, hidden: int, layers: int, density: float,
                 sparse: str, kind: str, vocab: int | None = None, readout: str | None = None,
                 recompute_every: int | None = None, saved_dtype: torch.dtype | None = None):
        super().__init__()
        if readout not in (None, "last", "steps"):
            raise ValueError(f"readout must be 'last' or 'steps', got {readout!r}")
        self.kind = kind
        self.readout_mode = readout or ("last" if kind == "classify" else "steps")
        self.embed = nn.Embedding(vocab, n_in, padding_idx=0) if vocab else None
        if model == "ctrnn":
            if saved_dtype is not None:
                raise ValueError("saved_dtype is for lstm, gru and rnn, not ctrnn")
            self.rnn = snn.SparseCTRNN(n_in, hidden, density=density, sparse=sparse, batch_first=True,
                                       recompute_every=recompute_every)
        else:
            cls = {"lstm": snn.SparseLSTM, "gru": snn.SparseGRU, "rnn": snn.SparseRNN}[model]
            self.rnn = cls(n_in, hidden, num_layers=layers, batch_first=True, density=density, sparse=sparse,
                           recompute_every=recompute_every, saved_dtype=saved_dtype)
        self.readout = nn.Linear(hidden, n_out)

    def forward(self, x):
        if self.embed is not None:
            x = self.embed(x)
        if not isinstance(self.rnn, SparseRNNBase) or x.dim() != 3:  # SparseCTRNN, unbatched input
            out, h_n = self.rnn(x)
            return self.readout(out[..., -1, :] if self.readout_mode == "last" else out)
        if self.readout_mode == "last":  # the last step's output is the last layer's final state (one direction):
            h_n = self.rnn.final_state(x)  # no output sequence made
            h_n = h_n[0] if isinstance(h_n, tuple) else h_n
            return self.readout(h_n[-1])
        # the sparse modules' output as the recurrence computed it, step-major (T, H, B): the whole
        # sequence is never transposed to torch's layout, forward or backward
        y, h_n = self.rnn.step_major(x)
        w = self.readout.weight.expand(y.shape[0], -1, -1)  # bmm, not matmul: that would transpose y
        out = torch.baddbmm(self.readout.bias[:, None], w, y)  # (T, n_out, B), per step
        return out.permute(2, 0, 1)  # (B, T, n_out), batch-first as the input
