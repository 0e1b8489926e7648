// sddmm on the GPU: out[k] = sum_b G[row_k, b] * X[col_k, b] for every stored entry k.
//
// One warp per row of the pattern reuses G's row (it stays in L1) for all the row's entries.
// The warp takes 32 entries at a time: slot s of the warp (see common.cuh) computes partial
// dot products for entries s, s+S, ... over its lanes' vector columns, looping over batch
// tiles when B is wider than a warp. The CW partials of each lane are then summed across the
// slot's CW lanes with a reduce-scatter (CW-1 shuffles for CW dot products instead of
// CW*log2(CW) for one butterfly each), one more shuffle hands entry j's result to lane j,
// and the warp writes its 32 outputs with one coalesced store.
// Rows longer than long_row_threshold() are listed and done by a block of warps each
// (entries are independent, so the warps need no reduction). Fixed summation order:
// results are bitwise reproducible. float16/bfloat16: float32 dot products, rounded once.
// launch_sddmm_add adds into out instead (the fused recurrent step's weight gradient, taken on
// the transposed index so it lands in the transposed order with no nnz-long temporaries).
#include "common.cuh"
#include "launchers.h"

namespace sparse_engine {
namespace cuda {
namespace {

using namespace detail;

// At most 8 vector columns per tile (4 slots of 8 lanes each on 32 entries): a lane keeps CW
// partial dot products and CW columns in registers, and at 16 or 32 they no longer fit the
// 128-register cap of __launch_bounds__ (ptxas spilled; uncapped, 134-174 registers gave 12.5%
// occupancy). Wider batches take more tiles per lane, and the reduce-scatter needs fewer shuffles.
constexpr int kSddmmLanes = 8;

template <typename T>
struct SddmmArgs {
  const int64_t* __restrict__ row_ptr;
  const int32_t* __restrict__ col_idx;
  const T* __restrict__ G;
  const T* __restrict__ X;
  T* __restrict__ out;
  int64_t rows;
  int64_t B;
  int64_t C;         // vector columns: B / VEC
  int64_t tiles;     // ceil(C / CW)
  LongRows long_rows;  // rows left to the long-row kernel
  bool add;            // out[k] += the dot product (rounded to T first, as out.add_(sddmm(...)))
};

// The 32 entries [k0, min(k0 + 32, end)) of a row whose G row starts at grow.
template <typename T, int VEC, int CW, bool FULL>
__device__ __forceinline__ void sddmm_chunk(const SddmmArgs<T>& a, const T* __restrict__ grow,
                                            int64_t k0, int64_t end, int lane) {
  using A = acc_t<T>;
  constexpr int S = kWarp / CW;
  const int c = lane % CW, s = lane / CW;
  const int64_t k = k0 + lane;
  const int64_t m = end - k0;
  const int32_t my_col = (FULL || k < end) ? a.col_idx[k] : 0;
  int32_t col[CW];  // column of entry jj*S + s, for this lane's slot
#pragma unroll
  for (int jj = 0; jj < CW; ++jj) col[jj] = __shfl_sync(kFullMask, my_col, jj * S + s);
  A p[CW];
#pragma unroll
  for (int jj = 0; jj < CW; ++jj) p[jj] = A(0);
  for (int64_t t = 0; t < a.tiles; ++t) {
    const int64_t cv = t * CW + c;
    if (cv < a.C) {  // lane-dependent: no shuffles in here
      A g[VEC];
      load_vec<T, VEC>(grow + cv * VEC, g);
#pragma unroll
      for (int jj = 0; jj < CW; ++jj) {
        if (FULL || jj * S + s < m) {
          A x[VEC];
          load_vec<T, VEC>(a.X + static_cast<int64_t>(col[jj]) * a.B + cv * VEC, x);
#pragma unroll
          for (int e = 0; e < VEC; ++e) p[jj] = fma(g[e], x[e], p[jj]);
        }
      }
    }
  }
  reduce_scatter<CW / 2>(p, c);  // common.cuh
  // Entry j = lane lives in slot j % S at lane position j / S.
  const A r = __shfl_sync(kFullMask, p[0], (lane % S) * CW + lane / S);
  if (FULL || k < end)  // the one rounding to storage (and the sum's, adding)
    a.out[k] = a.add ? from_acc<T>(to_acc(a.out[k]) + to_acc(from_acc<T>(r))) : from_acc<T>(r);
}

template <typename T, int VEC, int CW>
__device__ __forceinline__ void sddmm_range(const SddmmArgs<T>& a, int64_t row, int64_t first,
                                            int64_t end, int64_t step, int lane) {
  const T* grow = a.G + row * a.B;
  for (int64_t k0 = first; k0 < end; k0 += step) {
    if (end - k0 >= kWarp)
      sddmm_chunk<T, VEC, CW, true>(a, grow, k0, end, lane);
    else
      sddmm_chunk<T, VEC, CW, false>(a, grow, k0, end, lane);
  }
}

template <typename T, int VEC, int CW>
__global__ void __launch_bounds__(kRowWarps * kWarp, kMinBlocks<kRowWarps * kWarp>) sddmm_rows_kernel(const SddmmArgs<T> a) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / kWarp;
  if (row >= a.rows) return;
  const int64_t start = a.row_ptr[row], end = a.row_ptr[row + 1];
  if (defer_long_row(a.long_rows, row, end - start, lane == 0)) return;
  sddmm_range<T, VEC, CW>(a, row, start, end, kWarp, lane);
}

template <typename T, int VEC, int CW>
__global__ void __launch_bounds__(kLongWarps * kWarp, kMinBlocks<kLongWarps * kWarp>) sddmm_long_kernel(const SddmmArgs<T> a) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t count = long_row_count(a.long_rows);
  for (int64_t item = blockIdx.x; item < count; item += gridDim.x) {
    const int64_t row = a.long_rows.list[1 + item];
    const int64_t start = a.row_ptr[row], end = a.row_ptr[row + 1];
    sddmm_range<T, VEC, CW>(a, row, start + static_cast<int64_t>(warp) * kWarp, end,
                            static_cast<int64_t>(kLongWarps) * kWarp, lane);
  }
}

template <typename T, int VEC, int CW>
cudaError_t sddmm_launch(SddmmArgs<T> a, cudaStream_t stream) {
  a.tiles = cdiv(a.C, CW);
  sddmm_rows_kernel<T, VEC, CW>
      <<<static_cast<unsigned>(cdiv(a.rows, kRowWarps)), kRowWarps * kWarp, 0, stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || a.long_rows.list == nullptr) return err;
  const int64_t blocks = std::min<int64_t>(a.long_rows.cap, 4LL * num_sms());
  sddmm_long_kernel<T, VEC, CW><<<static_cast<unsigned>(blocks), kLongWarps * kWarp, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename T>
cudaError_t sddmm(const int64_t* row_ptr, const int32_t* col_idx, const T* G, const T* X, T* out,
                  int64_t rows, int64_t B, int64_t nnz, int32_t* workspace, cudaStream_t stream, bool add = false) {
  if (rows <= 0 || nnz <= 0) return cudaSuccess;
  if (B <= 0) return add ? cudaSuccess : cudaMemsetAsync(out, 0, sizeof(T) * nnz, stream);  // empty sums
  constexpr int kWide = kWideVec<T>;
  const bool wide = B % kWide == 0 && aligned16(G) && aligned16(X);
  SddmmArgs<T> a{row_ptr, col_idx, G, X, out, rows, B, wide ? B / kWide : B, 0, {}, add};
  constexpr int64_t kRowBytes = 0;  // sddmm's threshold does not depend on B (common.cuh, long_row_threshold)
  return launch_row_kernels<T, kSddmmLanes>(a, rows, nnz, kRowBytes, wide, workspace, stream, [&](auto vec, auto lanes) {
    return sddmm_launch<T, decltype(vec)::value, decltype(lanes)::value>(a, stream);
  });
}

}  // namespace

