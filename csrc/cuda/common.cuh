// Device helpers shared by the CUDA kernels: vector loads, lane layout, long-row policy,
// storage and accumulator types.
//
// Storage type T: float, double, __half or __nv_bfloat16. The kernels compute in acc_t<T>
// (double for double, float otherwise): 2-byte values are widened when loaded, every
// product and sum is float32, and the result is rounded to T once, when it is stored.
//
// Lane layout used by the row kernels: a warp works on one row; the batch dimension is
// cut into tiles of CW "vector columns" (a vector column is VEC = 16 / sizeof(T) consecutive
// batch entries, 4 floats / 2 doubles / 8 halves, loaded with one 16-byte access when
// B % VEC == 0 and the pointers are aligned; else VEC = 1). When a
// tile is narrower than the warp (CW < 32), the warp's S = 32 / CW slots each take a
// different nonzero of the row at the same time, so small batches still use every lane.
// lane = s * CW + c  (c: vector column within the tile, s: slot).
#pragma once
#ifndef SE_GRID_SYNC  // the emulator has its own (tests/cuda_emu/emu.h)
#include <cooperative_groups.h>
#endif
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../constants.h"

namespace sparse_engine {
namespace cuda {
namespace detail {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kRowWarps = 8;    // warps (rows) per block in the row kernels
constexpr int kLongWarps = 8;   // warps cooperating on one long row
constexpr int64_t kMinLongRow = 1024;  // rows shorter than this always stay with one warp

// Occupancy floor: a quarter of an SM's 2,048 threads (16 of its 64 warps on sm_80 / sm_90) resident.
// Every kernel declares __launch_bounds__(threads, kMinBlocks<threads>), so ptxas keeps its registers
// per thread low enough for that many blocks per SM (128 at 256 threads, 112 at 192);
// tests/kernels/test_cuda_build.py checks the result, and no spills, for sm_80 and sm_90.
template <int Threads>
constexpr int kMinBlocks = (2048 / 4 + Threads - 1) / Threads;

// Rows longer than this go to the block-per-row kernel: a power-law row can be 100x the
// mean, and one warp on it would finish long after all the others. `row_bytes`: the gather's
// source row (B x the element size; 0 for sddmm, whose threshold stays kMinLongRow). A warp of the
// gather takes 32 / CW entries at a time, CW = its lanes across the row's 16-byte slices: one
// entry at a time from 32 slices (B = 128 floats) up, so a row under 1,024 entries was up to 1,024
// dependent gathers for one warp. kMinLongRow is divided by the slices, at most kWideSlices: 1,024
// entries for rows of up to 16 bytes, 128 from 128 bytes (32 floats, 64 halves) up. Why: the fifth
// H200 grid (benchmarks/results/cuda_ops_nvidia_h200.md) had spmm on Zipf rows at B >= 32 and
// 0.05-0.1% density at 0.37-0.86x cuSPARSE, about 40 us over uniform rows, the time such a warp
// takes (issue 45); not yet timed on a GPU with this rule.
constexpr int64_t kWideSlices = 8;
// The gather's multiples of the mean row, 4 and 2 (set_gather_long_rows: bench_gather_tuning.py's sweep,
// tests; outputs do not depend on them): its rows over long_mult x the mean leave the row kernel (sddmm's,
// row_bytes 0, at 4x) and a split row's segment holds seg_mult x the mean (>= 2, below).
inline std::atomic<int> g_gather_long_mult{4};
inline std::atomic<int> g_gather_seg_mult{2};
inline int64_t long_row_threshold(int64_t n, int64_t nnz, int64_t row_bytes) {
  const int64_t mean = n > 0 ? (nnz + n - 1) / n : 0;
  const int64_t slices = std::min<int64_t>(kWideSlices, std::max<int64_t>(1, row_bytes / 16));
  const int64_t mult = row_bytes > 0 ? g_gather_long_mult.load(std::memory_order_relaxed) : 4;
  return std::max<int64_t>(kMinLongRow / slices, mult * mean);
}

// At most nnz / (threshold + 1) rows can be longer than the threshold.
inline int64_t max_long_rows(int64_t n, int64_t nnz, int64_t row_bytes) {
  if (n <= 0 || nnz <= 0) return 0;
  return std::min<int64_t>(n, nnz / (long_row_threshold(n, nnz, row_bytes) + 1));
}

// Workspace: [count, row ids...] as int32; 0 when no row can be long.
inline int64_t long_list_len(int64_t n, int64_t nnz, int64_t row_bytes) {
  const int64_t m = max_long_rows(n, nnz, row_bytes);
  return m > 0 ? m + 1 : 0;
}

// The same knowing that no row has more than max_len entries (a checked index's longest row):
// 0 when none is longer than the threshold, so that the long-row kernel is not launched at all.
inline int64_t known_long_list_len(int64_t n, int64_t nnz, int64_t row_bytes, int64_t max_len) {
  return max_len > long_row_threshold(n, nnz, row_bytes) ? long_list_len(n, nnz, row_bytes) : 0;
}

// The gather's long rows longer than a segment (gather_segment_length entries) are split: each
// (row, segment, batch tile) a block of its own, whose partial sums a third kernel adds in segment
// order (deterministic): a Zipf row of 65,536 entries on one block of 8 warps left the rest of the
// GPU idle (0.26-0.5x cuSPARSE at B >= 32). The row kernel lists such a row in a second list of its
// own, reserving one slot per segment with one atomicAdd (the first slot holds the row, the i-th after
// it -i), so that a row has exactly as many items as segments. (Before, every listed row had the
// same number of items, at most n / (the rows that can be long) so that the partials stayed within
// the output: 4 at 262,144 / 0.1% and B = 1, where a Zipf row's 65,536-entry segments ran one block
// each; raising that bound would have left most items empty.) A segment: at least kMinSegment entries
// (4 chunks for each of the block's warps) and g_gather_seg_mult (default 2, at least 2) x the mean row,
// a multiple of the block's step; a row over it has fewer than 2 len / segment segments, so all of them
// fit 2 nnz / segment slots and their partials (a row of B accumulators per slot) no more than the
// output (n x B).
constexpr int64_t kMinSegment = 4 * kLongWarps * kWarp;

inline int64_t gather_segment_length(int64_t n, int64_t nnz) {
  constexpr int64_t kStep = kLongWarps * kWarp;
  const int64_t mean = n > 0 ? (nnz + n - 1) / n : 0;
  const int64_t want = std::max<int64_t>(g_gather_seg_mult.load(std::memory_order_relaxed) * mean, kMinSegment);
  return (want + kStep - 1) / kStep * kStep;
}

// int32 entries up to the next 16-byte boundary: where the next part of a workspace starts.
inline int64_t to_16_bytes(int64_t entries) { return (entries + 3) / 4 * 4; }

// Slots of the split list: 0 when no row can be longer than a segment (nnz under half of one).
inline int64_t split_slots(int64_t n, int64_t nnz) { return n > 0 ? 2 * nnz / gather_segment_length(n, nnz) : 0; }

// Workspace of the gather (int32 entries): the long-row list, then (where rows can be split) the
// split list and the partial sums, each from a 16-byte boundary: split_slots x B accumulators of
// acc_bytes each.
inline int64_t gather_list_and_partials_len(int64_t n, int64_t nnz, int64_t list_len, int64_t B,
                                            int64_t acc_bytes) {
  if (list_len <= 0) return 0;
  const int64_t slots = split_slots(n, nnz);
  if (slots <= 0 || B <= 0) return list_len;
  return to_16_bytes(list_len) + to_16_bytes(slots + 1) + slots * B * acc_bytes / 4;
}

// The long-row list of a row kernel (spmm_cuda.cu, sddmm_cuda.cu): the rows longer than
// `threshold`, [count, row ids...] as int32 in the workspace, for the block-per-row kernel; for
// the gather, its rows longer than a segment in a split list instead, with their segments' partial sums.
struct LongRows {
  int64_t threshold;
  int64_t cap;    // room for row ids
  int32_t* list;  // nullptr: no row can be long (or no workspace)
  // the gather's split rows (split == nullptr: none): rows longer than seg_len entries
  int64_t seg_len = 0;
  int64_t split_cap = 0;     // room for their segments
  int32_t* split = nullptr;  // [count, slots...]: a row's first slot holds the row, the i-th after it -i
  void* partial = nullptr;   // split_cap x B accumulators, B a slot
};

// The list in `workspace` (long_list_len(n, nnz, row_bytes) int32 entries, or nullptr when that is
// 0), its count zeroed on `stream`.
inline cudaError_t init_long_rows(LongRows& rows, int64_t n, int64_t nnz, int64_t row_bytes, int32_t* workspace,
                                  cudaStream_t stream) {
  rows = {long_row_threshold(n, nnz, row_bytes), 0, nullptr};
  const int64_t len = long_list_len(n, nnz, row_bytes);
  if (len <= 0 || workspace == nullptr) return cudaSuccess;
  rows.list = workspace;
  rows.cap = len - 1;
  return cudaMemsetAsync(workspace, 0, sizeof(int32_t), stream);
}

// The gather's: the list, and where rows can be split, the split list (its count zeroed on `stream`)
// and the partials after it (the workspace of gather_list_and_partials_len).
inline cudaError_t init_long_rows_split(LongRows& rows, int64_t n, int64_t nnz, int64_t row_bytes,
                                        int32_t* workspace, cudaStream_t stream) {
  const cudaError_t err = init_long_rows(rows, n, nnz, row_bytes, workspace, stream);
  if (err != cudaSuccess || rows.list == nullptr) return err;
  const int64_t slots = split_slots(n, nnz);
  if (slots <= 0) return cudaSuccess;
  rows.seg_len = gather_segment_length(n, nnz);
  rows.split_cap = slots;
  rows.split = workspace + to_16_bytes(rows.cap + 1);
  rows.partial = rows.split + to_16_bytes(slots + 1);
  return cudaMemsetAsync(rows.split, 0, sizeof(int32_t), stream);
}

// In a row kernel: whether row `row` (of `length` entries) is long, in which case the warp leaves
// it to the long-row kernel; the one thread with `lists` set appends it to the list.
// A row longer than a segment (the gather's split rows) goes to the split list, one slot per segment.
__device__ __forceinline__ bool defer_long_row(const LongRows& rows, int64_t row, int64_t length, bool lists) {
  if (rows.list == nullptr || length <= rows.threshold) return false;
  if (lists && rows.split != nullptr && length > rows.seg_len) {
    const int64_t k = (length + rows.seg_len - 1) / rows.seg_len;
    const int64_t pos = atomicAdd(rows.split, static_cast<int>(k));
    if (pos + k <= rows.split_cap) {
      for (int64_t i = 0; i < k; ++i) rows.split[1 + pos + i] = static_cast<int32_t>(i == 0 ? row : -i);
    }
  } else if (lists) {
    const int pos = atomicAdd(rows.list, 1);
    if (pos < rows.cap) rows.list[1 + pos] = static_cast<int32_t>(row);
  }
  return true;
}

// In a long-row kernel: the listed rows (a full list keeps its first `cap`).
__device__ __forceinline__ int64_t long_row_count(const LongRows& rows) {
  const int64_t count = rows.list[0];
  return count < rows.cap ? count : rows.cap;
}

// The split rows' slots (0 without a split list; split_cap bounds them, so none is cut).
__device__ __forceinline__ int64_t split_slot_count(const LongRows& rows) {
  if (rows.split == nullptr) return 0;
  const int64_t count = rows.split[0];
  return count < rows.split_cap ? count : rows.split_cap;
}

// Vector columns per tile: the smallest power of two >= C, at most MaxLanes (a warp).
template <int MaxLanes = kWarp>
inline int lanes_for(int64_t C) {
  int cw = 1;
  while (cw < MaxLanes && cw < C) cw *= 2;
  return cw;
}

// launch(std::integral_constant<int, CW>{}) for the run-time lane count cw (a power of two, at most
// MaxLanes): the row kernels take their lane count as a template parameter, and only counts up to
// MaxLanes are instantiated.
template <int CW, int MaxLanes, typename Launch>
cudaError_t dispatch_lanes_from(int cw, Launch&& launch) {
  if constexpr (CW < MaxLanes) {
    if (cw > CW) return dispatch_lanes_from<2 * CW, MaxLanes>(cw, launch);
  }
  return launch(std::integral_constant<int, CW>{});
}

inline int num_sms() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || sms <= 0) {
    cudaGetLastError();  // clear, fall back to a typical count
    return 132;
  }
  return sms;
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Launch limits the launchers respect: grid.y <= 65,535 on every GPU (a grid-stride loop over
// grid.y takes the rest), and at most SPARSE_ENGINE_MAX_STRIDE_BLOCKS blocks for an elementwise
// grid-stride kernel. The CPU emulator (tests/cuda_emu) compiles with lower values, and checks
// every launch against them, so that each of those loops runs more than once in its tests.
#ifndef SPARSE_ENGINE_MAX_GRID_Y
#define SPARSE_ENGINE_MAX_GRID_Y 65535
#endif
#ifndef SPARSE_ENGINE_MAX_STRIDE_BLOCKS
#define SPARSE_ENGINE_MAX_STRIDE_BLOCKS (1 << 20)
#endif
constexpr int64_t kMaxGridY = SPARSE_ENGINE_MAX_GRID_Y;
constexpr int64_t kMaxStrideBlocks = SPARSE_ENGINE_MAX_STRIDE_BLOCKS;

// Persistent kernels (rnn_sequence_cuda.cu): a cooperative launch, whose blocks are all resident at
// once, and the grid-wide barrier between their phases. Macros so that the CPU emulator
// (tests/cuda_emu/emu.h) puts its own in their place, which checks both (the grid fits, every thread
// of every block reaches the same grid sync).
#ifndef SE_GRID_SYNC
#define SE_GRID_SYNC() cooperative_groups::this_grid().sync()
// The arguments are converted to the kernel's parameter types first: cudaLaunchCooperativeKernel reads
// each through a pointer, by the kernel's signature.
template <typename... Params, typename... Args, size_t... I>
cudaError_t launch_cooperative_typed(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shmem,
                                     cudaStream_t stream, std::index_sequence<I...>, Args... args) {
  std::tuple<Params...> typed(args...);
  void* params[] = {static_cast<void*>(&std::get<I>(typed))...};
  return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), grid, block, params, shmem, stream);
}
template <typename... Params, typename... Args>
cudaError_t launch_cooperative(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shmem, cudaStream_t stream,
                               Args... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "one argument per kernel parameter");
  return launch_cooperative_typed(kernel, grid, block, shmem, stream, std::index_sequence_for<Params...>{}, args...);
}
#define SE_LAUNCH_COOPERATIVE(kernel, grid, block, shmem, stream, ...) \
  ::sparse_engine::cuda::detail::launch_cooperative(kernel, grid, block, shmem, stream, __VA_ARGS__)
