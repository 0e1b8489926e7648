"""Which path a recurrent module computes with: the sparse kernels, or dense products over the
weights materialised for one forward.

At small sizes and high densities a dense BLAS product beats any CSR kernel (hidden 200 at
density 0.33 is a 53k-nonzero matrix that MKL/oneDNN multiplies faster than we can gather it),
and torch's fused LSTM/GRU/RNN runs the whole sequence in C++. ``compute="dense"`` uses that:
each forward writes every sparse weight's values into a dense matrix (:func:`materialize_all`;
its backward reads the dense gradient at the stored positions only: the values get exactly the
gradient of the sparse path) and calls torch's recurrence (``torch.lstm``, ... ; the GRU on the
CPU through :mod:`sparse_engine.recurrent.dense_gru`) on those matrices. The dense matrix of each weight
is a buffer kept between forwards (per thread, while nothing else holds it; its size counts in
the budget), written at each forward with a gradient and, without one, only when the values
changed; ``state_dict``, checkpoints and the topology controllers see only the CSR weight.
Without a backward on several CPU threads that sleep between parallel regions (what ``import
sparse_engine`` gives torch's), small layers run torch's recurrence on one thread
(:data:`DENSE_ONE_THREAD_MAX_ENTRIES`): its many small parallel regions would each wake a thread.

* ``compute="sparse"``: always the CSR kernels (the memory-bound choice at large sizes).
* ``compute="persistent"``: the CSR kernels with each layer-direction's whole sequence in one op
  each way (on a GPU one persistent launch for all T steps, :mod:`sparse_engine.recurrent.persistent`)
  where that applies (LSTM, GRU, RNN with a sparse recurrent matrix in float32/float64, every step
  kept), the per-step sparse path elsewhere.
* ``compute="dense"``: always materialise, if the dense matrices fit the budget
  (:func:`set_dense_budget`, default :data:`DEFAULT_DENSE_BUDGET` bytes for all matrices of a
  module together on the CPU, :data:`DEFAULT_DENSE_BUDGET_GPU` on a GPU); over the budget it falls
  back to the sparse path.
* ``compute="auto"`` (default): on the CPU, dense when it fits the budget, the module's density
  is at least :func:`auto_min_density` of its hidden size, batch and torch's threads and the sequence
  at least :func:`auto_min_steps` steps long (the crossovers measured on this project's CPUs, see
  docs/compute_paths.md), else the whole-sequence ops where a run's stacked
  products are small (:func:`persistent_by_sizes`: the same bits as per step, and faster where measured
  there), else sparse per step; large layers stay sparse through the budget. Without a backward to follow
  (gradient mode off: evaluation, generation) long sequences go dense from the lower densities of
  :data:`AUTO_MIN_DENSITY_INFERENCE` and narrow batches (up to 4 columns) take the whole-sequence ops.
  On a GPU dense (cuDNN's recurrence) when the matrices fit the budget and a recurrent row holds at
  least :data:`AUTO_MIN_ROW_GPU` nonzeros on average (density x hidden), else persistent where W_hh
  fits the chip's shared memory (:func:`persistent_by_sizes`: the persistent kernels then hold it on
  chip for all T steps; measured on an H200, where they beat the per-step kernels on every such cell)
  or, past the chip, where they were measured to win (:data:`AUTO_PERSISTENT_OFF_CHIP`: short rows up
  to 16,384 units), else sparse (per step).

The default for modules built with ``compute=None`` is global: :func:`set_default_compute` or, for
a block, ``with default_compute("sparse"): ...``; it starts as the environment variable
``SPARSE_ENGINE_COMPUTE`` says (default ``auto``), so a whole program (or a test's subprocesses) can
be pinned to one path from outside. A module's ``compute`` attribute is read at each
forward. Growth by gradient (``record_grad_factors``, RigL/Selfish-RNN gradient growth) needs the
factors of the sparse backward, so a recording forward always takes the sparse path.
"""
from __future__ import annotations

import contextlib
import math
import os

import torch

from ..kernels.constants import GATES
from ..runtime import one_thread
from ..runtime.threads import one_thread_here, torch_waits_short
from ..sparse import SparseWeight
from . import cudnn_flat, dense_gru
from .dense_matrices import materialize, materialize_all
from .sequence import STACK_BYTES

__all__ = ["COMPUTE_CHOICES", "set_default_compute", "get_default_compute", "default_compute",
           "set_dense_budget", "get_dense_budget", "check_compute", "use_dense", "use_persistent", "dense_by_sizes",
           "persistent_by_sizes", "on_chip_bytes", "auto_min_density", "auto_min_steps", "dense_on_one_thread_by_sizes",
           "materialize", "materialize_all"]

