// CPU kernels of the whole-sequence recurrence operators (schemas in csrc/ops.cpp, arguments in
// csrc/rnn_sequence_ops.h): the fused step ops of the mode (rnn_step_cpu.cpp) in a loop over the
// steps, t = 0..T-1 (T-1..0 with reverse), each step's outputs copied into the sequence's. This is
// the ops' contract, which the persistent CUDA kernels (cuda/rnn_sequence_cuda.cu) implement in one
// launch: the same calls as the per-step recurrence (sparse_engine/recurrent/sequence.py) makes with
// the input part of all steps as one product, so on the CPU the two give the same bits.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <tuple>

#include "../index_check.h"
#include "../rnn_sequence_ops.h"

namespace sparse_engine {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// A step op of the library, found once by name and called through the dispatcher.
template <typename Signature>
auto step_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

#define SE_W const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&
using Tensor3 = std::tuple<Tensor, Tensor, Tensor>;
using Tensor2 = std::tuple<Tensor, Tensor>;

Tensor3 rnn_sequence_cpu(const Tensor& row_ptr, const Tensor& col_idx, const Tensor& csc_ptr, const Tensor& csc_row,
                         const Tensor& csc_perm, const Tensor& values, c10::string_view mode_name, const Tensor& gx,
                         const Tensor& h0, const OptTensor& c0, const OptTensor& b_hh, bool reverse) {
  static const auto lstm = step_op<Tensor3(SE_W, const Tensor&, const Tensor&, const Tensor&)>("sparse_engine::lstm_step");
  static const auto gru = step_op<Tensor2(SE_W, const Tensor&, const Tensor&, const OptTensor&)>("sparse_engine::gru_step");
  static const auto rnn = step_op<Tensor(SE_W, const Tensor&, const Tensor&, bool)>("sparse_engine::rnn_step");
  const StepWeight w{row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values};
  const SequenceSizes s = check_sequence_forward(w, mode_name, gx, h0, c0, b_hh, /*on_cuda=*/false);
  const int64_t H = s.H, B = s.B, T = s.T;
  // W_hh's CSR checked here too, not only by the first step (a run of no steps has none)
  cpu_checked_max_len({row_ptr, col_idx, nullptr, "row_ptr", "col_idx", nullptr}, H);
  const int saved = cell_saved_acts(s.mode);
  const auto options = h0.options();
  Tensor y = at::empty({T, H, B}, options);
  Tensor cs = s.mode == CellMode::LSTM ? at::empty({T, H, B}, options) : at::empty({0}, options);
  Tensor acts = saved ? at::empty({T, saved * H, B}, options) : at::empty({0}, options);
  const Tensor gx_c = gx.contiguous();  // step t reads its (G*H x B) block in place, rows T*B apart
  Tensor h = h0, c = s.mode == CellMode::LSTM ? *c0 : Tensor();
  for (int64_t k = 0; k < T; ++k) {
    const int64_t t = reverse ? T - 1 - k : k;
    const Tensor gx_t = gx_c.select(1, t);
    Tensor h_new;
    if (s.mode == CellMode::LSTM) {
      auto [h2, c2, a] = lstm.call(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, gx_t, h, c);
      cs[t].copy_(c2);
      acts[t].copy_(a);
      c = cs[t];
      h_new = h2;
    } else if (s.mode == CellMode::GRU) {
      auto [h2, a] = gru.call(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, gx_t, h, b_hh);
      acts[t].copy_(a);
      h_new = h2;
    } else {
      h_new = rnn.call(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, gx_t, h, s.mode == CellMode::RNN_RELU);
    }
    y[t].copy_(h_new);
    h = y[t];
  }
  return {y, cs, acts};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> rnn_sequence_backward_cpu(
    const Tensor& row_ptr, const Tensor& col_idx, const Tensor& csc_ptr, const Tensor& csc_row,
    const Tensor& csc_perm, const Tensor& values, c10::string_view mode_name, const Tensor& y, const Tensor& h0,
    const OptTensor& c0, const OptTensor& cs, const OptTensor& acts, const OptTensor& dy, const Tensor& dh,
    const OptTensor& dc, bool reverse, const OptTensor& values_t) {
  using Grad = std::tuple<Tensor, Tensor, Tensor>(SE_W, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                   const Tensor&, const OptTensor&, const OptTensor&, const OptTensor&);
  static const auto lstm = step_op<Grad>("sparse_engine::lstm_step_backward");
  static const auto gru = step_op<std::tuple<Tensor, Tensor, Tensor>(
      SE_W, const Tensor&, const Tensor&, const Tensor&, const OptTensor&, const OptTensor&, const OptTensor&)>(
      "sparse_engine::gru_step_backward");
  static const auto rnn = step_op<Tensor2(SE_W, const Tensor&, const Tensor&, bool, const OptTensor&, const OptTensor&,
                                          const OptTensor&)>("sparse_engine::rnn_step_backward");
  const StepWeight w{row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, values_t.value_or(Tensor())};
  const SequenceSizes s = check_sequence_backward(w, mode_name, y, h0, c0, cs, acts, dy, dh, dc, /*on_cuda=*/false);
  const int64_t H = s.H, B = s.B, T = s.T;
  const int G = cell_gates(s.mode);
  // the transposed index, checked before values[csc_perm] reads through it
  cpu_checked_max_len({csc_ptr, csc_row, &csc_perm, "csc_ptr", "csc_row", "csc_perm"}, G * H);
  const auto options = dh.options();
  Tensor dG = at::empty({G * H, T, B}, options);
  Tensor dgx = s.mode == CellMode::GRU ? at::empty({3 * H, T, B}, options) : at::empty({0}, options);
  // every step's W_hh^T dG reads the values in column order: gathered once (csrc/values_t.h)
  const OptTensor v_t = given(values_t) ? values_t : OptTensor(values.index_select(0, csc_perm));
  const OptTensor none;
  Tensor dh_run = dh, dc_run = s.mode == CellMode::LSTM ? *dc : Tensor();
  for (int64_t k = T - 1; k >= 0; --k) {
    const int64_t t = reverse ? T - 1 - k : k, tp = reverse ? t + 1 : t - 1;
    const Tensor d = given(dy) ? dh_run + (*dy)[t] : dh_run;
    Tensor g;
    if (s.mode == CellMode::LSTM) {
      const Tensor c_prev = k == 0 ? *c0 : (*cs)[tp];
      std::tie(g, dh_run, dc_run) = lstm.call(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, (*acts)[t], c_prev,
                                              (*cs)[t], d, dc_run, v_t, none, none);
    } else if (s.mode == CellMode::GRU) {
      const Tensor h_prev = k == 0 ? h0 : y[tp];
      Tensor g_x;
      std::tie(g_x, g, dh_run) =
          gru.call(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, (*acts)[t], h_prev, d, v_t, none, none);
      dgx.select(1, t).copy_(g_x);
    } else {
      std::tie(g, dh_run) = rnn.call(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, y[t], d,
                                     s.mode == CellMode::RNN_RELU, v_t, none, none);
    }
    dG.select(1, t).copy_(g);
  }
  return {dG, dgx, T > 0 ? dh_run : dh.clone(), s.mode == CellMode::LSTM ? (T > 0 ? dc_run : dc->clone())
                                                                        : at::empty({0}, options)};
}

#undef SE_W

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CPU, m) {
  m.impl("rnn_sequence", &rnn_sequence_cpu);
  m.impl("rnn_sequence_backward", &rnn_sequence_backward_cpu);
}

}  // namespace sparse_engine
