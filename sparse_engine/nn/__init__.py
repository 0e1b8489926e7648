"""Drop-in sparse replacements for torch.nn layers."""
from .linear import SparseLinear
from .mlp import SparseMLP
from .rnn import SparseGRU, SparseLSTM, SparseRNN
from .cells import SparseCTRNN, SparseCTRNNCell, SparseGRUCell, SparseLSTMCell, SparseRNNCell
from .rhn import SparseRHN
from .onlstm import SparseONLSTM
from .ode_rnn import SparseODERNN
from .lm import SparseEmbedding, SparseLanguageModel

__all__ = ["SparseLinear", "SparseMLP", "SparseRNN", "SparseLSTM", "SparseGRU", "SparseRNNCell", "SparseLSTMCell",
           "SparseGRUCell", "SparseCTRNNCell", "SparseCTRNN",
           "SparseRHN", "SparseONLSTM", "SparseODERNN", "SparseEmbedding", "SparseLanguageModel"]
