// What the topology kernels (topology_cpu.cpp and its headers) share: when a loop goes parallel
// (parallel_worth) and the checked CSR pattern they work on (Csr, csr_view), whose content scan
// rewire makes once for all its steps (StepsOfRewire). Separate so that radix_select.h and
// empty_positions.h can use them without the ops.
#pragma once
#include <ATen/ATen.h>
#include <cstdint>
#include "common.h"

namespace sparse_engine {

// Small inputs run on one thread: waking a team costs more than the work, and much more when
// the machine is oversubscribed.
inline bool parallel_worth(int64_t work) { return work >= parallel_work(); }

// A checked CSR pattern: its sizes and arrays.
struct Csr {
  int64_t rows, nnz;
  const int64_t* row_ptr;
  const int32_t* col_idx;
};

// rewire checks its input pattern once (remembered: index_check.h, check_sorted_csr_remembered)
// and then runs the steps (topology_cpu.cpp) on it and on the patterns they build: while a
// StepsOfRewire lives on this thread, csr_view skips the O(nnz) content scan (the O(1) checks
// stay). Scanning at every step would make SET's update at 1M nnz about 4 scans, 10-15% of its
// time, where the one scan is 2% (benchmarks/results/topology_one_pass.md).
inline thread_local bool in_rewire = false;
struct StepsOfRewire {
  const bool outer = in_rewire;
  StepsOfRewire() { in_rewire = true; }
  ~StepsOfRewire() { in_rewire = outer; }
};

// row_ptr and col_idx: contiguous tensors, checked whole (index_check.h): row_ptr non-decreasing
// from 0 to nnz, columns in [0, n_cols) and, with `sorted`, sorted and unique in each row (what
// drawing empty positions, merging and the gradient's top-k rely on).
inline Csr csr_view(const at::Tensor& row_ptr, const at::Tensor& col_idx, int64_t n_cols, bool sorted) {
  const CsrSizes s = check_csr(row_ptr, col_idx);
  if (!in_rewire) check_csr_content(row_ptr, col_idx, n_cols, sorted);
  return {s.rows, s.nnz, row_ptr.data_ptr<int64_t>(), col_idx.data_ptr<int32_t>()};
}

}  // namespace sparse_engine