COMPUTE_CHOICES = ("auto", "sparse", "dense", "persistent")
#: bytes of dense matrices one module may materialise per forward (all layers together)
DEFAULT_DENSE_BUDGET = 256 * 2**20
#: the same on a GPU (the card's memory, not a cache: 4,096-unit LSTM's two matrices fit, 16,384's do not)
DEFAULT_DENSE_BUDGET_GPU = 2**30
#: ``auto`` on a GPU: the mean nonzeros per recurrent row (density x hidden) from which it goes dense:
#: the persistent kernels' time grows with the nonzeros, cuDNN's with hidden^2, so the crossover is a
#: row length (near 205 a row at 1,500 units, 229 at 4,096 on an H200; docs/compute_paths.md)
AUTO_MIN_ROW_GPU = 220
#: ``auto`` on the CPU: the lowest density (nnz / dense entries over the module's sparse matrices) that
#: goes dense, per cell, batch width and hidden size: {up to this batch width: ((up to this hidden size,
#: from this density), ...)}, the first band that holds the batch, then its first bound that holds the
#: hidden size; on several threads whose waits are short (``threads.torch_waits_short``) the second table.
#: Measured against the whole-sequence ops, what ``auto`` runs sparse (docs/compute_paths.md); the
#: vanilla RNN (not measured) takes the LSTM's. Small batches: the dense path streams its matrices at
#: every step for one or a few columns (bandwidth-bound past the cache) while the sparse time shrinks
#: with the columns; wide ones: torch's parallel regions get enough work to pay their wake-ups.
AUTO_MIN_DENSITY = {"LSTM": {16: ((128, 0.03), (256, 0.30), (math.inf, math.inf)),
                             80: ((64, 0.03), (128, 0.15), (math.inf, 0.30)),
                             math.inf: ((64, 0.10), (128, 0.15), (math.inf, 0.30))},
                    "GRU": {2: ((128, 0.03), (256, 0.10), (math.inf, math.inf)),
                            8: ((128, 0.03), (256, 0.15), (512, 0.30), (math.inf, math.inf)),
                            math.inf: ((64, 0.03), (256, 0.15), (math.inf, 0.30))}}
AUTO_MIN_DENSITY_THREADED = {"LSTM": {8: ((128, 0.03), (math.inf, math.inf)),
                                      16: ((128, 0.03), (1000, math.inf), (math.inf, 0.30)),
                                      32: ((128, 0.03), (192, 0.15), (224, 0.30), (512, math.inf), (math.inf, 0.30)),
                                      80: ((64, 0.03), (128, 0.15), (256, math.inf), (math.inf, 0.30)),
                                      math.inf: ((64, 0.10), (128, math.inf), (math.inf, 0.30))},
                             "GRU": {8: ((128, 0.03), (256, 0.15), (math.inf, math.inf)),
                                     16: ((128, 0.03), (256, 0.30), (512, math.inf), (math.inf, 0.30)),
                                     32: ((128, 0.03), (math.inf, 0.30)),
                                     80: ((64, 0.03), (128, 0.10), (math.inf, 0.15)),
                                     math.inf: ((64, 0.03), (math.inf, 0.15))}}
#: ``auto`` on the CPU: the fewest steps from which it goes dense, per cell, batch width and hidden size (as
#: the tables above). The dense path pays once per forward what a short sequence does not repay: the writing
#: of its dense matrices (with a gradient) and, for the LSTM, oneDNN's reorder of both weights at each call
#: (27 ms at hidden 1,000 for one step in inference, torch.nn.LSTM's too). Measured at T = 1-35, B = 1-128
#: (small_rnn_sweep_cpu_{1thread,2threads}_steps.md): the LSTM at hidden 256, B = 1, one thread, lost 0.31x at
#: T = 1, 0.73x at 16 and won 1.25x at 35; the GRU (its steps fused, no reorder) lost only above 128 units
#: (0.86x at 256, T = 1, B = 1). On two threads the LSTM wants 32 steps at B = 20 (1,000 units: 0.76x at 16,
#: 1.04x at 35), the GRU 8. Bands past the measured cells (the LSTM at 1,000 units, B = 128) are guesses.
AUTO_MIN_STEPS = {"LSTM": {16: ((64, 4), (128, 8), (math.inf, 24)),
                           80: ((64, 2), (128, 4), (512, 16), (math.inf, 24)),
                           math.inf: ((128, 1), (256, 2), (512, 4), (math.inf, 8))},
                  "GRU": {8: ((128, 1), (256, 2), (math.inf, 16)),
                          80: ((128, 1), (256, 2), (512, 4), (math.inf, 8)),
                          math.inf: ((512, 1), (math.inf, 4))}}
