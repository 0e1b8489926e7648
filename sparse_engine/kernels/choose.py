"""Which recurrent step is faster on the CPU, the fused op or the composed one, per shape.

A measured rule (docs/cpu_kernels.md has the table; benchmarks/bench_rnn_step.py measures it),
which :func:`sparse_engine.recurrent.cell_steps.fused_steps`, the one decision of which step a run
takes, consults for each direction of a CPU run's step once the fused ops apply (nothing else
calls it). Fused and composed steps of LSTM and GRU timed alternately, B=20, hidden 256 to 16,384
at 8 to 495 nonzeros per W_hh row, both backward steps given W_hh's values in column order (as
the recurrence does), on a quiet machine:
two threads (benchmarks/results/rnn_step_cpu.md) and one (rnn_step_cpu_1thread.md, hidden
1,500 to 16,384):

* backward: the fused step (elementwise gate gradient + W_hh^T dG in one op) 1.04-1.85x faster
  than the composed one everywhere on two threads, 1.26-1.62x on one.
* forward: the fused forward wins at short rows and small steps (two threads: 1.12-2.02x up to
  hidden 1,500 below 100 nonzeros per row; one thread: 1.04-1.16x up to hidden 8,192) and loses
  where the products dominate (495 per row: 0.96x / 1.02x; 164 per row: 0.91x / 0.92x: the
  composed step's spmm, which runs its rows with h alone in the cache, gathers faster than the
  fused one, which streams the gate activations in between) and where one step's
  pre-activations take megabytes (hidden 16,384, 16 per row: LSTM 5 MB 0.73x / 0.91x, GRU 3.9 MB
  0.77x / 0.99x, two / one thread: they evict the gathered h from L2). Hidden 4,096 at 41 per
  row (LSTM 1.3 MB, GRU 1.0 MB) is a draw: LSTM 0.95x on two threads, 1.07x on one; GRU 1.00x
  and 1.13x.

So: backward fused; forward fused below :data:`FUSED_FORWARD_MAX_ROW_NNZ` nonzeros per row when
the step's pre-activations (gates x hidden x batch float32 values) take at most
:data:`FUSED_FORWARD_MAX_GATE_BYTES` (3 MiB: 4 MiB, the bound before this measurement, took the
GRU at hidden 16,384), composed otherwise.
"""
from __future__ import annotations

from .constants import GATES

__all__ = ["choose_fused", "FUSED_FORWARD_MAX_ROW_NNZ", "FUSED_FORWARD_MAX_GATE_BYTES"]

#: nonzeros per W_hh row below which the fused forward step is chosen (measured, see above)
FUSED_FORWARD_MAX_ROW_NNZ = 100
#: bytes of one step's pre-activations (gates x hidden x batch float32 values) up to which the
#: fused forward step is chosen
FUSED_FORWARD_MAX_GATE_BYTES = 3 * 2**20


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
