// Row gathers shared by spmm / spmm_t (spmm_cpu.cpp) and the fused recurrent steps
// (rnn_step_cpu.cpp): acc[0:W] = sum_k vals[k] * src[idx[k], b0:b0+W] over one compressed row.
//
// The batch is cut into blocks of a whole number of units (pad_unit: 8 floats, 4 doubles, 8 halves), so every block
// width is a compile-time constant (1 to 8 units, see wide_block) and a batch of up to 64 floats is one pass over
// the row's nonzeros with its accumulators in vector registers, whatever B is (a 16-wide pass and a scalar 4-wide
// pass for B = 20 ran at half MKL's speed). float/double accumulate in GCC vector types (vec_t), which stay in
// registers. The last block reads past B in no row: a copy padded with zeros to whole units (padded_batch), or for
// spmm and spmm_t with fewer than kUnpaddedBelow entries per source row the float/double source as it is, its last
// vector read with a masked load (gather_source). Each output is summed over the row's nonzeros by one thread in an
// order fixed by the row alone (in index order; gather_rows' narrow blocks in 2 or 4 interleaved partial sums,
// added in a fixed order): results do not depend on the thread count.
#pragma once
#include <ATen/ATen.h>
#include <cstring>
#include <type_traits>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include <algorithm>
#include <limits>
#include <utility>
#include <vector>
#include "common.h"
#include "sparse_dot.h"
#include "storage.h"
#include "tiling.h"

