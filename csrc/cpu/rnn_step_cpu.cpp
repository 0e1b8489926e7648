// Fused recurrent steps (CPU, OpenMP): the recurrent sparse product W_hh h and the gate
// nonlinearities of one time step in one pass, and the matching backward (elementwise gate
// gradient, then W_hh^T dG through the transposed index).
//
// W_hh stacks the gates of one layer in one CSR of G*H rows in torch's order (LSTM i,f,g,o;
// GRU r,z,n; RNN/CT-RNN one gate). For hidden unit j the kernel gathers rows j, H+j, ...
// into per-gate accumulators, adds the precomputed input part gx (which already holds the
// biases, except GRU's b_hh), and writes h', c' and the activations backward needs:
//   LSTM  acts = [i, f, g, o]              (4H x B)
//   GRU   acts = [r, z, n, W_hn h + b_hn]  (4H x B)
//   CTRNN acts = tanh(pre)                  (H x B)
//   RNN   nothing (h' itself is enough)
// All activations are feature-major (features x batch). The CUDA kernels (csrc/cuda/rnn_step.cu,
// glue in csrc/cuda/rnn_cuda.cpp) implement the same contract: one thread block per group of
// hidden units, the G row gathers of unit j in one block, so the gate math needs no second pass.
#include <torch/library.h>
#include <omp.h>
#include <cmath>
#include "common.h"

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

