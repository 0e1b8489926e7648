// Shared helpers for the CPU kernels: load-balanced row ranges and the chunk count of a
// parallel loop; with them the argument checks (csrc/checks.h), the index content check
// (csrc/index_check.h) and the constants (csrc/constants.h: kParallelWork, the cell modes) every
// kernel file uses.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <strings.h>

#include <algorithm>
#include <cstdlib>
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
// (the *_on_1_and_2_threads tests of tests/ops/). On a busy machine what matters is how idle threads wait: see
// sparse_engine/threads.py (OMP_WAIT_POLICY=PASSIVE by default).
inline int kernel_threads() { return at::get_num_threads(); }

// Whether libgomp's idle threads sleep at once: OMP_WAIT_POLICY=PASSIVE (what `import
// sparse_engine` sets when it comes before torch) and no GOMP_SPINCOUNT, which overrides the
// policy, or GOMP_SPINCOUNT=0. Read from the environment at the first call (libgomp read it when
// torch loaded it; a later change of the variables changes neither).
inline bool threads_sleep_at_once() {
  if (const char* spin = std::getenv("GOMP_SPINCOUNT"); spin != nullptr && *spin != '\0') {
    char* end = nullptr;
    return std::strtoll(spin, &end, 10) == 0 && end != spin;  // "INFINITY" and the like spin
  }
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  return policy != nullptr && strcasecmp(policy, "PASSIVE") == 0;
}

// Sleeping threads: a parallel region first wakes one, 30-80 us on our 2-core VM, as long as
// about this much work takes on one thread (docs/cpu_kernels.md, benchmarks/results/
// cpu_ops_1024_passive.md).
inline constexpr int64_t kSleepingParallelWork = int64_t(1) << 19;

// The work (multiply-adds or elements) from which a kernel runs on kernel_threads() threads:
// kParallelWork where idle threads spin, kSleepingParallelWork where they sleep at once. Results
// do not depend on it (every kernel's result is the same on any number of threads).
inline int64_t parallel_work() {
  static const int64_t work = threads_sleep_at_once() ? kSleepingParallelWork : kParallelWork;
  return work;
}

inline int64_t num_chunks(int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>(n, 8 * at::get_num_threads()));
}

}  // namespace sparse_engine
