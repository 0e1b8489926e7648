// Fused recurrent steps (CPU): the recurrent sparse product W_hh h and the gate
// nonlinearities of one time step in one pass, and the matching backward (elementwise gate
// gradient, then W_hh^T dG through the transposed index, reading the values in column order
// from values_t when the caller passes it: ../values_t.h).
//
// W_hh stacks the gates of one layer in one CSR of G*H rows in torch's order (LSTM i,f,g,o;
// GRU r,z,n; RNN/CT-RNN one gate). For hidden unit j the kernel gathers rows j, H+j, ...
// into per-gate accumulators, adds the precomputed input part gx (which already holds the
// biases, except GRU's b_hh), and writes h', c' and the activations backward needs:
//   LSTM  acts = [i, f, g, o]              (4H x B)
//   GRU   acts = [r, z, n, W_hn h + b_hn]  (4H x B)
//   CTRNN acts = tanh(pre)                  (H x B)
//   RNN   nothing (h' itself is enough)
// All activations are feature-major (features x batch). Gates per mode, saved-activation rows
// and the mode ids come from csrc/constants.h. The CUDA kernels (csrc/cuda/rnn_step_cuda.cu,
// glue in csrc/cuda/rnn_step_glue.cpp) implement the same contract: one thread block per group
// of hidden units, the G row gathers of unit j in one block, so the gate math needs no second
// pass. The eight operators themselves are written once for both devices (csrc/rnn_step_ops.h);
// this file gives them the CPU's forward and backward (CpuStep).
#include <torch/library.h>
#include <cmath>
#include <cstring>
#include <type_traits>
#include "common.h"
#include "gather.h"
#include "sddmm_rows.h"
#include "vmath.h"
#include "../rnn_step_ops.h"