namespace sparse_engine {

// The padding unit of a batch row: one vector of 8 floats or 4 doubles (32 bytes), or the 8
// halves (16 bytes) that widen into one. 16 halves (32 bytes) padded bfloat16 B = 4 fourfold and
// B = 40 to 48 (the bytes of every gathered row).
template <typename S>
constexpr int pad_unit() { return kIsHalf<S> ? 8 : 32 / static_cast<int>(sizeof(S)); }

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

// The source of gather_rows for spmm and spmm_t, as (tensor, row stride). Padding copies every row of the source on
// the calling thread: at 4,096 x 20 floats 22 us of an 80 us spmm, and on two threads the other core then fetched
// the fresh copy from this one's cache. Unpadded float/double rows are read with a masked load for their last
// vector, which costs a little more per entry (rows of 80 bytes are not 32-byte aligned, so loads split cache
// lines). Measured on two threads, B = 20, spmm, padded against unpadded: 4,096 / 0.1% (4 entries per source row)
// 48 against 28 us; 4,096 / 1% (41) 146 against 121; 4,096 / 3% (123) 321 against 323; 16,384 / 1% (164) 2,005
// against 1,880; 4,096 / 5% (205) 474 against 547. So the source is read as it is below kUnpaddedBelow entries per
// source row (csrc/constants.h: the memory model replays these copies), and float16/bfloat16 always padded (their
// widening reads whole units). The sums are the same either way (the padding lanes add zeros, the masked ones
// nothing).

template <typename S>
inline std::pair<at::Tensor, int64_t> gather_source(const at::Tensor& t, int64_t stride, int64_t nnz) {
  if (!kIsHalf<S> && stride != t.size(1) && nnz < kUnpaddedBelow * t.size(0)) return {t.contiguous(), t.size(1)};
  return {padded_batch(t, stride), stride};
}

// Narrow blocks keep U sets of accumulators, entry k adding into set (k - k0) % U (the last
// entries into set 0) and the sets summed at the end in a fixed order: with one set every entry's
// FMAs waited for the previous entry's (4 cycles each), which bounded spmm at B = 20 (3 vectors)
// to a quarter of the FMA throughput. The order of each output's sum depends on the row only.
template <typename S, int W>
constexpr int accumulator_sets() {
  constexpr int vectors = W / pad_unit<S>();
  return vectors >= 5 ? 1 : vectors >= 3 ? 2 : 4;
}

// float/double accumulators as GCC vector types of 32 bytes (8 floats, 4 doubles): the
// compiler keeps an array of them in registers, where arrays of floats under `omp simd` stayed
// on the stack (a load and a store around every FMA, a store-forwarding chain per entry: spmm
// at 4,096 / 0.1%, B = 20, 74 us against MKL's 45, one thread).
// (a specialisation each: GCC drops the attribute from an alias template of a dependent type)
template <typename A>
struct vec_of;
template <>
struct vec_of<float> { typedef float type __attribute__((vector_size(32))); };
template <>
struct vec_of<double> { typedef double type __attribute__((vector_size(32))); };
template <typename A>
using vec_t = typename vec_of<A>::type;

template <typename A>
constexpr int vec_lanes() { return 32 / static_cast<int>(sizeof(A)); }

template <typename A>
SE_ALWAYS_INLINE vec_t<A> load_vec(const A* p) {
  vec_t<A> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename A>
SE_ALWAYS_INLINE void store_vec(A* p, vec_t<A> v) { std::memcpy(p, &v, sizeof(v)); }

// The first n lanes (1 <= n <= vec_lanes) of p, zeros after: nothing past p[n - 1] is read.
template <typename A>
SE_ALWAYS_INLINE vec_t<A> load_first(const A* p, int n) {
#if defined(__AVX512VL__)
  const __mmask8 m = static_cast<__mmask8>((1u << n) - 1);
  if constexpr (std::is_same_v<A, float>) return reinterpret_cast<vec_t<A>>(_mm256_maskz_loadu_ps(m, p));
  else return reinterpret_cast<vec_t<A>>(_mm256_maskz_loadu_pd(m, p));
#elif defined(__AVX2__)
  if constexpr (std::is_same_v<A, float>) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return reinterpret_cast<vec_t<A>>(_mm256_maskload_ps(p, m));
  } else {
    const __m256i m = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    return reinterpret_cast<vec_t<A>>(_mm256_maskload_pd(p, m));
  }
#else
  vec_t<A> v = {};
  for (int l = 0; l < n; ++l) v[l] = p[l];
  return v;
#endif
}

// load_first where p's line may not be in L1 yet (a row's first touch of its last vector), its lines
// prefetched first: on an AMD EPYC (Zen 5) VM a masked load that missed L1 held the core ~50 ns
// (sddmm's G rows at B = 20: 1.3-1.6x slower, docs/cpu_kernels.md "sddmm").
template <typename A>
SE_ALWAYS_INLINE vec_t<A> load_first_cold(const A* p, int n) {
  __builtin_prefetch(p), __builtin_prefetch(p + n - 1);
  return load_first(p, n);
}

// p[0:n] = v[0:n] (1 <= n <= vec_lanes); nothing past p[n - 1] is written.
template <typename A>
SE_ALWAYS_INLINE void store_first(A* p, vec_t<A> v, int n) {
#if defined(__AVX512VL__)
  const __mmask8 m = static_cast<__mmask8>((1u << n) - 1);
  if constexpr (std::is_same_v<A, float>) _mm256_mask_storeu_ps(p, m, reinterpret_cast<__m256>(v));
  else _mm256_mask_storeu_pd(p, m, reinterpret_cast<__m256d>(v));
#elif defined(__AVX2__)
  if constexpr (std::is_same_v<A, float>) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    _mm256_maskstore_ps(p, m, reinterpret_cast<__m256>(v));
  } else {
    const __m256i m = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    _mm256_maskstore_pd(p, m, reinterpret_cast<__m256d>(v));
  }
#else
  for (int l = 0; l < n; ++l) p[l] = v[l];
#endif
}

// Runs entry(k, u, fetch) for k in [k0, k1): entry k into accumulator set (k - k0) % U, so that a
// row's U consecutive entries are independent FMA chains (a short row's last entries too);
// fetch (std::true_type) while the row kPrefetch entries ahead exists.
template <int U, bool Prefetch, typename Entry>
SE_ALWAYS_INLINE void for_entries(int64_t k0, int64_t k1, int64_t nnz, Entry&& entry) {
  const int64_t k_fetch = Prefetch ? std::max(k0, std::min(k1, nnz - kPrefetch)) : k0;
  int64_t k = k0;
  for (; k + U <= k_fetch; k += U)
    for (int u = 0; u < U; ++u) entry(k + u, u, std::true_type());
  for (; k + U <= k1; k += U)
    for (int u = 0; u < U; ++u) entry(k + u, u, std::false_type());
  for (int u = 0; u + 1 < U; ++u)
    if (k + u < k1) entry(k + u, u, std::false_type());
}