#endif

// launch(std::integral_constant<CellMode, M>{}) for the run-time mode: the kernels take the mode
// as a template parameter.
template <typename Launch>
cudaError_t dispatch_mode(CellMode mode, Launch&& launch) {
  switch (mode) {
    case CellMode::LSTM: return launch(std::integral_constant<CellMode, CellMode::LSTM>{});
    case CellMode::GRU: return launch(std::integral_constant<CellMode, CellMode::GRU>{});
    case CellMode::RNN_TANH: return launch(std::integral_constant<CellMode, CellMode::RNN_TANH>{});
    case CellMode::RNN_RELU: return launch(std::integral_constant<CellMode, CellMode::RNN_RELU>{});
    case CellMode::CTRNN: return launch(std::integral_constant<CellMode, CellMode::CTRNN>{});
    default: return cudaErrorInvalidValue;
  }
}

// Reduce-scatter over the lanes of a group, `Stride` lanes apart (lane = c * Stride + other bits):
// afterwards p[0] of the lane at position c holds the sum over the group's lanes of their p[c]. At
// the step for bit O a lane keeps the half of its array selected by bit O of c and receives its
// partner's copy of that half (a fixed order: the same bits every run). A recursion rather than a
// loop so every index is a compile-time constant and p stays in registers. Used by sddmm (a slot's
// CW lanes, Stride 1) and the persistent kernels' split rows (a unit's S slots, Stride 32 / S).
template <int O, int Stride = 1, typename T, int N>
__device__ __forceinline__ void reduce_scatter(T (&p)[N], int c) {
  if constexpr (O > 0) {
    const bool upper = (c & O) != 0;
#pragma unroll
    for (int i = 0; i < O; ++i) {
      const T send = upper ? p[i] : p[i + O];
      const T keep = upper ? p[i + O] : p[i];
      p[i] = keep + __shfl_xor_sync(kFullMask, send, O * Stride);
    }
    reduce_scatter<O / 2, Stride>(p, c);
  }
}

