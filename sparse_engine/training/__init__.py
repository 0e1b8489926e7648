"""Dynamic sparse training: in-place topology updates and the algorithms built on them.

Controllers (``Name(model, optimizer, **params)``; call ``.step()`` after each
``optimizer.step()`` and ``.end_epoch()`` at the end of each epoch), one module each in
:mod:`.controllers`: :class:`SET`, :class:`SelfishRNN`, :class:`RigL`,
:class:`GradualMagnitudePruning`, :class:`DeepR`, and SET-MLP's recipe (:class:`SETMLP`,
:class:`SETSGD`). Building blocks: :mod:`.topology` (prune masks, growth, ``rewire``),
:mod:`.schedules`, :mod:`.density` (uniform / ERK), :mod:`.grad_factors` (what a module must
provide for growth by gradient), :mod:`.recipes` (the papers' settings), :class:`CompactAdam`
(Adam with bfloat16 moments, for models that must fit a small card).
"""
from .._moved import old_name
from .controllers import (SET, SET_MLP_SETTINGS, SETMLP, SETSGD, DeepR, GradualMagnitudePruning, RigL, SelfishRNN,
                          SparseNTASGD, TopologyController, importance_keep, redistribute, selfish_set_keep)
from ..sparse import sparse_weights
from .density import erk_densities, sparsify_, uniform_densities
from .compact_adam import CompactAdam
from .grad_factors import GradFactorRecorder
from .schedules import cosine_decay, cubic_density, narang_threshold
from .topology import (INIT_CHOICES, GradientGrowth, RandomGrowth, Remap, global_magnitude_keep, gradient_growth,
                       magnitude_keep, new_values, random_empty, remap_optimizer_state, rewire, set_keep,
                       threshold_keep)

__all__ = [
    "SET", "SETMLP", "SETSGD", "SET_MLP_SETTINGS", "importance_keep", "SelfishRNN", "RigL", "GradualMagnitudePruning", "DeepR", "TopologyController",
    "SparseNTASGD", "GradFactorRecorder", "redistribute", "selfish_set_keep",
    "cosine_decay", "cubic_density", "narang_threshold",
    "sparse_weights", "uniform_densities", "erk_densities", "sparsify_",
    "INIT_CHOICES", "Remap", "magnitude_keep", "global_magnitude_keep", "set_keep", "threshold_keep",
    "random_empty", "gradient_growth", "RandomGrowth", "GradientGrowth", "new_values", "rewire",
    "remap_optimizer_state", "CompactAdam",
]


__getattr__ = old_name(__name__)  # old paths (sparse_engine._moved): training.selfish, .set_mlp, ...
