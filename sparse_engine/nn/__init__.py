"""Drop-in sparse replacements for torch.nn layers."""
from .linear import SparseLinear
from .rnn import SparseGRU, SparseLSTM, SparseRNN
from .cells import SparseCTRNN, SparseCTRNNCell, SparseGRUCell, SparseLSTMCell, SparseRNNCell
from .parametrizations import SparseWeightNorm, WeightDrop, sparse_weight_norm, unparametrized, weight_drop
from .compute import default_compute, set_default_compute, set_dense_budget

__all__ = ["SparseLinear", "SparseRNN", "SparseLSTM", "SparseGRU", "SparseRNNCell", "SparseLSTMCell",
           "SparseGRUCell", "SparseCTRNNCell", "SparseCTRNN", "WeightDrop", "SparseWeightNorm", "weight_drop",
           "sparse_weight_norm", "unparametrized", "default_compute", "set_default_compute", "set_dense_budget"]