namespace sparse_engine {
namespace {

// In-place elementwise f over a short array: SLEEF's vector function where it exists (the
// tail padded to one full vector), else the scalar std:: function.
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

template <typename T, typename VecFn, typename ScalarFn>
inline void apply_inplace(T* a, int64_t n, VecFn vec_fn, ScalarFn scalar_fn) {
#if defined(__AVX2__)
  if (vec_fn != nullptr) {  // null when the weak SLEEF symbol is absent
    using V = Avx<T>;
    int64_t i = 0;
    for (; i + V::lanes <= n; i += V::lanes) V::store(a + i, vec_fn(V::load(a + i)));
    if (i < n) {
      T t[V::lanes] = {0};
      std::copy(a + i, a + n, t);
      V::store(t, vec_fn(V::load(t)));
      std::copy(t, t + (n - i), a + i);
    }
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) a[i] = scalar_fn(a[i]);
}

#if defined(__AVX2__)
#define SE_SLEEF(name) &Sleef_##name##_u10
#else
#define SE_SLEEF(name) static_cast<void*>(nullptr)
#endif
inline void vtanh(float* a, int64_t n) { apply_inplace(a, n, SE_SLEEF(tanhf8), [](float x) { return std::tanh(x); }); }
inline void vtanh(double* a, int64_t n) { apply_inplace(a, n, SE_SLEEF(tanhd4), [](double x) { return std::tanh(x); }); }
inline void vexp(float* a, int64_t n) { apply_inplace(a, n, SE_SLEEF(expf8), [](float x) { return std::exp(x); }); }
inline void vexp(double* a, int64_t n) { apply_inplace(a, n, SE_SLEEF(expd4), [](double x) { return std::exp(x); }); }
#undef SE_SLEEF

// a <- 1 / (1 + exp(-a))
template <typename T> inline void vsigmoid(T* a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) a[i] = -a[i];
  vexp(a, n);
  for (int64_t i = 0; i < n; ++i) a[i] = T(1) / (T(1) + a[i]);
}

enum Mode { kLSTM = 0, kGRU = 1, kTANH = 2, kRELU = 3, kCT = 4 };
constexpr int64_t kBlk = 32;  // batch columns per register block
// Below this much work (multiply-adds or elements) a step runs on one thread: a parallel
// region costs more than it saves, and far more on a busy machine.
constexpr int64_t kParallelWork = 1 << 15;

template <int M> constexpr int num_gates() { return M == kLSTM ? 4 : (M == kGRU ? 3 : 1); }

template <typename T> inline T sigm(T x) { return T(1) / (T(1) + std::exp(-x)); }

struct Index {
  const int64_t* rp; const int32_t* ci; const int64_t* cp; const int32_t* cr; const int64_t* pm;
};

template <typename scalar_t, int M>
void step_forward(Index w, const scalar_t* v, const scalar_t* gx, const scalar_t* h, const scalar_t* c,
                  const scalar_t* bhh, scalar_t* h2, scalar_t* c2, scalar_t* acts, int64_t H, int64_t B,
                  double dt, double tau) {
  constexpr int NG = num_gates<M>();
  const scalar_t decay = scalar_t(1 - dt / tau), sdt = scalar_t(dt);
  const bool par = (w.rp[NG * H] + NG * H) * B >= kParallelWork;
#pragma omp parallel for schedule(dynamic, 8) num_threads(at::get_num_threads()) if (par)
  for (int64_t j = 0; j < H; ++j) {
    scalar_t acc[NG][kBlk];
    for (int64_t b0 = 0; b0 < B; b0 += kBlk) {
      const int64_t bl = std::min(kBlk, B - b0);
      for (int q = 0; q < NG; ++q) {
        scalar_t* a = acc[q];
        for (int64_t b = 0; b < bl; ++b) a[b] = 0;
        const int64_t row = q * H + j;
        for (int64_t k = w.rp[row]; k < w.rp[row + 1]; ++k) {
          const scalar_t vk = v[k];
          const scalar_t* x = h + static_cast<int64_t>(w.ci[k]) * B + b0;
#pragma omp simd
          for (int64_t b = 0; b < bl; ++b) a[b] += vk * x[b];
        }
      }
      const int64_t o = j * B + b0;  // offset of (j, b0) in an (H x B) array
      const int64_t HB = H * B;
      for (int q = 0; q < NG; ++q)
        for (int64_t b = 0; b < bl; ++b) acc[q][b] += (M == kGRU ? scalar_t(0) : gx[q * HB + o + b]);
      if constexpr (M == kLSTM) {
        vsigmoid(acc[0], bl); vsigmoid(acc[1], bl); vtanh(acc[2], bl); vsigmoid(acc[3], bl);
        scalar_t tc[kBlk];
        for (int64_t b = 0; b < bl; ++b) {
          const scalar_t cn = acc[1][b] * c[o + b] + acc[0][b] * acc[2][b];
          c2[o + b] = cn;
          tc[b] = cn;
        }
        vtanh(tc, bl);
        for (int64_t b = 0; b < bl; ++b) {
          h2[o + b] = acc[3][b] * tc[b];
          for (int q = 0; q < 4; ++q) acts[q * HB + o + b] = acc[q][b];
        }
      } else if constexpr (M == kGRU) {
        scalar_t ghn[kBlk];
        for (int q = 0; q < 3; ++q) {
          const scalar_t bq = bhh ? bhh[q * H + j] : scalar_t(0);
          for (int64_t b = 0; b < bl; ++b) acc[q][b] += bq;
        }
        for (int64_t b = 0; b < bl; ++b) {
          ghn[b] = acc[2][b];
          acc[0][b] += gx[o + b];
          acc[1][b] += gx[HB + o + b];
        }
        vsigmoid(acc[0], bl); vsigmoid(acc[1], bl);
        for (int64_t b = 0; b < bl; ++b) acc[2][b] = gx[2 * HB + o + b] + acc[0][b] * ghn[b];
        vtanh(acc[2], bl);
        for (int64_t b = 0; b < bl; ++b) {
          const scalar_t n = acc[2][b], z = acc[1][b];
          h2[o + b] = n + z * (h[o + b] - n);
          acts[o + b] = acc[0][b]; acts[HB + o + b] = z; acts[2 * HB + o + b] = n; acts[3 * HB + o + b] = ghn[b];
        }
      } else if constexpr (M == kTANH) {
        vtanh(acc[0], bl);
        for (int64_t b = 0; b < bl; ++b) h2[o + b] = acc[0][b];
      } else if constexpr (M == kRELU) {
        for (int64_t b = 0; b < bl; ++b) h2[o + b] = acc[0][b] > 0 ? acc[0][b] : scalar_t(0);
      } else {  // CT-RNN Euler step
        vtanh(acc[0], bl);
        for (int64_t b = 0; b < bl; ++b) {
          acts[o + b] = acc[0][b];
          h2[o + b] = decay * h[o + b] + sdt * acc[0][b];
        }
      }
    }
  }
}

// Elementwise gate gradient of one step: dG (G*H x B, the hidden-side pre-activation
// gradient), plus dgx (GRU's input side), dc_prev (LSTM) and the direct part of dh_prev
// (GRU: dh*z, CT-RNN: dh*(1-dt/tau)).
template <typename scalar_t, int M>
void gates_backward(const scalar_t* acts, const scalar_t* c_prev, const scalar_t* c, const scalar_t* h_prev,
                    const scalar_t* h2, const scalar_t* dh, const scalar_t* dc, scalar_t* dG, scalar_t* dgx,
                    scalar_t* dc_prev, scalar_t* direct, int64_t H, int64_t B, double dt, double tau) {
  const int64_t HB = H * B;
  const scalar_t decay = scalar_t(1 - dt / tau), sdt = scalar_t(dt);
  constexpr int64_t kChunk = 256;
  const int64_t nchunks = (HB + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads()) if (HB * 4 >= kParallelWork)
  for (int64_t ch = 0; ch < nchunks; ++ch) {
   const int64_t e0 = ch * kChunk, e1 = std::min(HB, e0 + kChunk);
   scalar_t tcs[kChunk];
   if constexpr (M == kLSTM) {
     for (int64_t e = e0; e < e1; ++e) tcs[e - e0] = c[e];
     vtanh(tcs, e1 - e0);
   }
   for (int64_t e = e0; e < e1; ++e) {
    if constexpr (M == kLSTM) {
      const scalar_t i = acts[e], f = acts[HB + e], g = acts[2 * HB + e], o = acts[3 * HB + e];
      const scalar_t tc = tcs[e - e0];
      const scalar_t dct = dc[e] + dh[e] * o * (1 - tc * tc);
      dG[e] = dct * g * i * (1 - i);
      dG[HB + e] = dct * c_prev[e] * f * (1 - f);
      dG[2 * HB + e] = dct * i * (1 - g * g);
      dG[3 * HB + e] = dh[e] * tc * o * (1 - o);
      dc_prev[e] = dct * f;
    } else if constexpr (M == kGRU) {
      const scalar_t r = acts[e], z = acts[HB + e], n = acts[2 * HB + e], ghn = acts[3 * HB + e];
      const scalar_t dn = dh[e] * (1 - z) * (1 - n * n);
      const scalar_t dr = dn * ghn * r * (1 - r);
      const scalar_t dz = dh[e] * (h_prev[e] - n) * z * (1 - z);
      dgx[e] = dr; dgx[HB + e] = dz; dgx[2 * HB + e] = dn;
      dG[e] = dr; dG[HB + e] = dz; dG[2 * HB + e] = dn * r;
      direct[e] = dh[e] * z;
    } else if constexpr (M == kTANH) {
      dG[e] = dh[e] * (1 - h2[e] * h2[e]);
    } else if constexpr (M == kRELU) {
      dG[e] = h2[e] > 0 ? dh[e] : scalar_t(0);
    } else {
      const scalar_t a = acts[e];
      dG[e] = dh[e] * sdt * (1 - a * a);
      direct[e] = dh[e] * decay;
    }
   }
  }
}

// out[j, :] = direct[j, :] + sum over column j of W: v * dG[row, :]   (W^T dG via the CSC index)
template <typename scalar_t>
void gather_t(Index w, const scalar_t* v, const scalar_t* dG, const scalar_t* direct, scalar_t* out,
              int64_t H, int64_t B) {
  const int64_t chunks = num_chunks(H);
  const auto bounds = balanced_bounds(w.cp, H, chunks);
  const bool par = (w.cp[H] + H) * B >= kParallelWork;
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads()) if (par)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    scalar_t acc[kBlk];
    for (int64_t j = bounds[ch]; j < bounds[ch + 1]; ++j) {
      for (int64_t b0 = 0; b0 < B; b0 += kBlk) {
        const int64_t bl = std::min(kBlk, B - b0);
        for (int64_t b = 0; b < bl; ++b) acc[b] = direct ? direct[j * B + b0 + b] : scalar_t(0);
        for (int64_t k = w.cp[j]; k < w.cp[j + 1]; ++k) {
          const scalar_t vk = v[w.pm[k]];
          const scalar_t* g = dG + static_cast<int64_t>(w.cr[k]) * B + b0;
#pragma omp simd
          for (int64_t b = 0; b < bl; ++b) acc[b] += vk * g[b];
        }
        for (int64_t b = 0; b < bl; ++b) out[j * B + b0 + b] = acc[b];
      }
    }
  }
}

