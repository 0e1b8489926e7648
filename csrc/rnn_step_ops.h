// The fused recurrent step operators (lstm_step ... ctrnn_step_backward; schemas in
// csrc/ops.cpp, contract in csrc/cpu/rnn_step_cpu.cpp's header comment), written once for
// every device. Each op is one call of its device's forward or backward with a cell mode; a
// device is a class with
//   template <CellMode M> static StepOutputs forward(const StepWeight& w, const at::Tensor& gx,
//       const at::Tensor& h, const at::Tensor& c, const at::Tensor& b_hh, double dt, double tau);
//   template <CellMode M> static StepGrads backward(const StepWeight& w, const at::Tensor& acts,
//       const at::Tensor& c_prev, const at::Tensor& c, const at::Tensor& h, const at::Tensor& dh,
//       const at::Tensor& dc, double dt, double tau, const WeightGrad& g);
// (a tensor the mode does not use is passed undefined; h in backward is GRU's h_prev and the
// RNN's h_new), and register_rnn_step_ops<Device>(m) registers the eight ops for a dispatch
// key: cpu/rnn_step_cpu.cpp (CPU), cuda/rnn_step_glue.cpp (CUDA).
//
// The backward ops' optional weight gradient (g: h_in, dw_t; dw_t += dG h_in^T at the nonzeros,
// in the transposed index's order) is the device's to add, with no nnz-long temporaries: the
// CPU in its W_hh^T dG pass, CUDA with an accumulating sddmm on the transposed index.
#pragma once

#include <cmath>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "checks.h"
#include "constants.h"
#include "values_t.h"