AUTO_MIN_STEPS_THREADED = {"LSTM": {4: ((64, 16), (128, 24), (math.inf, 32)),
                                    8: ((64, 4), (128, 8), (math.inf, 32)),
                                    32: ((128, 4), (math.inf, 32)),
                                    80: ((64, 2), (128, 4), (math.inf, 24)),
                                    math.inf: ((64, 2), (256, 16), (math.inf, 4))},
                           "GRU": {4: ((64, 8), (128, 16), (math.inf, 8)),
                                   8: ((math.inf, 4),),
                                   32: ((128, 2), (256, 4), (math.inf, 8)),
                                   80: ((128, 1), (math.inf, 2)),
                                   math.inf: ((64, 1), (math.inf, 2))}}
#: ``auto`` on the CPU without a backward to follow (a forward under ``torch.no_grad``: evaluation, a sampler)
#: over at least :data:`AUTO_INFERENCE_STEPS` steps, one thread (or several, where the dense path runs on one:
#: :func:`dense_on_one_thread_by_sizes`): the lowest density that goes dense, as :data:`AUTO_MIN_DENSITY` (whose
#: values hold below that length). Without a backward the dense path writes its matrices only when the values
#: changed and runs no backward of torch's, so over a long sequence at a wide batch it wins from lower densities:
#: at B = 128, T = 35 the LSTM at 512 @ 20% took 0.52x the sparse path's time, 1,000 @ 20% 0.55x
#: (small_rnn_sweep_cpu_1thread_inference.md: B = 1-128, T = 1, 8, 35, hidden 64-1,000, 5-33%); at T = 1 the
#: crossover stays where the training tables have it. At B = 5-16 the LSTM at 256 @ 20% and the GRU at 1,000
#: @ 20% lost dense (0.79x, 0.72x; small_rnn_sweep_cpu_1thread_inference_gaps.md), hence those bands.
AUTO_MIN_DENSITY_INFERENCE = {"LSTM": {4: ((128, 0.03), (256, 0.20), (math.inf, math.inf)),
                                       16: ((128, 0.03), (256, 0.30), (math.inf, math.inf)),
                                       80: ((128, 0.03), (math.inf, 0.15)),
                                       math.inf: ((128, 0.03), (256, 0.10), (math.inf, 0.15))},
                              "GRU": {2: ((128, 0.03), (256, 0.10), (math.inf, math.inf)),
                                      8: ((128, 0.03), (256, 0.10), (512, 0.30), (math.inf, math.inf)),
                                      16: ((64, 0.03), (128, 0.10), (512, 0.15), (math.inf, 0.30)),
                                      math.inf: ((64, 0.03), (128, 0.10), (math.inf, 0.15))}}
