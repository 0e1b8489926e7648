"""Which recurrent step to run on the CPU, the fused op or the composed one, per shape.

A measured rule (docs/cpu_kernels.md has the table; benchmarks/bench_rnn_step.py measures it),
taken by the recurrence (:func:`sparse_engine.nn.recurrence.fused_steps`) for each direction of
the step. Fused and composed steps of LSTM and GRU timed alternately on one thread, B=20, hidden
256 to 16,384 at 16 to 495 nonzeros per W_hh row, both backward steps given W_hh's values in
column order (as the recurrence does):

* first measurement (issue #13, before the fixes below): the fused backward won everywhere but
  one tie, the fused forward lost at 16-75 nonzeros per row (0.75-0.98x), so the forward was
  chosen fused only from 256 nonzeros per row;
* after the fused forward stopped computing the gate functions on padding lanes (60% more
  values than it kept at B=20), prefetched its block's gx and cell state, and took tanh from
  one exp: fused / composed 1.15-1.40x (LSTM forward), 1.14-1.71x (GRU forward) from 16 to 75
  nonzeros per row, 1.01-1.06x at 164-495, and the backward 1.06-1.95x (CPU time of one
  thread, load average about 12, 2026-11-22). So both directions are fused at every measured
  shape: the threshold is 0. It stays a rule, so that a measurement that finds a losing shape
  changes one number.
"""
from __future__ import annotations

from ..constants import GATES

__all__ = ["choose_fused", "FUSED_FORWARD_MIN_ROW_NNZ"]

#: nonzeros per W_hh row from which the fused forward step is chosen (measured, see above)
FUSED_FORWARD_MIN_ROW_NNZ = 0


def choose_fused(mode: str, hidden: int, nnz: int, batch: int, *, backward: bool = False) -> bool:
    """True when the fused CPU step is expected to be faster than the composed one for a W_hh
    of ``nnz`` nonzeros in ``GATES[mode] * hidden`` rows, at this batch size; ``backward``
    chooses for the step's backward instead of its forward."""
    if mode not in GATES:
        raise ValueError(f"mode must be one of {sorted(GATES)}, got {mode!r}")
    for name, v in (("hidden", hidden), ("nnz", nnz), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if v < (0 if name == "nnz" else 1):
            raise ValueError(f"{name} must be {'>= 0' if name == 'nnz' else '>= 1'}, got {v}")
    if backward:
        return True
    return nnz >= FUSED_FORWARD_MIN_ROW_NNZ * GATES[mode] * hidden