// The gate nonlinearities of the recurrent kernels (rnn_step_cuda.cu, rnn_sequence_cuda.cu), float or double.
__device__ __forceinline__ float ex(float x) { return expf(x); }
__device__ __forceinline__ double ex(double x) { return exp(x); }
__device__ __forceinline__ float th(float x) { return tanhf(x); }
__device__ __forceinline__ double th(double x) { return tanh(x); }
template <typename T> __device__ __forceinline__ T sigm(T x) { return T(1) / (T(1) + ex(-x)); }

template <typename T>
constexpr bool kIsHalf = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

// Accumulator type: float32 for the 2-byte storage types and for float, double for double.
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Vector width of a 16-byte access in elements of T.
template <typename T>
constexpr int kWideVec = 16 / static_cast<int>(sizeof(T));

// launch(VEC, CW) as compile-time constants (std::integral_constant): VEC the vector width
// (kWideVec<T> when `wide`, else 1), CW = lanes_for<MaxLanes>(C).
template <typename T, int MaxLanes = kWarp, typename Launch>
cudaError_t dispatch_vec_lanes(bool wide, int64_t C, Launch&& launch) {
  return dispatch_lanes_from<1, MaxLanes>(lanes_for<MaxLanes>(C), [&](auto lanes) {
    return wide ? launch(std::integral_constant<int, kWideVec<T>>{}, lanes)
                : launch(std::integral_constant<int, 1>{}, lanes);
  });
}