namespace sparse_engine {
namespace {

// (Below parallel_work() multiply-adds or elements a step runs on one thread: a parallel region
// costs more than it saves, and far more on a busy machine.)

// The raw index arrays of W_hh (contiguous).
struct IndexPtrs {
  const int64_t* row_ptr;
  const int32_t* col_idx;
  const int64_t* csc_ptr;
  const int32_t* csc_row;
  const int32_t* csc_perm;
};

template <typename scalar_t, CellMode M>
// hp: h padded to `stride` columns (gather.h), so each gate row is one pass with its
// accumulators in registers whatever B is; h itself is read for the gate math. pre: W_hh h
// computed beforehand ((gates*H) x B, the cache-tiled gathers of a large h: tiling.h,
// gather_panels), or nullptr: each block's rows gathered here.
void step_forward(IndexPtrs w, const scalar_t* values, const scalar_t* gx, int64_t gx_ld, const scalar_t* h,
                  const scalar_t* hp,
                  int64_t stride, const scalar_t* c, const scalar_t* b_hh, scalar_t* h_new, scalar_t* c_new,
                  scalar_t* acts, int64_t H, int64_t B, double dt, double tau, const scalar_t* pre = nullptr) {
  constexpr int gates = cell_gates(M);
  constexpr int64_t kBlock = max_block<scalar_t>();  // batch columns per register block
  const scalar_t decay = scalar_t(1 - dt / tau), sdt = scalar_t(dt);
  const int64_t nnz = w.row_ptr[gates * H];
  const bool parallel = (nnz + gates * H) * B >= parallel_work();
  // Hidden units in blocks of kUnits: each gate's rows of a block are consecutive in the CSR, so
  // the row gathers' prefetch runs ahead across rows (one unit at a time it fetched the wrong
  // row's entries at every row end: the step ran at half spmm's speed, measured at 4,096 / 1%).
  constexpr int64_t kUnits = 16;
  const int64_t blocks = (H + kUnits - 1) / kUnits;
  // prefetch the gathered rows of h only where h is larger than L2 holds (gather.h)
  const bool fetch = H * stride * static_cast<int64_t>(sizeof(scalar_t)) >= kPrefetchFromBytes;
  parallel_chunks(blocks, parallel, [&](int64_t blk) {
   const int64_t j0 = blk * kUnits, units = std::min(kUnits, H - j0);
   // Per gate, the block's sums unit after unit, `width` columns each (no padding lanes between
   // units), so each transcendental function runs once per gate over exactly units x width
   // values: with rows padded to kBlock it computed 60% more values at B = 20 than it kept, and
   // the fused forward was slower than spmm + torch's elementwise ops. kBlock of slack: a
   // unit's sums are written at their padded width and the next unit's overwrite the excess.
   scalar_t sums[gates][kUnits * kBlock + kBlock];
   {  // The block's rows of gx and c (h for GRU and CT-RNN), read after the products: fetched
      // now, while the gathers run (at hidden 16,384 they come from memory, and the gate math
      // stalled on them for as long as the products took)
     const int64_t row = B * static_cast<int64_t>(sizeof(scalar_t));
     auto fetch = [&](const scalar_t* p, int64_t ld) {  // units rows of B values, ld apart
       for (int64_t u = 0; u < units; ++u) {
         const char* a = reinterpret_cast<const char*>(p + (j0 + u) * ld);
         for (int64_t line = 0; line < row; line += 64) __builtin_prefetch(a + line);
       }
     };
     for (int q = 0; q < gates; ++q) fetch(gx + q * H * gx_ld, gx_ld);
     if constexpr (M == CellMode::LSTM) fetch(c, B);
     if constexpr (M == CellMode::GRU || M == CellMode::CTRNN) fetch(h, B);
   }
   for (int64_t b0 = 0; b0 < B; b0 += kBlock) {
    const int64_t width = std::min(kBlock, B - b0), n = units * width;
    for (int q = 0; q < gates; ++q)
      for (int64_t u = 0; u < units; ++u) {
        const int64_t row = q * H + j0 + u, k0 = w.row_ptr[row], k1 = w.row_ptr[row + 1];
        if (pre != nullptr)
          std::memcpy(&sums[q][u * width], pre + row * B + b0, width * sizeof(scalar_t));
        else if (fetch)
          accumulate_at<scalar_t, true>(k0, k1, w.col_idx, values, 0, hp, stride, b0, &sums[q][u * width], nnz);
        else
          accumulate_at<scalar_t, false>(k0, k1, w.col_idx, values, 0, hp, stride, b0, &sums[q][u * width], nnz);
      }
    const int64_t HB = H * B, HL = H * gx_ld;
    // e: a value's place in the block (unit u, column b), o: in an (H x B) array, x: in gx's
    // first gate block (gate q: x + q * HL)
    auto each = [&](auto fn) {
      for (int64_t u = 0; u < units; ++u) {
        const int64_t o = (j0 + u) * B + b0, x = (j0 + u) * gx_ld + b0;
#pragma omp simd
        for (int64_t b = 0; b < width; ++b) fn(u * width + b, o + b, x + b, j0 + u);
      }
    };
    if constexpr (M != CellMode::GRU) {
      for (int q = 0; q < gates; ++q)
        each([&](int64_t e, int64_t, int64_t x, int64_t) { sums[q][e] += gx[q * HL + x]; });
    }
    if constexpr (M == CellMode::LSTM) {
      vsigmoid(sums[0], n); vsigmoid(sums[1], n); vtanh(sums[2], n); vsigmoid(sums[3], n);
      scalar_t tc[kUnits * kBlock];
      each([&](int64_t e, int64_t o, int64_t, int64_t) {
        const scalar_t cn = sums[1][e] * c[o] + sums[0][e] * sums[2][e];
        c_new[o] = cn;
        tc[e] = cn;
      });
      vtanh(tc, n);
      each([&](int64_t e, int64_t o, int64_t, int64_t) {
        h_new[o] = sums[3][e] * tc[e];
        for (int q = 0; q < 4; ++q) acts[q * HB + o] = sums[q][e];
      });
    } else if constexpr (M == CellMode::GRU) {
      scalar_t ghn[kUnits * kBlock];
      each([&](int64_t e, int64_t, int64_t x, int64_t j) {
        for (int q = 0; q < 3; ++q) sums[q][e] += b_hh ? b_hh[q * H + j] : scalar_t(0);
        ghn[e] = sums[2][e];
        sums[0][e] += gx[x];
        sums[1][e] += gx[HL + x];
      });
      vsigmoid(sums[0], n); vsigmoid(sums[1], n);
      each([&](int64_t e, int64_t, int64_t x, int64_t) { sums[2][e] = gx[2 * HL + x] + sums[0][e] * ghn[e]; });
      vtanh(sums[2], n);
      each([&](int64_t e, int64_t o, int64_t, int64_t) {
        const scalar_t nn = sums[2][e], z = sums[1][e];
        h_new[o] = nn + z * (h[o] - nn);
        acts[o] = sums[0][e]; acts[HB + o] = z; acts[2 * HB + o] = nn; acts[3 * HB + o] = ghn[e];
      });
    } else {
      if constexpr (M != CellMode::RNN_RELU) vtanh(sums[0], n);
      each([&](int64_t e, int64_t o, int64_t, int64_t) {
        const scalar_t a = sums[0][e];
        if constexpr (M == CellMode::RNN_TANH) {
          h_new[o] = a;
        } else if constexpr (M == CellMode::RNN_RELU) {
          h_new[o] = a > 0 ? a : scalar_t(0);
        } else {  // CT-RNN Euler step
          acts[o] = a;
          h_new[o] = decay * h[o] + sdt * a;
        }
      });
    }
   }
  });
}

// Elementwise gate gradient of one step: dG (G*H x B, the hidden-side pre-activation
// gradient), plus dgx (GRU's input side), dc_prev (LSTM) and the direct part of dh_prev
// (GRU: dh*z, CT-RNN: dh*(1-dt/tau)).
template <typename scalar_t, CellMode M>
void gates_backward(const scalar_t* acts, const scalar_t* c_prev, const scalar_t* c, const scalar_t* h_prev,
                    const scalar_t* h_new, const scalar_t* dh, const scalar_t* dc, scalar_t* dG, scalar_t* dgx,
                    scalar_t* dc_prev, scalar_t* direct, int64_t H, int64_t B, double dt, double tau) {
  const int64_t HB = H * B;
  const scalar_t decay = scalar_t(1 - dt / tau), sdt = scalar_t(dt);
  constexpr int64_t kChunk = 256;
  const int64_t nchunks = (HB + kChunk - 1) / kChunk;
  parallel_ranges(nchunks, HB * 4 >= parallel_work(), [&](int64_t ch0, int64_t ch1) {
  for (int64_t ch = ch0; ch < ch1; ++ch) {
   const int64_t e0 = ch * kChunk, e1 = std::min(HB, e0 + kChunk);
   scalar_t tcs[kChunk];
   if constexpr (M == CellMode::LSTM) {
     for (int64_t e = e0; e < e1; ++e) tcs[e - e0] = c[e];
     vtanh(tcs, e1 - e0);
   }
   for (int64_t e = e0; e < e1; ++e) {
    if constexpr (M == CellMode::LSTM) {
      const scalar_t i = acts[e], f = acts[HB + e], g = acts[2 * HB + e], o = acts[3 * HB + e];
      const scalar_t tc = tcs[e - e0];
      const scalar_t dct = dc[e] + dh[e] * o * (1 - tc * tc);
      dG[e] = dct * g * i * (1 - i);
      dG[HB + e] = dct * c_prev[e] * f * (1 - f);
      dG[2 * HB + e] = dct * i * (1 - g * g);
      dG[3 * HB + e] = dh[e] * tc * o * (1 - o);
      dc_prev[e] = dct * f;
    } else if constexpr (M == CellMode::GRU) {
      const scalar_t r = acts[e], z = acts[HB + e], n = acts[2 * HB + e], ghn = acts[3 * HB + e];
      const scalar_t dn = dh[e] * (1 - z) * (1 - n * n);
      const scalar_t dr = dn * ghn * r * (1 - r);
      const scalar_t dz = dh[e] * (h_prev[e] - n) * z * (1 - z);
      dgx[e] = dr; dgx[HB + e] = dz; dgx[2 * HB + e] = dn;
      dG[e] = dr; dG[HB + e] = dz; dG[2 * HB + e] = dn * r;
      direct[e] = dh[e] * z;
    } else if constexpr (M == CellMode::RNN_TANH) {
      dG[e] = dh[e] * (1 - h_new[e] * h_new[e]);
    } else if constexpr (M == CellMode::RNN_RELU) {
      dG[e] = h_new[e] > 0 ? dh[e] : scalar_t(0);
    } else {
      const scalar_t a = acts[e];
      dG[e] = dh[e] * sdt * (1 - a * a);
      direct[e] = dh[e] * decay;
    }
   }
  }
  });
}

// dh_prev[j] = direct[j] + sum_k v_k dG[r_k] over column j of W_hh (row j of the transposed
// index, entries k at rows r_k), by gather_rows' own row loop (the same bits as without the
// weight gradient), and right after it, while those rows of dG are still in L1, dw_t[k] +=
// dot(dG[r_k], h_in[j]): W_hh's gradient from the rows W_hh^T dG gathered, which sddmm would
// gather again from memory (h's rows, at random) in a pass of its own (at hidden 10^6, B = 20:
// 128M rows of 80 bytes a step). float32 on AVX2 takes sddmm's row kernel (sddmm_rows.h: groups of
// 8 entries, one transposing reduction for the 8), whose products and sums are those of sddmm's
// dot(G[r_k], X[j]) in the same order: the fused gradient is sddmm's, bit for bit (at the same
// speed: docs/cpu_kernels.md, "Fused recurrent steps"). Otherwise the dot products in blocks of L
// lanes, the last masked to B, each block's lanes summed in order. Fixed, whatever the threads.
// src: dG, rows of `ld`.
template <typename S>
void add_row_dots(int64_t k0, int64_t k1, const int32_t* idx, const S* src, int64_t ld, const S* x, int64_t B,
                  int64_t nnz, S* dw) {
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (std::is_same_v<S, float>) {
    if (B > 1) {
      sddmm_row(x, src, ld, B, idx, k0, k1, nnz, B * static_cast<int64_t>(sizeof(S)), false, true, dw, nullptr);
      return;
    }
  }
#endif
  constexpr int L = vec_lanes<S>();
  using V = vec_t<S>;
  const int64_t b_last = B / L * L;  // x's last vector, once for the row (load_first_cold: its first touch)
  const V x_last = b_last < B ? load_first_cold(x + b_last, static_cast<int>(B - b_last)) : V{};
  for (int64_t k = k0; k < k1; ++k) {
    const S* g = src + static_cast<int64_t>(idx[k]) * ld;
    V dot{};
    int64_t b = 0;
    for (; b + L <= B; b += L) dot += load_vec(g + b) * load_vec(x + b);
    if (b < B) dot += load_first(g + b, static_cast<int>(B - b)) * x_last;
    S d = 0;
    for (int l = 0; l < L; ++l) d += dot[l];
    dw[k] += d;
  }
}

template <typename S>
void gather_rows_wgrad(const int64_t* ptr, const int32_t* idx, const S* vals, const int32_t* perm, const S* src,
                       int64_t src_rows, int64_t stride, int64_t ld, const S* direct, S* out, int64_t n, int64_t B,
                       const S* x, S* dw) {
  constexpr int M = wide_block<S>(), P = pad_unit<S>();
  const int64_t chunks = num_chunks(n);
  const auto bounds = balanced_bounds(ptr, n, chunks);
  const int64_t nnz = ptr[n];
  const bool parallel = (nnz + n) * B >= parallel_work();
  const bool fetch = src_rows * stride * static_cast<int64_t>(sizeof(S)) >= kPrefetchFromBytes;
  const auto rows = stride == 1 ? nullptr : row_range<S, M>(static_cast<int>((stride % M) / P), fetch);
  parallel_chunks(chunks, parallel, [&](int64_t c) {
    std::vector<S> row_vals;
    if (perm != nullptr) {
      int64_t longest = 0;
      for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) longest = std::max(longest, ptr[i + 1] - ptr[i]);
      row_vals.resize(longest);
    }
    for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
      if (stride == 1)
        gather_dot_range<S>(ptr, idx, vals, perm, src, direct, out, i, i + 1, nnz, row_vals);
      else
        rows(ptr, idx, vals, perm, src, stride, ld, direct, out, i, i + 1, B, nnz, row_vals, nullptr);
      add_row_dots<S>(ptr[i], ptr[i + 1], idx, src, ld, x + i * B, B, nnz, dw);
    }
  });
}

