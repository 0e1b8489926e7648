// Row gathers shared by spmm / spmm_t (spmm_cpu.cpp) and the fused recurrent steps
// (rnn_step_cpu.cpp): acc[0:W] = sum_k vals[k] * src[idx[k], b0:b0+W] over one compressed row.
//
// The batch is padded: the dense operand is read from a copy whose rows are a whole number of
// 32-byte units (pad_unit: 8 floats, 4 doubles, 16 halves), zero-filled past B. Every block
// width is then a compile-time constant (1 to 8 units, see wide_block), so a batch of up to
// 64 floats is one pass over the row's nonzeros with its accumulators in vector registers,
// whatever B is (B = 20 used to be a 16-wide pass and a scalar 4-wide pass, half
// MKL's speed). Each output is summed over the row's nonzeros in index order by one thread:
// results do not depend on the thread count.
#pragma once
#include <ATen/ATen.h>
#include <omp.h>
#include <cstring>
#include <vector>
#include "common.h"
#include "storage.h"

namespace sparse_engine {

// The padding unit of a batch row: 32 bytes of storage (a multiple of 16 for the half widening).
template <typename S>
constexpr int pad_unit() { return 32 / static_cast<int>(sizeof(S)); }

inline int64_t round_up(int64_t x, int64_t unit) { return (x + unit - 1) / unit * unit; }

// `t` (n x B, any strides) as a contiguous (n x stride) tensor, zero past column B, stride the
// batch rounded up to pad_unit; `t` itself (contiguous) when it needs no padding.
// One pass of row copies (not zeros + narrow + copy_: three ops' dispatch, which costs as
// much as the whole product at the smallest sizes).
inline at::Tensor padded_batch(const at::Tensor& t, int64_t stride) {
  if (stride == t.size(1)) return t.contiguous();
  const auto src = t.contiguous();
  auto out = at::empty({t.size(0), stride}, t.options());
  const int64_t esize = t.element_size(), row = t.size(1) * esize, padded = stride * esize;
  const char* s = static_cast<const char*>(src.const_data_ptr());
  char* d = static_cast<char*>(out.data_ptr());
  for (int64_t r = 0; r < t.size(0); ++r) {
    std::memcpy(d + r * padded, s + r * row, row);
    std::memset(d + r * padded + row, 0, padded - row);
  }
  return out;
}

// acc[0:W] = sum_{k in [k0, k1)} vals[k - vbase] * src[idx[k] * stride + 0:W]; nnz bounds the
// prefetch (vbase: the values of a row gathered into a buffer of their own, see gather_rows).
template <typename S, int W>
inline void accumulate_block(int64_t k0, int64_t k1, const int32_t* idx, const S* vals, int64_t vbase,
                             const S* src, int64_t stride, acc_t<S>* acc, int64_t nnz) {
  using A = acc_t<S>;
  A a[W];
  for (int b = 0; b < W; ++b) a[b] = 0;
  for (int64_t k = k0; k < k1; ++k) {
    if (k + kPrefetch < nnz) prefetch_row<W * sizeof(S)>(src + static_cast<int64_t>(idx[k + kPrefetch]) * stride);
    const A v = static_cast<A>(vals[k - vbase]);
    const S* x = src + static_cast<int64_t>(idx[k]) * stride;
    if constexpr (kIsHalf<S>) {
      float xf[W];
      widen<W>(x, xf);
#pragma omp simd
      for (int b = 0; b < W; ++b) a[b] += v * xf[b];
    } else {
#pragma omp simd
      for (int b = 0; b < W; ++b) a[b] += v * x[b];
    }
  }
  for (int b = 0; b < W; ++b) acc[b] = a[b];
}

// The widest block of the recurrent steps (rnn_step_cpu.cpp): 4 units (128 bytes: 32 floats,
// 16 doubles, 64 halves).
template <typename S>
constexpr int max_block() { return 4 * pad_unit<S>(); }

// The widest block of gather_rows (spmm, spmm_t): 64 float or 32 double accumulators (8 AVX2
// registers): 8 units of a 4- or 8-byte type, 4 of a 2-byte one (widened to float). A batch
// of 40 (SET-MLP's) is one pass over the gathered rows; with 4-unit blocks it was a 32-wide
// pass and an 8-wide pass that gathered every row a second time (at 333,333 x 333,333,
// epsilon 13, B = 40, one thread, huge pages: spmm 11% and spmm_t 9% faster, measured).
template <typename S>
constexpr int wide_block() { return (kIsHalf<S> ? 4 : 8) * pad_unit<S>(); }

// acc[0:n] = the row's sum over columns [0, n) of a padded source (src already offset to the
// block's first column); n is a multiple of pad_unit and at most 8 units: one pass.
template <typename S>
inline void accumulate_padded(int64_t k0, int64_t k1, const int32_t* idx, const S* vals, int64_t vbase,
                              const S* src, int64_t stride, int64_t n, acc_t<S>* acc, int64_t nnz) {
  constexpr int P = pad_unit<S>();
  switch (n / P) {
    case 8: accumulate_block<S, 8 * P>(k0, k1, idx, vals, vbase, src, stride, acc, nnz); break;
    case 7: accumulate_block<S, 7 * P>(k0, k1, idx, vals, vbase, src, stride, acc, nnz); break;
    case 6: accumulate_block<S, 6 * P>(k0, k1, idx, vals, vbase, src, stride, acc, nnz); break;
    case 5: accumulate_block<S, 5 * P>(k0, k1, idx, vals, vbase, src, stride, acc, nnz); break;
    case 4: accumulate_block<S, 4 * P>(k0, k1, idx, vals, vbase, src, stride, acc, nnz); break;
    case 3: accumulate_block<S, 3 * P>(k0, k1, idx, vals, vbase, src, stride, acc, nnz); break;
    case 2: accumulate_block<S, 2 * P>(k0, k1, idx, vals, vbase, src, stride, acc, nnz); break;
    default: accumulate_block<S, P>(k0, k1, idx, vals, vbase, src, stride, acc, nnz); break;
  }
}

// acc[0:n] for the block of columns starting at b0 (a multiple of Block: max_block or
// wide_block) of a source padded to `stride` columns, n = min(Block, stride - b0); stride 1
// (B = 1, no padding) is a sparse dot product into acc[0], vectorised over the nonzeros.
template <typename S, int Block = max_block<S>()>
inline void accumulate_at(int64_t k0, int64_t k1, const int32_t* idx, const S* vals, int64_t vbase, const S* src,
                          int64_t stride, int64_t b0, acc_t<S>* acc, int64_t nnz) {
  using A = acc_t<S>;
  if (stride == 1) {
    A a = 0;
#pragma omp simd reduction(+ : a)
    for (int64_t k = k0; k < k1; ++k) a += static_cast<A>(vals[k - vbase]) * static_cast<A>(src[idx[k]]);
    acc[0] = a;
    return;
  }
  accumulate_padded<S>(k0, k1, idx, vals, vbase, src + b0, stride, std::min<int64_t>(Block, stride - b0),
                       acc, nnz);
}

// out[i, :] = sum_{k in [ptr[i], ptr[i+1])} val(k) * src[idx[k], :] for i in [0, n), src padded
// to `stride` columns; val(k) = vals[k], or vals[perm[k]] for a transposed index (spmm_t, the
// recurrent backward). There each row's values are first gathered into a small buffer (their
// loads independent, prefetched kGatherAhead entries ahead), and the product reads them from
// L1: no indirection in its inner loop, and no nnz-sized workspace (as fast as gathering all
// values into one first, measured on 2 cores).
// `direct` (n x B, optional) is added to the sums.
inline constexpr int64_t kGatherAhead = 64;

template <typename scalar_t>
void gather_rows(const int64_t* ptr, const int32_t* idx, const scalar_t* vals, const int32_t* perm,
                 const scalar_t* src, int64_t stride, const scalar_t* direct, scalar_t* out, int64_t n, int64_t B) {
  constexpr int M = wide_block<scalar_t>();
  const int64_t chunks = num_chunks(n);
  const auto bounds = balanced_bounds(ptr, n, chunks);
  const int64_t nnz = ptr[n];
  const bool parallel = (nnz + n) * B >= kParallelWork;
#pragma omp parallel for schedule(dynamic, 1) num_threads(kernel_threads()) if (parallel)
  for (int64_t c = 0; c < chunks; ++c) {
    std::vector<scalar_t> row_vals;
    if (perm != nullptr) {
      int64_t longest = 0;
      for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) longest = std::max(longest, ptr[i + 1] - ptr[i]);
      row_vals.resize(longest);
    }
    acc_t<scalar_t> acc[M];
    for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
      const int64_t k0 = ptr[i], k1 = ptr[i + 1];
      const scalar_t* v = vals;
      int64_t vbase = 0;
      if (perm != nullptr) {
        for (int64_t k = k0; k < k1; ++k) {
          if (k + kGatherAhead < nnz) __builtin_prefetch(vals + perm[k + kGatherAhead]);
          row_vals[k - k0] = vals[perm[k]];
        }
        v = row_vals.data();
        vbase = k0;
      }
      scalar_t* y = out + i * B;
      for (int64_t b0 = 0; b0 < B; b0 += M) {
        accumulate_at<scalar_t, M>(k0, k1, idx, v, vbase, src, stride, b0, acc, nnz);
        const int64_t width = std::min<int64_t>(M, B - b0);
        for (int64_t b = 0; b < width; ++b)
          y[b0 + b] = static_cast<scalar_t>(direct ? static_cast<acc_t<scalar_t>>(direct[i * B + b0 + b]) + acc[b]
                                                   : acc[b]);
      }
    }
  }
}

// The padded row stride of a batch of B columns (1 stays 1: the sparse dot product).
template <typename S>
inline int64_t padded_stride(int64_t B) { return B == 1 ? 1 : round_up(B, pad_unit<S>()); }

}  // namespace sparse_engine
