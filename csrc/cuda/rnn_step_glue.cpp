// CUDA implementations of the fused recurrent step operators (schemas in csrc/cpu/rnn_cpu.cpp):
// the same argument checks as the CPU ops plus "everything on one CUDA device", outputs and
// workspaces from the caching allocator, launches on the current stream. The kernels are in
// rnn_step.cu (see rnn_launchers.h). c10/cuda headers only, like ops_cuda.cpp.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <tuple>

#include "../cpu/common.h"
#include "../checks.h"
#include "rnn_launchers.h"

namespace sparse_engine {
namespace {

using cuda::kRnnCT;
using cuda::kRnnGRU;
using cuda::kRnnLSTM;
using cuda::kRnnRelu;
using cuda::kRnnTanh;

#define SE_INDEX const at::Tensor &rp, const at::Tensor &ci, const at::Tensor &cp, const at::Tensor &cr, \
                 const at::Tensor &pm, const at::Tensor &values
#define SE_ARGS rp, ci, cp, cr, pm, values

struct Step {
  int64_t H, B, nnz;
  at::Tensor rp, ci, cp, cr, pm, v;  // contiguous
};

using namespace cuda_glue;

// W_hh (gates*H x H) on one CUDA device, float32/float64 values, and the state (H x B) `state`.
Step check_step(SE_INDEX, const at::Tensor& state, const char* state_name, int gates) {
  auto s = check_index(rp, ci, cp, cr, pm);
  check_values(values, s.nnz);
  const auto device = values.device();
  check_index_device(rp, ci, cp, cr, pm, device);
  TORCH_CHECK_VALUE(s.rows == gates * s.cols, "W_hh must have ", gates, " * hidden rows (", gates, " x ", s.cols,
                    "), got ", s.rows);
  check_int32_size(s.rows, "W_hh's row count");
  check_dense(state, state_name, s.cols, values.scalar_type(), device);
  return {s.cols, state.size(1), s.nnz, rp.contiguous(), ci.contiguous(), cp.contiguous(), cr.contiguous(),
          pm.contiguous(), values.contiguous()};
}

// A (rows x B) operand like the state: dtype, device, batch; returned contiguous.
at::Tensor operand(const at::Tensor& t, const char* name, int64_t rows, const Step& k, const at::Tensor& values) {
  check_dense(t, name, rows, values.scalar_type(), values.device());
  TORCH_CHECK_VALUE(t.size(1) == k.B, name, " must have batch size ", k.B, ", got ", t.size(1));
  return t.contiguous();
}

template <typename T> T* ptr(const at::Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; }

// {h_new, c_new (LSTM), acts (LSTM/GRU: 4H x B, CT-RNN: H x B)}
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(int mode, SE_INDEX, const at::Tensor& gx_,
                                                       const at::Tensor& h_, const at::Tensor& c_,
                                                       const at::Tensor& bhh_, double dt, double tau) {
  const int G = cuda::rnn_step_gates(mode);
  const Step k = check_step(SE_ARGS, h_, "h", G);
  const c10::cuda::CUDAGuard guard(values.device());
  const int64_t H = k.H, B = k.B;
  auto h = h_.contiguous();
  auto gx = operand(gx_, "gx", G * H, k, values);
  at::Tensor c, bhh;
  if (mode == kRnnLSTM) c = operand(c_, "c", H, k, values);
  if (mode == kRnnGRU && bhh_.defined()) {
    TORCH_CHECK_VALUE(bhh_.dim() == 1 && bhh_.numel() == 3 * H, "b_hh must be 1-D with 3*hidden=", 3 * H,
                      " entries, got shape ", bhh_.sizes());
    TORCH_CHECK_TYPE(bhh_.scalar_type() == values.scalar_type(), "b_hh must have the dtype of values (",
                     values.scalar_type(), "), got ", bhh_.scalar_type());
    check_device(bhh_, "b_hh", values.device());
    bhh = bhh_.contiguous();
  }
  auto h2 = at::empty({H, B}, h.options());
  auto c2 = mode == kRnnLSTM ? at::empty({H, B}, h.options()) : at::Tensor();
  const int64_t na = mode == kRnnLSTM || mode == kRnnGRU ? 4 : (mode == kRnnCT ? 1 : 0);
  auto acts = na ? at::empty({na * H, B}, h.options()) : at::Tensor();
  if (H > 0 && B > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "sparse_engine_rnn_step_cuda", [&] {
      C10_CUDA_CHECK(cuda::launch_rnn_step_forward(mode, k.rp.data_ptr<int64_t>(), k.ci.data_ptr<int32_t>(),
                                                   k.v.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(),
                                                   h.data_ptr<scalar_t>(), ptr<scalar_t>(c), ptr<scalar_t>(bhh),
                                                   h2.data_ptr<scalar_t>(), ptr<scalar_t>(c2), ptr<scalar_t>(acts),
                                                   H, B, dt, tau, stream));
    });
  }
  return {h2, c2, acts};
}

// {dG, dh_prev, dc_prev (LSTM), dgx (GRU)}
std::vector<at::Tensor> backward(int mode, SE_INDEX, const at::Tensor& acts_, const at::Tensor& c_prev_,
                                 const at::Tensor& c_, const at::Tensor& h_, const at::Tensor& dh_,
                                 const at::Tensor& dc_, double dt, double tau) {
  const int G = cuda::rnn_step_gates(mode);
  const Step k = check_step(SE_ARGS, dh_, "dh", G);
  const c10::cuda::CUDAGuard guard(values.device());
  const int64_t H = k.H, B = k.B;
  auto dh = dh_.contiguous();
  at::Tensor acts, c_prev, c, h, dc;
  if (mode == kRnnLSTM || mode == kRnnGRU) acts = operand(acts_, "acts", 4 * H, k, values);
  if (mode == kRnnCT) acts = operand(acts_, "acts", H, k, values);
  if (mode == kRnnLSTM) {
    c_prev = operand(c_prev_, "c_prev", H, k, values);
    c = operand(c_, "c", H, k, values);
    dc = operand(dc_, "dc", H, k, values);
  }
  if (mode == kRnnGRU) h = operand(h_, "h_prev", H, k, values);
  if (mode == kRnnTanh || mode == kRnnRelu) h = operand(h_, "h_new", H, k, values);
  auto opt = dh.options();
  auto dG = at::empty({G * H, B}, opt);
  auto dgx = mode == kRnnGRU ? at::empty({3 * H, B}, opt) : at::Tensor();
  auto dc_prev = mode == kRnnLSTM ? at::empty({H, B}, opt) : at::Tensor();
  auto dh_prev = at::empty({H, B}, opt);
  if (H > 0 && B > 0) {
    const int64_t ws_len = cuda::rnn_step_backward_workspace_len(H, k.nnz);
    at::Tensor ws = ws_len > 0 ? at::empty({ws_len}, opt.dtype(at::kInt)) : at::Tensor();
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "sparse_engine_rnn_step_backward_cuda", [&] {
      C10_CUDA_CHECK(cuda::launch_rnn_step_backward(
          mode, k.cp.data_ptr<int64_t>(), k.cr.data_ptr<int32_t>(), k.pm.data_ptr<int64_t>(),
          k.v.data_ptr<scalar_t>(), k.nnz, ptr<scalar_t>(acts), ptr<scalar_t>(c_prev), ptr<scalar_t>(c),
          ptr<scalar_t>(h), dh.data_ptr<scalar_t>(), ptr<scalar_t>(dc), dG.data_ptr<scalar_t>(), ptr<scalar_t>(dgx),
          ptr<scalar_t>(dc_prev), dh_prev.data_ptr<scalar_t>(), H, B, dt, tau, ws_len > 0 ? ws.data_ptr<int32_t>() : nullptr,
          stream));
    });
  }
  return {dG, dh_prev, dc_prev, dgx};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_step(SE_INDEX, const at::Tensor& gx, const at::Tensor& h,
                                                         const at::Tensor& c) {
  return forward(kRnnLSTM, SE_ARGS, gx, h, c, at::Tensor(), 0.0, 1.0);
}
std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_step_backward(SE_INDEX, const at::Tensor& acts,
                                                                  const at::Tensor& c_prev, const at::Tensor& c,
                                                                  const at::Tensor& dh, const at::Tensor& dc) {
  auto r = backward(kRnnLSTM, SE_ARGS, acts, c_prev, c, at::Tensor(), dh, dc, 0.0, 1.0);
  return {r[0], r[1], r[2]};
}
std::tuple<at::Tensor, at::Tensor> gru_step(SE_INDEX, const at::Tensor& gx, const at::Tensor& h,
                                            const std::optional<at::Tensor>& b_hh) {
  auto r = forward(kRnnGRU, SE_ARGS, gx, h, at::Tensor(), b_hh.has_value() ? *b_hh : at::Tensor(), 0.0, 1.0);
  return {std::get<0>(r), std::get<2>(r)};
}
std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_step_backward(SE_INDEX, const at::Tensor& acts,
                                                                 const at::Tensor& h_prev, const at::Tensor& dh) {
  auto r = backward(kRnnGRU, SE_ARGS, acts, at::Tensor(), at::Tensor(), h_prev, dh, at::Tensor(), 0.0, 1.0);
  return {r[3], r[0], r[1]};  // (dgx, dgh, dh_prev)
}
at::Tensor rnn_step(SE_INDEX, const at::Tensor& gx, const at::Tensor& h, bool relu) {
  return std::get<0>(forward(relu ? kRnnRelu : kRnnTanh, SE_ARGS, gx, h, at::Tensor(), at::Tensor(), 0.0, 1.0));
}
std::tuple<at::Tensor, at::Tensor> rnn_step_backward(SE_INDEX, const at::Tensor& h_new, const at::Tensor& dh,
                                                     bool relu) {
  auto r = backward(relu ? kRnnRelu : kRnnTanh, SE_ARGS, at::Tensor(), at::Tensor(), at::Tensor(), h_new, dh,
                    at::Tensor(), 0.0, 1.0);
  return {r[0], r[1]};
}
std::tuple<at::Tensor, at::Tensor> ctrnn_step(SE_INDEX, const at::Tensor& gx, const at::Tensor& h, double dt,
                                              double tau) {
  auto r = forward(kRnnCT, SE_ARGS, gx, h, at::Tensor(), at::Tensor(), dt, tau);
  return {std::get<0>(r), std::get<2>(r)};
}
std::tuple<at::Tensor, at::Tensor> ctrnn_step_backward(SE_INDEX, const at::Tensor& acts, const at::Tensor& dh,
                                                       double dt, double tau) {
  auto r = backward(kRnnCT, SE_ARGS, acts, at::Tensor(), at::Tensor(), at::Tensor(), dh, at::Tensor(), dt, tau);
  return {r[0], r[1]};
}

#undef SE_INDEX
#undef SE_ARGS

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CUDA, m) {
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
