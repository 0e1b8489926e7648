// W^T G by scattering the rows of the CSR (spmm_t without values_t, spmm_cpu.cpp):
// acc[col_idx[k], :] += values[k] * G[i, :] for the entries k of each row i, in row order.
//
// The gather through the transposed index (gather.h) reads values[csc_perm[k]]: one random read
// per entry, which costs as much as the product itself where the values do not fit in L2
// (kScatterFromBytes, ../constants.h, chooses). Here the values and the index are read in
// order, G's row i is loaded once into registers for all its row's entries, and the random
// accesses are the read-modify-writes of the output's rows.
//
// Threads: the rows are cut into `parts` ranges (balanced by their entries) that depend on the
// matrix alone, never on the thread count; each range scatters into an accumulator of its own,
// and the accumulators are added in range order. So every output element is the same sum in the
// same order on any number of threads. (Splitting the output's rows between the threads instead,
// each skipping the entries outside its range, was tried: every thread then walked all entries,
// and two threads took 3x one's time at 4,096 / 1%, B = 1.) The sums differ from the gather's
// (values_t, or below kScatterFromBytes) by their order: within rounding.
#pragma once
#include <ATen/ATen.h>
#include <algorithm>
#include <cstring>
#include "common.h"
#include "gather.h"
#include "storage.h"

