// Vectorised elementwise math of the CPU recurrent kernels (rnn_step_cpu.cpp, dense_rnn_cpu.cpp):
// in-place exp, tanh and sigmoid over short arrays.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__AVX2__)
#include <immintrin.h>
// SLEEF's vector exp/tanh (1 ulp), the ones ATen's own vectorized kernels use; libtorch_cpu
// exports them on x86-64 builds, but that is not a promise of torch's: they are weak symbols,
// so a torch without them still loads this library and the scalar std:: functions run.
// Without AVX2 the scalar functions are used too.
extern "C" {
__attribute__((weak)) __m256 Sleef_expf8_u10(__m256);
__attribute__((weak)) __m256 Sleef_tanhf8_u10(__m256);
__attribute__((weak)) __m256d Sleef_expd4_u10(__m256d);
__attribute__((weak)) __m256d Sleef_tanhd4_u10(__m256d);
}
#endif
#if defined(__AVX512F__)
// Their 16-lane (8-lane double) forms, the same algorithms (the same results, about 1.4x the
// throughput of the 8-lane forms here), used when the build targets AVX-512 and torch exports them.
extern "C" {
__attribute__((weak)) __m512 Sleef_expf16_u10(__m512);
__attribute__((weak)) __m512 Sleef_tanhf16_u10(__m512);
__attribute__((weak)) __m512d Sleef_expd8_u10(__m512d);
__attribute__((weak)) __m512d Sleef_tanhd8_u10(__m512d);
}
#endif

namespace sparse_engine {

// In-place elementwise f over a short array: SLEEF's widest vector function that exists (the
// tail padded to one full vector), else the scalar std:: function.
#if defined(__AVX512F__)
template <typename T> struct Avx512;
template <> struct Avx512<float> {
  using vec = __m512;
  static constexpr int lanes = 16;
  static vec load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, vec v) { _mm512_storeu_ps(p, v); }
};
template <> struct Avx512<double> {
  using vec = __m512d;
  static constexpr int lanes = 8;
  static vec load(const double* p) { return _mm512_loadu_pd(p); }
  static void store(double* p, vec v) { _mm512_storeu_pd(p, v); }
};
#endif
#if defined(__AVX2__)
template <typename T> struct Avx;
template <> struct Avx<float> {
  using vec = __m256;
  static constexpr int lanes = 8;
  static vec load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, vec v) { _mm256_storeu_ps(p, v); }
};
template <> struct Avx<double> {
  using vec = __m256d;
  static constexpr int lanes = 4;
  static vec load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, vec v) { _mm256_storeu_pd(p, v); }
};
#endif

// f over a with the vector type V's function (null: the weak symbol is absent, nothing done).
template <typename V, typename T, typename VecFn>
inline bool apply_vec(T* a, int64_t n, VecFn vec_fn) {
  if (vec_fn == nullptr) return false;
  int64_t i = 0;
  for (; i + V::lanes <= n; i += V::lanes) V::store(a + i, vec_fn(V::load(a + i)));
  if (i < n) {
    T t[V::lanes] = {0};
    std::copy(a + i, a + n, t);
    V::store(t, vec_fn(V::load(t)));
    std::copy(t, t + (n - i), a + i);
  }
  return true;
}

template <typename T, typename Vec512Fn, typename VecFn, typename ScalarFn>
inline void apply_inplace(T* a, int64_t n, Vec512Fn vec512_fn, VecFn vec_fn, ScalarFn scalar_fn) {
#if defined(__AVX512F__)
  if (apply_vec<Avx512<T>>(a, n, vec512_fn)) return;
#endif
#if defined(__AVX2__)
  if (apply_vec<Avx<T>>(a, n, vec_fn)) return;
#endif
  for (int64_t i = 0; i < n; ++i) a[i] = scalar_fn(a[i]);
}

#if defined(__AVX2__)
#define SE_SLEEF(name) &Sleef_##name##_u10
#else
#define SE_SLEEF(name) static_cast<void*>(nullptr)
#endif
#if defined(__AVX512F__)
#define SE_SLEEF512(name) &Sleef_##name##_u10
#else
#define SE_SLEEF512(name) static_cast<void*>(nullptr)
#endif
inline void vtanh(float* a, int64_t n) {
  apply_inplace(a, n, SE_SLEEF512(tanhf16), SE_SLEEF(tanhf8), [](float x) { return std::tanh(x); });
}
inline void vtanh(double* a, int64_t n) {
  apply_inplace(a, n, SE_SLEEF512(tanhd8), SE_SLEEF(tanhd4), [](double x) { return std::tanh(x); });
}
inline void vexp(float* a, int64_t n) {
  apply_inplace(a, n, SE_SLEEF512(expf16), SE_SLEEF(expf8), [](float x) { return std::exp(x); });
}
inline void vexp(double* a, int64_t n) {
  apply_inplace(a, n, SE_SLEEF512(expd8), SE_SLEEF(expd4), [](double x) { return std::exp(x); });
}
#undef SE_SLEEF
#undef SE_SLEEF512

// a <- 1 / (1 + exp(-a))
template <typename T> inline void vsigmoid(T* a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) a[i] = -a[i];
  vexp(a, n);
  for (int64_t i = 0; i < n; ++i) a[i] = T(1) / (T(1) + a[i]);
}

}  // namespace sparse_engine