#if defined(__AVX2__)
// 8 bfloat16 values as a vector of 8 floats (storage.h's widening, as a GCC vector).
SE_ALWAYS_INLINE vec_t<float> widen_bf16x8(const at::BFloat16* x) {
  return bits_as<vec_t<float>>(widen_bf16x8_ps(x));
}
#endif

// float/double: out[0:W/L] (vectors of L = vec_lanes lanes) = sum_{k in [k0, k1)}
// vals[k - vbase] * src[idx[k] * stride + 0:W]. Masked: the last vector reads only its first
// `tail` lanes (the end of an unpadded source row), the others add zero.
template <typename S, int W, bool Prefetch, bool Masked>
SE_ALWAYS_INLINE void row_sums_vec(int64_t k0, int64_t k1, const int32_t* idx, const S* vals, int64_t vbase,
                                   const S* src, int64_t stride, int64_t nnz, vec_t<S>* out, int tail) {
  static_assert(!kIsHalf<S>);
  using V = vec_t<S>;
  constexpr int L = vec_lanes<S>(), NV = W / L, U = accumulator_sets<S, W>();
  static_assert(W % L == 0);
  V sets[U][NV] = {};
  for_entries<U, Prefetch>(k0, k1, nnz, [&](int64_t k, int u, auto fetch) SE_ALWAYS_INLINE_LAMBDA {
    const S* x = src + static_cast<int64_t>(idx[k]) * stride;
    if constexpr (decltype(fetch)::value)
      prefetch_row<W * sizeof(S)>(src + static_cast<int64_t>(idx[k + kPrefetch]) * stride);
    const S v = vals[k - vbase];
    for (int j = 0; j + 1 < NV; ++j) sets[u][j] += v * load_vec(x + j * L);
    sets[u][NV - 1] += v * (Masked ? load_first(x + (NV - 1) * L, tail) : load_vec(x + (NV - 1) * L));
  });
  for (int j = 0; j < NV; ++j) {
    if constexpr (U == 1) out[j] = sets[0][j];
    if constexpr (U == 2) out[j] = sets[0][j] + sets[1][j];
    if constexpr (U == 4) out[j] = (sets[0][j] + sets[1][j]) + (sets[2][j] + sets[3][j]);
  }
}

// a[0:W] = sum_{k in [k0, k1)} vals[k - vbase] * src[idx[k] * stride + 0:W] (a: the caller's
// array); nnz bounds the prefetch of the row kPrefetch entries ahead (vbase: the values of a row
// gathered into a buffer of their own, see gather_rows).
template <typename S, int W, bool Prefetch>
SE_ALWAYS_INLINE void row_sums(int64_t k0, int64_t k1, const int32_t* idx, const S* vals, int64_t vbase,
                               const S* src, int64_t stride, int64_t nnz, acc_t<S>* a) {
  using A = acc_t<S>;
  if constexpr (!kIsHalf<S>) {
    constexpr int L = vec_lanes<S>();
    vec_t<S> out[W / L];
    row_sums_vec<S, W, Prefetch, false>(k0, k1, idx, vals, vbase, src, stride, nnz, out, L);
    for (int j = 0; j < W / L; ++j) store_vec(a + j * L, out[j]);
  } else {  // float16/bfloat16 (padded): rows widened to float, the float path's vector sums (arrays
    // under omp simd stayed on the stack: bfloat16 spmm at 16,384 / 0.05%, B = 128, 1.9x slower)
    using V = vec_t<A>;
    constexpr int L = vec_lanes<A>(), NV = W / L, U = accumulator_sets<S, W>();
    static_assert(W % L == 0);
    V sets[U][NV] = {};
    for_entries<U, Prefetch>(k0, k1, nnz, [&](int64_t k, int u, auto fetch) SE_ALWAYS_INLINE_LAMBDA {
      if constexpr (decltype(fetch)::value)
        prefetch_row<W * sizeof(S)>(src + static_cast<int64_t>(idx[k + kPrefetch]) * stride);
      const S* row = src + static_cast<int64_t>(idx[k]) * stride;
      const A v = static_cast<A>(vals[k - vbase]);
#if defined(__AVX2__)
      if constexpr (std::is_same_v<S, at::BFloat16> && L == 8) {  // widened in registers: no stack round trip
        for (int j = 0; j < NV; ++j) sets[u][j] += v * widen_bf16x8(row + j * L);
        return;
      }
#endif
      A x[W];
      widen<W>(row, x);
      for (int j = 0; j < NV; ++j) sets[u][j] += v * load_vec(x + j * L);
    });
    for (int j = 0; j < NV; ++j) {
      if constexpr (U == 1) store_vec(a + j * L, sets[0][j]);
      if constexpr (U == 2) store_vec(a + j * L, sets[0][j] + sets[1][j]);
      if constexpr (U == 4) store_vec(a + j * L, (sets[0][j] + sets[1][j]) + (sets[2][j] + sets[3][j]));
    }
  }
}