namespace sparse_engine {

// W_hh (G*H x H: the G gates of the mode stacked in one CSR) as every step op takes it: its
// index (CSR + transposed) and values; the backward ops also take values_t (values[csc_perm],
// values_t.h) when the caller made it: undefined otherwise, and always in a forward.
struct StepWeight {
  const at::Tensor& row_ptr;
  const at::Tensor& col_idx;
  const at::Tensor& csc_ptr;
  const at::Tensor& csc_row;
  const at::Tensor& csc_perm;
  const at::Tensor& values;
  at::Tensor values_t = {};
};

struct StepOutputs {
  at::Tensor h_new;
  at::Tensor c_new;  // LSTM
  at::Tensor acts;   // the saved activations (cell_saved_acts(mode) * H rows); LSTM, GRU, CT-RNN
};

struct StepGrads {
  at::Tensor dG;       // hidden-side pre-activation gradient (G*H x B)
  at::Tensor dh_prev;
  at::Tensor dc_prev;  // LSTM
  at::Tensor dgx;      // GRU: input-side gradient (3H x B)
};

// The weight gradient a backward op adds to (undefined: none asked for): dw_t (nnz, contiguous,
// in the transposed index's order) += dG h_in^T at W_hh's nonzeros, h_in (H x B) the state the
// step's forward multiplied by W_hh.
struct WeightGrad {
  at::Tensor h_in, dw_t;
};

// h_in and dw_t checked (both or neither; h_in like the state operand, dw_t one contiguous entry
// per nonzero in the values' dtype and device); h_in made contiguous.
inline WeightGrad check_weight_grad(const std::optional<at::Tensor>& h_in, const std::optional<at::Tensor>& dw_t,
                                    const at::Tensor& values, const at::Tensor& dh) {
  const bool has_h = h_in.has_value() && h_in->defined(), has_dw = dw_t.has_value() && dw_t->defined();
  TORCH_CHECK_VALUE(has_h == has_dw, "h_in and dw_t go together: give both (the weight gradient) or neither");
  if (!has_h) return {};
  TORCH_CHECK_VALUE(dh.dim() == 2, "dh must be 2-D (hidden x batch), got shape ", dh.sizes());
  check_batch_operand(*h_in, "h_in", dh.size(0), dh.size(1), values);
  TORCH_CHECK_VALUE(dw_t->dim() == 1 && dw_t->numel() == values.numel(), "dw_t must be 1-D with one entry per "
                    "nonzero (", values.numel(), "), got shape ", dw_t->sizes());
  TORCH_CHECK_TYPE(dw_t->scalar_type() == values.scalar_type(), "dw_t must have the dtype of values (",
                   values.scalar_type(), "), got ", dw_t->scalar_type());
  check_device(*dw_t, "dw_t", values.device());
  TORCH_CHECK_VALUE(dw_t->is_contiguous(), "dw_t must be contiguous (it is added to in place)");
  return {h_in->contiguous(), *dw_t};
}

// The data of an optional operand or output (undefined for the mode: nullptr), for the kernels.
template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// W_hh of a step: gates * H rows and H columns, float32/float64 values, and the state operand
// `state_name` (H x B) like the values. on_cuda: the index on the values' (CUDA) device and
// int32-sized; else the values on the CPU.
inline IndexSizes check_step_weight(const StepWeight& w, const at::Tensor& state, const char* state_name, int gates,
                                    bool on_cuda) {
  const IndexSizes s = check_index(w.row_ptr, w.col_idx, w.csc_ptr, w.csc_row, w.csc_perm);
  check_values(w.values, s.nnz);
  check_values_t(w.values_t, w.values);
  if (on_cuda) check_index_device(w.row_ptr, w.col_idx, w.csc_ptr, w.csc_row, w.csc_perm, w.values.device());
  TORCH_CHECK_VALUE(s.rows == gates * s.cols, "W_hh must have ", gates, " * hidden rows (", gates, " x ", s.cols,
                    "), got ", s.rows);
  if (on_cuda)
    check_int32_size(s.rows, "W_hh's row count");
  else
    TORCH_CHECK_VALUE(w.values.device().is_cpu(), "values must be on the CPU");
  check_dense(state, state_name, s.cols, w.values.scalar_type(), w.values.device());
  return s;
}

// A step's dense operands besides W_hh and the state, checked like the state (dtype and device
// of the values, their rows, B columns) and made contiguous; undefined where the mode takes none.
// Both devices call these, so the checks and their messages are the same on each.
// gx_ld: the distance between gx's rows; B (contiguous) unless the device reads a row-strided gx
// (strided_gx: the CPU kernel, so a column block of the input part of all steps, as the
// recurrence computes it for short runs, is read where it is, not copied per step).
struct StepInputs {
  at::Tensor gx, c, b_hh;  // c: LSTM; b_hh: GRU, optional
  int64_t gx_ld = 0;
};

template <CellMode M>
StepInputs check_step_inputs(const at::Tensor& gx, const at::Tensor& c, const at::Tensor& b_hh, int64_t H,
                             int64_t B, const at::Tensor& values, bool strided_gx = false) {
  StepInputs in;
  check_batch_operand(gx, "gx", cell_gates(M) * H, B, values);
  const bool rows_ok = (B <= 1 || gx.stride(1) == 1) && gx.stride(0) >= B && gx.storage_offset() >= 0;
  in.gx = strided_gx && rows_ok ? gx : gx.contiguous();
  in.gx_ld = in.gx.size(0) <= 1 ? B : in.gx.stride(0);
  if constexpr (M == CellMode::LSTM) {
    check_batch_operand(c, "c", H, B, values);
    in.c = c.contiguous();
  }
  if (M == CellMode::GRU && b_hh.defined()) {
    TORCH_CHECK_VALUE(b_hh.dim() == 1 && b_hh.numel() == 3 * H, "b_hh must be 1-D with 3*hidden=", 3 * H,
                      " entries, got shape ", b_hh.sizes());
    TORCH_CHECK_TYPE(b_hh.scalar_type() == values.scalar_type(), "b_hh must have the dtype of values (",
                     values.scalar_type(), "), got ", b_hh.scalar_type());
    check_device(b_hh, "b_hh", values.device());
    in.b_hh = b_hh.contiguous();
  }
  return in;
}

// What a step's backward reads of its forward, besides dh: the saved activations, LSTM's c_prev,
// c and dc, GRU's h_prev or the RNN's h_new (as ``h``).
struct StepSaved {
  at::Tensor acts, c_prev, c, h, dc;
};

template <CellMode M>
StepSaved check_step_saved(const at::Tensor& acts, const at::Tensor& c_prev, const at::Tensor& c,
                           const at::Tensor& h, const at::Tensor& dc, int64_t H, int64_t B,
                           const at::Tensor& values) {
  StepSaved in;
  auto take = [&](const at::Tensor& t, const char* name, int64_t rows) {
    check_batch_operand(t, name, rows, B, values);
    return t.contiguous();
  };
  if constexpr (cell_saved_acts(M) > 0) in.acts = take(acts, "acts", cell_saved_acts(M) * H);
  if constexpr (M == CellMode::LSTM) {
    in.c_prev = take(c_prev, "c_prev", H);
    in.c = take(c, "c", H);
    in.dc = take(dc, "dc", H);
  }
  if constexpr (M == CellMode::GRU) in.h = take(h, "h_prev", H);
  if constexpr (M == CellMode::RNN_TANH || M == CellMode::RNN_RELU) in.h = take(h, "h_new", H);
  return in;
}

// The eight operators on Device, in the schemas' argument and result order.
template <typename Device>
struct RnnStepOps {
#define SE_STEP_WEIGHT_ARGS                                                                                 \
  const at::Tensor &row_ptr, const at::Tensor &col_idx, const at::Tensor &csc_ptr, const at::Tensor &csc_row, \
      const at::Tensor &csc_perm, const at::Tensor &values
#define SE_STEP_WEIGHT StepWeight{row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values}
#define SE_STEP_WEIGHT_T \
  StepWeight{row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, values_t.value_or(at::Tensor())}
#define SE_VALUES_T                                                                                    \
  const std::optional<at::Tensor>&values_t, const std::optional<at::Tensor>&h_in, \
      const std::optional<at::Tensor>&dw_t
#define SE_GRAD check_weight_grad(h_in, dw_t, values, dh)

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_step(SE_STEP_WEIGHT_ARGS, const at::Tensor& gx,
                                                                  const at::Tensor& h, const at::Tensor& c) {
    const StepOutputs r = Device::template forward<CellMode::LSTM>(SE_STEP_WEIGHT, gx, h, c, {}, 0.0, 1.0);
    return {r.h_new, r.c_new, r.acts};
  }
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_step_backward(
      SE_STEP_WEIGHT_ARGS, const at::Tensor& acts, const at::Tensor& c_prev, const at::Tensor& c,
      const at::Tensor& dh, const at::Tensor& dc, SE_VALUES_T) {
    const StepGrads r = Device::template backward<CellMode::LSTM>(SE_STEP_WEIGHT_T, acts, c_prev, c, {}, dh, dc, 0.0,
                                                                  1.0, SE_GRAD);
    return {r.dG, r.dh_prev, r.dc_prev};
  }
  static std::tuple<at::Tensor, at::Tensor> gru_step(SE_STEP_WEIGHT_ARGS, const at::Tensor& gx, const at::Tensor& h,
                                                     const std::optional<at::Tensor>& b_hh) {
    const StepOutputs r =
        Device::template forward<CellMode::GRU>(SE_STEP_WEIGHT, gx, h, {}, b_hh.value_or(at::Tensor()), 0.0, 1.0);
    return {r.h_new, r.acts};
  }
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_step_backward(SE_STEP_WEIGHT_ARGS, const at::Tensor& acts,
                                                                          const at::Tensor& h_prev,
                                                                          const at::Tensor& dh, SE_VALUES_T) {
    const StepGrads r = Device::template backward<CellMode::GRU>(SE_STEP_WEIGHT_T, acts, {}, {}, h_prev, dh, {}, 0.0,
                                                                 1.0, SE_GRAD);
    return {r.dgx, r.dG, r.dh_prev};
  }
  static at::Tensor rnn_step(SE_STEP_WEIGHT_ARGS, const at::Tensor& gx, const at::Tensor& h, bool relu) {
    return relu ? Device::template forward<CellMode::RNN_RELU>(SE_STEP_WEIGHT, gx, h, {}, {}, 0.0, 1.0).h_new
                : Device::template forward<CellMode::RNN_TANH>(SE_STEP_WEIGHT, gx, h, {}, {}, 0.0, 1.0).h_new;
  }
  static std::tuple<at::Tensor, at::Tensor> rnn_step_backward(SE_STEP_WEIGHT_ARGS, const at::Tensor& h_new,
                                                              const at::Tensor& dh, bool relu, SE_VALUES_T) {
    const WeightGrad g = SE_GRAD;
    const StepGrads r =
        relu ? Device::template backward<CellMode::RNN_RELU>(SE_STEP_WEIGHT_T, {}, {}, {}, h_new, dh, {}, 0.0, 1.0, g)
             : Device::template backward<CellMode::RNN_TANH>(SE_STEP_WEIGHT_T, {}, {}, {}, h_new, dh, {}, 0.0, 1.0, g);
    return {r.dG, r.dh_prev};
  }
  static void check_ct(double dt, double tau) {
    TORCH_CHECK_VALUE(std::isfinite(dt) && dt > 0 && std::isfinite(tau) && tau > 0,
                      "dt and tau must be finite numbers > 0, got dt=", dt, ", tau=", tau);
  }
  static std::tuple<at::Tensor, at::Tensor> ctrnn_step(SE_STEP_WEIGHT_ARGS, const at::Tensor& gx, const at::Tensor& h,
                                                       double dt, double tau) {
    check_ct(dt, tau);
    const StepOutputs r = Device::template forward<CellMode::CTRNN>(SE_STEP_WEIGHT, gx, h, {}, {}, dt, tau);
    return {r.h_new, r.acts};
  }
  static std::tuple<at::Tensor, at::Tensor> ctrnn_step_backward(SE_STEP_WEIGHT_ARGS, const at::Tensor& acts,
                                                                const at::Tensor& dh, double dt, double tau,
                                                                SE_VALUES_T) {
    check_ct(dt, tau);
    const StepGrads r = Device::template backward<CellMode::CTRNN>(SE_STEP_WEIGHT_T, acts, {}, {}, {}, dh, {}, dt,
                                                                   tau, SE_GRAD);
    return {r.dG, r.dh_prev};
  }

#undef SE_STEP_WEIGHT_ARGS
#undef SE_STEP_WEIGHT
#undef SE_STEP_WEIGHT_T
#undef SE_VALUES_T
#undef SE_GRAD
};

// Registers the eight operators for one dispatch key:
//   TORCH_LIBRARY_IMPL(sparse_engine, CPU, m) { register_rnn_step_ops<CpuStep>(m); }
template <typename Device>
void register_rnn_step_ops(torch::Library& m) {
  using Ops = RnnStepOps<Device>;
  m.impl("lstm_step", &Ops::lstm_step);
  m.impl("lstm_step_backward", &Ops::lstm_step_backward);
  m.impl("gru_step", &Ops::gru_step);
  m.impl("gru_step_backward", &Ops::gru_step_backward);
  m.impl("rnn_step", &Ops::rnn_step);
  m.impl("rnn_step_backward", &Ops::rnn_step_backward);
  m.impl("ctrnn_step", &Ops::ctrnn_step);
  m.impl("ctrnn_step_backward", &Ops::ctrnn_step_backward);
}

}  // namespace sparse_engine