#: the sequence length from which :data:`AUTO_MIN_DENSITY_INFERENCE` applies, per batch band ({up to this
#: batch width: steps}; measured at 1, 8, 12, 20 and 35 steps: at B = 128 the crossovers of 8 steps were those
#: of 35; at B = 20 the dense path still lost at 20% over 20 steps (LSTM 256 0.84x, GRU 1,000 0.77x) and
#: tied or won over 35); without a backward also the most steps :func:`auto_min_steps` asks for
AUTO_INFERENCE_STEPS = {80: 24, math.inf: 8}
#: ``auto`` on the CPU without a backward, on several threads where the dense path runs on them too (past the
#: one-thread bounds): from this batch width over :data:`AUTO_INFERENCE_STEPS` steps the threaded tables go down
#: to the densities of :data:`AUTO_MIN_DENSITY_INFERENCE` (two threads, T = 35: the LSTM at 512 @ 20% dense in
#: 0.75x the per-step path's time at B = 50, 0.57x at B = 128; at B = 20 dense lost there, 1.13-1.24x at 20%:
#: small_rnn_sweep_cpu_2threads_inference.md)
AUTO_INFERENCE_THREADED_FROM_BATCH = 33
#: the batch width the CPU rule assumes where a caller gives none (its first tables' measurements)
AUTO_BATCH = 20
#: ``auto`` on a GPU: the persistent kernels where W_hh (values and the 16-bit index they stage, 32-bit
#: past 65,536 columns) takes at most this share of the chip's shared memory (measured on an H200:
#: 1.0-2.2x the per-step path at 0.4-0.7 of it, 0.86-0.88x at 1.0-1.4; docs/compute_paths.md)
AUTO_PERSISTENT_SHARE = 0.9
#: ``auto`` on a GPU where W_hh does not fit on chip: the persistent kernels still up to this hidden
#: size and mean recurrent row (nonzeros): measured to win at 16,384 units @ 1% (164 a row) in four H200
#: runs, to lose at 4,096 @ 10% (410 a row); larger sizes not measured (docs/compute_paths.md)
AUTO_PERSISTENT_OFF_CHIP = (16384, 170)
#: ``auto`` on the CPU: the whole-sequence ops up to this size of the stacked products ((G+1) x H x T x B
#: values' bytes: ``sequence.STACK_BYTES``, where the per-step run stacks them too, so it keeps as much) and,
#: on one thread, up to this hidden size. Measured: 1.03-1.36x the per-step path at B = 20 up to 4,096 units
#: (57 MB), 1.04-1.15x at B = 128 and 1,000-1,500 units (67-108 MB) on one thread; at 8,192 units (B = 20,
#: 115 MB) 1.01-1.21x on two threads but 0.92-0.98x on one (rnn_cpu_paths_*.md, small_rnn_sweep_cpu_*_batches.md)
AUTO_PERSISTENT_CPU_BYTES = STACK_BYTES
AUTO_PERSISTENT_CPU_HIDDEN_ONE_THREAD = 4096
#: ``auto`` on the CPU without a backward to follow: the whole-sequence ops up to this batch width (with the
#: bounds above), from one step. Their steps are the fused ops in C++ (no Python between the steps, and the
#: fused forward where the per-step path composes it, from 100 nonzeros a row), at the cost of copying out
#: the activations a backward would read: measured at B = 1 and 4, T = 35, 0.61-0.97x the per-step path's
#: time in every cell (the least at GRU 512 @ 20-33%, composed per step), at T = 1, B = 1 0.85-1.00x; at
#: B = 20 a draw (0.83-1.22x), at B = 50-128 0.94-1.68x (small_rnn_sweep_cpu_1thread_inference.md)
AUTO_PERSISTENT_CPU_INFERENCE_BATCH = 4
#: the dense path on the CPU without a backward: torch's recurrence on one thread where torch's threads sleep
#: between parallel regions, W_hh holds at most :data:`DENSE_ONE_THREAD_MAX_ENTRIES` entries and one step's
#: recurrent product (W_hh's entries x the batch) at most :data:`DENSE_ONE_THREAD_MAX_MACS` multiply-adds
#: (:func:`_dense_on_one_thread`). Measured on two threads, T = 35, hidden 64-1,000, B = 1-128
#: (small_rnn_dense_threads_cpu.md): one thread 1.03-20x faster in all 31 cells it takes (each of the many
#: small parallel regions of torch's recurrence wakes a sleeping thread: LSTM 64, B = 1, 0.20 ms against 3.10),
#: 0.49-1.01x in the 19 it leaves (1,000 units at B = 1-4, 12-16 MB of W_hh, 0.70-0.87x; wider batches from
#: 13M multiply-adds)
DENSE_ONE_THREAD_MAX_ENTRIES = 2**21
DENSE_ONE_THREAD_MAX_MACS = 12 * 2**20
#: with a backward (a training step: the forward and the backward of torch's recurrence on one thread,
#: :mod:`~sparse_engine.runtime.one_thread`) one step's product at most this: the backward's weight-gradient
#: products over all T x B columns want both threads sooner. Measured on two threads, T = 35, hidden 64-1,000, B = 1-128
#: (small_rnn_dense_threads_train_cpu.md): one thread 1.05-8.8x faster in all 28 cells it takes (LSTM 64,
#: B = 1: 1.05 ms against 9.31), 0.54-1.01x in 21 of the 22 it leaves (the LSTM at 128, B = 128, 8.4M
#: multiply-adds, 1.10x; the GRU at 128 there, 6.3M, lost 0.90x on one thread)
DENSE_ONE_THREAD_MAX_MACS_BACKWARD = 11 * 2**19
#: the shared memory of an H100 / H200 (132 SMs x 228 KiB): a prediction for "cuda" made where no
#: GPU is visible assumes one
HOPPER_ON_CHIP_BYTES = 132 * 228 * 1024

#: the environment variable that sets the initial global default (read once, at import)
ENV_VAR = "SPARSE_ENGINE_COMPUTE"


