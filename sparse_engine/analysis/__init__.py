"""Structure analysis of sparse weights: signed triad census, structural balance, null models,
motif lesions, topology distance (NNSTD), and a balance recorder for training.

Graph convention (everywhere): edge i -> j where W[j, i] != 0 (rows postsynaptic, as in
``y = W x``), sign of the weight, self-loops and explicit zeros dropped; ``transpose=True`` for
matrices used as ``h @ W``. See :mod:`.graph`.
"""
from .graph import GraphCSR, to_graph, edges, load_sparse_weight, to_networkx, read_edge_csv, write_edge_csv
from .census import (TRIAD_TYPES, TRANSITIVE_TYPES, TriadCensus, signed_triad_census, FeedForwardLoops,
                     feed_forward_loops)
from .balance import DEFINITIONS, Balance, structural_balance, balance_measures, ffl_coherence
from .nulls import METHODS, randomize, NullModelResult, null_model_test
from .lesions import KINDS, LesionCurve, lesion_ffls
from .nnstd import NNSTDResult, nnstd, jaccard_similarity, jaccard_cost, load_nnstd_layers
from .record import BalanceRecorder

__all__ = [
    "GraphCSR", "to_graph", "edges", "load_sparse_weight", "to_networkx", "read_edge_csv", "write_edge_csv",
    "TRIAD_TYPES", "TRANSITIVE_TYPES", "TriadCensus", "signed_triad_census", "FeedForwardLoops",
    "feed_forward_loops", "DEFINITIONS", "Balance", "structural_balance", "balance_measures", "ffl_coherence",
    "METHODS", "randomize", "NullModelResult", "null_model_test", "KINDS", "LesionCurve", "lesion_ffls",
    "NNSTDResult", "nnstd", "jaccard_similarity", "jaccard_cost", "load_nnstd_layers", "BalanceRecorder",
]
