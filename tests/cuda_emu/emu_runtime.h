// The emulator's runtime (emu_runtime.cpp): what emu.h's kernel-side helpers call, and what a driver
// (tests/cuda_emu/*driver.cpp) sets and reads. No macros: drivers include it without emu.h.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace emu {
inline long launches = 0;  // kernel launches so far (emu.h's launch() counts them)

// The run's seed (block order, thread order, blocks at a time: 2 + seed % 3) and the stream every
// launch, memset and sort must be on (the driver passes it to every launcher).
void configure(uint64_t seed, cudaStream_t stream);

struct Stats {
  long launches, blocks, threads;
  long block_switches;  // switches from a thread of one block to a thread of another, unfinished one
  int max_live_blocks;  // most blocks running at the same time
  uint64_t order_hash;  // of the block order and the first scheduling choices of every launch
};
Stats stats();
// The kernels launched so far, by name as written at their launch sites without template arguments,
// comma-separated in the order of their first launch.
const char* kernels_launched();

// ---- used by emu.h in the kernels
// The running CUDA thread's built-in variables (set by the runtime at every switch).
struct ThreadVars {
  uint3 threadIdx, blockIdx;
  dim3 blockDim, gridDim;
};
extern ThreadVars* cur;

[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// kind 0: __shfl_sync (arg: source lane); kind 1: __shfl_xor_sync (arg: lane mask)
uint64_t shuffle(unsigned mask, uint64_t bits, int arg, int width, int kind, const char* file, int line);
void syncthreads(const char* file, int line);
// A grid-wide barrier (cooperative_groups::this_grid().sync()): only in a cooperative launch, reached by
// every thread of every block at the same site.
void grid_sync(const char* file, int line);
void yield();  // lets the scheduler run another thread (before an atomic)
// At the start of every kernel: its name and __launch_bounds__ (max_threads 0: none).
void kernel_entry(const char* pretty, int max_threads, int min_blocks = 0);
void* shared_alloc(const void* tag, size_t bytes);
// The block's dynamic shared memory (`extern __shared__`): the launch's shmem bytes, filled with 0xff.
void* dynamic_shared();
// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes): what `kernel` may
// take beyond the 48 KiB default (up to the opt-in limit, kMaxSharedOptin).
void set_max_dynamic_shared(const void* kernel, int bytes);
// Blocks of `threads` threads and `shmem` dynamic shared memory that fit on one SM at once (the
// emulated device's cudaOccupancyMaxActiveBlocksPerMultiprocessor; it has 1 SM).
int blocks_per_sm(int threads, size_t shmem);
void check_stream(const char* what, cudaStream_t stream);
// cooperative: cudaLaunchCooperativeKernel (every block resident at once, grid_sync allowed, the grid
// at most what fits: blocks_per_sm x 1 SM); kernel: the kernel's address (its shared memory attribute).
void run_launch(const char* name, const char* where, dim3 grid, dim3 block, size_t shmem, cudaStream_t stream,
                void (*body)(void*), void* closure, bool cooperative = false, const void* kernel = nullptr);
// The emulated device's shared memory per block with the opt-in attribute (an H100's 227 KiB).
constexpr size_t kMaxSharedOptin = 227 * 1024;
}  // namespace emu
