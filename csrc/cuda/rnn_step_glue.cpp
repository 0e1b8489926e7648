// CUDA implementations of the fused recurrent step operators (schemas in csrc/ops.cpp; the
// eight ops are written once in csrc/rnn_step_ops.h, this file is their CUDA device): the same
// argument checks as the CPU ops plus "everything on one CUDA device", W_hh's index checked once
// per pattern (csrc/index_check.h), outputs and workspaces from the caching allocator, launches
// on the current stream. The kernels are in
// rnn_step_cuda.cu (see launchers.h). c10/cuda headers only, like the other glue files.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../checks.h"
#include "../rnn_step_ops.h"
#include "glue.h"
#include "launchers.h"

namespace sparse_engine {
namespace {

using namespace cuda_glue;

// W_hh checked and made contiguous for the kernels.
struct CheckedWeight {
  int64_t H, B, nnz;
  at::Tensor row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values;  // contiguous
};

// W_hh (gates*H x H) on one CUDA device, float32/float64 values, and the state (H x B) `state`.
CheckedWeight check_weight(const StepWeight& w, const at::Tensor& state, const char* state_name, int gates) {
  const IndexSizes s = check_step_weight(w, state, state_name, gates, /*on_cuda=*/true);
  return {s.cols, state.size(1), s.nnz, w.row_ptr.contiguous(), w.col_idx.contiguous(), w.csc_ptr.contiguous(),
          w.csc_row.contiguous(), w.csc_perm.contiguous(), w.values.contiguous()};
}

// The CUDA device of the step ops (csrc/rnn_step_ops.h).
struct CudaStep {
  template <CellMode M>
  static StepOutputs forward(const StepWeight& w, const at::Tensor& gx, const at::Tensor& h, const at::Tensor& c,
                             const at::Tensor& b_hh, double dt, double tau) {
    constexpr int gates = cell_gates(M), saved = cell_saved_acts(M);
    const CheckedWeight k = check_weight(w, h, "h", gates);
    const c10::cuda::CUDAGuard guard(w.values.device());
    const int64_t H = k.H, B = k.B;
    // W_hh's CSR, gathered through by the gate rows (columns in [0, H)): checked once per pattern
    cuda_checked_max_len({w.row_ptr, w.col_idx, nullptr, "row_ptr", "col_idx", nullptr}, H);
    const StepInputs in = check_step_inputs<M>(gx, c, b_hh, H, B, w.values);
    auto h_c = h.contiguous();
    auto h_new = at::empty({H, B}, h_c.options());
    auto c_new = M == CellMode::LSTM ? at::empty({H, B}, h_c.options()) : at::Tensor();
    auto acts = saved ? at::empty({saved * H, B}, h_c.options()) : at::Tensor();
    if (H > 0 && B > 0) {
      const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
      AT_DISPATCH_FLOATING_TYPES(w.values.scalar_type(), "sparse_engine_rnn_step_cuda", [&] {
        C10_CUDA_CHECK(cuda::launch_rnn_step_forward(
            M, k.row_ptr.data_ptr<int64_t>(), k.col_idx.data_ptr<int32_t>(), k.values.data_ptr<scalar_t>(),
            in.gx.data_ptr<scalar_t>(), h_c.data_ptr<scalar_t>(), data_or_null<scalar_t>(in.c),
            data_or_null<scalar_t>(in.b_hh), h_new.data_ptr<scalar_t>(), data_or_null<scalar_t>(c_new),
            data_or_null<scalar_t>(acts), H, B, dt, tau, stream));
      });
    }
    return {h_new, c_new, acts};
  }

  template <CellMode M>
  static StepGrads backward(const StepWeight& w, const at::Tensor& acts, const at::Tensor& c_prev,
                            const at::Tensor& c, const at::Tensor& h, const at::Tensor& dh, const at::Tensor& dc,
                            double dt, double tau, const WeightGrad& g) {
    constexpr int gates = cell_gates(M);
    const CheckedWeight k = check_weight(w, dh, "dh", gates);
    const c10::cuda::CUDAGuard guard(w.values.device());
    const int64_t H = k.H, B = k.B;
    auto dh_c = dh.contiguous();
    // values in column order (../values_t.h) where the caller made them: no csc_perm in the gather
    const at::Tensor values_t_c = check_values_t(w.values_t, w.values);
    const bool by_column = values_t_c.defined();
    const StepSaved in = check_step_saved<M>(acts, c_prev, c, h, dc, H, B, w.values);
    auto options = dh_c.options();
    auto dG = at::empty({gates * H, B}, options);
    auto dgx = M == CellMode::GRU ? at::empty({3 * H, B}, options) : at::Tensor();
    auto dc_prev = M == CellMode::LSTM ? at::empty({H, B}, options) : at::Tensor();
    auto dh_prev = at::empty({H, B}, options);
    // the transposed index, gathered through for W_hh^T dG (rows in [0, gates*H)): checked once per
    // pattern; the backward's only long-row class is that gather's (long columns of W_hh), so
    // without a long column it gets no workspace and its long-row kernel is not launched
    const int64_t max_col = cuda_checked_max_len(
        {w.csc_ptr, w.csc_row, &w.csc_perm, "csc_ptr", "csc_row", "csc_perm"}, gates * H);
    if (H > 0 && B > 0) {
      // one workspace for the step's kernels and then (same stream) the weight gradient's sddmm
      const int64_t step_len = cuda::rnn_step_backward_workspace_len(H, k.nnz, max_col, B, dh_c.element_size());
      const int64_t wgrad_len = g.dw_t.defined() ? cuda::sddmm_workspace_len(H, k.nnz, max_col) : 0;
      const at::Tensor workspace = int_workspace(std::max(step_len, wgrad_len), dh_c);
      const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
      AT_DISPATCH_FLOATING_TYPES(w.values.scalar_type(), "sparse_engine_rnn_step_backward_cuda", [&] {
        const int32_t* perm = by_column ? nullptr : k.csc_perm.data_ptr<int32_t>();
        const scalar_t* values = by_column ? values_t_c.data_ptr<scalar_t>() : k.values.data_ptr<scalar_t>();
        // with dw_t: and dw_t += dG h_in^T at the nonzeros, in the transposed order, the sddmm of the
        // transposed index (its rows: W_hh's columns, h_in's rows; its columns: dG's rows), in one pass
        // with W_hh^T dG where it can (launchers.h); without, the plain backward
        C10_CUDA_CHECK(cuda::launch_rnn_step_backward_wgrad(
            M, k.csc_ptr.data_ptr<int64_t>(), k.csc_row.data_ptr<int32_t>(), perm, values, k.nnz, max_col,
            data_or_null<scalar_t>(in.acts), data_or_null<scalar_t>(in.c_prev), data_or_null<scalar_t>(in.c),
            data_or_null<scalar_t>(in.h), dh_c.data_ptr<scalar_t>(), data_or_null<scalar_t>(in.dc),
            dG.data_ptr<scalar_t>(), data_or_null<scalar_t>(dgx), data_or_null<scalar_t>(dc_prev),
            dh_prev.data_ptr<scalar_t>(), data_or_null<scalar_t>(g.h_in), data_or_null<scalar_t>(g.dw_t), H, B, dt,
            tau, workspace_ptr(workspace), stream));
      });
    }
    return {dG, dh_prev, dc_prev, dgx};
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CUDA, m) {
  register_rnn_step_ops<CudaStep>(m);
}

}  // namespace sparse_engine