def _initial_default() -> str:
    mode = os.environ.get(ENV_VAR, "auto")
    if mode not in COMPUTE_CHOICES:
        raise ValueError(f"{ENV_VAR} must be one of {COMPUTE_CHOICES}, got {mode!r}")
    return mode


_state = {"compute": _initial_default(), "budget": None}  # budget None: each device's default


def check_compute(mode, name: str = "compute") -> str:
    if mode not in COMPUTE_CHOICES:
        raise ValueError(f"{name} must be one of {COMPUTE_CHOICES}, got {mode!r}")
    return mode


def set_default_compute(mode: str) -> None:
    """The compute path of modules whose ``compute`` is None (the default): one of :data:`COMPUTE_CHOICES`."""
    _state["compute"] = check_compute(mode)


def get_default_compute() -> str:
    return _state["compute"]


@contextlib.contextmanager
def default_compute(mode: str):
    """``with default_compute('sparse'): ...``: the global default for the block."""
    old = _state["compute"]
    set_default_compute(mode)
    try:
        yield
    finally:
        _state["compute"] = old


def set_dense_budget(nbytes: int | None) -> None:
    """Bytes of dense matrices one module may materialise per forward on any device (0: never
    dense; None: each device's default, :data:`DEFAULT_DENSE_BUDGET` and :data:`DEFAULT_DENSE_BUDGET_GPU`)."""
    if nbytes is not None and (isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0):
        raise ValueError(f"nbytes must be a non-negative int or None, got {nbytes!r}")
    _state["budget"] = nbytes


def get_dense_budget(device_type: str = "cpu") -> int:
    """The budget of :func:`set_dense_budget` on a device of ``device_type``."""
    if _state["budget"] is not None:
        return _state["budget"]
    return DEFAULT_DENSE_BUDGET_GPU if device_type == "cuda" else DEFAULT_DENSE_BUDGET


def use_dense(mode: str | None, weights, hidden_size: int, device_type: str = "cpu", cell: str = "LSTM",
              batch: int | None = None, steps: int | None = None, backward: bool = True) -> bool:
    """Whether a module with the given ``compute`` setting (None: the global default) and matrices
    (SparseWeights or dense tensors) on ``device_type`` runs dense this forward: ``auto`` by the
    CPU's rule (:func:`auto_min_density` and :func:`auto_min_steps` for the ``cell``, a recurrence mode:
    "LSTM", "GRU", ..., the ``batch`` width, the sequence's ``steps`` (None: long) and whether a
    ``backward`` follows) or the GPU's (:data:`AUTO_MIN_ROW_GPU`), never on another device
    (``compute='dense'`` works on any)."""
    entries = nnz = 0
    itemsize = 4
    for w in weights:
        if isinstance(w, SparseWeight):
            values, _, col_idx = w.parts()
            rows, cols = w.shape
            entries += rows * cols
            itemsize = values.element_size()
            nnz += col_idx.numel()
    return dense_by_sizes(mode, entries, nnz, itemsize, hidden_size, device_type, cell, batch, steps, backward)


def dense_by_sizes(mode: str | None, entries: int, nnz: int, itemsize: int, hidden_size: int,
                   device_type: str = "cpu", cell: str = "LSTM", batch: int | None = None,
                   steps: int | None = None, backward: bool = True) -> bool:
    """:func:`use_dense` from sizes alone: ``entries`` (rows x cols) and ``nnz`` summed over the
    module's sparse matrices, whose values take ``itemsize`` bytes each. The memory model
    (:mod:`sparse_engine.memory`) asks this without building the module."""
    mode = _state["compute"] if mode is None else mode
    if mode in ("sparse", "persistent"):
        return False
    if entries * itemsize > get_dense_budget(device_type):
        return False
    if mode == "dense" or not entries:
        return True
    if device_type == "cuda":
        return nnz / entries * hidden_size >= AUTO_MIN_ROW_GPU
    if device_type != "cpu":
        return False
    return (nnz / entries >= auto_min_density(hidden_size, cell, batch, steps, backward)
            and (steps is None or steps >= auto_min_steps(hidden_size, cell, batch, backward)))


def use_persistent(mode: str | None, w_hh=None, steps: int | None = None, batch: int | None = None,
                   backward: bool = True) -> bool:
    """Whether a layer-direction of a module with the given ``compute`` setting (None: the global
    default) and recurrent matrix ``w_hh``, run over ``steps`` x ``batch`` columns with a backward to
    follow or not, asks for the whole-sequence ops: ``compute="persistent"``, or ``auto`` by
    :func:`persistent_by_sizes` (where they apply is the recurrence's to say)."""
    if isinstance(w_hh, SparseWeight):
        values, _, col_idx = w_hh.parts()
        return persistent_by_sizes(mode, col_idx.numel(), values.element_size(), w_hh.shape[1], values.device,
                                   w_hh.shape[0], steps, batch, backward)
    return (_state["compute"] if mode is None else mode) == "persistent"


