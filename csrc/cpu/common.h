// Shared helpers for the CPU kernels: load-balanced row ranges and the chunk count of a
// parallel loop; with them the argument checks (csrc/checks.h) and the constants
// (csrc/constants.h: kParallelWork, the cell modes) every kernel file uses.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <vector>
#include <unistd.h>

#include "../checks.h"
#include "../constants.h"

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

// Whether other processes keep the cores busy: the 1-minute load average is at least the
// number of online CPUs plus one. Read at most once a second (getloadavg reads /proc/loadavg).
// On a busy machine OpenMP's threads are descheduled mid-region and every barrier waits for
// them: 2 threads ran 3-40x slower than 1 on a loaded 2-core machine (docs/cpu_kernels.md).
inline bool machine_busy() {
  static std::atomic<int64_t> next_check_ns{0};
  static std::atomic<bool> busy{false};
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch()).count();
  if (now >= next_check_ns.load(std::memory_order_relaxed)) {
    next_check_ns.store(now + 1000000000, std::memory_order_relaxed);
    double load[1];
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    busy.store(getloadavg(load, 1) == 1 && cpus > 0 && load[0] >= static_cast<double>(cpus) + 1.0,
               std::memory_order_relaxed);
  }
  return busy.load(std::memory_order_relaxed);
}

// The threads of a kernel's parallel regions: torch's thread count (torch.set_num_threads),
// or 1 while the machine is busy (machine_busy), unless SPARSE_ENGINE_BUSY_RULE=0 is set in
// the environment. Only the num_threads clauses use it (never the size of a per-thread
// array), and every kernel's result is independent of its thread count.
inline int kernel_threads() {
  const int n = at::get_num_threads();
  if (n <= 1) return 1;
  const char* rule = std::getenv("SPARSE_ENGINE_BUSY_RULE");
  if (rule != nullptr && rule[0] == '0') return n;
  return machine_busy() ? 1 : n;
}

inline int64_t num_chunks(int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>(n, 8 * at::get_num_threads()));
}

}  // namespace sparse_engine
