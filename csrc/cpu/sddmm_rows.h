// sddmm's row kernel: out[k] = dot(g, X[col_k]) for the entries of one row of a compressed index, g
// one dense row (G's, or for the fused step backward's W_hh gradient one row of h) and X the rows it
// is dotted with. Shared by sddmm (sddmm_cpu.cpp) and the fused recurrent step backward (rnn_step_cpu.cpp,
// add_row_dots), so that both give W_hh's gradient the same bits.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include "common.h"
#include "gather.h"
#include "storage.h"

namespace sparse_engine {

// The X rows kPrefetch entries ahead are prefetched from their start, at most kSddmmPrefetchBytes
// of each: the hardware prefetcher streams the rest once a row's read begins. Whole rows at B = 512
// (16 rows of 2 KB ahead beside the 8 being read: 48 KB, over a 32 KB L1) made banded and block rows
// 15-20% slower and lost to MKL; 256 bytes made random rows at B = 256 10-14% slower (benchmarks/
// results/cpu_sddmm_prefetch_ab.md, AMD EPYC VM). Tiles of 512 bytes or less (B <= 128 float32)
// are prefetched whole, as before.
inline constexpr int64_t kSddmmPrefetchBytes = 512;
SE_ALWAYS_INLINE void prefetch_x_row(const void* row, int64_t bytes) {
  const char* p = static_cast<const char*>(row);
  for (int64_t line = 0; line < std::min(bytes, kSddmmPrefetchBytes); line += 64) __builtin_prefetch(p + line);
}

#if defined(__AVX2__) && defined(__FMA__)
// The 8 sums of 8 vectors of 8 floats, lane j of the result the sum of a[j]'s lanes in a fixed
// order: ((0+1)+(2+3)) + ((4+5)+(6+7)). 6 horizontal adds, 2 lane permutes and an add for 8
// entries, where a tree per entry took 3 shuffles and 3 adds each.
inline __m256 sums_of_8(const __m256* a) {
  const __m256 h01 = _mm256_hadd_ps(a[0], a[1]), h23 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 h45 = _mm256_hadd_ps(a[4], a[5]), h67 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 q0 = _mm256_hadd_ps(h01, h23), q1 = _mm256_hadd_ps(h45, h67);
  return _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20), _mm256_permute2f128_ps(q0, q1, 0x31));
}

// The sum of a's 8 lanes in sums_of_8's order, ((0+1)+(2+3)) + ((4+5)+(6+7)).
inline float sum_of_8(__m256 a) {
  const __m256 h = _mm256_hadd_ps(a, a), q = _mm256_hadd_ps(h, h);
  return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(q), _mm256_extractf128_ps(q, 1)));
}

// The storage types sddmm_row_vec reads: float, bfloat16, and float16 where F16C converts it.
template <typename S>
inline constexpr bool kSddmmVec = std::is_same_v<S, float> || std::is_same_v<S, at::BFloat16>
#if defined(__F16C__)
                                  || std::is_same_v<S, at::Half>
#endif
    ;