def persistent_by_sizes(mode: str | None, nnz_hh: int | None, itemsize: int, hidden: int, device,
                        rows: int, steps: int | None = None, batch: int | None = None, backward: bool = True) -> bool:
    """:func:`use_persistent` from sizes alone: ``compute="persistent"``, or ``auto`` for a sparse W_hh
    of ``rows`` x ``hidden`` with ``nnz_hh`` values of ``itemsize`` bytes on ``device`` (a torch.device
    or its type). On a GPU where its staged form fits :data:`AUTO_PERSISTENT_SHARE` of
    :func:`on_chip_bytes`, or within :data:`AUTO_PERSISTENT_OFF_CHIP`. On the CPU where a run of
    ``steps`` x ``batch`` columns stacks products of at most :data:`AUTO_PERSISTENT_CPU_BYTES` (the
    per-step run then stacks them too: the sequence ops keep what it keeps; measured faster,
    docs/compute_paths.md), on one thread up to :data:`AUTO_PERSISTENT_CPU_HIDDEN_ONE_THREAD` units; with a
    ``backward`` to follow from 2 steps (at T = 1: 0.83-1.13x the per-step path, small_rnn_sweep_cpu_*_steps.md),
    without one from one step up to :data:`AUTO_PERSISTENT_CPU_INFERENCE_BATCH` columns (wider, the copies out
    of the activations a backward would read cost more than the steps' Python: 4,096 @ 1%, B = 20: 0.86-0.94x
    the per-step path).
    Never while ``torch.export`` (so ONNX export) traces: the exported graph records the per-step
    ops, which the ONNX translations cover (:mod:`sparse_engine.io.export`; the same numbers).
    The memory model asks this without building the module."""
    if torch.compiler.is_exporting():
        return False
    mode = _state["compute"] if mode is None else mode
    if mode == "persistent":
        return True
    device = torch.device(device)
    if mode != "auto" or nnz_hh is None:
        return False
    if device.type == "cpu":
        if not (isinstance(steps, int) and isinstance(batch, int)):  # unknown or symbolic (torch.export): per step
            return False
        if backward and steps < 2:  # one step: nothing to fuse, the copies out cost (0.83-1.13x the per-step path)
            return False
        if not backward and batch > AUTO_PERSISTENT_CPU_INFERENCE_BATCH:
            return False
        if torch.get_num_threads() == 1 and hidden > AUTO_PERSISTENT_CPU_HIDDEN_ONE_THREAD:
            return False
        return (rows + hidden) * steps * batch * itemsize <= AUTO_PERSISTENT_CPU_BYTES
    if device.type != "cuda":
        return False
    entry = itemsize + (2 if hidden <= 65536 else 4)
    if nnz_hh * entry <= AUTO_PERSISTENT_SHARE * on_chip_bytes(device):
        return True
    max_hidden, max_row = AUTO_PERSISTENT_OFF_CHIP
    return hidden <= max_hidden and nnz_hh <= max_row * rows


def on_chip_bytes(device=None) -> int:
    """The shared memory of all the GPU's SMs together (what the persistent kernels stage W_hh in):
    ``device``'s, the current GPU's for None or a bare ``"cuda"``, or :data:`HOPPER_ON_CHIP_BYTES`
    where no GPU is visible or torch does not report it."""
    if not torch.cuda.is_available():
        return HOPPER_ON_CHIP_BYTES
    device = torch.device("cuda") if device is None else torch.device(device)
    props = torch.cuda.get_device_properties(device.index if device.index is not None else torch.cuda.current_device())
    per_sm = getattr(props, "shared_memory_per_multiprocessor", 0)
    return props.multi_processor_count * per_sm if per_sm else HOPPER_ON_CHIP_BYTES