// W_hh checked and made contiguous for the kernels: H, the batch, and the raw index arrays
// (valid while `kept` lives).
struct CheckedWeight {
  int64_t H, B;
  IndexPtrs index;
  std::vector<at::Tensor> kept;
};

// The CPU ops name the state operand "h" in forward and backward alike.
CheckedWeight check_weight(const StepWeight& w, const at::Tensor& state, const char* state_name, int gates) {
  const IndexSizes s = check_step_weight(w, state, state_name, gates, /*on_cuda=*/false);
  CheckedWeight out{s.cols, state.size(1), {}, {w.row_ptr.contiguous(), w.col_idx.contiguous(),
                                                w.csc_ptr.contiguous(), w.csc_row.contiguous(),
                                                w.csc_perm.contiguous()}};
  out.index = {out.kept[0].data_ptr<int64_t>(), out.kept[1].data_ptr<int32_t>(), out.kept[2].data_ptr<int64_t>(),
               out.kept[3].data_ptr<int32_t>(), out.kept[4].data_ptr<int32_t>()};
  return out;
}

// The CPU device of the step ops (csrc/rnn_step_ops.h). Locals ending in _c are contiguous copies.
struct CpuStep {
  template <CellMode M>
  static StepOutputs forward(const StepWeight& w, const at::Tensor& gx, const at::Tensor& h, const at::Tensor& c,
                             const at::Tensor& b_hh, double dt, double tau) {
    constexpr int gates = cell_gates(M), saved = cell_saved_acts(M);
    const CheckedWeight k = check_weight(w, h, "h", gates);
    const int64_t H = k.H, B = k.B;
    // W_hh's CSR, gathered through by the gate rows (columns in [0, H)): checked once per pattern
    cpu_checked_max_len({w.row_ptr, w.col_idx, nullptr, "row_ptr", "col_idx", nullptr}, H);
    const StepInputs in = check_step_inputs<M>(gx, c, b_hh, H, B, w.values, /*strided_gx=*/true);
    auto h_c = h.contiguous(), values_c = w.values.contiguous();
    auto h_new = at::empty({H, B}, h_c.options());
    auto c_new = M == CellMode::LSTM ? at::empty({H, B}, h_c.options()) : at::Tensor();
    auto acts = saved ? at::empty({saved * H, B}, h_c.options()) : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES(w.values.scalar_type(), "rnn_step", [&] {
      const int64_t stride = padded_stride<scalar_t>(B);
      auto h_p = padded_batch(h_c, stride);
      at::Tensor pre;  // a large h the pattern tiles (tiling.h): W_hh h by the tiled gathers first, then the gate math
      if (const int64_t panels = gather_panels<scalar_t>(H, stride, B, k.index.row_ptr, k.index.col_idx, gates * H);
          panels > 1) {  // sampled once: gather_rows takes these panels
        pre = at::empty({gates * H, B}, h_c.options());
        gather_rows<scalar_t>(k.index.row_ptr, k.index.col_idx, values_c.data_ptr<scalar_t>(), nullptr,
                              h_p.data_ptr<scalar_t>(), H, stride, nullptr, pre.data_ptr<scalar_t>(), gates * H, B,
                              /*ld=*/-1, panels);
      }
      step_forward<scalar_t, M>(k.index, values_c.data_ptr<scalar_t>(), in.gx.data_ptr<scalar_t>(), in.gx_ld,
                                h_c.data_ptr<scalar_t>(), h_p.data_ptr<scalar_t>(), stride,
                                data_or_null<scalar_t>(in.c), data_or_null<scalar_t>(in.b_hh),
                                h_new.data_ptr<scalar_t>(), data_or_null<scalar_t>(c_new),
                                data_or_null<scalar_t>(acts), H, B, dt, tau, data_or_null<scalar_t>(pre));
    });
    return {h_new, c_new, acts};
  }

