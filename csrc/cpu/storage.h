// Helpers of the CPU kernels that gather rows of a dense operand (spmm, spmm_t: spmm_cpu.cpp;
// sddmm: sddmm_cpu.cpp): the accumulator of each storage dtype, float16/bfloat16 widening, and
// prefetching the gathered rows.
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

// The gathered rows are random, so the hardware prefetcher cannot follow them; fetching the
// row needed kPrefetch entries ahead makes the loop 4-10x faster (measured on 2 cores).
inline constexpr int64_t kPrefetch = 16;

template <int Bytes>
inline void prefetch_row(const void* p) {
  for (int line = 0; line < Bytes; line += 64) __builtin_prefetch(static_cast<const char*>(p) + line);
}

}  // namespace sparse_engine