struct Checked {
  Index w;
  int64_t H, B;
  std::vector<at::Tensor> keep;  // contiguous copies kept alive
};

// Checks W_hh (G*H x H) and the (rows x B) operands; returns raw index pointers.
Checked check_step(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                   const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& values,
                   const at::Tensor& state, int64_t gates) {
  auto s = check_index(row_ptr, col_idx, csc_ptr, csc_row, csc_perm);
  check_values(values, s.nnz);
  TORCH_CHECK_VALUE(s.rows == gates * s.cols, "W_hh must have ", gates, " * hidden rows (", gates, " x ",
                    s.cols, "), got ", s.rows);
  TORCH_CHECK_VALUE(values.device().is_cpu(), "values must be on the CPU");
  check_dense(state, "h", s.cols, values.scalar_type(), values.device());
  Checked out;
  out.H = s.cols;
  out.B = state.size(1);
  out.keep = {row_ptr.contiguous(), col_idx.contiguous(), csc_ptr.contiguous(), csc_row.contiguous(),
              csc_perm.contiguous()};
  out.w = {out.keep[0].data_ptr<int64_t>(), out.keep[1].data_ptr<int32_t>(), out.keep[2].data_ptr<int64_t>(),
           out.keep[3].data_ptr<int32_t>(), out.keep[4].data_ptr<int64_t>()};
  return out;
}

