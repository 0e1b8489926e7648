"""The topology controllers, one module per algorithm on one base (:mod:`.base`: the weights, the
generator, the schedule, the one-pass update of a layer, state_dict):

* :mod:`.set`: :class:`SET` (Mocanu et al. 2018);
* :mod:`.rigl`: :class:`RigL` (Evci et al. 2020);
* :mod:`.gmp`: :class:`GradualMagnitudePruning` (Zhu and Gupta 2017; Narang et al. 2017);
* :mod:`.deepr`: :class:`DeepR` (Bellec et al. 2018; Zhang et al. 2023's variant);
* :mod:`.selfish`: :class:`SelfishRNN` with its :class:`SparseNTASGD` averaging (Liu et al. 2021);
* :mod:`.set_mlp`: :class:`SETMLP`, SET as SET-MLP runs it, with its optimizer :class:`SETSGD`.
"""
from .base import Callback, TopologyController
from .deepr import DeepR
from .gmp import GradualMagnitudePruning
from .rigl import RigL
from .selfish import SelfishRNN, SparseNTASGD, redistribute, selfish_set_keep
from .set import SET
from .set_mlp import SET_MLP_SETTINGS, SETMLP, SETSGD, importance_keep

__all__ = ["TopologyController", "SET", "RigL", "GradualMagnitudePruning", "DeepR", "SelfishRNN", "SETMLP",
           "SETSGD", "SET_MLP_SETTINGS", "SparseNTASGD", "importance_keep", "redistribute", "selfish_set_keep",
           "Callback"]
