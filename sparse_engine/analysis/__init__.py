"""Structure analysis of sparse weights: signed triad census, structural balance, null models,
motif lesions, topology distance (NNSTD), and a balance recorder for training.

Graph convention (everywhere): edge i -> j where W[j, i] != 0 (rows postsynaptic, as in
``y = W x``), sign of the weight, self-loops and explicit zeros dropped; ``transpose=True`` for
matrices used as ``h @ W``. See :mod:`.graph`. Figures: :mod:`.plots`
(matplotlib, imported on use). The recurrent matrices of gated cells (LSTM, GRU:
the gate blocks stacked in one (G*H, H) matrix) are analysed per gate block and as the sum of
the blocks; see :mod:`.recurrent`.
"""
from .graph import (GraphCSR, to_graph, edges, load_sparse_weight, to_networkx, read_edge_csv, write_edge_csv,
                    ID_SPREAD)
from .census import (TRIAD_TYPES, TRANSITIVE_TYPES, NODE_SETS, TriadCensus, signed_triad_census, FeedForwardLoops,
                     feed_forward_loops)
from .balance import DEFINITIONS, CONVENTIONS, Balance, structural_balance, balance_measures, ffl_coherence
from .nulls import METHODS, randomize, NullModelResult, null_model_test
from .lesions import KINDS, MODES, LesionCurve, LesionRuns, lesion_ffls
from .nnstd import (AVERAGES, NNSTDResult, nnstd, nnstd_matrix, max_weight_matching, jaccard_similarity, jaccard_cost,
                    load_nnstd_layers, find_nnstd_networks)
from .recurrent import (SUM, CHECKPOINT_SUFFIXES, gate_names, gate_graphs, is_recurrent_name, recurrent_weights,
                        RecurrentMatrix, load_recurrent, AnalysisResult)
from .record import BalanceRecorder, read_record

__all__ = [
    "GraphCSR", "to_graph", "edges", "load_sparse_weight", "to_networkx", "read_edge_csv", "write_edge_csv",
    "TRIAD_TYPES", "TRANSITIVE_TYPES", "NODE_SETS", "CONVENTIONS", "TriadCensus", "signed_triad_census",
    "FeedForwardLoops", "feed_forward_loops", "DEFINITIONS", "Balance", "structural_balance", "balance_measures",
    "ffl_coherence", "METHODS", "randomize", "NullModelResult", "null_model_test", "KINDS", "MODES", "LesionCurve",
    "LesionRuns", "lesion_ffls", "AVERAGES", "NNSTDResult", "nnstd", "nnstd_matrix", "max_weight_matching",
    "jaccard_similarity", "jaccard_cost", "load_nnstd_layers", "find_nnstd_networks", "BalanceRecorder", "read_record",
    "ID_SPREAD", "SUM", "CHECKPOINT_SUFFIXES", "gate_names", "gate_graphs", "is_recurrent_name", "recurrent_weights",
    "RecurrentMatrix", "load_recurrent", "AnalysisResult",
]
