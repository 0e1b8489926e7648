// Helpers of the CPU kernels that gather rows of a dense operand (spmm, spmm_t: spmm_cpu.cpp;
// sddmm: sddmm_cpu.cpp): the accumulator of each storage dtype, float16/bfloat16 widening and
// rounding back, and prefetching the gathered rows.
#pragma once
#include <ATen/ATen.h>
#include <cstdint>
#include <cstring>
#include <type_traits>
#if defined(__F16C__) || defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace sparse_engine {

// The per-row bodies of the gathers: inlined into their row loops, whose accumulators then stay
// in registers (GCC kept row_sums out of line, a call and a spill per row).
#define SE_ALWAYS_INLINE inline __attribute__((always_inline))
#define SE_ALWAYS_INLINE_LAMBDA __attribute__((always_inline))

// Storage type S (float, double, at::Half, at::BFloat16) and its accumulator: float16 and
// bfloat16 are only storage; every product and sum is in float32, and the result is
// rounded to the storage type once, when it is written.
template <typename S>
using acc_t = std::conditional_t<std::is_same_v<S, double>, double, float>;

template <typename S>
inline constexpr bool kIsHalf = !std::is_same_v<S, acc_t<S>>;

// out[0:W] = float(x[0:W]) for a compile-time W (a multiple of 8), written so that it
// vectorises: bfloat16 is the high half of a float (a shift); float16 uses the hardware
// conversion at the width the compiler gives the loop that reads `out` (AVX-512 where there
// is one: 8-wide conversions feeding 16-wide loads stall store forwarding, 3-4x slower,
// measured), else the branch-free bit conversion (GCC 12 vectorises neither c10::Half's nor
// _Float16's scalar conversion).
// std::bit_cast is C++20; torch builds extensions as C++17 on some versions.
template <typename To, typename From>
inline To bits_as(From x) {
  static_assert(sizeof(To) == sizeof(From));
  To out;
  std::memcpy(&out, &x, sizeof(out));
  return out;
}

#if defined(__AVX2__)
// 8 bfloat16 values as 8 floats in a register (each 16-bit word moved to the high half of its lane).
inline __m256 widen_bf16x8_ps(const at::BFloat16* x) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
#endif

template <int W>
inline void widen(const at::BFloat16* x, float* out) {
  static_assert(W % 8 == 0);
#if defined(__AVX2__)
  // 8 at a time in registers: the scalar-array form below, at W = 8 (sddmm's dot of one unit),
  // made bfloat16 sddmm 2-12x slower than at W = 16 (measured at 16,384 / 0.05-1%, B = 4-128)
  for (int b = 0; b < W; b += 8) _mm256_storeu_ps(out + b, widen_bf16x8_ps(x + b));
#else
  uint16_t bits[W];
  std::memcpy(bits, x, sizeof(bits));
  uint32_t wide[W];
#pragma omp simd
  for (int b = 0; b < W; ++b) wide[b] = static_cast<uint32_t>(bits[b]) << 16;
  std::memcpy(out, wide, sizeof(wide));
#endif
}

template <int W>
inline void widen(const at::Half* x, float* out) {
  static_assert(W % 8 == 0);
#if defined(__AVX512F__)
  for (int b = 0; b + 16 <= W; b += 16)
    _mm512_storeu_ps(out + b, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + b))));
  if constexpr (W % 16 != 0)
    _mm256_storeu_ps(out + W - 8, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + W - 8))));
#elif defined(__F16C__) && defined(__AVX__)
  for (int b = 0; b < W; b += 8)
    _mm256_storeu_ps(out + b, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + b))));
#else
  uint16_t bits[W];
  std::memcpy(bits, x, sizeof(bits));
#pragma omp simd
  for (int b = 0; b < W; ++b) {  // IEEE binary16 -> binary32, subnormals included (as in FP16/c10)
    const uint32_t w = static_cast<uint32_t>(bits[b]) << 16;
    const uint32_t sign = w & 0x80000000u, two_w = w + w;
    const float normal = bits_as<float>((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float subnormal = bits_as<float>((two_w >> 17) | (126u << 23)) - 0.5f;
    out[b] = bits_as<float>(sign | (two_w < (1u << 27) ? bits_as<uint32_t>(subnormal)
                                                              : bits_as<uint32_t>(normal)));
  }
#endif
}

#if defined(__AVX2__)
// 8 floats rounded to bfloat16 (to nearest even; a NaN to 0x7FC0): c10::BFloat16's bits.
inline __m128i narrow_bf16x8(__m256 s) {
  const __m256i b = _mm256_castps_si256(s);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_add_epi32(b, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
  r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC00000), _mm256_castps_si256(_mm256_cmp_ps(s, s, _CMP_UNORD_Q)));
  const __m256i packed = _mm256_packus_epi32(_mm256_srli_epi32(r, 16), _mm256_setzero_si256());  // 0-3 . 4-7 .
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));                         // 0-3 4-7
}
#endif

// y[0:n] = a[0:n] rounded to float16/bfloat16 (to nearest even, as c10 rounds one value), 8 at a
// time where the CPU has AVX2 and F16C (float16 by F16C's conversion: a NaN stays a NaN, its payload
// may differ from c10's): c10's conversion of one value (a NaN test and a rounding) cost more than
// the products of short rows: bfloat16 sddmm at 4,096 / 1% banded rows, B = 32, 0.25 ms with it,
// 0.15 without.
// `a` holds whole units: a[0:round_up(n, 8)] may be read (the padded accumulators, a unit of sums);
// the last unit's first n % 8 values are written.
template <typename S>
inline void narrow(const float* a, S* y, int64_t n) {
  static_assert(kIsHalf<S>);
#if defined(__AVX2__) && defined(__F16C__)
  for (int64_t b = 0; b < n; b += 8) {
    const __m256 v = _mm256_loadu_ps(a + b);
    __m128i h;
    if constexpr (std::is_same_v<S, at::BFloat16>) h = narrow_bf16x8(v);
    else h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
    if (n - b >= 8) _mm_storeu_si128(reinterpret_cast<__m128i*>(y + b), h);
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    else _mm_mask_storeu_epi16(y + b, static_cast<__mmask8>((1u << (n - b)) - 1), h);
#else
    else std::memcpy(y + b, &h, (n - b) * sizeof(S));
#endif
  }
#else
  for (int64_t b = 0; b < n; ++b) y[b] = static_cast<S>(a[b]);
#endif
}

// The gathered rows are random, so the hardware prefetcher cannot follow them; fetching the
// row needed kPrefetch entries ahead makes the loop 4-10x faster (measured on 2 cores).
inline constexpr int64_t kPrefetch = 16;

template <int Bytes>
inline void prefetch_row(const void* p) {
  for (int line = 0; line < Bytes; line += 64) __builtin_prefetch(static_cast<const char*>(p) + line);
}

}  // namespace sparse_engine
