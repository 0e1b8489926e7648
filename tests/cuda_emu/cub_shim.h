// Stand-in for cub::DeviceRadixSort::SortPairs in the CPU emulation (tests only): a stable
// sort by the key bits [begin_bit, end_bit), which is what the radix sort guarantees, on the
// caller's stream (checked like a kernel launch's).
#pragma once
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "emu_runtime.h"

namespace cub {
struct DeviceRadixSort {
  template <class K, class V, class N>
  static cudaError_t SortPairs(void* tmp, size_t& bytes, const K* kin, K* kout, const V* vin, V* vout, N n,
                               int begin_bit, int end_bit, cudaStream_t stream = 0) {
    if (tmp == nullptr) { bytes = 64; return cudaSuccess; }  // the caller must still provide it
    if (bytes < 64) return cudaErrorInvalidValue;
    emu::check_stream("cub::DeviceRadixSort::SortPairs", stream);
    auto bits = [&](K k) {
      const uint64_t u = static_cast<uint64_t>(static_cast<uint32_t>(k));
      return (u >> begin_bit) & ((end_bit - begin_bit >= 64) ? ~0ull : ((1ull << (end_bit - begin_bit)) - 1));
    };
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return bits(kin[a]) < bits(kin[b]); });
    for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) { kout[i] = kin[order[i]]; vout[i] = vin[order[i]]; }
    return cudaSuccess;
  }
};
}  // namespace cub
