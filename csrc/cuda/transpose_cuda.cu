// The transposed index of a CSR pattern on the GPU (so a SparseWeight can live there):
//   csc_perm = CSR positions k stably sorted by col_idx[k]  (cub's LSD radix sort is stable,
//              and CSR order is row-major, so each column's rows come out ascending)
//   csc_row[p] = row of entry csc_perm[p]
//   csc_ptr[j] = first p whose column is >= j  (a binary search per column)
// O(nnz) work; the sort only looks at the ceil(log2(cols)) low bits of the column.
// Also here: the content check of a compressed index (launch_index_scan, csrc/index_check.h),
// which the glue runs once per pattern before any kernel gathers through the index.
#include <cub/device/device_radix_sort.cuh>

#include "common.cuh"
#include "launchers.h"

namespace sparse_engine {
namespace cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;

// Workspace layout, each part aligned to 256 bytes.
struct TransposeWorkspace {
  size_t keys_out, iota, row_of, sort_tmp, sort_tmp_bytes, total;
};

size_t align256(size_t x) { return (x + 255) / 256 * 256; }

int sort_bits(int64_t cols) {
  int bits = 1;
  while (bits < 32 && (int64_t{1} << bits) < cols) ++bits;
  return bits;
}

cudaError_t sort_tmp_bytes(int64_t nnz, int64_t cols, size_t* bytes) {
  *bytes = 0;
  return cub::DeviceRadixSort::SortPairs(nullptr, *bytes, static_cast<const int32_t*>(nullptr),
                                         static_cast<int32_t*>(nullptr),
                                         static_cast<const int32_t*>(nullptr),
                                         static_cast<int32_t*>(nullptr), nnz, 0, sort_bits(cols));
}

TransposeWorkspace layout(int64_t nnz, size_t sort_bytes) {
  TransposeWorkspace w{};
  const size_t n = static_cast<size_t>(nnz);
  w.keys_out = 0;
  w.iota = w.keys_out + align256(n * sizeof(int32_t));
  w.row_of = w.iota + align256(n * sizeof(int32_t));
  w.sort_tmp = w.row_of + align256(n * sizeof(int32_t));
  w.sort_tmp_bytes = sort_bytes;
  w.total = w.sort_tmp + align256(sort_bytes);
  return w;
}

unsigned grid_for(int64_t n, int64_t per_block) {
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(cdiv(n, per_block), 1), kMaxStrideBlocks));
}

__global__ void __launch_bounds__(kThreads, kMinBlocks<kThreads>) iota_kernel(int32_t* __restrict__ out, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = static_cast<int32_t>(i);
}

// row_of[k] = i for k in [row_ptr[i], row_ptr[i+1]): a warp per row, grid-stride over rows.
__global__ void __launch_bounds__(kThreads, kMinBlocks<kThreads>) row_of_kernel(const int64_t* __restrict__ row_ptr, int64_t rows,
                              int32_t* __restrict__ row_of) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
       i < rows; i += warps) {
    const int64_t end = row_ptr[i + 1];
    for (int64_t k = row_ptr[i] + lane; k < end; k += kWarp) row_of[k] = static_cast<int32_t>(i);
  }
}

__global__ void __launch_bounds__(kThreads, kMinBlocks<kThreads>) gather_rows_of_kernel(const int32_t* __restrict__ perm,
                                      const int32_t* __restrict__ row_of,
                                      int32_t* __restrict__ csc_row, int64_t nnz) {
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < nnz;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x)
    csc_row[p] = row_of[perm[p]];
}

// csc_ptr[j] = number of sorted keys < j, for j in [0, cols].
__global__ void __launch_bounds__(kThreads, kMinBlocks<kThreads>) col_ptr_kernel(const int32_t* __restrict__ sorted_cols, int64_t nnz, int64_t cols,
                               int64_t* __restrict__ csc_ptr) {
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j <= cols;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t lo = 0, hi = nnz;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (sorted_cols[mid] < j) lo = mid + 1; else hi = mid;
    }
    csc_ptr[j] = lo;
  }
}

// ---------------------------------------------------------------- index scan
// out (6 int64, preset to -1 = "none"): ptr[0], ptr[n], first drop of ptr, first idx outside
// [0, n_src), first perm outside [0, nnz), longest row. Each thread walks its grid-stride share,
// keeping its first finding (positions only grow along its walk); then a warp takes the minimum
// (maximum for the longest row) over its lanes with shuffles and lane 0 makes one atomic per
// finding. Every read is inside the arrays, whatever their content.
constexpr int kScanBlocksPerSm = 8;
using u64 = unsigned long long;
using i64 = long long;

template <typename V, typename Better>
__device__ __forceinline__ V warp_reduce(V v, Better better) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) {
    const V other = __shfl_xor_sync(kFullMask, v, o);
    v = better(other, v) ? other : v;
  }
  return v;
}