template <typename T> T* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; }

void check_same(const at::Tensor& t, const char* name, int64_t rows, const Checked& k, const at::Tensor& values) {
  check_dense(t, name, rows, values.scalar_type(), values.device());
  TORCH_CHECK_VALUE(t.size(1) == k.B, name, " must have batch size ", k.B, ", got ", t.size(1));
}

template <int M>
std::vector<at::Tensor> forward_impl(const at::Tensor& rp, const at::Tensor& ci, const at::Tensor& cp,
                                     const at::Tensor& cr, const at::Tensor& pm, const at::Tensor& values,
                                     const at::Tensor& gx_, const at::Tensor& h_, const at::Tensor& c_,
                                     const at::Tensor& bhh_, double dt, double tau) {
  constexpr int NG = num_gates<M>();
  auto k = check_step(rp, ci, cp, cr, pm, values, h_, NG);
  const int64_t H = k.H, B = k.B;
  check_same(gx_, "gx", NG * H, k, values);
  auto gx = gx_.contiguous(), h = h_.contiguous(), v = values.contiguous();
  at::Tensor c, bhh;
  if (M == kLSTM) { check_same(c_, "c", H, k, values); c = c_.contiguous(); }
  if (M == kGRU && bhh_.defined()) {
    TORCH_CHECK_VALUE(bhh_.dim() == 1 && bhh_.numel() == 3 * H, "b_hh must be 1-D with 3*hidden entries");
    TORCH_CHECK_TYPE(bhh_.scalar_type() == values.scalar_type(), "b_hh must have the dtype of values");
    bhh = bhh_.contiguous();
  }
  auto h2 = at::empty({H, B}, h.options());
  auto c2 = M == kLSTM ? at::empty({H, B}, h.options()) : at::Tensor();
  const int64_t na = M == kLSTM || M == kGRU ? 4 : (M == kCT ? 1 : 0);
  auto acts = na ? at::empty({na * H, B}, h.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "rnn_step", [&] {
    step_forward<scalar_t, M>(k.w, v.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
                              ptr_or_null<scalar_t>(c), ptr_or_null<scalar_t>(bhh), h2.data_ptr<scalar_t>(),
                              ptr_or_null<scalar_t>(c2), ptr_or_null<scalar_t>(acts), H, B, dt, tau);
  });
  return {h2, c2, acts};
}