// 8 values of storage type S as 8 floats in a register.
template <typename S>
SE_ALWAYS_INLINE __m256 load8(const S* p) {
  if constexpr (std::is_same_v<S, float>) return _mm256_loadu_ps(p);
  else if constexpr (std::is_same_v<S, at::BFloat16>) return widen_bf16x8_ps(p);
  else return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// A row's last unit, its first `tail` (1-8) values: only float rows are unpadded (kUnpaddedF32),
// a 2-byte type's tail is always 8.
template <typename S>
SE_ALWAYS_INLINE __m256 load8_first(const S* p, int tail) {
  if constexpr (std::is_same_v<S, float>)
    if (tail != 8) return reinterpret_cast<__m256>(load_first(p, tail));
  return load8(p);
}

// Writes the sums of entries [k, k + m) of one batch tile: float adds them into `out` after the
// first tile; a 2-byte type keeps its running sums in float32 `partial` and rounds to S once, at
// the last tile (storage.h's narrow: 8 at a time).
template <typename S>
SE_ALWAYS_INLINE void sddmm_emit(S* out, float* partial, int64_t k, int64_t m, __m256 s, bool first, bool last) {
  float* sums;  // the running sums
  if constexpr (kIsHalf<S>) sums = partial; else sums = out;
  const bool rounded = kIsHalf<S> && last;
  if (m == 8) {
    if (!first) s = _mm256_add_ps(s, _mm256_loadu_ps(sums + k));
    if constexpr (kIsHalf<S>) {
      if (rounded) {
        float t[8];
        _mm256_storeu_ps(t, s);
        narrow(t, out + k, 8);
        return;
      }
    }
    _mm256_storeu_ps(sums + k, s);
    return;
  }
  float t[8];
  _mm256_storeu_ps(t, s);
  for (int64_t j = 0; j < m; ++j) {
    const float total = first ? t[j] : sums[k + j] + t[j];
    if (rounded) out[k + j] = static_cast<S>(total); else sums[k + j] = total;
  }
}

#if defined(__AVX512BF16__) && defined(__AVX512VL__)
// bfloat16 where the CPU multiplies it (AVX512-BF16): acc[j] += the products of g[0:n] and x[j][0:n]
// (n a multiple of 8), 16 columns an instruction, lane l adding columns 2l + 1 then 2l of each 16:
// exact products and float32 sums rounded to nearest as FMAs do, but subnormal inputs and sums count
// as zero (below 1.2e-38), and the order differs from the widening path's, so the bits differ from a
// CPU without the instruction (each is deterministic). Widening both operands took 2 instructions
// per 8 values of each and the FMA a third: 1.2-1.6x slower at B = 32-128 (4,096 / 1% banded,
// 16,384 / 1% uniform rows, measured on an AMD EPYC VM).
template <int M>
SE_ALWAYS_INLINE void sddmm_bf16_pairs(const at::BFloat16* g, const at::BFloat16* const* x, int64_t n, __m256* acc) {
  int64_t u = 0;
  for (; u + 16 <= n; u += 16) {
    const __m256bh gu = (__m256bh)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + u));
    for (int j = 0; j < M; ++j)
      acc[j] = _mm256_dpbf16_ps(acc[j], gu, (__m256bh)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[j] + u)));
  }
  if (u < n) {  // one unit of 8 left: the upper 8 columns zero
    const __m256bh gu = (__m256bh)_mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + u)));
    for (int j = 0; j < M; ++j) {
      const __m256i xu = _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[j] + u)));
      acc[j] = _mm256_dpbf16_ps(acc[j], gu, (__m256bh)xu);
    }
  }
}
#endif

// acc[j] += the products of g and x[j] over a tile of `units` 8-value units, each widened to 8 floats
// (g's once for the M rows of X). Masked: the last unit is read to its `tail`-th column (1-7), g's
// being g_last, read once for the row by the caller (in every group, 0.86-0.93x where no unit is masked,
// B = 24 and 32: hence two instantiations).
template <int M, bool Masked, typename S>
SE_ALWAYS_INLINE void sddmm_widened(const S* g, const S* const* x, int64_t units, int tail, __m256 g_last,
                                    __m256* acc) {
  for (int64_t u = 0; u < 8 * (units - 1); u += 8) {
    const __m256 gu = load8(g + u);
    for (int j = 0; j < M; ++j) acc[j] = _mm256_fmadd_ps(gu, load8(x[j] + u), acc[j]);
  }
  const int64_t u = 8 * (units - 1);
  if constexpr (Masked) {
    for (int j = 0; j < M; ++j) acc[j] = _mm256_fmadd_ps(g_last, load8_first(x[j] + u, tail), acc[j]);
  } else {
    const __m256 gu = load8(g + u);
    for (int j = 0; j < M; ++j) acc[j] = _mm256_fmadd_ps(gu, load8(x[j] + u), acc[j]);
  }
}

