// The arguments of the whole-sequence recurrence operators (rnn_sequence, rnn_sequence_backward;
// schemas in csrc/ops.cpp), parsed and checked once for both devices: cpu/rnn_sequence_cpu.cpp
// (the step ops in a loop: the contract) and cuda/rnn_sequence_glue.cpp (one persistent
// cooperative launch each way, cuda/rnn_sequence_cuda.cu). Shapes, H hidden units, B batch, T steps,
// G gates: gx and dG (G*H, T, B), y and LSTM's cs (T, H, B), the saved activations (T, 4H, B) for LSTM
// and GRU, states (H, B); an output a mode does not make is an empty (0,) tensor.
#pragma once
#include <c10/util/string_view.h>

#include <optional>

#include "rnn_step_ops.h"

namespace sparse_engine {

// The cells with a sequence op: "LSTM", "GRU", "RNN_TANH", "RNN_RELU" (the Python mode names; CT-RNN's
// sub-steps keep the per-step ops).
inline CellMode sequence_mode(c10::string_view mode) {
  for (int m = 0; m < kNumCellModes; ++m)
    if (m != static_cast<int>(CellMode::CTRNN) && mode == kCellModeNames[m]) return static_cast<CellMode>(m);
  TORCH_CHECK_VALUE(false, "mode must be one of 'LSTM', 'GRU', 'RNN_TANH', 'RNN_RELU', got '", mode, "'");
}

struct SequenceSizes {
  CellMode mode;
  int64_t H, B, T;
};

inline bool given(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// A (T x rows x B) operand (or, steps_first false, rows x T x B: gx) with the dtype and device of `values`.
inline void check_steps_operand(const at::Tensor& t, const char* name, int64_t T, int64_t rows, int64_t B,
                                const at::Tensor& values, bool steps_first = true) {
  const int64_t d0 = steps_first ? T : rows, d1 = steps_first ? rows : T;
  TORCH_CHECK_VALUE(t.dim() == 3 && t.size(0) == d0 && t.size(1) == d1 && t.size(2) == B, name, " must have shape (",
                    d0, ", ", d1, ", ", B, ")", steps_first ? " (steps x rows x batch)" : " (rows x steps x batch)",
                    ", got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == values.scalar_type(), name, " must have the dtype of values (",
                   values.scalar_type(), "), got ", t.scalar_type());
  check_device(t, name, values.device());
}

// An operand only `mode` takes: required there (and checked by `check`), refused elsewhere.
template <typename Check>
void check_mode_operand(const std::optional<at::Tensor>& t, const char* name, bool taken, const char* modes,
                        Check check) {
  if (taken) {
    TORCH_CHECK_VALUE(given(t), name, " is required for mode ", modes);
    check(*t);
  } else {
    TORCH_CHECK_VALUE(!given(t), name, " is taken only by mode ", modes, ": pass None");
  }
}

// rnn_sequence: W_hh (G*H x H) and h0 (H x B), gx (G*H, T, B), LSTM's c0 (H x B), GRU's optional
// b_hh (3H).
inline SequenceSizes check_sequence_forward(const StepWeight& w, c10::string_view mode_name, const at::Tensor& gx,
                                            const at::Tensor& h0, const std::optional<at::Tensor>& c0,
                                            const std::optional<at::Tensor>& b_hh, bool on_cuda) {
  const CellMode mode = sequence_mode(mode_name);
  const int G = cell_gates(mode);
  const IndexSizes s = check_step_weight(w, h0, "h0", G, on_cuda);
  const int64_t H = s.cols, B = h0.size(1);
  TORCH_CHECK_VALUE(gx.dim() == 3, "gx must be 3-D (", G, "*hidden x steps x batch), got shape ", gx.sizes());
  const int64_t T = gx.size(1);
  check_steps_operand(gx, "gx", T, G * H, B, w.values, /*steps_first=*/false);
  const bool lstm = mode == CellMode::LSTM;
  check_mode_operand(c0, "c0", lstm, "'LSTM'", [&](const at::Tensor& t) { check_batch_operand(t, "c0", H, B, w.values); });
  if (given(b_hh)) {
    TORCH_CHECK_VALUE(mode == CellMode::GRU, "b_hh is taken only by mode 'GRU': pass None");
    TORCH_CHECK_VALUE(b_hh->dim() == 1 && b_hh->numel() == 3 * H, "b_hh must be 1-D with 3*hidden=", 3 * H,
                      " entries, got shape ", b_hh->sizes());
    TORCH_CHECK_TYPE(b_hh->scalar_type() == w.values.scalar_type(), "b_hh must have the dtype of values (",
                     w.values.scalar_type(), "), got ", b_hh->scalar_type());
    check_device(*b_hh, "b_hh", w.values.device());
  }
  return {mode, H, B, T};
}

// rnn_sequence_backward: W_hh and dh (H x B), the forward's y (T, H, B), h0, LSTM's c0, cs and dc,
// LSTM's and GRU's acts (T, 4H, B), the optional dy (T, H, B).
inline SequenceSizes check_sequence_backward(const StepWeight& w, c10::string_view mode_name, const at::Tensor& y,
                                             const at::Tensor& h0, const std::optional<at::Tensor>& c0,
                                             const std::optional<at::Tensor>& cs,
                                             const std::optional<at::Tensor>& acts,
                                             const std::optional<at::Tensor>& dy, const at::Tensor& dh,
                                             const std::optional<at::Tensor>& dc, bool on_cuda) {
  const CellMode mode = sequence_mode(mode_name);
  const IndexSizes s = check_step_weight(w, dh, "dh", cell_gates(mode), on_cuda);
  const int64_t H = s.cols, B = dh.size(1);
  TORCH_CHECK_VALUE(y.dim() == 3, "y must be 3-D (steps x hidden x batch), got shape ", y.sizes());
  const int64_t T = y.size(0);
  check_steps_operand(y, "y", T, H, B, w.values);
  check_batch_operand(h0, "h0", H, B, w.values);
  const bool lstm = mode == CellMode::LSTM;
  auto state = [&](const char* name) { return [&, name](const at::Tensor& t) { check_batch_operand(t, name, H, B, w.values); }; };
  auto steps = [&](const char* name, int64_t rows) {
    return [&, name, rows](const at::Tensor& t) { check_steps_operand(t, name, T, rows, B, w.values); };
  };
  check_mode_operand(c0, "c0", lstm, "'LSTM'", state("c0"));
  check_mode_operand(cs, "cs", lstm, "'LSTM'", steps("cs", H));
  check_mode_operand(dc, "dc", lstm, "'LSTM'", state("dc"));
  const int saved = cell_saved_acts(mode);
  check_mode_operand(acts, "acts", saved > 0, "'LSTM' and 'GRU'", steps("acts", saved * H));
  if (given(dy)) check_steps_operand(*dy, "dy", T, H, B, w.values);
  return {mode, H, B, T};
}

}  // namespace sparse_engine
