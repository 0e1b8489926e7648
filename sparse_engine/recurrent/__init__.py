"""The recurrence engine: a recurrent layer's whole sequence, on the path its module asks for.

The modules of :mod:`sparse_engine.nn` come in through this package's names only:

* :func:`recurrence`: one layer-direction over a whole sequence on the sparse path, a single
  autograd.Function (:mod:`.sequence`, which says how the kernels are scheduled; the settings in
  :class:`Config`); an LSTM's projection goes through it too (:mod:`.projected`);
* :func:`dense_recurrence`: the dense path's whole stack, torch's recurrence on the weights
  materialised for one forward, and :func:`use_dense`, the choice between the two paths
  (:mod:`.compute_paths`, docs/compute_paths.md), and :func:`use_persistent`, whether the sparse
  path runs each sequence as one op each way (:mod:`.persistent`);
* :func:`batch_rows`: the step-major output in torch's layout (:mod:`.layout`);
* :class:`RecordsGradFactors`: the modules' side of growth by gradient (:mod:`.factor_sink`);
* :func:`weight_args`, :func:`matmul`: a weight's product as the kernels take it (:mod:`.products`),
  for the models composed step by step.

Inside: :mod:`.cell_steps` (one entry per cell: gate layout, fused op pair, composed steps, and
:func:`~.cell_steps.fused_steps`, the one fused-or-composed decision), :mod:`.recompute` (the steps
of a run and the backward's buffers, kept or recomputed) and :mod:`.dense_gru` (the dense path's
GRU on the CPU).
"""
from .compute_paths import (check_compute, default_compute, dense_recurrence, materialize_all, set_default_compute,
                            set_dense_budget, use_dense, use_persistent)
from .config import Config
from .factor_sink import RecordsGradFactors
from .layout import batch_rows
from .products import matmul, weight_args
from .sequence import recurrence

__all__ = ["recurrence", "Config", "dense_recurrence", "use_dense", "use_persistent", "check_compute", "materialize_all",
           "default_compute", "set_default_compute", "set_dense_budget", "batch_rows", "RecordsGradFactors",
           "matmul", "weight_args"]
