// The CUDA features our kernels use, emulated on the host (tests only): included first by every
// kernel file that tests/cuda_emu/emu_build.py compiles as host C++.
//
// Every CUDA thread is a fiber (its own stack) of emu_runtime.cpp, which runs the blocks of a
// launch several at a time and picks the next thread to run at random (seeded) at every
// shuffle, barrier and atomic, and checks what a GPU leaves undefined or refuses:
//  * launch configuration: threads per block, grid dimensions (grid.y / grid.z at most
//    SPARSE_ENGINE_MAX_GRID_Y, lowered for the tests), static + dynamic shared memory, the
//    kernel's __launch_bounds__, the stream (the caller's, not the default one);
//  * shuffles: the calling lane is in the mask, the source lane is in the mask, every lane named in
//    the mask arrives at the same shuffle (same site, same mask) and none of them has exited or
//    waits at a barrier instead;
//  * __syncthreads: reached by every thread of the block at the same site, none exited;
//  * cooperative launches (SE_LAUNCH_COOPERATIVE, cudaLaunchCooperativeKernel): the grid at most what
//    fits on the device at once (the occupancy query below, 1 SM), every block resident from the start;
//    SE_GRID_SYNC (cooperative_groups' grid sync) only there, reached by every thread of every block at
//    the same site, none exited; a ThreadSanitizer build sees it as the synchronisation it is, so a
//    block reading what another wrote without a grid sync between is a race;
//  * shared memory: 48 KiB per block unless cudaFuncSetAttribute raised it (up to 227 KiB);
//  * __ldg and the 16-byte vector loads/stores: aligned (the stores through UBSan's alignment
//    check, which every emulator build enables);
//  * a deadlock (threads waiting, none runnable) is reported, not a hang.
// A violation prints "EMU-ERROR ..." with the kernel, block and thread and exits with status 86.
// Shared memory is per block, filled with 0xff bytes (NaN for floats) when a block starts.
// Shuffles do not order memory between lanes (as on Volta and later), so ThreadSanitizer builds see
// only barriers and launch boundaries as synchronisation.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "emu_runtime.h"

namespace emu {
template <class T>
T shfl_sync(unsigned mask, T v, int src, int width = 32, const char* file = __builtin_FILE(),
            int line = __builtin_LINE()) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = shuffle(mask, bits, src, width, 0, file, line);
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}
template <class T>
T shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32, const char* file = __builtin_FILE(),
                int line = __builtin_LINE()) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = shuffle(mask, bits, lane_mask, width, 1, file, line);
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}
inline void sync_threads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) { syncthreads(file, line); }

// __ldg: a plain read that must be aligned to its type (16 bytes for float4 / double2 / uint4).
template <class T>
T ldg(const T* p) {
  if (reinterpret_cast<uintptr_t>(p) % alignof(T) != 0)
    fail("__ldg of a %zu-byte value at %p, not %zu-byte aligned (a misaligned vector load)", sizeof(T),
         static_cast<const void*>(p), alignof(T));
  return *p;
}

// __ldcg: a load cached in L2 only (data other blocks wrote in the same launch); a plain read here.
template <class T>
T ldcg(const T* p) {
  return *p;
}