// acc[0:W]: row_sums (the recurrent steps' gathers).
template <typename S, int W, bool Prefetch>
inline void accumulate_block(int64_t k0, int64_t k1, const int32_t* idx, const S* vals, int64_t vbase,
                             const S* src, int64_t stride, acc_t<S>* acc, int64_t nnz) {
  row_sums<S, W, Prefetch>(k0, k1, idx, vals, vbase, src, stride, nnz, acc);
}

// The widest block of the recurrent steps (rnn_step_cpu.cpp): 128 bytes (32 floats, 16 doubles,
// 64 halves: 4 units of the first two, 8 of a 2-byte type).
template <typename S>
constexpr int max_block() { return 128 / static_cast<int>(sizeof(S)); }

// The widest block of gather_rows (spmm, spmm_t): 64 float or 32 double accumulators (8 AVX2
// registers): 8 units (a 2-byte type's widened to float). A batch
// of 40 (SET-MLP's) is one pass over the gathered rows; 4-unit blocks would make it a 32-wide
// pass and an 8-wide pass that gather every row a second time (at 333,333 x 333,333,
// epsilon 13, B = 40, one thread, huge pages: spmm 11% and spmm_t 9% faster, measured).
template <typename S>
constexpr int wide_block() { return 8 * pad_unit<S>(); }

// acc[0:n] = the row's sum over columns [0, n) of a padded source (src already offset to the
// block's first column); n is a multiple of pad_unit and at most 8 units: one pass.
template <typename S, bool Prefetch>
inline void accumulate_padded(int64_t k0, int64_t k1, const int32_t* idx, const S* vals, int64_t vbase,
                              const S* src, int64_t stride, int64_t n, acc_t<S>* acc, int64_t nnz) {
  constexpr int P = pad_unit<S>();
  switch (n / P) {
    case 8: accumulate_block<S, 8 * P, Prefetch>(k0, k1, idx, vals, vbase, src, stride, acc, nnz); break;
    case 7: accumulate_block<S, 7 * P, Prefetch>(k0, k1, idx, vals, vbase, src, stride, acc, nnz); break;
    case 6: accumulate_block<S, 6 * P, Prefetch>(k0, k1, idx, vals, vbase, src, stride, acc, nnz); break;
    case 5: accumulate_block<S, 5 * P, Prefetch>(k0, k1, idx, vals, vbase, src, stride, acc, nnz); break;
    case 4: accumulate_block<S, 4 * P, Prefetch>(k0, k1, idx, vals, vbase, src, stride, acc, nnz); break;
    case 3: accumulate_block<S, 3 * P, Prefetch>(k0, k1, idx, vals, vbase, src, stride, acc, nnz); break;
    case 2: accumulate_block<S, 2 * P, Prefetch>(k0, k1, idx, vals, vbase, src, stride, acc, nnz); break;
    default: accumulate_block<S, P, Prefetch>(k0, k1, idx, vals, vbase, src, stride, acc, nnz); break;
  }
}