def auto_min_density(hidden_size: int, cell: str = "LSTM", batch: int | None = None, steps: int | None = None,
                     backward: bool = True) -> float:
    """The density from which ``compute='auto'`` goes dense on the CPU for a ``cell`` ("LSTM", "GRU";
    the vanilla RNN's modes take the LSTM's) of ``hidden_size`` units run over ``batch`` columns (None:
    :data:`AUTO_BATCH`); without a ``backward`` to follow, over at least :data:`AUTO_INFERENCE_STEPS`
    ``steps`` for the batch (None: long), on one thread: :data:`AUTO_MIN_DENSITY_INFERENCE`.
    (docs/compute_paths.md has the tables: fwd+bwd, T=35, B = 1, 4, 8, 12, 20, 50 and
    128, quiet 2-core VMs, against the whole-sequence ops). One thread: from B = 20 up (checked at 50 and
    128) the dense path won at every density at hidden 64 (but for the LSTM at 5% and B = 128: a tie at T = 35,
    a loss at T = 1-4), from 20% at 128 (GRU: and 256), from 33% above;
    at few columns it streams its matrices for little arithmetic at each step: the LSTM up to B = 12 won at
    33% at hidden 256 and lost or tied above (at 0.71-1.02x the sequence ops' speed at 512, 0.54-0.81x at
    1,000-1,500), the GRU up to B = 2 lost from 512, up to B = 8 from 1,000. Two threads, where torch's
    waits are short (what ``import sparse_engine`` sets): torch's recurrence pays a wake-up at each parallel
    region and never won up to B = 8; the wider the batch, the smaller the hidden size from which it wins at
    33% (GRU: 20% from B = 50; 15% in the table): above 1,000 units at B = 12, 512 at B = 20, 256 at B = 50,
    128 at B = 128 (GRU: 512, 256, 128, 64). Without a backward, where the dense path runs on one thread
    (:func:`dense_on_one_thread_by_sizes`) the one-thread tables hold on any thread count; past it, from
    :data:`AUTO_INFERENCE_THREADED_FROM_BATCH` columns over long sequences, at most the inference densities."""
    long_inference = not backward and (steps is None or steps >= _band(AUTO_INFERENCE_STEPS, batch))
    single = AUTO_MIN_DENSITY_INFERENCE if long_inference else AUTO_MIN_DENSITY
    if not _threaded(hidden_size, cell, batch, backward):
        return _entry(single, hidden_size, cell, batch)
    density = _entry(AUTO_MIN_DENSITY_THREADED, hidden_size, cell, batch)
    if long_inference and density < math.inf and (AUTO_BATCH if batch is None else batch) >= \
            AUTO_INFERENCE_THREADED_FROM_BATCH:
        density = min(density, _entry(single, hidden_size, cell, batch))
    return density


def auto_min_steps(hidden_size: int, cell: str = "LSTM", batch: int | None = None, backward: bool = True) -> int:
    """The fewest steps from which ``compute='auto'`` goes dense on the CPU (with the density of
    :func:`auto_min_density`) for a ``cell`` of ``hidden_size`` units over ``batch`` columns (None:
    :data:`AUTO_BATCH`): :data:`AUTO_MIN_STEPS` (:data:`AUTO_MIN_STEPS_THREADED` on several threads whose
    waits are short, but without a ``backward`` where the dense path runs on one thread); without a backward
    at most :data:`AUTO_INFERENCE_STEPS` (the writing of the matrices at each forward, which the tables' steps
    repay, is gone there)."""
    threaded = _threaded(hidden_size, cell, batch, backward)
    steps = _entry(AUTO_MIN_STEPS_THREADED if threaded else AUTO_MIN_STEPS, hidden_size, cell, batch)
    return steps if backward else min(steps, _band(AUTO_INFERENCE_STEPS, batch))


def _threaded(hidden_size: int, cell: str, batch: int | None, backward: bool) -> bool:
    """Whether the CPU rule reads its tables of several threads: torch runs on several whose waits are short,
    with a ``backward`` (where the dense path runs on one thread, their entries for small layers are measured
    so), or without one past the dense path's one-thread bounds (:func:`dense_on_one_thread_by_sizes`)."""
    if not _threads_sleep():
        return False
    return backward or not dense_on_one_thread_by_sizes(GATES.get(cell, GATES["LSTM"]) * hidden_size * hidden_size,
                                                        AUTO_BATCH if batch is None else batch)


def _entry(tables: dict, hidden_size: int, cell: str, batch: int | None):
    """The entry of a CPU rule's table ({cell: {up to this batch: ((up to this hidden size, value), ...)}})
    for the cell (the vanilla RNN's modes take the LSTM's), batch and hidden size."""
    table = _band(tables.get(cell, tables["LSTM"]), batch)
    return next(value for bound, value in table if hidden_size <= bound)


def _band(bands: dict, batch: int | None):
    """The entry of the first batch band ({up to this batch width: entry}) that holds ``batch`` (None:
    :data:`AUTO_BATCH`)."""
    width = AUTO_BATCH if batch is None else batch
    return next(entry for bound, entry in bands.items() if width <= bound)


