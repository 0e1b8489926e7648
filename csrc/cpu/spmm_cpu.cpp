// spmm and spmm_t on the CPU (OpenMP): Y = W X over the CSR index, W^T G over the transposed
// index, both as one row gather (gather_rows). Activations are feature-major (features x batch)
// so every gathered row is contiguous.
#include <torch/library.h>
#include <omp.h>
#include "common.h"
#include "storage.h"

namespace sparse_engine {
namespace {

// y[0:W] = sum_{k in [k0, k1)} vals[k] * src[idx[k], b0:b0+W]; nnz bounds the prefetch.
template <typename S, int W>
inline void accumulate_block(int64_t k0, int64_t k1, const int32_t* idx, const S* vals,
                             const S* src, int64_t B, int64_t b0, S* y, int64_t nnz) {
  using A = acc_t<S>;
  A acc[W];
  for (int b = 0; b < W; ++b) acc[b] = 0;
  for (int64_t k = k0; k < k1; ++k) {
    if (k + kPrefetch < nnz)
      prefetch_row<W * sizeof(S)>(src + static_cast<int64_t>(idx[k + kPrefetch]) * B + b0);
    const A v = static_cast<A>(vals[k]);
    const S* x = src + static_cast<int64_t>(idx[k]) * B + b0;
    if constexpr (kIsHalf<S>) {
      float xf[W];
      widen<W>(x, xf);
#pragma omp simd
      for (int b = 0; b < W; ++b) acc[b] += v * xf[b];
    } else {
#pragma omp simd
      for (int b = 0; b < W; ++b) acc[b] += v * x[b];
    }
  }
  for (int b = 0; b < W; ++b) y[b] = static_cast<S>(acc[b]);
}

// The same for a block narrower than 8 columns, whose width is only known at run time.
template <typename S>
inline void accumulate_tail(int64_t k0, int64_t k1, const int32_t* idx, const S* vals,
                            const S* src, int64_t B, int64_t b0, int64_t width, S* y) {
  using A = acc_t<S>;
  A acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t k = k0; k < k1; ++k) {
    const A v = static_cast<A>(vals[k]);
    const S* x = src + static_cast<int64_t>(idx[k]) * B + b0;
    for (int64_t b = 0; b < width; ++b) acc[b] += v * static_cast<A>(x[b]);
  }
  for (int64_t b = 0; b < width; ++b) y[b] = static_cast<S>(acc[b]);
}

// out[i, :] = sum_{k in [ptr[i], ptr[i+1])} vals[k] * src[idx[k], :] for i in [0, n).
// Covers spmm (CSR) and spmm_t (transposed index, with vals already in column order).
template <typename scalar_t>
void gather_rows(const int64_t* ptr, const int32_t* idx, const scalar_t* vals,
                 const scalar_t* src, scalar_t* out, int64_t n, int64_t B) {
  constexpr int W = block_width<scalar_t>();
  const int64_t chunks = num_chunks(n);
  const auto bounds = balanced_bounds(ptr, n, chunks);
  const int64_t nnz = ptr[n];
  const bool parallel = (nnz + n) * B >= kParallelWork;
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads()) if (parallel)
  for (int64_t c = 0; c < chunks; ++c) {
    for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
      const int64_t k0 = ptr[i], k1 = ptr[i + 1];
      scalar_t* y = out + i * B;
      int64_t b0 = 0;
      for (; b0 + W <= B; b0 += W) accumulate_block<scalar_t, W>(k0, k1, idx, vals, src, B, b0, y + b0, nnz);
      if (B - b0 >= W / 2) {
        accumulate_block<scalar_t, W / 2>(k0, k1, idx, vals, src, B, b0, y + b0, nnz);
        b0 += W / 2;
      }
      if (B - b0 >= W / 4) {
        accumulate_block<scalar_t, W / 4>(k0, k1, idx, vals, src, B, b0, y + b0, nnz);
        b0 += W / 4;
      }
      for (; b0 < B; b0 += 8) accumulate_tail(k0, k1, idx, vals, src, B, b0, std::min<int64_t>(8, B - b0), y + b0);
    }
  }
}

// out[k] = values[perm[k]], prefetching ahead of the random reads.
template <typename scalar_t>
void gather_values(const scalar_t* values, const int32_t* perm, scalar_t* out, int64_t nnz) {
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads()) if (nnz >= kParallelWork)
  for (int64_t k = 0; k < nnz; ++k) {
    if (k + 4 * kPrefetch < nnz) __builtin_prefetch(values + perm[k + 4 * kPrefetch]);
    out[k] = values[perm[k]];
  }
}

// Y = W X (spmm) and W^T G (spmm_t, through the transposed index: no atomics).
// Locals ending in _c are contiguous copies of the arguments.
at::Tensor spmm_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                    const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& values,
                    const at::Tensor& X) {
  const IndexSizes s = check_spmm_args(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, X,
                                       /*transposed=*/false, /*on_cuda=*/false);
  auto row_ptr_c = row_ptr.contiguous(), col_idx_c = col_idx.contiguous(), values_c = values.contiguous();
  auto X_c = X.contiguous();
  auto Y = at::empty({s.rows, X.size(1)}, X.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "spmm_cpu", [&] {
    gather_rows<scalar_t>(row_ptr_c.data_ptr<int64_t>(), col_idx_c.data_ptr<int32_t>(), values_c.data_ptr<scalar_t>(),
                          X_c.data_ptr<scalar_t>(), Y.data_ptr<scalar_t>(), s.rows, X.size(1));
  });
  return Y;
}

at::Tensor spmm_t_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                      const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& values,
                      const at::Tensor& G) {
  const IndexSizes s = check_spmm_args(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, G,
                                       /*transposed=*/true, /*on_cuda=*/false);
  auto csc_ptr_c = csc_ptr.contiguous(), csc_row_c = csc_row.contiguous(), csc_perm_c = csc_perm.contiguous();
  auto values_c = values.contiguous(), G_c = G.contiguous();
  auto Z = at::empty({s.cols, G.size(1)}, G.options());
  // Values in column order first (one parallel O(nnz) gather): measured 2x faster than
  // reading values[perm[k]] inside the product loop, whose random loads stall it.
  auto values_t = at::empty({s.nnz}, values.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "spmm_t_cpu", [&] {
    gather_values<scalar_t>(values_c.data_ptr<scalar_t>(), csc_perm_c.data_ptr<int32_t>(),
                            values_t.data_ptr<scalar_t>(), s.nnz);
    gather_rows<scalar_t>(csc_ptr_c.data_ptr<int64_t>(), csc_row_c.data_ptr<int32_t>(), values_t.data_ptr<scalar_t>(),
                          G_c.data_ptr<scalar_t>(), Z.data_ptr<scalar_t>(), s.cols, G.size(1));
  });
  return Z;
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CPU, m) {
  m.impl("spmm", &spmm_cpu);
  m.impl("spmm_t", &spmm_t_cpu);
}

}  // namespace sparse_engine