// acc[0:n] for the block of columns starting at b0 (a multiple of Block: max_block or
// wide_block) of a source padded to `stride` columns, n = min(Block, stride - b0); stride 1
// (B = 1, no padding) is a sparse dot product into acc[0] (sparse_dot).
template <typename S, bool Prefetch, int Block = max_block<S>()>
inline void accumulate_at(int64_t k0, int64_t k1, const int32_t* idx, const S* vals, int64_t vbase, const S* src,
                          int64_t stride, int64_t b0, acc_t<S>* acc, int64_t nnz) {
  if (stride == 1) {
    acc[0] = sparse_dot(k0, k1, idx, vals, vbase, src);
    return;
  }
  accumulate_padded<S, Prefetch>(k0, k1, idx, vals, vbase, src + b0, stride, std::min<int64_t>(Block, stride - b0),
                       acc, nnz);
}

// out[i, :] = sum_{k in [ptr[i], ptr[i+1])} val(k) * src[idx[k], :] for i in [0, n), src padded
// to `stride` columns; val(k) = vals[k], or vals[perm[k]] for a transposed index (spmm_t, the
// recurrent backward, without values_t). There each row's values are first gathered into a small
// buffer (their loads independent, prefetched kGatherAhead entries ahead), and the product reads
// them from L1: no indirection in its inner loop, and no nnz-sized workspace (as fast as
// gathering all values into one first, measured on 2 cores).
// `direct` (n x B, optional) is added to the sums.
inline constexpr int64_t kGatherAhead = 64;

// A row's values: vals itself (returned with vbase 0), or for a transposed index (perm) its
// entries gathered into row_vals (vbase: the row's first position).
template <typename S>
inline const S* row_values(const S* vals, const int32_t* perm, int64_t k0, int64_t k1, int64_t nnz,
                           std::vector<S>& row_vals, int64_t& vbase) {
  vbase = 0;
  if (perm == nullptr) return vals;
  for (int64_t k = k0; k < k1; ++k) {
    if (k + kGatherAhead < nnz) __builtin_prefetch(vals + perm[k + kGatherAhead]);
    row_vals[k - k0] = vals[perm[k]];
  }
  vbase = k0;
  return row_vals.data();
}

// One row's block of W columns (W a multiple of the padding unit, at most wide_block): the
// sums in registers, written straight to y[0:width] (width <= W: the columns of the block that
// are in the batch, more than W - pad_unit of them; the padding lanes are never stored), plus
// direct[0:width] when given. Masked: the source rows are not padded, and only their first
// `width` columns are read.
template <typename S, int W, bool Prefetch, bool Masked = false>
SE_ALWAYS_INLINE void gather_block(int64_t k0, int64_t k1, const int32_t* idx, const S* vals, int64_t vbase,
                                   const S* src, int64_t stride, int64_t nnz, int64_t width, const S* direct, S* y) {
  using A = acc_t<S>;
  if constexpr (!kIsHalf<S>) {
    constexpr int L = vec_lanes<S>(), NV = W / L;
    const int tail = static_cast<int>(width - (NV - 1) * L);  // lanes of the last vector in the batch
    vec_t<S> a[NV];
    row_sums_vec<S, W, Prefetch, Masked>(k0, k1, idx, vals, vbase, src, stride, nnz, a, tail);
    if (direct != nullptr) {
      for (int j = 0; j + 1 < NV; ++j) a[j] += load_vec(direct + j * L);
      a[NV - 1] += load_first_cold(direct + (NV - 1) * L, tail);
    }
    for (int j = 0; j + 1 < NV; ++j) store_vec(y + j * L, a[j]);
    if (tail == L) store_vec(y + (NV - 1) * L, a[NV - 1]);
    else store_first(y + (NV - 1) * L, a[NV - 1], tail);
  } else {
    static_assert(!Masked, "float16/bfloat16 sources are padded");
    A a[W];
    row_sums<S, W, Prefetch>(k0, k1, idx, vals, vbase, src, stride, nnz, a);
    if (direct != nullptr) {
#pragma omp simd
      for (int b = 0; b < W; ++b)
        if (b < width) a[b] += static_cast<A>(direct[b]);
    }
    narrow(a, y, width);  // 8 at a time (c10's conversion one value at a time was a scalar loop)
  }
}

