// Constants shared by the CPU kernels, the CUDA kernels and the Python side: the C++ copy of
// sparse_engine/kernels/constants.py (tests/test_constants.py reads this file and checks that the two
// agree, so a change here must be made there too).
//
// Plain C++17 with no includes beyond <cstdint>: it compiles with nvcc alone (the .cu files),
// as host C++ in the CUDA emulator (tests/cuda_emu) and with torch (the CPU kernels, the glue).
// Device code reads only the scalar constants derived from it at namespace scope (see
// rnn_step_cuda.cu), never the tables themselves.
#pragma once
#include <cstdint>

namespace sparse_engine {

// Below this much work (multiply-adds or elements) a CPU kernel stays on one thread: there the
// thread pool's second thread (csrc/cpu/thread_pool.h) costs more than it saves. Measured with
// the pool's own waits (its workers spin 20 us after a job, then sleep), whatever the import order:
// from here 2 threads were as fast as 1 or faster in spmm, spmm_t and sddmm on a quiet 2-core VM
// (benchmarks/results/pool_threshold_cpu.md; docs/cpu_kernels.md, "The thread pool"). (PARALLEL_WORK)
inline constexpr int64_t kParallelWork = int64_t(1) << 15;

// spmm_t without values_t on the CPU scatters the CSR's rows (csrc/cpu/scatter.h) when the values
// take at least this many bytes or B = 1 (and its accumulators fit: csrc/cpu/scatter.h,
// use_scatter), and gathers them through csc_perm otherwise
// (csrc/cpu/gather.h): below it those random reads mostly hit L2, and the gather of a batch is
// faster; above it they cost as much as the product. (SCATTER_FROM_BYTES)
inline constexpr int64_t kScatterFromBytes = int64_t(4) << 20;

// spmm and spmm_t on the CPU read a strided dense float/double source as it is below this many
// entries per source row, and a padded copy of it from there on (csrc/cpu/gather.h, gather_source,
// has the measurements); the memory model counts those copies. (UNPADDED_BELOW)
inline constexpr int64_t kUnpaddedBelow = 192;

// The recurrent cell modes and their ids in the kernels, the launchers and Python (MODE_IDS).
enum class CellMode : int { LSTM = 0, GRU = 1, RNN_TANH = 2, RNN_RELU = 3, CTRNN = 4 };
inline constexpr int kNumCellModes = 5;

// Per mode, indexed by the CellMode id:
// the mode's name in Python (the keys of MODE_IDS),
inline constexpr const char* kCellModeNames[kNumCellModes] = {"LSTM", "GRU", "RNN_TANH", "RNN_RELU", "CTRNN"};
// its gate layout: one letter per block of H rows stacked in the one CSR of W_hh, in torch's
// order (nn.LSTM i, f, g, o; nn.GRU r, z, n) (GATE_NAMES),
inline constexpr const char* kCellGateNames[kNumCellModes] = {"ifgo", "rzn", "h", "h", "h"};
// the gates per hidden unit, i.e. rows of W_ih / W_hh per hidden unit (GATES),
inline constexpr int kCellGates[kNumCellModes] = {4, 3, 1, 1, 1};
// and the rows (in units of H) of the activations a fused step saves for its backward:
// LSTM [i; f; g; o], GRU [r; z; n; W_hn h + b_hn], CT-RNN tanh(pre), RNN none (SAVED_ACTS).
inline constexpr int kCellSavedActs[kNumCellModes] = {4, 4, 0, 0, 1};

constexpr int cell_gates(CellMode mode) { return kCellGates[static_cast<int>(mode)]; }
constexpr int cell_saved_acts(CellMode mode) { return kCellSavedActs[static_cast<int>(mode)]; }

namespace detail {
constexpr int name_length(const char* s) { return *s ? 1 + name_length(s + 1) : 0; }
constexpr bool gate_names_match_gates(int mode = 0) {
  return mode == kNumCellModes ||
         (name_length(kCellGateNames[mode]) == kCellGates[mode] && gate_names_match_gates(mode + 1));
}
}  // namespace detail
static_assert(detail::gate_names_match_gates(), "one gate name per gate in every mode");

}  // namespace sparse_engine
