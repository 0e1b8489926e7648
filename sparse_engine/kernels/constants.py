"""Constants shared by the Python side and the C++/CUDA kernels.

``csrc/constants.h`` holds the same values for the kernels; ``tests/test_constants.py`` reads
that header and checks that the two agree, so a change here must be made there too.
"""
from __future__ import annotations

#: Below this much work (multiply-adds or elements) a CPU kernel stays on one thread: there the
#: second thread of the kernels' pool (``csrc/cpu/thread_pool.h``) costs more than it saves
#: (measured: benchmarks/results/pool_threshold_cpu.md). One bound, whatever the import order and
#: the OpenMP variables (``sparse_engine._C._parallel_work()`` gives the one in force; tests change
#: it with ``_set_parallel_work``).
PARALLEL_WORK = 1 << 15

#: ``spmm_t`` without ``values_t`` on the CPU scatters the CSR's rows (reading the values in
#: order) when the values take at least this many bytes or B = 1, and gathers them through
#: ``csc_perm`` otherwise (random reads, mostly from L2 there); see docs/cpu_kernels.md.
SCATTER_FROM_BYTES = 4 << 20

#: ``spmm`` / ``spmm_t`` on the CPU read a strided float/double operand as it is below this many
#: entries per source row and a padded copy of it from there on (``csrc/cpu/gather.h``); the
#: memory model (:mod:`sparse_engine.memory`) counts those copies.
UNPADDED_BELOW = 192

#: The recurrent cell modes and their ids in the kernels (``enum class CellMode`` in C++).
MODE_IDS = {"LSTM": 0, "GRU": 1, "RNN_TANH": 2, "RNN_RELU": 3, "CTRNN": 4}

#: Gate layout: the blocks of H rows stacked in one CSR of G*H rows, in torch's order
#: (``nn.LSTM``: i, f, g, o; ``nn.GRU``: r, z, n).
GATE_NAMES = {
    "LSTM": ("i", "f", "g", "o"),
    "GRU": ("r", "z", "n"),
    "RNN_TANH": ("h",),
    "RNN_RELU": ("h",),
    "CTRNN": ("h",),
}

#: Gates per hidden unit (rows of W_ih / W_hh per hidden unit).
GATES = {mode: len(names) for mode, names in GATE_NAMES.items()}

#: Rows (in units of H) of the activations a fused step saves for its backward:
#: LSTM [i; f; g; o], GRU [r; z; n; W_hn h + b_hn], CT-RNN tanh(pre), RNN none (h' is enough).
SAVED_ACTS = {"LSTM": 4, "GRU": 4, "RNN_TANH": 0, "RNN_RELU": 0, "CTRNN": 1}