// The launch of a row kernel with a long-row list (spmm_cuda.cu, sddmm_cuda.cu): a.long_rows
// set up in `workspace` for n rows and nnz entries and source rows of row_bytes (long_row_threshold;
// SplitLongRows: with the partial sums of their segments, the gather's), then launch(VEC, CW) as
// above for a.C.
template <typename T, int MaxLanes, bool SplitLongRows = false, typename Args, typename Launch>
cudaError_t launch_row_kernels(Args& a, int64_t n, int64_t nnz, int64_t row_bytes, bool wide, int32_t* workspace,
                               cudaStream_t stream, Launch&& launch) {
  const cudaError_t err = SplitLongRows ? init_long_rows_split(a.long_rows, n, nnz, row_bytes, workspace, stream)
                                        : init_long_rows(a.long_rows, n, nnz, row_bytes, workspace, stream);
  if (err != cudaSuccess) return err;
  return dispatch_vec_lanes<T, MaxLanes>(wide, a.C, launch);
}

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

// Rounds an accumulator to the storage type (round to nearest even).
template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> x) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(x);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(x);
  else return x;
}

// VEC consecutive elements through the read-only cache, widened to the accumulator type:
// one 16-byte load when VEC > 1 (float4, double2, or 8 halves as a uint4).
template <typename T, int VEC>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, acc_t<T> (&x)[VEC]) {
  if constexpr (VEC == 1) {
    x[0] = to_acc(__ldg(p));
  } else if constexpr (std::is_same_v<T, float> && VEC == 4) {
    const float4 t = __ldg(reinterpret_cast<const float4*>(p));
    x[0] = t.x; x[1] = t.y; x[2] = t.z; x[3] = t.w;
  } else if constexpr (std::is_same_v<T, double> && VEC == 2) {
    const double2 t = __ldg(reinterpret_cast<const double2*>(p));
    x[0] = t.x; x[1] = t.y;
  } else if constexpr (kIsHalf<T> && VEC == 8) {
    const uint4 t = __ldg(reinterpret_cast<const uint4*>(p));
    T h[8];
    memcpy(h, &t, sizeof(t));  // a register reinterpretation, no memory traffic
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] = to_acc(h[e]);
  } else {
    static_assert(VEC == 1, "unsupported vector width");
  }
}