int64_t sddmm_workspace_len(int64_t rows, int64_t nnz) { return long_list_len(rows, nnz, 0); }

int64_t sddmm_workspace_len(int64_t rows, int64_t nnz, int64_t max_len) {
  return known_long_list_len(rows, nnz, 0, max_len);
}

cudaError_t launch_sddmm(const int64_t* row_ptr, const int32_t* col_idx, const float* G,
                         const float* X, float* out, int64_t rows, int64_t B, int64_t nnz,
                         int32_t* workspace, cudaStream_t stream) {
  return sddmm<float>(row_ptr, col_idx, G, X, out, rows, B, nnz, workspace, stream);
}

cudaError_t launch_sddmm(const int64_t* row_ptr, const int32_t* col_idx, const double* G,
                         const double* X, double* out, int64_t rows, int64_t B, int64_t nnz,
                         int32_t* workspace, cudaStream_t stream) {
  return sddmm<double>(row_ptr, col_idx, G, X, out, rows, B, nnz, workspace, stream);
}

cudaError_t launch_sddmm(const int64_t* row_ptr, const int32_t* col_idx, const __half* G,
                         const __half* X, __half* out, int64_t rows, int64_t B, int64_t nnz,
                         int32_t* workspace, cudaStream_t stream) {
  return sddmm<__half>(row_ptr, col_idx, G, X, out, rows, B, nnz, workspace, stream);
}

cudaError_t launch_sddmm(const int64_t* row_ptr, const int32_t* col_idx, const __nv_bfloat16* G,
                         const __nv_bfloat16* X, __nv_bfloat16* out, int64_t rows, int64_t B,
                         int64_t nnz, int32_t* workspace, cudaStream_t stream) {
  return sddmm<__nv_bfloat16>(row_ptr, col_idx, G, X, out, rows, B, nnz, workspace, stream);
}

cudaError_t launch_sddmm_add(const int64_t* row_ptr, const int32_t* col_idx, const float* G,
                             const float* X, float* out, int64_t rows, int64_t B, int64_t nnz,
                             int32_t* workspace, cudaStream_t stream) {
  return sddmm<float>(row_ptr, col_idx, G, X, out, rows, B, nnz, workspace, stream, true);
}

cudaError_t launch_sddmm_add(const int64_t* row_ptr, const int32_t* col_idx, const double* G,
                             const double* X, double* out, int64_t rows, int64_t B, int64_t nnz,
                             int32_t* workspace, cudaStream_t stream) {
  return sddmm<double>(row_ptr, col_idx, G, X, out, rows, B, nnz, workspace, stream, true);
}

}  // namespace cuda
}  // namespace sparse_engine