// The rows [r0, r1) of gather_rows with the block widths fixed at compile time: full blocks of
// M columns, then a last one of T (0: none), so the width is chosen once per call, not per row.
// `stride` is the padded batch (the blocks' layout), `ld` the source's row stride: stride for a
// padded source, B for an unpadded one, whose last block is then read with masked loads.
// `panel` (see gather_rows_tiled): each row's entries [next[i], first entry at a source row >=
// panel->end), next[i] moved past them; the first panel writes its sums (+ direct) to every row,
// a later one adds them to the row's output and skips rows with none.
struct Panel {
  int64_t* next;  // per row: its first entry not summed yet
  int64_t end;    // source rows below it are in this panel (the last panel: every row left)
  bool first;
};

template <typename S, int M, int T, bool Prefetch>
void gather_row_range(const int64_t* ptr, const int32_t* idx, const S* vals, const int32_t* perm, const S* src,
                      int64_t stride, int64_t ld, const S* direct, S* out, int64_t r0, int64_t r1, int64_t B,
                      int64_t nnz, std::vector<S>& row_vals, const Panel* panel = nullptr) {
  const int64_t full = (stride - T) / M;  // blocks of M columns before the last one
  const bool masked = ld < stride;        // then the last block reads past B in no source row
  const int64_t unmasked = T == 0 && masked ? full - 1 : full;
  for (int64_t i = r0; i < r1; ++i) {
    int64_t k0 = ptr[i], k1 = ptr[i + 1];
    S* y = out + i * B;
    const S* d = direct ? direct + i * B : nullptr;
    if (panel != nullptr) {
      k0 = panel->next[i];
      int64_t k = k0;
      while (k < k1 && idx[k] < panel->end) ++k;
      panel->next[i] = k1 = k;
      if (!panel->first) {
        if (k1 == k0) continue;
        d = y;  // the sums so far: this panel's are added to them
      }
    }
    int64_t vbase;
    const S* v = row_values(vals, perm, k0, k1, nnz, row_vals, vbase);
    for (int64_t blk = 0; blk < unmasked; ++blk) {
      const int64_t b0 = blk * M;
      gather_block<S, M, Prefetch>(k0, k1, idx, v, vbase, src + b0, ld, nnz, std::min<int64_t>(M, B - b0),
                                   d ? d + b0 : nullptr, y + b0);
    }
    if constexpr (!kIsHalf<S>) {
      if (masked) {
        constexpr int L = T > 0 ? T : M;  // the last block: T wide, or the last full one
        const int64_t b0 = unmasked * M;
        gather_block<S, L, Prefetch, true>(k0, k1, idx, v, vbase, src + b0, ld, nnz, B - b0, d ? d + b0 : nullptr,
                                           y + b0);
        continue;
      }
    }
    if constexpr (T > 0) {
      const int64_t b0 = full * M;
      gather_block<S, T, Prefetch>(k0, k1, idx, v, vbase, src + b0, ld, nnz, B - b0, d ? d + b0 : nullptr, y + b0);
    }
  }
}

// B = 1 (no padding): each row a sparse dot product (sparse_dot).
template <typename S>
void gather_dot_range(const int64_t* ptr, const int32_t* idx, const S* vals, const int32_t* perm, const S* src,
                      const S* direct, S* out, int64_t r0, int64_t r1, int64_t nnz, std::vector<S>& row_vals) {
  using A = acc_t<S>;
  for (int64_t i = r0; i < r1; ++i) {
    int64_t vbase;
    const S* v = row_values(vals, perm, ptr[i], ptr[i + 1], nnz, row_vals, vbase);
    const A a = sparse_dot(ptr[i], ptr[i + 1], idx, v, vbase, src);
    out[i] = static_cast<S>(direct ? static_cast<A>(direct[i]) + a : a);
  }
}

// gather_row_range for a last block of `units` padding units (0: none) and the prefetch choice.
template <typename S, int M, int U = 0>
auto row_range(int units, bool fetch) {
  constexpr int P = pad_unit<S>();
  if constexpr (U < 7) {
    if (units != U) return row_range<S, M, U + 1>(units, fetch);
  }
  return fetch ? &gather_row_range<S, M, U * P, true> : &gather_row_range<S, M, U * P, false>;
}