// Rounds VEC accumulators to T and stores them: one 16-byte store when VEC > 1.
template <typename T, int VEC>
__device__ __forceinline__ void store_vec(T* __restrict__ p, const acc_t<T> (&x)[VEC]) {
  if constexpr (VEC == 1) {
    p[0] = from_acc<T>(x[0]);
  } else if constexpr (std::is_same_v<T, float> && VEC == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
  } else if constexpr (std::is_same_v<T, double> && VEC == 2) {
    *reinterpret_cast<double2*>(p) = make_double2(x[0], x[1]);
  } else if constexpr (kIsHalf<T> && VEC == 8) {
    T h[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) h[e] = from_acc<T>(x[e]);
    uint4 t;
    memcpy(&t, h, sizeof(t));
    *reinterpret_cast<uint4*>(p) = t;
  } else {
    static_assert(VEC == 1, "unsupported vector width");
  }
}

// One warp's sum over the entries [first, end) of a compressed row, for vector column cv of
// the batch: acc[e] = sum_k val(k) * src[idx[k], cv * VEC + e], val(k) = values[perm ? perm[k] : k].
// The warp takes the chunks first, first + step, ... (step a multiple of 32): 32 index entries
// per coalesced load, broadcast by shuffles, slot s of the lane layout taking entries s, s+S, ...;
// then the slots are added together so that every lane of slot 0 holds its vector column's
// total. The summation order is fixed. Shared by spmm_cuda.cu (spmm, spmm_t) and
// rnn_step_cuda.cu (the gate rows of the fused step). All lanes of the warp must call it (it
// shuffles).
template <typename T, int VEC, int CW, bool FULL, int kInflight>
__device__ __forceinline__ void gather_chunk(const int32_t* __restrict__ idx, const T* __restrict__ values,
                                             const int32_t* __restrict__ perm, const T* __restrict__ src,
                                             int64_t B, int64_t k0, int64_t end, int64_t cv, bool active,
                                             int lane, acc_t<T> (&acc)[VEC]) {
  using A = acc_t<T>;
  constexpr int S = kWarp / CW;
  const int s = lane / CW;
  const int64_t k = k0 + lane;
  int32_t my_idx = 0;
  A my_val = A(0);  // widened once here, so the shuffles below move accumulator values
  if (FULL || k < end) {
    my_idx = idx[k];
    my_val = to_acc(values[perm ? perm[k] : k]);
  }
  const int64_t m = end - k0;
#pragma unroll(kInflight)
  for (int jj = 0; jj < CW; ++jj) {
    const int j = jj * S + s;
    const int32_t col = __shfl_sync(kFullMask, my_idx, j);
    const A v = __shfl_sync(kFullMask, my_val, j);
    if (active && (FULL || j < m)) {
      A x[VEC];
      load_vec<T, VEC>(src + static_cast<int64_t>(col) * B + cv * VEC, x);
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[e] = fma(v, x[e], acc[e]);
    }
  }
}

