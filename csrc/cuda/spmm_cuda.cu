// spmm and spmm_t on the GPU: out[i, :] = sum_k val(k) * src[idx[k], :] over the entries of
// row i of a compressed index (CSR for spmm; the transposed index with its permutation into
// the values for spmm_t, so W^T G needs no atomics).
//
// Scheduling:
//  * gather_rows_kernel: one warp per (row, batch tile). The warp reads 32 index entries at
//    a time with one coalesced load, then broadcasts them with shuffles; each lane loads a
//    16-byte slice of the gathered source row (see common.cuh for the lane layout).
//  * Rows longer than long_row_threshold() (lower for wide batches) are not done there: the warp appends them to a
//    list (common.cuh's LongRows) and gather_long_kernel gives each such (row, tile) a whole block
//    whose warps take interleaved 32-entry chunks and sum their partials in shared memory in a fixed
//    order. A row longer than a segment (gather_segment_length) goes to the split list instead, a slot
//    per segment: each (segment, tile) a block, whose sums go to the workspace, and long_sum_kernel
//    adds them in segment order into the output.
// Every output element is a sum in a fixed order: results are bitwise reproducible.
// float16/bfloat16 storage: values and source rows are widened on load, sums are float32,
// each output is rounded once.
#include "common.cuh"
#include "launchers.h"

namespace sparse_engine {
namespace cuda {
namespace {

using namespace detail;

template <typename T>
struct GatherArgs {
  const int64_t* __restrict__ ptr;
  const int32_t* __restrict__ idx;
  const int32_t* __restrict__ perm;  // nullptr: val(k) = values[k]
  const T* __restrict__ values;
  const T* __restrict__ src;
  T* __restrict__ out;
  int64_t n;        // output rows
  int64_t B;        // batch (row length of src and out)
  int64_t C;        // vector columns: B / VEC
  int64_t tiles;    // ceil(C / CW)
  LongRows long_rows;  // rows left to the long-row kernel
};

template <typename T, int VEC, int CW>
__global__ void __launch_bounds__(kRowWarps * kWarp, kMinBlocks<kRowWarps * kWarp>)
gather_rows_kernel(const GatherArgs<T> a) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / kWarp;
  if (row >= a.n) return;  // whole warp leaves: no block-level sync in this kernel
  const int64_t start = a.ptr[row], end = a.ptr[row + 1];
  if (defer_long_row(a.long_rows, row, end - start, blockIdx.y == 0 && lane == 0)) return;
  const int c = lane % CW, s = lane / CW;
  for (int64_t t = blockIdx.y; t < a.tiles; t += gridDim.y) {
    const int64_t cv = t * CW + c;
    const bool active = cv < a.C;
    acc_t<T> acc[VEC];
    gather_range<T, VEC, CW>(a.idx, a.values, a.perm, a.src, a.B, start, end, kWarp, cv, active, lane, acc);
    if (s == 0 && active) store_vec<T, VEC>(a.out + row * a.B + cv * VEC, acc);
  }
}

template <typename T, int VEC, int CW>
__global__ void __launch_bounds__(kLongWarps * kWarp, kMinBlocks<kLongWarps * kWarp>)
gather_long_kernel(const GatherArgs<T> a) {
  using A = acc_t<T>;
  __shared__ A partial[kLongWarps][CW * VEC];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int c = lane % CW, s = lane / CW;
  // items: the listed rows', then the split rows' segments (one a slot), each by batch tile
  const int64_t listed = long_row_count(a.long_rows), seg_len = a.long_rows.seg_len;
  const int64_t items = (listed + split_slot_count(a.long_rows)) * a.tiles;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {  // uniform per block
    const int64_t unit = item / a.tiles, t = item % a.tiles;
    const int64_t slot = unit - listed;  // >= 0: a split row's segment
    int64_t row, start, end;
    if (slot < 0) {
      row = a.long_rows.list[1 + unit];
      start = a.ptr[row], end = a.ptr[row + 1];
    } else {
      const int64_t first = a.long_rows.split[1 + slot], seg = first >= 0 ? 0 : -first;
      row = seg == 0 ? first : a.long_rows.split[1 + slot - seg];
      start = a.ptr[row], end = a.ptr[row + 1];
      start += seg * seg_len;
      end = end - start < seg_len ? end : start + seg_len;
    }
    const int64_t cv = t * CW + c;
    const bool active = cv < a.C;
    A acc[VEC];
    gather_range<T, VEC, CW>(a.idx, a.values, a.perm, a.src, a.B, start + static_cast<int64_t>(warp) * kWarp, end,
                             static_cast<int64_t>(kLongWarps) * kWarp, cv, active, lane, acc);
    if (s == 0) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) partial[warp][c * VEC + e] = acc[e];
    }
    __syncthreads();
    if (warp == 0 && s == 0 && active) {
      A sum[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e) sum[e] = partial[0][c * VEC + e];
      for (int w = 1; w < kLongWarps; ++w) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) sum[e] += partial[w][c * VEC + e];
      }
      if (slot < 0) {
        store_vec<T, VEC>(a.out + row * a.B + cv * VEC, sum);
      } else {  // this segment's sums, added by long_sum_kernel
        A* part = static_cast<A*>(a.long_rows.partial) + slot * a.B + cv * VEC;
#pragma unroll
        for (int e = 0; e < VEC; ++e) part[e] = sum[e];
      }
    }
    __syncthreads();  // partial is reused by the next item
  }
}