#: torch's fused recurrences, what ``nn.RNN``/``nn.LSTM``/``nn.GRU`` call (oneDNN/MKL on the CPU, cuDNN on CUDA)
_DENSE_FUNCTIONS = {"RNN_TANH": torch.rnn_tanh, "RNN_RELU": torch.rnn_relu, "LSTM": torch.lstm, "GRU": torch.gru}


def dense_recurrence(mode: str, x: torch.Tensor, h0: torch.Tensor, c0, weights, bias: bool, num_layers: int,
                     dropout: float, training: bool, bidirectional: bool, fused: bool, batch_sizes=None):
    """The dense path's whole stack: torch's own fused recurrence (``torch.lstm``/``gru``/``rnn_tanh``/
    ``rnn_relu``) on ``weights`` (torch's flat order; SparseWeights materialised for this forward,
    :func:`materialize_all`), or on the CPU with ``fused`` the GRU of :mod:`.dense_gru`. From
    checked states: (output time-major (T, B, D*H) (a PackedSequence's data with ``batch_sizes``),
    h_n, c_n or None). The gradient reaches each SparseWeight's values at its stored positions only.
    Called directly, not through an ``nn.LSTM`` (``functional_call`` on a meta-device skeleton):
    that module's Python repeats the modules' checks and took about 0.1 ms per call at hidden 200,
    a twentieth of the inference."""
    # the sparse ones written into dense buffers; on CUDA all into cuDNN's flat buffer (cudnn_flat)
    weights = materialize_all(weights, cudnn_flat.views(mode, weights, x, h0, c0, num_layers, bidirectional))
    hx = (h0, c0) if mode == "LSTM" else h0
    args = (weights, bias, num_layers, dropout, training, bidirectional)
    one = _dense_on_one_thread(x, weights[1], batch_sizes)
    with one_thread_here() if one else contextlib.nullcontext():
        if mode == "GRU" and fused and batch_sizes is None and dense_gru.fused_gru_applies(x):
            res = (*dense_gru.gru(x, hx, *args), None)  # torch's GRU, each layer's steps fused
        else:
            run = _DENSE_FUNCTIONS[mode]
            res = run(x, hx, *args, False) if batch_sizes is None else run(x, batch_sizes, hx, *args)
    if one and torch.is_grad_enabled():
        one_thread.backward_on_one_thread(res, (x, h0, c0, *weights))
    return res[0], res[1], (res[2] if mode == "LSTM" else None)


def _dense_on_one_thread(x: torch.Tensor, w_hh: torch.Tensor, batch_sizes) -> bool:
    """Whether the dense path runs torch's recurrence on one thread (with a graph recorded, its backward
    too: :mod:`~sparse_engine.runtime.one_thread`): on the CPU, where torch's threads sleep between parallel regions
    (:func:`_threads_sleep`: each of the recurrence's small regions pays a wake-up) and the first layer's
    ``w_hh`` and one step's product of it by the batch (time-major ``x``'s, or a packed sequence's widest
    step) are small (the bounds above). Closes first any one-thread scope a failed backward left open."""
    if x.device.type != "cpu":
        return False
    one_thread.close_left_scopes()
    if not _threads_sleep():
        return False
    batch = x.shape[1] if batch_sizes is None else int(batch_sizes[0])
    return dense_on_one_thread_by_sizes(w_hh.numel(), batch, torch.is_grad_enabled())


def _threads_sleep() -> bool:
    """Whether torch runs on several threads that sleep soon after each parallel region
    (``threads.torch_waits_short``): where the CPU rule reads its threaded tables, and the dense path may
    take one thread."""
    return torch.get_num_threads() > 1 and torch_waits_short()


def dense_on_one_thread_by_sizes(entries_hh: int, batch: int, backward: bool = False) -> bool:
    """Whether a W_hh of ``entries_hh`` entries run over ``batch`` columns, with a ``backward`` to follow or
    not, is small enough for the dense path's one thread (:data:`DENSE_ONE_THREAD_MAX_ENTRIES`,
    :data:`DENSE_ONE_THREAD_MAX_MACS` or, with a backward, :data:`DENSE_ONE_THREAD_MAX_MACS_BACKWARD`); the
    CPU rule asks it too, without the module."""
    macs = DENSE_ONE_THREAD_MAX_MACS_BACKWARD if backward else DENSE_ONE_THREAD_MAX_MACS
    return entries_hh <= DENSE_ONE_THREAD_MAX_ENTRIES and entries_hh * batch <= macs