namespace sparse_engine {

// The row ranges of the scatter: enough to keep 8 threads busy, but at most one accumulator per
// 4 entries of an output row on average (the sum of the accumulators reads them all once).
inline constexpr int64_t kScatterMaxParts = 8;

// Below this much work ((nnz + rows) x stride) the scatter is one part. The parts fix each output's
// order of summation, so this is a constant of its own, not parallel_work() (a setting of the
// thread pool: sparse_engine._C._set_parallel_work): with it, spmm_t's bits depended on that bound,
// which until the pool was 2^15 or 2^19 by the import order. 2^19 is what `import sparse_engine`
// first gave; the memory model repeats it (sparse_engine/memory/recurrence_replay.py, _spmm_t_extra).
inline constexpr int64_t kScatterSplitWork = int64_t(1) << 19;

inline int64_t scatter_parts(int64_t rows, int64_t cols, int64_t nnz, int64_t stride) {
  if ((nnz + rows) * stride < kScatterSplitWork) return 1;
  const int64_t parts = std::min<int64_t>(kScatterMaxParts, nnz / std::max<int64_t>(4 * cols, 1));
  return std::max<int64_t>(1, std::min<int64_t>(parts, rows));
}

// Whether spmm_t without values_t scatters (B = 1, or values of kScatterFromBytes and more) rather
// than gathers: not where the accumulators (scatter_parts of cols x stride) would take more than
// kScatterAccBytes (SET-MLP's 333,333-unit layers at B = 40: 53 MB each), since fewer would leave
// threads idle; and for B > 1 not where they take more than kScatterAccPerValue times the values'
// bytes: zeroing them, adding into them and summing them then cost more than gathering the
// values through csc_perm. Two threads, B = 20 / 32, scatter against gather (accumulators over
// values): 65,536 / 0.1% 24.1 / 31.0 ms against 19.4 / 21.7 (2.9x / 3.9x); 16,384 / 1% 3.9 /
// 4.5 ms against 6.1 / 6.2 (1.2x / 1.6x); 65,536 / 1%, B = 20, 159 ms against 258 (0.3x).
inline constexpr int64_t kScatterAccBytes = int64_t(64) << 20;
inline constexpr int64_t kScatterAccPerValue = 2;

inline bool use_scatter(int64_t rows, int64_t cols, int64_t nnz, int64_t B, int64_t stride, int64_t values_bytes,
                        int64_t acc_size) {
  const int64_t acc_bytes = scatter_parts(rows, cols, nnz, stride) * cols * stride * acc_size;
  if (acc_bytes > kScatterAccBytes) return false;
  return B == 1 || (values_bytes >= kScatterFromBytes && acc_bytes <= kScatterAccPerValue * values_bytes);
}

// Rows [r0, r1) of the CSR scattered into acc (astride per output row), for the batch columns
// [0, W) of src (already offset to the block; row stride `stride`).
template <typename S, int W>
void scatter_block(const int64_t* ptr, const int32_t* idx, const S* vals, const S* src, int64_t stride, int64_t r0,
                   int64_t r1, acc_t<S>* acc, int64_t astride) {
  using A = acc_t<S>;
  for (int64_t i = r0; i < r1; ++i) {
    const int64_t k0 = ptr[i], k1 = ptr[i + 1];
    if (k0 == k1) continue;
    A g[W];
    if constexpr (kIsHalf<S>) {
      widen<W>(src + i * stride, g);
    } else {
#pragma omp simd
      for (int b = 0; b < W; ++b) g[b] = src[i * stride + b];
    }
    for (int64_t k = k0; k < k1; ++k) {
      const A v = static_cast<A>(vals[k]);
      A* a = acc + static_cast<int64_t>(idx[k]) * astride;
#pragma omp simd
      for (int b = 0; b < W; ++b) a[b] += v * g[b];
    }
  }
}

// B = 1: scalar entries.
template <typename S>
void scatter_dot(const int64_t* ptr, const int32_t* idx, const S* vals, const S* src, int64_t r0, int64_t r1,
                 acc_t<S>* acc) {
  using A = acc_t<S>;
  for (int64_t i = r0; i < r1; ++i) {
    const A g = static_cast<A>(src[i]);
    for (int64_t k = ptr[i]; k < ptr[i + 1]; ++k) acc[idx[k]] += static_cast<A>(vals[k]) * g;
  }
}

// scatter_block for a block of `units` padding units, chosen at run time.
template <typename S, int U = 1>
void scatter_units(int units, const int64_t* ptr, const int32_t* idx, const S* vals, const S* src, int64_t stride,
                   int64_t r0, int64_t r1, acc_t<S>* acc, int64_t astride) {
  if constexpr (U < 8) {
    if (units != U) return scatter_units<S, U + 1>(units, ptr, idx, vals, src, stride, r0, r1, acc, astride);
  }
  scatter_block<S, U * pad_unit<S>()>(ptr, idx, vals, src, stride, r0, r1, acc, astride);
}

// out (cols x B) = W^T src for src (rows x stride, padded as gather.h pads it). acc: `parts`
// accumulators of cols x stride (scatter_parts), any content; with one part and an output of
// that shape and type, out itself. Each part zeroes its own accumulator (on the thread that
// fills it: zeroed by the caller, every line moved between the cores' caches).
template <typename S>
void scatter_rows(const int64_t* ptr, const int32_t* idx, const S* vals, const S* src, int64_t rows, int64_t cols,
                  int64_t stride, int64_t parts, acc_t<S>* acc, S* out, int64_t B) {
  using A = acc_t<S>;
  constexpr int P = pad_unit<S>(), M = wide_block<S>();
  const auto bounds = balanced_bounds(ptr, rows, parts);
  const int64_t size = cols * stride;
  const bool in_place = static_cast<void*>(acc) == static_cast<void*>(out);
  // the parts, each into its accumulator; then (a second call) out = their sum, added in part
  // order, by ranges of output rows
  const bool parallel = parts > 1;
  parallel_chunks(parts, parallel, [&](int64_t p) {
    A* a = acc + p * size;
    if (size) std::memset(a, 0, size * sizeof(A));  // (memset of a null pointer is undefined, even for 0 bytes)
    if (stride == 1) {
      scatter_dot<S>(ptr, idx, vals, src, bounds[p], bounds[p + 1], a);
      return;
    }
    for (int64_t b0 = 0; b0 < stride; b0 += M) {
      const int units = static_cast<int>(std::min<int64_t>(M, stride - b0) / P);
      scatter_units<S>(units, ptr, idx, vals, src + b0, stride, bounds[p], bounds[p + 1], a + b0, stride);
    }
  });
  if (in_place) return;
  parallel_ranges(cols, parallel, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      if constexpr (kIsHalf<S>) {
        if (parts == 1 && stride % 8 == 0) {  // rounded 8 at a time (a padded row: whole units)
          narrow(acc + j * stride, out + j * B, B);
          continue;
        }
      }
      for (int64_t b = 0; b < B; ++b) {
        A sum = acc[j * stride + b];
        for (int64_t p = 1; p < parts; ++p) sum += acc[p * size + j * stride + b];
        out[j * B + b] = static_cast<S>(sum);
      }
    }
  });
}

}  // namespace sparse_engine