// The split rows' outputs: each element the sum of its row's segments (consecutive slots from the
// row's first), in segment order.
template <typename T>
__global__ void __launch_bounds__(kLongWarps * kWarp, kMinBlocks<kLongWarps * kWarp>)
long_sum_kernel(const GatherArgs<T> a) {
  using A = acc_t<T>;
  const int64_t total = split_slot_count(a.long_rows) * a.B, seg_len = a.long_rows.seg_len;
  const A* part = static_cast<const A*>(a.long_rows.partial);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t slot = i / a.B, b = i % a.B;
    const int64_t row = a.long_rows.split[1 + slot];
    if (row < 0) continue;  // a later segment's slot: its row's first slot sums it
    const int64_t len = a.ptr[row + 1] - a.ptr[row], segs = (len + seg_len - 1) / seg_len;
    const A* p = part + slot * a.B + b;
    A sum = p[0];
    for (int64_t s = 1; s < segs; ++s) sum += p[s * a.B];
    a.out[row * a.B + b] = from_acc<T>(sum);
  }
}

template <typename T, int VEC, int CW>
cudaError_t gather_launch(GatherArgs<T> a, cudaStream_t stream) {
  a.tiles = cdiv(a.C, CW);
  const dim3 grid(static_cast<unsigned>(cdiv(a.n, kRowWarps)),
                  static_cast<unsigned>(std::min<int64_t>(a.tiles, kMaxGridY)));
  gather_rows_kernel<T, VEC, CW><<<grid, kRowWarps * kWarp, 0, stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || a.long_rows.list == nullptr) return err;
  const int64_t units = a.long_rows.cap + a.long_rows.split_cap;
  const int64_t blocks = std::min<int64_t>(units * a.tiles, 4LL * num_sms());
  gather_long_kernel<T, VEC, CW><<<static_cast<unsigned>(blocks), kLongWarps * kWarp, 0, stream>>>(a);
  err = cudaGetLastError();
  if (err != cudaSuccess || a.long_rows.split == nullptr) return err;
  const int64_t sum_blocks = std::min<int64_t>(cdiv(a.long_rows.split_cap * a.B, kLongWarps * kWarp), 4LL * num_sms());
  long_sum_kernel<T><<<static_cast<unsigned>(sum_blocks), kLongWarps * kWarp, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename T>
