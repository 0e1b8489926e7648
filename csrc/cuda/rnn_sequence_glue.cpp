// CUDA implementations of the whole-sequence recurrence operators (schemas in csrc/ops.cpp,
// arguments in csrc/rnn_sequence_ops.h, the same checks as the CPU ops plus "everything on one
// CUDA device"): one persistent cooperative launch each way (rnn_sequence_cuda.cu, see
// launchers.h), W_hh's index checked once per pattern (csrc/index_check.h), outputs from the
// caching allocator, on the current stream. c10/cuda headers only, like the other glue files.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../rnn_sequence_ops.h"
#include "glue.h"
#include "launchers.h"

namespace sparse_engine {
namespace {

using namespace cuda_glue;
using at::Tensor;
using OptTensor = std::optional<Tensor>;

Tensor contiguous_or_empty(const OptTensor& t) { return given(t) ? t->contiguous() : Tensor(); }

std::tuple<Tensor, Tensor, Tensor> rnn_sequence_cuda(const Tensor& row_ptr, const Tensor& col_idx,
                                                     const Tensor& csc_ptr, const Tensor& csc_row,
                                                     const Tensor& csc_perm, const Tensor& values,
                                                     c10::string_view mode_name, const Tensor& gx, const Tensor& h0,
                                                     const OptTensor& c0, const OptTensor& b_hh, bool reverse) {
  const StepWeight w{row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values};
  const SequenceSizes s = check_sequence_forward(w, mode_name, gx, h0, c0, b_hh, /*on_cuda=*/true);
  const int64_t H = s.H, B = s.B, T = s.T;
  const c10::cuda::CUDAGuard guard(values.device());
  // W_hh's CSR, gathered through by the gate rows (columns in [0, H)): checked once per pattern
  cuda_checked_max_len({row_ptr, col_idx, nullptr, "row_ptr", "col_idx", nullptr}, H);
  const int saved = cell_saved_acts(s.mode);
  const auto options = h0.options();
  Tensor y = at::empty({T, H, B}, options);
  Tensor cs = s.mode == CellMode::LSTM ? at::empty({T, H, B}, options) : at::empty({0}, options);
  Tensor acts = saved ? at::empty({T, saved * H, B}, options) : at::empty({0}, options);
  if (H > 0 && B > 0 && T > 0) {
    const Tensor rp = row_ptr.contiguous(), ci = col_idx.contiguous(), v = values.contiguous();
    const Tensor gx_c = gx.contiguous(), h0_c = h0.contiguous(), c0_c = contiguous_or_empty(c0),
                 b_c = contiguous_or_empty(b_hh);
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "sparse_engine_rnn_sequence_cuda", [&] {
      C10_CUDA_CHECK(cuda::launch_rnn_sequence_forward(
          s.mode, rp.data_ptr<int64_t>(), ci.data_ptr<int32_t>(), v.data_ptr<scalar_t>(), v.numel(),
          gx_c.data_ptr<scalar_t>(),
          h0_c.data_ptr<scalar_t>(), data_or_null<scalar_t>(c0_c), data_or_null<scalar_t>(b_c),
          y.data_ptr<scalar_t>(), s.mode == CellMode::LSTM ? cs.data_ptr<scalar_t>() : nullptr,
          saved ? acts.data_ptr<scalar_t>() : nullptr, H, B, T, reverse, stream));
    });
  }
  return {y, cs, acts};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> rnn_sequence_backward_cuda(
    const Tensor& row_ptr, const Tensor& col_idx, const Tensor& csc_ptr, const Tensor& csc_row,
    const Tensor& csc_perm, const Tensor& values, c10::string_view mode_name, const Tensor& y, const Tensor& h0,
    const OptTensor& c0, const OptTensor& cs, const OptTensor& acts, const OptTensor& dy, const Tensor& dh,
    const OptTensor& dc, bool reverse, const OptTensor& values_t) {
  const StepWeight w{row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, values_t.value_or(Tensor())};
  const SequenceSizes s = check_sequence_backward(w, mode_name, y, h0, c0, cs, acts, dy, dh, dc, /*on_cuda=*/true);
  const int64_t H = s.H, B = s.B, T = s.T;
  const int G = cell_gates(s.mode);
  const c10::cuda::CUDAGuard guard(values.device());
  // the transposed index, gathered through for W_hh^T dG (rows in [0, G*H)): checked once per pattern
  cuda_checked_max_len({csc_ptr, csc_row, &csc_perm, "csc_ptr", "csc_row", "csc_perm"}, G * H);
  const auto options = dh.options();
  Tensor dG = at::empty({G * H, T, B}, options);
  Tensor dgx = s.mode == CellMode::GRU ? at::empty({3 * H, T, B}, options) : at::empty({0}, options);
  // the running gradients, updated in place by the kernel: dh_T (dc_T) in, dh_0 (dc_0) out
  Tensor dh_run = dh.clone(at::MemoryFormat::Contiguous);
  Tensor dc_run = s.mode == CellMode::LSTM ? dc->clone(at::MemoryFormat::Contiguous) : at::empty({0}, options);
  if (H > 0 && B > 0 && T > 0) {
    // the values in column order (../values_t.h): the caller's, or gathered once here for all T steps
    Tensor v_t = check_values_t(values_t, values);
    if (!v_t.defined()) v_t = values.index_select(0, csc_perm);
    const Tensor cp = csc_ptr.contiguous(), cr = csc_row.contiguous(), y_c = y.contiguous(), h0_c = h0.contiguous();
    const Tensor c0_c = contiguous_or_empty(c0), cs_c = contiguous_or_empty(cs), acts_c = contiguous_or_empty(acts),
                 dy_c = contiguous_or_empty(dy);
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "sparse_engine_rnn_sequence_backward_cuda", [&] {
      C10_CUDA_CHECK(cuda::launch_rnn_sequence_backward(
          s.mode, cp.data_ptr<int64_t>(), cr.data_ptr<int32_t>(), v_t.data_ptr<scalar_t>(), v_t.numel(),
          y_c.data_ptr<scalar_t>(),
          h0_c.data_ptr<scalar_t>(), data_or_null<scalar_t>(cs_c), data_or_null<scalar_t>(c0_c),
          data_or_null<scalar_t>(acts_c), data_or_null<scalar_t>(dy_c), dG.data_ptr<scalar_t>(),
          s.mode == CellMode::GRU ? dgx.data_ptr<scalar_t>() : nullptr, dh_run.data_ptr<scalar_t>(),
          s.mode == CellMode::LSTM ? dc_run.data_ptr<scalar_t>() : nullptr, H, B, T, reverse, stream));
    });
  }
  return {dG, dgx, dh_run, dc_run};
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CUDA, m) {
  m.impl("rnn_sequence", &rnn_sequence_cuda);
  m.impl("rnn_sequence_backward", &rnn_sequence_backward_cuda);
}

}  // namespace sparse_engine