// Full chunks gather_range takes at once when the batch is one vector column (CW == 1).
constexpr int kOneColumnChunks = 4;

template <typename T, int VEC, int CW, int kInflightBytes = 256>
__device__ __forceinline__ void gather_range(const int32_t* __restrict__ idx, const T* __restrict__ values,
                                             const int32_t* __restrict__ perm, const T* __restrict__ src,
                                             int64_t B, int64_t first, int64_t end, int64_t step, int64_t cv,
                                             bool active, int lane, acc_t<T> (&acc)[VEC]) {
  // Entries of a chunk whose loads are in flight at once per lane (the unroll of its loop): all of
  // them, up to kInflightBytes of loaded values, half of the 128-register cap at 256 threads (at 32
  // rows of 16 bytes the loads alone took every register, and ptxas spilled)
  constexpr int kInflight = std::max<int>(1, std::min<int>(CW, kInflightBytes / (VEC * sizeof(acc_t<T>))));
#pragma unroll
  for (int e = 0; e < VEC; ++e) acc[e] = acc_t<T>(0);
  int64_t k0 = first;
  if constexpr (CW == 1) {
    // One vector column (B = 1, or one 16-byte slice): a lane's only gather of a chunk is its own
    // entry, one load in flight after a dependent index load. So kOneColumnChunks full chunks go at
    // once, their index loads then their gathers in flight together, and each lane adds its entries
    // in chunk order: the same sums in the same order as chunk by chunk (issue 45: Zipf rows at
    // B = 1 ran at 0.36x cuSPARSE).
    using A = acc_t<T>;
    constexpr int U = kOneColumnChunks;
    for (; k0 + (U - 1) * step + kWarp <= end; k0 += U * step) {
      int32_t col[U];
      A v[U], x[U][VEC];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t k = k0 + u * step + lane;
        col[u] = idx[k];
        v[u] = to_acc(values[perm ? perm[k] : k]);
      }
      if (active) {
#pragma unroll
        for (int u = 0; u < U; ++u) load_vec<T, VEC>(src + static_cast<int64_t>(col[u]) * B + cv * VEC, x[u]);
#pragma unroll
        for (int u = 0; u < U; ++u) {
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[e] = fma(v[u], x[u][e], acc[e]);
        }
      }
    }
  }
  for (; k0 < end; k0 += step) {
    if (end - k0 >= kWarp)
      gather_chunk<T, VEC, CW, true, kInflight>(idx, values, perm, src, B, k0, end, cv, active, lane, acc);
    else
      gather_chunk<T, VEC, CW, false, kInflight>(idx, values, perm, src, B, k0, end, cv, active, lane, acc);
  }
#pragma unroll
  for (int o = CW; o < kWarp; o *= 2) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[e] += __shfl_xor_sync(kFullMask, acc[e], o);
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace sparse_engine