// Backward of one step. Returns {dG, dh_prev, dc_prev (LSTM), dgx (GRU)}.
template <int M>
std::vector<at::Tensor> backward_impl(const at::Tensor& rp, const at::Tensor& ci, const at::Tensor& cp,
                                      const at::Tensor& cr, const at::Tensor& pm, const at::Tensor& values,
                                      const at::Tensor& acts_, const at::Tensor& c_prev_, const at::Tensor& c_,
                                      const at::Tensor& h_, const at::Tensor& dh_, const at::Tensor& dc_,
                                      double dt, double tau) {
  constexpr int NG = num_gates<M>();
  auto k = check_step(rp, ci, cp, cr, pm, values, dh_, NG);
  const int64_t H = k.H, B = k.B;
  auto dh = dh_.contiguous(), v = values.contiguous();
  at::Tensor acts, c_prev, c, h, dc;
  if (M == kLSTM || M == kGRU) { check_same(acts_, "acts", 4 * H, k, values); acts = acts_.contiguous(); }
  if (M == kCT) { check_same(acts_, "acts", H, k, values); acts = acts_.contiguous(); }
  if (M == kLSTM) {
    check_same(c_prev_, "c_prev", H, k, values); check_same(c_, "c", H, k, values);
    check_same(dc_, "dc", H, k, values);
    c_prev = c_prev_.contiguous(); c = c_.contiguous(); dc = dc_.contiguous();
  }
  if (M != kLSTM && M != kCT) { check_same(h_, "h", H, k, values); h = h_.contiguous(); }
  auto opt = dh.options();
  auto dG = at::empty({NG * H, B}, opt);
  auto dgx = M == kGRU ? at::empty({3 * H, B}, opt) : at::Tensor();
  auto dc_prev = M == kLSTM ? at::empty({H, B}, opt) : at::Tensor();
  auto direct = M == kGRU || M == kCT ? at::empty({H, B}, opt) : at::Tensor();
  auto dh_prev = at::empty({H, B}, opt);
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "rnn_step_backward", [&] {
    const scalar_t* hp = M == kGRU ? h.data_ptr<scalar_t>() : nullptr;
    const scalar_t* hn = (M == kTANH || M == kRELU) ? h.data_ptr<scalar_t>() : nullptr;
    gates_backward<scalar_t, M>(ptr_or_null<scalar_t>(acts), ptr_or_null<scalar_t>(c_prev), ptr_or_null<scalar_t>(c),
                                hp, hn, dh.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(dc), dG.data_ptr<scalar_t>(),
                                ptr_or_null<scalar_t>(dgx), ptr_or_null<scalar_t>(dc_prev),
                                ptr_or_null<scalar_t>(direct), H, B, dt, tau);
    gather_t<scalar_t>(k.w, v.data_ptr<scalar_t>(), dG.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(direct),
                       dh_prev.data_ptr<scalar_t>(), H, B);
  });
  return {dG, dh_prev, dc_prev, dgx};
}

#define SE_INDEX const at::Tensor &rp, const at::Tensor &ci, const at::Tensor &cp, const at::Tensor &cr, \
                 const at::Tensor &pm, const at::Tensor &values
