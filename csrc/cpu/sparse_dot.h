// The product of one compressed row with one column (B = 1), shared by gather.h's row gathers
// (spmm, spmm_t) and the fused recurrent steps' single-column path.
#pragma once
#include <cstdint>
#include "storage.h"

namespace sparse_engine {

// B = 1: sum_{k in [k0, k1)} v[k - vbase] * src[idx[k]], vectorised over the nonzeros (gathers)
// from kDotVectorFrom entries, else a scalar loop in index order, as scipy's: a short row's
// vector tail and reduction cost more than its products (docs/cpu_kernels.md, "B = 1"). The
// order depends on the row alone: the same bits on any thread count.
inline constexpr int64_t kDotVectorFrom = 64;

template <typename S>
SE_ALWAYS_INLINE acc_t<S> sparse_dot(int64_t k0, int64_t k1, const int32_t* idx, const S* v, int64_t vbase,
                                     const S* src) {
  using A = acc_t<S>;
  const S* w = v - vbase;
  A a = 0;
  if (k1 - k0 >= kDotVectorFrom) {
#pragma omp simd reduction(+ : a)
    for (int64_t k = k0; k < k1; ++k) a += static_cast<A>(w[k]) * static_cast<A>(src[idx[k]]);
  } else {
    for (int64_t k = k0; k < k1; ++k) a += static_cast<A>(w[k]) * static_cast<A>(src[idx[k]]);
  }
  return a;
}

}  // namespace sparse_engine
