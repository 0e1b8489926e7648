"""Whole models built from the sparse layers of :mod:`sparse_engine.nn`: the sequence
classifier/regressor that ``sparse-engine train`` trains, importable on its own so that a
notebook or a script builds the same network the command line does."""
from __future__ import annotations

from torch import nn

from . import nn as snn
from .nn.rnn import SparseRNNBase

MODELS = ("lstm", "gru", "rnn", "ctrnn", "mlp")  # mlp: sparse_engine.nn.SparseMLP (SET-MLP), not a SequenceModel


class SequenceModel(nn.Module):
    """[embedding] -> sparse recurrent layer(s) -> dense readout (as Zhang et al.: only the
    recurrent part is sparse by default). Classification reads the last step; regression
    predicts every step."""

    def __init__(self, model: str, n_in: int, n_out: int, hidden: int, layers: int, density: float,
                 sparse: str, kind: str, vocab: int | None = None):
        super().__init__()
        self.kind = kind
        self.embed = nn.Embedding(vocab, n_in, padding_idx=0) if vocab else None
        if model == "ctrnn":
            self.rnn = snn.SparseCTRNN(n_in, hidden, density=density, sparse=sparse, batch_first=True)
        else:
            cls = {"lstm": snn.SparseLSTM, "gru": snn.SparseGRU, "rnn": snn.SparseRNN}[model]
            self.rnn = cls(n_in, hidden, num_layers=layers, batch_first=True, density=density, sparse=sparse)
        self.readout = nn.Linear(hidden, n_out)

    def forward(self, x):
        if self.embed is not None:
            x = self.embed(x)
        if self.kind == "classify":
            # the last step's output is the last layer's final state (one direction): read from h_n,
            # the sequence is never put in torch's layout (final_state) and the gradient does not
            # pass through a T x B x H zero tensor with one nonzero step
            h_n = self.rnn.final_state(x) if isinstance(self.rnn, SparseRNNBase) else self.rnn(x)[1]
            h_n = h_n[0] if isinstance(h_n, tuple) else h_n
            return self.readout(h_n[-1])
        out, _ = self.rnn(x)
        # on the time-major (T, B, H) tensor the recurrent module computed (``out`` is its
        # batch-first view): the readout then neither copies it forward nor its gradient back
        return self.readout(out.transpose(0, 1)).transpose(0, 1)