#define SE_ARGS rp, ci, cp, cr, pm, values

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_step(SE_INDEX, const at::Tensor& gx, const at::Tensor& h,
                                                         const at::Tensor& c) {
  auto r = forward_impl<kLSTM>(SE_ARGS, gx, h, c, at::Tensor(), 0.0, 1.0);
  return {r[0], r[1], r[2]};
}
std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_step_backward(SE_INDEX, const at::Tensor& acts,
                                                                  const at::Tensor& c_prev, const at::Tensor& c,
                                                                  const at::Tensor& dh, const at::Tensor& dc) {
  auto r = backward_impl<kLSTM>(SE_ARGS, acts, c_prev, c, at::Tensor(), dh, dc, 0.0, 1.0);
  return {r[0], r[1], r[2]};
}
std::tuple<at::Tensor, at::Tensor> gru_step(SE_INDEX, const at::Tensor& gx, const at::Tensor& h,
                                            const std::optional<at::Tensor>& b_hh) {
  auto r = forward_impl<kGRU>(SE_ARGS, gx, h, at::Tensor(), b_hh.has_value() ? *b_hh : at::Tensor(), 0.0, 1.0);
  return {r[0], r[2]};
}
std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_step_backward(SE_INDEX, const at::Tensor& acts,
                                                                 const at::Tensor& h_prev, const at::Tensor& dh) {
  auto r = backward_impl<kGRU>(SE_ARGS, acts, at::Tensor(), at::Tensor(), h_prev, dh, at::Tensor(), 0.0, 1.0);
  return {r[3], r[0], r[1]};  // (dgx, dgh, dh_prev)
}
at::Tensor rnn_step(SE_INDEX, const at::Tensor& gx, const at::Tensor& h, bool relu) {
  return relu ? forward_impl<kRELU>(SE_ARGS, gx, h, at::Tensor(), at::Tensor(), 0.0, 1.0)[0]
              : forward_impl<kTANH>(SE_ARGS, gx, h, at::Tensor(), at::Tensor(), 0.0, 1.0)[0];
}
std::tuple<at::Tensor, at::Tensor> rnn_step_backward(SE_INDEX, const at::Tensor& h_new, const at::Tensor& dh,
                                                     bool relu) {
  auto r = relu ? backward_impl<kRELU>(SE_ARGS, at::Tensor(), at::Tensor(), at::Tensor(), h_new, dh, at::Tensor(), 0, 1)
                : backward_impl<kTANH>(SE_ARGS, at::Tensor(), at::Tensor(), at::Tensor(), h_new, dh, at::Tensor(), 0, 1);
  return {r[0], r[1]};
}
std::tuple<at::Tensor, at::Tensor> ctrnn_step(SE_INDEX, const at::Tensor& gx, const at::Tensor& h, double dt,
                                              double tau) {
  auto r = forward_impl<kCT>(SE_ARGS, gx, h, at::Tensor(), at::Tensor(), dt, tau);
  return {r[0], r[2]};
}
std::tuple<at::Tensor, at::Tensor> ctrnn_step_backward(SE_INDEX, const at::Tensor& acts, const at::Tensor& dh,
                                                       double dt, double tau) {
  auto r = backward_impl<kCT>(SE_ARGS, acts, at::Tensor(), at::Tensor(), at::Tensor(), dh, at::Tensor(), dt, tau);
  return {r[0], r[1]};
}

}  // namespace

#define SE_IDX_SCHEMA "Tensor row_ptr, Tensor col_idx, Tensor csc_ptr, Tensor csc_row, Tensor csc_perm, Tensor values, "

TORCH_LIBRARY_FRAGMENT(sparse_engine, m) {
  // One recurrent step: W_hh h (+ gx) and the gate math fused; see the file header.
  m.def("lstm_step(" SE_IDX_SCHEMA "Tensor gx, Tensor h, Tensor c) -> (Tensor, Tensor, Tensor)");
  m.def("lstm_step_backward(" SE_IDX_SCHEMA "Tensor acts, Tensor c_prev, Tensor c, Tensor dh, Tensor dc)"
        " -> (Tensor, Tensor, Tensor)");
  m.def("gru_step(" SE_IDX_SCHEMA "Tensor gx, Tensor h, Tensor? b_hh) -> (Tensor, Tensor)");
  m.def("gru_step_backward(" SE_IDX_SCHEMA "Tensor acts, Tensor h_prev, Tensor dh) -> (Tensor, Tensor, Tensor)");
  m.def("rnn_step(" SE_IDX_SCHEMA "Tensor gx, Tensor h, bool relu) -> Tensor");
  m.def("rnn_step_backward(" SE_IDX_SCHEMA "Tensor h_new, Tensor dh, bool relu) -> (Tensor, Tensor)");
  m.def("ctrnn_step(" SE_IDX_SCHEMA "Tensor gx, Tensor h, float dt, float tau) -> (Tensor, Tensor)");
  m.def("ctrnn_step_backward(" SE_IDX_SCHEMA "Tensor acts, Tensor dh, float dt, float tau) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(sparse_engine, CPU, m) {
  m.impl("lstm_step", &lstm_step);
  m.impl("lstm_step_backward", &lstm_step_backward);
  m.impl("gru_step", &gru_step);
  m.impl("gru_step_backward", &gru_step_backward);
  m.impl("rnn_step", &rnn_step);
  m.impl("rnn_step_backward", &rnn_step_backward);
  m.impl("ctrnn_step", &ctrnn_step);
  m.impl("ctrnn_step_backward", &ctrnn_step_backward);
}

}  // namespace sparse_engine
