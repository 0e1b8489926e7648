// Shared helpers for the CPU kernels: load-balanced row ranges and the chunk count of a
// parallel loop; with them the argument checks (csrc/checks.h), the index content check
// (csrc/index_check.h) and the constants (csrc/constants.h: kParallelWork, the cell modes) every
// kernel file uses.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <vector>

#include "../checks.h"
#include "../constants.h"
#include "../index_check.h"

namespace sparse_engine {

// Splits [0, n) into `chunks` ranges of about equal (items + work): ptr is a prefix sum of
// per-item work (row_ptr or csc_ptr), so a few very long rows do not stall one thread.
inline std::vector<int64_t> balanced_bounds(const int64_t* ptr, int64_t n, int64_t chunks) {
  std::vector<int64_t> bounds(chunks + 1);
  const int64_t total = n + ptr[n];
  bounds[0] = 0;
  for (int64_t c = 1; c < chunks; ++c) {
    const int64_t target = total * c / chunks;
    int64_t lo = bounds[c - 1], hi = n;  // first i with ptr[i] + i >= target
    while (lo < hi) {
      int64_t mid = (lo + hi) / 2;
      if (ptr[mid] + mid < target) lo = mid + 1; else hi = mid;
    }
    bounds[c] = lo;
  }
  bounds[chunks] = n;
  return bounds;
}

// The threads of a kernel's parallel regions: torch's thread count (torch.set_num_threads),
// read in one place so that a thread rule has one home. Only the num_threads clauses and
// arrays sized with it use it, and every kernel's result is independent of it
// (tests/test_threads.py). On a busy machine what matters is how idle threads wait: see
// sparse_engine/threads.py (OMP_WAIT_POLICY=PASSIVE by default).
inline int kernel_threads() { return at::get_num_threads(); }

inline int64_t num_chunks(int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>(n, 8 * at::get_num_threads()));
}

}  // namespace sparse_engine
