"""Drop-in sparse replacements for torch.nn layers."""
from .._moved import old_name
from .linear import SparseLinear
from .mlp import SparseMLP
from .rnn import SparseGRU, SparseLSTM, SparseRNN
from .cells import SparseCTRNN, SparseCTRNNCell, SparseGRUCell, SparseLSTMCell, SparseRNNCell
from .rhn import SparseRHN
from .onlstm import SparseONLSTM
from .ode_rnn import SparseODERNN
from .lm import SparseEmbedding, SparseLanguageModel
from .parametrizations import SparseWeightNorm, WeightDrop, sparse_weight_norm, unparametrized, weight_drop
from ..recurrent import default_compute, set_default_compute, set_dense_budget

__all__ = ["SparseLinear", "SparseMLP", "SparseRNN", "SparseLSTM", "SparseGRU", "SparseRNNCell", "SparseLSTMCell",
           "SparseGRUCell", "SparseCTRNNCell", "SparseCTRNN",
           "SparseRHN", "SparseONLSTM", "SparseODERNN", "SparseEmbedding", "SparseLanguageModel",
           "WeightDrop", "SparseWeightNorm", "weight_drop", "sparse_weight_norm", "unparametrized",
           "default_compute", "set_default_compute", "set_dense_budget"]

__getattr__ = old_name(__name__)  # its old names, answered with a warning (sparse_engine._moved)
