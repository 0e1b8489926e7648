"""Which recurrent step is faster on the CPU, the fused op or the composed one, per shape.

A measured rule (docs/cpu_kernels.md has the tables; benchmarks/bench_rnn_step.py measures it),
which :func:`sparse_engine.recurrent.cell_steps.fused_steps`, the one decision of which step a run
takes, consults for each direction of a CPU run's step once the fused ops apply (the memory model
asks it too). Fused and composed steps of LSTM and GRU timed alternately, both backward steps given
W_hh's values in column order (as the recurrence does), on a quiet 2-core VM:

* backward: the fused step (elementwise gate gradient + W_hh^T dG in one op) faster than the
  composed one everywhere (B = 20: 1.04-1.85x on two threads, 1.26-1.62x on one).
* forward (benchmarks/results/rnn_step_cpu_batches.md, 2026-11-29: B = 1-128, 41-495 nonzeros a row,
  hidden 256-4,096): on two threads (the thread pool; torch's elementwise ops of the composed step pay a
  wake-up each) the fused forward won at every row length up to B = 20 (1.04-2.84x but LSTM 256 @ 33% at
  B = 1-4, 0.92x) and at B = 50-128 while one step's pre-activations stay small (1.10-2.32x; from 1,500 @
  33% at B = 128, 3 MB, 0.91-0.97x); on one thread it won up to B = 8 at every row length (0.99-1.87x; LSTM
  4,096 @ 1% at B = 1-2, 0.89-0.93x), at B = 20 below 200 nonzeros a row (1.07-1.38x; 205 a row 0.86x, 330
  and 495 0.92-1.03x) and lost from B = 50 (0.67-1.00x; the GRU at 256 @ 33% 1.09x). Where one step's
  pre-activations take megabytes (hidden 16,384 at B = 20: LSTM 5 MB 0.73x / 0.91x two / one thread, GRU
  3.9 MB 0.77x / 0.99x, the B = 20 tables of 2026-11-24) they evict the gathered h from L2.

So: backward fused; forward fused where the step's pre-activations (gates x hidden x batch float32
values) take at most :data:`FUSED_FORWARD_MAX_GATE_BYTES` and, on one thread, the batch is at most
:data:`FUSED_FORWARD_ANY_ROW_BATCH` or, up to :data:`FUSED_FORWARD_MAX_BATCH_ONE_THREAD`, the rows hold fewer
than :data:`FUSED_FORWARD_MAX_ROW_NNZ` nonzeros; composed otherwise. (The rule before 2026-11-29 took the
composed forward from 100 nonzeros a row at any batch: measured at B = 20 only, before the thread pool.)
"""
from __future__ import annotations

import torch

from .constants import GATES

__all__ = ["choose_fused", "FUSED_FORWARD_MAX_ROW_NNZ", "FUSED_FORWARD_MAX_GATE_BYTES", "FUSED_FORWARD_ANY_ROW_BATCH",
           "FUSED_FORWARD_MAX_BATCH_ONE_THREAD"]

#: one thread, batches up to :data:`FUSED_FORWARD_MAX_BATCH_ONE_THREAD`: nonzeros per W_hh row below which the
#: fused forward step is chosen (measured, see above)
FUSED_FORWARD_MAX_ROW_NNZ = 200
#: one thread: up to this batch width the fused forward at any row length
FUSED_FORWARD_ANY_ROW_BATCH = 8
#: one thread: past this batch width the composed forward
FUSED_FORWARD_MAX_BATCH_ONE_THREAD = 20
#: bytes of one step's pre-activations (gates x hidden x batch float32 values) up to which the
#: fused forward step is chosen
FUSED_FORWARD_MAX_GATE_BYTES = 3 * 2**20


@torch.compiler.assume_constant_result
def _torch_threads() -> int:
    """torch's thread count; under torch.compile a constant of the trace (the recurrence asks inside its
    autograd.Function, where dynamo cannot call ``torch.get_num_threads``): a graph keeps the choices of the
    threads it was compiled with."""
    return torch.get_num_threads()


def choose_fused(mode: str, hidden: int, nnz: int, batch: int, *, backward: bool = False,
                 threads: int | None = None) -> bool:
    """True when the fused CPU step is expected to be faster than the composed one for a W_hh
    of ``nnz`` nonzeros in ``GATES[mode] * hidden`` rows, at this batch size, on ``threads`` threads
    (None: torch's); ``backward`` chooses for the step's backward instead of its forward."""
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
    if 4 * rows * batch > FUSED_FORWARD_MAX_GATE_BYTES:
        return False
    if (_torch_threads() if threads is None else threads) > 1 or batch <= FUSED_FORWARD_ANY_ROW_BATCH:
        return True
    return batch <= FUSED_FORWARD_MAX_BATCH_ONE_THREAD and nnz < FUSED_FORWARD_MAX_ROW_NNZ * rows
