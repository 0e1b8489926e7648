"""Which recurrent step to run on the CPU, the fused op or the composed one, per shape.

A measured rule (docs/cpu_kernels.md has the table; benchmarks/bench_rnn_step.py measures it),
taken by the recurrence (:func:`sparse_engine.nn.recurrence.fused_steps`) for each direction of
the step. Fused and composed steps of LSTM and GRU timed alternately on one thread (CPU time),
B=20, hidden 256 to 16,384 at 8 to 495 nonzeros per W_hh row, both backward steps given W_hh's
values in column order (as the recurrence does), 2026-11-23, load average 2-3:

* backward: the fused step (elementwise gate gradient + W_hh^T dG in one op) 1.04-1.99x faster
  than the composed one everywhere.
* forward: both are now close. The fused forward wins at short rows (LSTM 1.03-1.13x, GRU
  1.05-1.65x below 100 nonzeros per row) and loses where the products dominate (123-495 per
  row: LSTM 0.83-0.99x, GRU 0.82-1.08x: the composed step's spmm, which runs its rows with h
  alone in the cache, gathers faster than the fused one, which streams the gate activations in
  between), and for the LSTM at hidden 16,384, B = 20 (0.88-0.98x at 16 per row: its 5 MB of
  pre-activations per step evict the gathered h from L2).

So: backward fused; forward fused below :data:`FUSED_FORWARD_MAX_ROW_NNZ` nonzeros per row when
the step's pre-activations (gates x hidden x batch float32 values) take at most
:data:`FUSED_FORWARD_MAX_GATE_BYTES`, composed otherwise. (Before the fused forward's fixes of
issue #13 the rule was the other way round, fused from 256 per row: the composed step has
become faster too, its spmm and its elementwise ops.)
"""
from __future__ import annotations

from ..constants import GATES

__all__ = ["choose_fused", "FUSED_FORWARD_MAX_ROW_NNZ", "FUSED_FORWARD_MAX_GATE_BYTES"]

#: nonzeros per W_hh row below which the fused forward step is chosen (measured, see above)
FUSED_FORWARD_MAX_ROW_NNZ = 100
#: bytes of one step's pre-activations (gates x hidden x batch float32 values) up to which the
#: fused forward step is chosen
FUSED_FORWARD_MAX_GATE_BYTES = 4 * 2**20


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
    rows = GATES[mode] * hidden
    return nnz < FUSED_FORWARD_MAX_ROW_NNZ * rows and 4 * rows * batch <= FUSED_FORWARD_MAX_GATE_BYTES