// out[k] = dot(g, X[col_k]) for the M entries k in [k, k + M) of one G row's tile (g and X already
// offset to it): each entry its own vector accumulator (M independent chains), the lanes of each
// summed in sums_of_8's order whatever M is. Inlined with its helpers (GCC kept it out of line, a
// call per 8 entries: float32 8-12% slower at 16,384 / 1%, B = 32-128).
template <int M, bool Masked, typename S>
SE_ALWAYS_INLINE void sddmm_group(const S* g, __m256 g_last, const S* X, int64_t stride, int64_t units, int tail,
                                  const int32_t* col_idx, int64_t k, int64_t nnz, int64_t tile_bytes, bool first,
                                  bool last, S* out, float* partial) {
  const S* x[M];
  for (int j = 0; j < M; ++j) x[j] = X + static_cast<int64_t>(col_idx[k + j]) * stride;
  for (int64_t j = k + kPrefetch; j < std::min(k + kPrefetch + M, nnz); ++j) {
    prefetch_x_row(X + static_cast<int64_t>(col_idx[j]) * stride, tile_bytes);
  }
  __m256 acc[M];
  for (int j = 0; j < M; ++j) acc[j] = _mm256_setzero_ps();
#if defined(__AVX512BF16__) && defined(__AVX512VL__)
  if constexpr (std::is_same_v<S, at::BFloat16>) sddmm_bf16_pairs<M>(g, x, 8 * units, acc);  // padded: tail 8
  else
#endif
    sddmm_widened<M, Masked>(g, x, units, tail, g_last, acc);
  if constexpr (M == 8) {
    sddmm_emit(out, partial, k, 8, sums_of_8(acc), first, last);
  } else {
    for (int j = 0; j < M; ++j) sddmm_emit(out, partial, k + j, 1, _mm256_set1_ps(sum_of_8(acc[j])), first, last);
  }
}

// out[k] = dot(g, X[col_k]) for k in [k0, k1): groups of 8 entries (one transposing reduction for
// the 8), then the row's last 0-7 in groups of exactly 4, 2 and 1, so that no group computes a dot
// product it drops (groups of 8 padded with repeats computed 8 for 1 at 0.1% density; the last 1-3
// were single FMA chains). The same bits whichever group an entry falls in. float16 and bfloat16
// went through the generic dot_range before (one FMA chain per entry, g widened again for each):
// 0.48-0.94x MKL's float32 on banded and block rows at B >= 32 (benchmarks/results/
// cpu_half_rounding_before_after.md).
template <bool Masked, typename S>
inline void sddmm_row_vec(const S* g, const S* X, int64_t stride, int64_t units, int tail, const int32_t* col_idx,
                          int64_t k0, int64_t k1, int64_t nnz, int64_t tile_bytes, bool first, bool last, S* out,
                          float* partial) {
  if (k0 == k1) return;  // (an empty row, or none of its entries in this panel)
  // a masked (float) row's last unit, once for the row's groups: the row's first touch of its line
  // (load_first_cold)
  __m256 g_last = _mm256_setzero_ps();
  if constexpr (Masked) g_last = reinterpret_cast<__m256>(load_first_cold(g + 8 * (units - 1), tail));
  int64_t k = k0;
  for (; k + 8 <= k1; k += 8)
    sddmm_group<8, Masked>(g, g_last, X, stride, units, tail, col_idx, k, nnz, tile_bytes, first, last, out, partial);
  if (k + 4 <= k1) {
    sddmm_group<4, Masked>(g, g_last, X, stride, units, tail, col_idx, k, nnz, tile_bytes, first, last, out, partial);
    k += 4;
  }
  if (k + 2 <= k1) {
    sddmm_group<2, Masked>(g, g_last, X, stride, units, tail, col_idx, k, nnz, tile_bytes, first, last, out, partial);
    k += 2;
  }
  if (k < k1) sddmm_group<1, Masked>(g, g_last, X, stride, units, tail, col_idx, k, nnz, tile_bytes, first, last, out, partial);
}

// sddmm_row_vec for a row of `width` columns (the tile's), its masked or unmasked instantiation by the
// last unit's width (a 2-byte type's padded rows: always whole units). The one dispatch, for sddmm
// and the fused step backward alike.
template <typename S>
inline void sddmm_row(const S* g, const S* X, int64_t stride, int64_t width, const int32_t* col_idx, int64_t k0,
                      int64_t k1, int64_t nnz, int64_t tile_bytes, bool first, bool last, S* out, float* partial) {
  const int64_t units = (width + 7) / 8;
  const int tail = static_cast<int>(width - 8 * (units - 1));
  if constexpr (std::is_same_v<S, float>) {
    if (tail != 8) {
      sddmm_row_vec<true>(g, X, stride, units, tail, col_idx, k0, k1, nnz, tile_bytes, first, last, out, partial);
      return;
    }
  }
  sddmm_row_vec<false>(g, X, stride, units, tail, col_idx, k0, k1, nnz, tile_bytes, first, last, out, partial);
}
#endif

}  // namespace sparse_engine