// The size of the source (the gathered operand) from which gather_rows prefetches the rows it
// will need: below it the source sits in L2 (2 MB per core on the development machine) and the
// prefetch's address arithmetic, a third of the loop's instructions, bought nothing (spmm at
// 1,024 / 5%, B = 20: 79 -> 74 us without, one thread; no difference measured at 4,096 / 1-5%
// and 16,384 / 1%).
inline constexpr int64_t kPrefetchFromBytes = int64_t(512) << 10;

// src: src_rows x stride (padded, gather.h), or for float/double src_rows x B (ld = B: not
// padded, its last block read with masked loads); out: n x B. Tiled by gather_panels (the size, then a
// sample of the pattern), or in `panels` panels where the caller already asked it (the fused step).
template <typename scalar_t>
void gather_rows(const int64_t* ptr, const int32_t* idx, const scalar_t* vals, const int32_t* perm,
                 const scalar_t* src, int64_t src_rows, int64_t stride, const scalar_t* direct, scalar_t* out,
                 int64_t n, int64_t B, int64_t ld = -1, int64_t panels = 0) {
  if (ld < 0) ld = stride;
  TORCH_CHECK(ld == stride || (!kIsHalf<scalar_t> && ld == B), "gather_rows: a padded source, or an unpadded float one");
  constexpr int M = wide_block<scalar_t>(), P = pad_unit<scalar_t>();
  double reuse = 0;  // of the sample; a caller's panels come from one too, and prefetch only untiled
  if (panels < 1) panels = gather_panels<scalar_t>(src_rows, stride, B, ptr, idx, n, &reuse);
  const int64_t chunks = panel_chunks(n, panels);
  const auto bounds = balanced_bounds(ptr, n, chunks);
  const int64_t nnz = ptr[n];
  const bool parallel = (nnz + n) * B >= parallel_work();
  // the row loop for this stride: its last block's width (in padding units) picks the instance
  using RowRange = void (*)(const int64_t*, const int32_t*, const scalar_t*, const int32_t*, const scalar_t*, int64_t,
                            int64_t, const scalar_t*, scalar_t*, int64_t, int64_t, int64_t, int64_t,
                            std::vector<scalar_t>&, const Panel*);
  static_assert(M <= 8 * P);
  // a panel sits in the cache (no prefetch); untiled, prefetch where the source outgrows L2 and the
  // gathers do not repeat (tiling.h, kLocalReuse)
  const bool fetch = panels == 1 && reuse < kLocalReuse &&
                     src_rows * stride * static_cast<int64_t>(sizeof(scalar_t)) >= kPrefetchFromBytes;
  const RowRange rows = stride == 1 ? nullptr : row_range<scalar_t, M>(static_cast<int>((stride % M) / P), fetch);
  std::vector<int64_t> next(panels > 1 ? n : 0);
  if (panels > 1) std::copy(ptr, ptr + n, next.begin());
  const int64_t panel_rows = (src_rows + panels - 1) / panels;
  for (int64_t p = 0; p < panels; ++p) {  // one panel of source rows at a time, consumed by every row
    const Panel panel{next.data(), p + 1 == panels ? std::numeric_limits<int64_t>::max() : (p + 1) * panel_rows,
                      p == 0};
    parallel_chunks(chunks, parallel, [&](int64_t c) {
      std::vector<scalar_t> row_vals;
      if (perm != nullptr) {
        int64_t longest = 0;
        for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) longest = std::max(longest, ptr[i + 1] - ptr[i]);
        row_vals.resize(longest);
      }
      if (stride == 1)
        gather_dot_range<scalar_t>(ptr, idx, vals, perm, src, direct, out, bounds[c], bounds[c + 1], nnz, row_vals);
      else
        rows(ptr, idx, vals, perm, src, stride, ld, direct, out, bounds[c], bounds[c + 1], B, nnz, row_vals,
             panels > 1 ? &panel : nullptr);
    });
  }
}

// The padded row stride of a batch of B columns (1 stays 1: the sparse dot product).
template <typename S>
inline int64_t padded_stride(int64_t B) { return B == 1 ? 1 : round_up(B, pad_unit<S>()); }

}  // namespace sparse_engine