__global__ void __launch_bounds__(kThreads, kMinBlocks<kThreads>)
index_scan_kernel(const int64_t* __restrict__ ptr, const int32_t* __restrict__ idx, const int32_t* __restrict__ perm,
                  int64_t n, int64_t nnz, int64_t n_src, int64_t* __restrict__ out) {
  constexpr u64 kNone = ~0ull;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  u64 drop = kNone, bad_idx = kNone, bad_perm = kNone;
  i64 longest = -1;
  for (int64_t i = tid; i < n; i += stride) {
    const int64_t len = ptr[i + 1] - ptr[i];
    if (len < 0 && drop == kNone) drop = static_cast<u64>(i);
    if (len > longest) longest = len;
  }
  for (int64_t k = tid; k < nnz; k += stride) {
    const int32_t c = idx[k];
    if ((c < 0 || c >= n_src) && bad_idx == kNone) bad_idx = static_cast<u64>(k);
    if (perm != nullptr) {
      const int32_t p = perm[k];
      if ((p < 0 || p >= nnz) && bad_perm == kNone) bad_perm = static_cast<u64>(k);
    }
  }
  const auto smaller = [](u64 a, u64 b) { return a < b; };
  drop = warp_reduce(drop, smaller);
  bad_idx = warp_reduce(bad_idx, smaller);
  bad_perm = warp_reduce(bad_perm, smaller);
  longest = warp_reduce(longest, [](i64 a, i64 b) { return a > b; });
  if (threadIdx.x % kWarp == 0) {
    if (drop != kNone) atomicMin(reinterpret_cast<u64*>(out + 2), drop);
    if (bad_idx != kNone) atomicMin(reinterpret_cast<u64*>(out + 3), bad_idx);
    if (bad_perm != kNone) atomicMin(reinterpret_cast<u64*>(out + 4), bad_perm);
    if (longest >= 0) atomicMax(reinterpret_cast<i64*>(out + 5), longest);
  }
  if (tid == 0) {
    out[0] = ptr[0];
    out[1] = ptr[n];
  }
}

}  // namespace

cudaError_t launch_index_scan(const int64_t* ptr, const int32_t* idx, const int32_t* perm, int64_t n,
                              int64_t nnz, int64_t n_src, int64_t* out, cudaStream_t stream) {
  if (n < 0 || nnz < 0) return cudaErrorInvalidValue;
  cudaError_t err = cudaMemsetAsync(out, 0xff, 6 * sizeof(int64_t), stream);  // every field -1
  if (err != cudaSuccess) return err;
  const unsigned blocks = static_cast<unsigned>(
      std::max<int64_t>(1, std::min<int64_t>(cdiv(std::max(n, nnz), kThreads), int64_t{kScanBlocksPerSm} * num_sms())));
  index_scan_kernel<<<blocks, kThreads, 0, stream>>>(ptr, idx, perm, n, nnz, n_src, out);
  return cudaGetLastError();
}

size_t transpose_index_workspace_bytes(int64_t rows, int64_t cols, int64_t nnz) {
  (void)rows;
  if (nnz <= 0) return 0;
  size_t sort_bytes = 0;
  if (sort_tmp_bytes(nnz, cols, &sort_bytes) != cudaSuccess) return 0;
  return layout(nnz, sort_bytes).total;
}

cudaError_t launch_transpose_index(const int64_t* row_ptr, const int32_t* col_idx, int64_t rows,
                                   int64_t cols, int64_t nnz, int64_t* csc_ptr, int32_t* csc_row,
                                   int32_t* csc_perm, void* workspace, size_t workspace_bytes,
                                   cudaStream_t stream) {
  if (cols < 0 || rows < 0 || nnz < 0) return cudaErrorInvalidValue;
  if (nnz == 0) return cudaMemsetAsync(csc_ptr, 0, sizeof(int64_t) * (cols + 1), stream);
  size_t sort_bytes = 0;
  cudaError_t err = sort_tmp_bytes(nnz, cols, &sort_bytes);
  if (err != cudaSuccess) return err;
  const TransposeWorkspace w = layout(nnz, sort_bytes);
  if (workspace == nullptr || workspace_bytes < w.total) return cudaErrorInvalidValue;
  char* base = static_cast<char*>(workspace);
  auto* keys_out = reinterpret_cast<int32_t*>(base + w.keys_out);
  auto* iota = reinterpret_cast<int32_t*>(base + w.iota);
  auto* row_of = reinterpret_cast<int32_t*>(base + w.row_of);

  iota_kernel<<<grid_for(nnz, kThreads), kThreads, 0, stream>>>(iota, nnz);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  if (rows > 0) {
    row_of_kernel<<<grid_for(rows, kThreads / kWarp), kThreads, 0, stream>>>(row_ptr, rows, row_of);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }
  size_t tmp_bytes = w.sort_tmp_bytes;
  err = cub::DeviceRadixSort::SortPairs(base + w.sort_tmp, tmp_bytes, col_idx, keys_out, iota,
                                        csc_perm, nnz, 0, sort_bits(cols), stream);
  if (err != cudaSuccess) return err;
  gather_rows_of_kernel<<<grid_for(nnz, kThreads), kThreads, 0, stream>>>(csc_perm, row_of, csc_row, nnz);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  col_ptr_kernel<<<grid_for(cols + 1, kThreads), kThreads, 0, stream>>>(keys_out, nnz, cols, csc_ptr);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace sparse_engine
