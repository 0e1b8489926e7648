"""Which recurrent step to run on the CPU, the fused op or the composed one, per shape.

A measured rule (docs/cpu_kernels.md has the table; benchmarks/bench_rnn_step.py measures it):
fused and composed steps of LSTM and GRU timed alternately on one thread, B=20, hidden 256 to
16,384 at 16 to 495 nonzeros per W_hh row, after the kernel fixes of issue #13.

* backward: the fused step (elementwise gate gradient + W_hh^T dG in one op) was 1.13-1.68x
  faster than the composed one in every cell but one tie (0.97x, LSTM at 16,384 / 0.1%).
* forward: the composed step (our spmm, then torch's vectorised elementwise ops over the whole
  gate block) was faster at 16-75 nonzeros per row (fused 0.75-0.98x, GRU 0.96-1.15x) and the
  fused one from about 500 per row (1.02-1.03x at 1,500 / 33%), where the product dominates
  and the fused op saves a pass over the G*H x B pre-activations.

The two directions share one calling convention (sparse_engine.nn.cell_table), so a module
may run a composed forward with a fused backward.
"""
from __future__ import annotations

from ..constants import GATES

__all__ = ["choose_fused", "FUSED_FORWARD_MIN_ROW_NNZ"]

#: nonzeros per W_hh row from which the fused forward step is chosen (measured, see above)
FUSED_FORWARD_MIN_ROW_NNZ = 256


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
