// Shared helpers for the CPU kernels: load-balanced row ranges, the chunk count of a parallel
// loop and the parallel loops themselves (on the pool of thread_pool.h); with them the argument
// checks (csrc/checks.h), the index content check (csrc/index_check.h) and the constants
// (csrc/constants.h: kParallelWork, the cell modes) every kernel file uses.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "../checks.h"
#include "../constants.h"
#include "../index_check.h"
#include "thread_pool.h"

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

// The threads of a kernel's parallel loops: torch's thread count (torch.set_num_threads), read
// at every call, in one place so that a thread rule has one home. Every kernel's result is
// independent of it (the *_on_1_and_2_threads tests of tests/ops/). The loops run on the
// library's own pool (thread_pool.h), not on OpenMP's teams: how idle threads wait there does not
// depend on OMP_WAIT_POLICY, nor so on whether torch or sparse_engine was imported first.
inline int kernel_threads() { return at::get_num_threads(); }

// The work (multiply-adds or elements) from which a kernel runs on kernel_threads() threads:
// kParallelWork (csrc/constants.h: where the pool's second thread was measured to pay,
// docs/cpu_kernels.md), changed only by sparse_engine._C._set_parallel_work (tests that split
// small inputs, the benchmark that measures the bound). Results do not depend on it.
inline std::atomic<int64_t> g_parallel_work{kParallelWork};
inline int64_t parallel_work() { return g_parallel_work.load(std::memory_order_relaxed); }

inline int64_t num_chunks(int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>(n, 8 * at::get_num_threads()));
}

// Chunks of rows for a gather tiled into `panels` panels of source rows (tiling.h). The pool claims
// chunks as threads free up, but a panel's work can sit in a few rows: on banded rows at N = 262,144
// and B = 512 (32 panels) each panel's entries lie in 1/32 of the rows, inside one of num_chunks'
// 16 chunks on two threads, so one thread did every panel's work (sddmm 0.52x MKL there). Four chunks
// a thread a panel spread it; which chunk holds a row changes no result (each row in one chunk).
inline int64_t panel_chunks(int64_t n, int64_t panels) {
  if (panels <= 1) return num_chunks(n);
  return std::max<int64_t>(1, std::min<int64_t>(n, 4 * panels * static_cast<int64_t>(at::get_num_threads())));
}

// fn(c) for every c in [0, chunks): on kernel_threads() threads of the pool where `parallel`,
// else on the calling thread, in chunk order.
template <typename F>
void parallel_chunks(int64_t chunks, bool parallel, F&& fn) {
  run_chunks(chunks, parallel ? kernel_threads() : 1, [&fn](int64_t c, int) { fn(c); });
}

// fn(i0, i1) over [0, n): one range on the calling thread, or where `parallel` num_chunks(n)
// ranges of about equal length on the pool. Only for loops whose results do not depend on
// where the ranges are cut (each element written on its own).
template <typename F>
void parallel_ranges(int64_t n, bool parallel, F&& fn) {
  if (n <= 0) return;
  if (!parallel || kernel_threads() == 1) return fn(int64_t(0), n);
  const int64_t chunks = num_chunks(n);
  run_chunks(chunks, kernel_threads(), [&fn, n, chunks](int64_t c, int) { fn(n * c / chunks, n * (c + 1) / chunks); });
}

}  // namespace sparse_engine