// Atomics: relaxed, as CUDA's (no ordering: a ThreadSanitizer build sees no synchronisation in
// them), after a chance for another thread to run.
inline int atomic_add(int* p, int v) {
  yield();
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
template <class T, class Better>
T atomic_pick(T* p, T v, Better better) {
  yield();
  T cur_v = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (better(v, cur_v) && !__atomic_compare_exchange_n(p, &cur_v, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return cur_v;
}
template <class T> T atomic_min(T* p, T v) { return atomic_pick(p, v, [](T a, T b) { return a < b; }); }
template <class T> T atomic_max(T* p, T v) { return atomic_pick(p, v, [](T a, T b) { return a > b; }); }

// A __shared__ variable of the running block: `__shared__ T name[dims];` is rewritten to
// `static char name_emu_tag; auto& name = ::emu::shared<T[dims]>(&name_emu_tag);`.
template <class T>
T& shared(const void* tag) {
  static_assert(alignof(T) <= alignof(std::max_align_t));
  return *static_cast<T*>(shared_alloc(tag, sizeof(T)));
}

// `kernel<<<grid, block, shmem, stream>>>(args)` is rewritten to
// `::emu::launch("kernel", __PRETTY_FUNCTION__, kernel, ::emu::LaunchConfig{grid, block, shmem, stream}, args)`:
// a launch without a stream gets the default stream, which the stream check rejects.
struct LaunchConfig {
  dim3 grid;
  dim3 block;
  size_t shmem = 0;
  cudaStream_t stream = nullptr;
};
template <class K, class... A>
void launch(const char* name, const char* where, K kernel, LaunchConfig c, A... args) {
  ++launches;
  auto call = [&]() { kernel(args...); };  // every thread gets its own copies of the arguments
  using C = decltype(call);
  run_launch(name, where, c.grid, c.block, c.shmem, c.stream, [](void* p) { (*static_cast<C*>(p))(); }, &call);
}
// SE_LAUNCH_COOPERATIVE(kernel, grid, block, shmem, stream, args...): cudaLaunchCooperativeKernel.
template <class K, class... A>
cudaError_t launch_cooperative(const char* name, const char* where, K kernel, LaunchConfig c, A... args) {
  ++launches;
  auto call = [&]() { kernel(args...); };
  using C = decltype(call);
  run_launch(name, where, c.grid, c.block, c.shmem, c.stream, [](void* p) { (*static_cast<C*>(p))(); }, &call, true,
             reinterpret_cast<const void*>(kernel));
  return cudaSuccess;
}
template <class K>
cudaError_t occupancy(int* blocks, K, int threads, size_t shmem) {
  *blocks = blocks_per_sm(threads, shmem);
  return cudaSuccess;
}
template <class K>
cudaError_t func_set_attribute(K kernel, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) set_max_dynamic_shared(reinterpret_cast<const void*>(kernel), value);
  return cudaSuccess;
}

inline cudaError_t memset_async(void* p, int v, size_t n, cudaStream_t stream = nullptr) {
  check_stream("cudaMemsetAsync", stream);
  std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t get_last_error() { return cudaSuccess; }  // a failing launch has already ended the run
inline cudaError_t get_device(int* d) {
  *d = 0;
  return cudaSuccess;
}
// One SM: the long-row kernels get a 4-block grid, the index scan 8 blocks, the elementwise kernels
// 32, so their grid-stride loops run more than once on small inputs. Shared memory and cooperative
// launches as an H100's.
inline cudaError_t device_get_attribute(int* v, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = static_cast<int>(kMaxSharedOptin); break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *v = 228 * 1024; break;
    default: *v = 1;  // the SM count, cooperative launch supported
  }
  return cudaSuccess;
}
}  // namespace emu

#undef __global__
#undef __device__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ __shared__is_rewritten_by_emu_build_py
#define __launch_bounds__(...)
#define threadIdx (::emu::cur->threadIdx)
#define blockIdx (::emu::cur->blockIdx)
#define blockDim (::emu::cur->blockDim)
#define gridDim (::emu::cur->gridDim)
#define __shfl_sync ::emu::shfl_sync
#define __shfl_xor_sync ::emu::shfl_xor_sync
#define __syncthreads ::emu::sync_threads
#define __ldg ::emu::ldg
#define __ldcg ::emu::ldcg
#define atomicAdd ::emu::atomic_add
#define atomicMin ::emu::atomic_min
#define atomicMax ::emu::atomic_max
#define cudaMemsetAsync ::emu::memset_async
#define cudaGetLastError ::emu::get_last_error
#define cudaGetDevice ::emu::get_device
#define cudaDeviceGetAttribute ::emu::device_get_attribute
#define cudaOccupancyMaxActiveBlocksPerMultiprocessor ::emu::occupancy
#define cudaFuncSetAttribute ::emu::func_set_attribute
#define SE_GRID_SYNC() ::emu::grid_sync(__FILE__, __LINE__)
#define SE_LAUNCH_COOPERATIVE(kernel, grid, block, shmem, stream, ...) \
  ::emu::launch_cooperative(#kernel, __PRETTY_FUNCTION__, kernel, ::emu::LaunchConfig{grid, block, shmem, stream}, __VA_ARGS__)
using std::fma;