  template <CellMode M>
  static StepGrads backward(const StepWeight& w, const at::Tensor& acts, const at::Tensor& c_prev,
                            const at::Tensor& c, const at::Tensor& h, const at::Tensor& dh, const at::Tensor& dc,
                            double dt, double tau, const WeightGrad& g = {}) {
    constexpr int gates = cell_gates(M);
    const CheckedWeight k = check_weight(w, dh, "dh", gates);
    const int64_t H = k.H, B = k.B;
    // the transposed index, gathered through for W_hh^T dG (rows in [0, gates*H)): once per pattern
    cpu_checked_max_len({w.csc_ptr, w.csc_row, &w.csc_perm, "csc_ptr", "csc_row", "csc_perm"}, gates * H);
    auto dh_c = dh.contiguous();
    const at::Tensor values_t_c = check_values_t(w.values_t, w.values);  // checked: contiguous
    const at::Tensor values_c = values_t_c.defined() ? at::Tensor() : w.values.contiguous();
    const StepSaved in = check_step_saved<M>(acts, c_prev, c, h, dc, H, B, w.values);
    auto options = dh_c.options();
    auto dG = at::empty({gates * H, B}, options);
    auto dgx = M == CellMode::GRU ? at::empty({3 * H, B}, options) : at::Tensor();
    auto dc_prev = M == CellMode::LSTM ? at::empty({H, B}, options) : at::Tensor();
    auto direct = M == CellMode::GRU || M == CellMode::CTRNN ? at::empty({H, B}, options) : at::Tensor();
    auto dh_prev = at::empty({H, B}, options);
    AT_DISPATCH_FLOATING_TYPES(w.values.scalar_type(), "rnn_step_backward", [&] {
      const scalar_t* h_prev = M == CellMode::GRU ? in.h.data_ptr<scalar_t>() : nullptr;
      const scalar_t* h_new =
          (M == CellMode::RNN_TANH || M == CellMode::RNN_RELU) ? in.h.data_ptr<scalar_t>() : nullptr;
      gates_backward<scalar_t, M>(data_or_null<scalar_t>(in.acts), data_or_null<scalar_t>(in.c_prev),
                                  data_or_null<scalar_t>(in.c), h_prev, h_new, dh_c.data_ptr<scalar_t>(),
                                  data_or_null<scalar_t>(in.dc), dG.data_ptr<scalar_t>(), data_or_null<scalar_t>(dgx),
                                  data_or_null<scalar_t>(dc_prev), data_or_null<scalar_t>(direct), H, B, dt, tau);
      // dh_prev = direct + W_hh^T dG, through the transposed index (gather.h): reading values_t
      // (the values in column order) where the caller made it, else values[csc_perm[k]]
      // dG read as it is (masked loads for its rows' last vector) where its rows are gathered
      // few times each, as spmm_t reads G (gather.h, gather_source): no padded copy (at hidden
      // 10^6, B = 20: 384 MB and a pass over it each step)
      const int64_t stride = padded_stride<scalar_t>(B);
      const auto [dG_p, ld] = gather_source<scalar_t>(dG, stride, k.index.csc_ptr[H]);
      const bool by_column = w.values_t.defined();
      const scalar_t* vals = by_column ? values_t_c.data_ptr<scalar_t>() : values_c.data_ptr<scalar_t>();
      if (g.dw_t.defined())  // and W_hh's gradient, from the same gathered rows of dG
        gather_rows_wgrad<scalar_t>(k.index.csc_ptr, k.index.csc_row, vals, by_column ? nullptr : k.index.csc_perm,
                                    dG_p.data_ptr<scalar_t>(), gates * H, stride, ld, data_or_null<scalar_t>(direct),
                                    dh_prev.data_ptr<scalar_t>(), H, B, g.h_in.data_ptr<scalar_t>(),
                                    g.dw_t.data_ptr<scalar_t>());
      else
        gather_rows<scalar_t>(k.index.csc_ptr, k.index.csc_row, vals, by_column ? nullptr : k.index.csc_perm,
                              dG_p.data_ptr<scalar_t>(), gates * H, stride, data_or_null<scalar_t>(direct),
                              dh_prev.data_ptr<scalar_t>(), H, B, ld);
    });
    return {dG, dh_prev, dc_prev, dgx};
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CPU, m) {
  register_rnn_step_ops<CpuStep>(m);
}

}  // namespace sparse_engine
