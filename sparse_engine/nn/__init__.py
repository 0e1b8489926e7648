"""Drop-in sparse replacements for torch.nn layers."""
from .linear import SparseLinear
from .rnn import SparseGRU, SparseLSTM, SparseRNN
from .cells import SparseCTRNN, SparseCTRNNCell, SparseGRUCell, SparseLSTMCell, SparseRNNCell

__all__ = ["SparseLinear", "SparseRNN", "SparseLSTM", "SparseGRU", "SparseRNNCell", "SparseLSTMCell",
           "SparseGRUCell", "SparseCTRNNCell", "SparseCTRNN"]
