// Host emulation of the CUDA features our kernels use (tests only): one std::thread per CUDA thread,
// warps in lockstep at every shuffle (a 32-party barrier), blocks run one after another.
#pragma once
#include <cuda_runtime.h>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "emu_count.h"

namespace emu {
struct Warp {
  std::barrier<> bar{32};
  uint64_t buf[32];
};
struct Block {
  std::barrier<> bar;
  std::vector<std::unique_ptr<Warp>> warps;
  explicit Block(int n) : bar(n) { for (int i = 0; i < (n + 31) / 32; ++i) warps.emplace_back(new Warp); }
};
inline thread_local uint3 t_threadIdx, t_blockIdx;
inline thread_local dim3 t_blockDim, t_gridDim;
inline thread_local Block* t_block = nullptr;

template <class T> T shfl_from(T v, int src) {
  static_assert(sizeof(T) <= 8);
  const int lane = t_threadIdx.x % 32;
  Warp& w = *t_block->warps[t_threadIdx.x / 32];
  uint64_t bits = 0; std::memcpy(&bits, &v, sizeof(T));
  w.buf[lane] = bits;
  w.bar.arrive_and_wait();
  uint64_t got = w.buf[src & 31];
  w.bar.arrive_and_wait();
  T r; std::memcpy(&r, &got, sizeof(T));
  return r;
}
template <class T> T shfl_sync(unsigned, T v, int src) { return shfl_from(v, src); }
template <class T> T shfl_xor_sync(unsigned, T v, int m) { return shfl_from(v, (int)(t_threadIdx.x % 32) ^ m); }
inline void syncthreads() { t_block->bar.arrive_and_wait(); }
template <class T> T ldg(const T* p) { return *p; }
inline int atomic_add(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
// atomicMin / atomicMax (64-bit, as the index scan uses them): a compare-and-swap loop
template <class T, class Better> T atomic_pick(T* p, T v, Better better) {
  T cur = __atomic_load_n(p, __ATOMIC_SEQ_CST);
  while (better(v, cur) && !__atomic_compare_exchange_n(p, &cur, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
  return cur;
}
template <class T> T atomic_min(T* p, T v) { return atomic_pick(p, v, [](T a, T b) { return a < b; }); }
template <class T> T atomic_max(T* p, T v) { return atomic_pick(p, v, [](T a, T b) { return a > b; }); }

// One std::thread per CUDA thread of a block, reused for every block (blocks run in turn;
// a block-wide barrier separates them, so "static" shared memory is never shared by two).
template <class K, class... A>
void launch(K kernel, dim3 grid, dim3 block, size_t, cudaStream_t, A... args) {
  ++launches;
  const int nt = block.x * block.y * block.z;
  Block blk(nt);
  std::barrier<> between(nt);
  std::vector<std::thread> ts;
  for (int t = 0; t < nt; ++t)
    ts.emplace_back([&, t] {
      t_threadIdx = uint3{(unsigned)t, 0, 0};
      t_blockDim = block; t_gridDim = grid; t_block = &blk;
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          t_blockIdx = uint3{bx, by, 0};
          kernel(args...);
          between.arrive_and_wait();
        }
    });
  for (auto& th : ts) th.join();
}
inline cudaError_t memset_async(void* p, int v, size_t n, cudaStream_t = 0) { std::memset(p, v, n); return cudaSuccess; }
inline cudaError_t get_last_error() { return cudaSuccess; }
}  // namespace emu

#undef __global__
#undef __device__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define threadIdx emu::t_threadIdx
#define blockIdx emu::t_blockIdx
#define blockDim emu::t_blockDim
#define gridDim emu::t_gridDim
#define __shfl_sync emu::shfl_sync
#define __shfl_xor_sync emu::shfl_xor_sync
#define __syncthreads emu::syncthreads
#define __ldg emu::ldg
#define atomicAdd emu::atomic_add
#define atomicMin emu::atomic_min
#define atomicMax emu::atomic_max
#define cudaMemsetAsync emu::memset_async
#define cudaGetLastError emu::get_last_error
using std::fma;
namespace emu {
inline cudaError_t get_device(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t device_get_attribute(int* v, cudaDeviceAttr, int) { *v = 1; return cudaSuccess; }  // 1 SM: the long-row kernels get a 4-block grid, so their grid-stride loops run
}
#define cudaGetDevice emu::get_device
#define cudaDeviceGetAttribute emu::device_get_attribute