cudaError_t gather(const int64_t* ptr, const int32_t* idx, const int32_t* perm, const T* values,
                   const T* src, T* out, int64_t n, int64_t B, int64_t nnz, int32_t* workspace,
                   cudaStream_t stream) {
  if (n <= 0 || B <= 0) return cudaSuccess;
  constexpr int kWide = kWideVec<T>;
  const bool wide = B % kWide == 0 && aligned16(src) && aligned16(out);
  GatherArgs<T> a{ptr, idx, perm, values, src, out, n, B, wide ? B / kWide : B, 0, {}};
  constexpr bool kSplitLongRows = true;
  const int64_t row_bytes = B * static_cast<int64_t>(sizeof(T));
  return launch_row_kernels<T, kWarp, kSplitLongRows>(a, n, nnz, row_bytes, wide, workspace, stream, [&](auto vec, auto lanes) {
    return gather_launch<T, decltype(vec)::value, decltype(lanes)::value>(a, stream);
  });
}

int64_t acc_bytes(int64_t elem_bytes) { return elem_bytes == 8 ? 8 : 4; }  // acc_t: double, else float

}  // namespace

int64_t gather_long_row_threshold(int64_t n_out, int64_t nnz, int64_t B, int64_t elem_bytes) {
  return long_row_threshold(n_out, nnz, B * elem_bytes);
}

int64_t gather_segment_entries(int64_t n_out, int64_t nnz) { return gather_segment_length(n_out, nnz); }

bool set_gather_long_rows(int long_mult, int seg_mult, int* old_long, int* old_seg) {
  if (long_mult < 1 || long_mult > 64 || seg_mult < 2 || seg_mult > 64) return false;
  *old_long = g_gather_long_mult.exchange(long_mult);
  *old_seg = g_gather_seg_mult.exchange(seg_mult);
  return true;
}

int64_t gather_split_list_offset(int64_t n_out, int64_t nnz, int64_t B, int64_t elem_bytes) {
  const int64_t list = long_list_len(n_out, nnz, B * elem_bytes);
  return list > 0 && split_slots(n_out, nnz) > 0 ? to_16_bytes(list) : -1;
}

int64_t gather_workspace_len(int64_t n_out, int64_t nnz, int64_t B, int64_t elem_bytes) {
  const int64_t list = long_list_len(n_out, nnz, B * elem_bytes);
  return gather_list_and_partials_len(n_out, nnz, list, B, acc_bytes(elem_bytes));
}

int64_t gather_workspace_len(int64_t n_out, int64_t nnz, int64_t max_len, int64_t B, int64_t elem_bytes) {
  const int64_t list = known_long_list_len(n_out, nnz, B * elem_bytes, max_len);
  return gather_list_and_partials_len(n_out, nnz, list, B, acc_bytes(elem_bytes));
}

cudaError_t launch_gather(const int64_t* ptr, const int32_t* idx, const int32_t* perm,
                          const float* values, const float* src, float* out, int64_t n_out,
                          int64_t B, int64_t nnz, int32_t* workspace, cudaStream_t stream) {
  return gather<float>(ptr, idx, perm, values, src, out, n_out, B, nnz, workspace, stream);
}

cudaError_t launch_gather(const int64_t* ptr, const int32_t* idx, const int32_t* perm,
                          const double* values, const double* src, double* out, int64_t n_out,
                          int64_t B, int64_t nnz, int32_t* workspace, cudaStream_t stream) {
  return gather<double>(ptr, idx, perm, values, src, out, n_out, B, nnz, workspace, stream);
}

cudaError_t launch_gather(const int64_t* ptr, const int32_t* idx, const int32_t* perm,
                          const __half* values, const __half* src, __half* out, int64_t n_out,
                          int64_t B, int64_t nnz, int32_t* workspace, cudaStream_t stream) {
  return gather<__half>(ptr, idx, perm, values, src, out, n_out, B, nnz, workspace, stream);
}

cudaError_t launch_gather(const int64_t* ptr, const int32_t* idx, const int32_t* perm,
                          const __nv_bfloat16* values, const __nv_bfloat16* src, __nv_bfloat16* out,
                          int64_t n_out, int64_t B, int64_t nnz, int32_t* workspace, cudaStream_t stream) {
  return gather<__nv_bfloat16>(ptr, idx, perm, values, src, out, n_out, B, nnz, workspace, stream);
}

}  // namespace cuda
}  // namespace sparse_engine
