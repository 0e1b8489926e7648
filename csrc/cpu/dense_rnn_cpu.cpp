// A whole GRU layer-direction over a sequence with a dense W_hh (the dense-compute path's GRU on
// the CPU, sparse_engine/nn/dense_rnn.py): per step one product h W_hh^T (+ b_hh) by torch's
// matmul (MKL) and the gate math of the whole batch in one pass with vectorised sigmoid/tanh
// (vmath.h), where torch's CPU GRU (not oneDNN's, which fuses only the LSTM) runs about ten
// separate ops per step, each with its dispatch and, when training, its autograd node. The
// backward runs the steps in reverse, one product dG W_hh per step, and the weight gradient as
// one product over all steps at the end. The forward's per-step products use MKL's packed GEMM where
// this torch has it (float32) and the sequence repays the pack (pack_forward), the rest are addmm's.
//
//   gru_sequence(gx, h0, w_hh, b_hh, reverse) -> (y, acts)
//     gx (T, B, 3H) = x W_ih^T + b_ih, torch's gate order r, z, n; h0 (B, H); w_hh (3H, H)
//     y (T, B, H): h after step t; acts (T, B, 4H) = [r, z, n, W_hn h + b_hn] for the backward
//   gru_sequence_backward(dy, acts, y, h0, w_hh, reverse, has_bias) -> (dgx, dh0, dw_hh, db_hh)
//     dy (T, B, H): the gradient of y (the final state's included); db_hh undefined without a bias
//
// The formulas are torch's GRU cell: r = s(gx_r + gh_r), z = s(gx_z + gh_z),
// n = tanh(gx_n + r * gh_n), h' = (h - n) * z + n, gh = h W_hh^T + b_hh.
// `reverse` runs the steps from T-1 to 0 (the reverse direction of a bidirectional layer); y
// stays in time order. Time-major, batch-major rows: torch's layout, so no transposition.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>
#include <cmath>
#include <optional>
#include "common.h"
#include "vmath.h"

namespace sparse_engine {
namespace {

// The gate math of one step over the batch rows [b0, b1): acts and y from gx, gh and h.
template <typename T>
void gates_forward(const T* gx, const T* gh, const T* h, T* acts, T* y, int64_t b0, int64_t b1, int64_t H) {
  for (int64_t b = b0; b < b1; ++b) {
    const T* gxb = gx + b * 3 * H;
    const T* ghb = gh + b * 3 * H;
    const T* hb = h + b * H;
    T* a = acts + b * 4 * H;
    for (int64_t j = 0; j < 2 * H; ++j) a[j] = gxb[j] + ghb[j];
    vsigmoid(a, 2 * H);  // r, z
    for (int64_t j = 0; j < H; ++j) {
      a[3 * H + j] = ghb[2 * H + j];
      a[2 * H + j] = gxb[2 * H + j] + a[j] * ghb[2 * H + j];
    }
    vtanh(a + 2 * H, H);  // n
    T* yb = y + b * H;
    for (int64_t j = 0; j < H; ++j) {
      const T n = a[2 * H + j];
      yb[j] = (hb[j] - n) * a[H + j] + n;
    }
  }
}

// The elementwise backward of one step over [b0, b1): with dh (the gradient of h after the step,
// dy included) -> dgx, dgh (the gradients of gx and gh) and direct = dh * z (the part of the
// gradient of h before the step that does not go through W_hh).
template <typename T>
void gates_backward(const T* acts, const T* h, const T* dh, T* dgx, T* dgh, T* direct, int64_t b0, int64_t b1,
                    int64_t H) {
  for (int64_t b = b0; b < b1; ++b) {
    const T* a = acts + b * 4 * H;
    const T* hb = h + b * H;
    const T* dhb = dh + b * H;
    T* gx = dgx + b * 3 * H;
    T* gh = dgh + b * 3 * H;
    T* db = direct + b * H;
    for (int64_t j = 0; j < H; ++j) {
      const T r = a[j], z = a[H + j], n = a[2 * H + j], ghn = a[3 * H + j], d = dhb[j];
      const T dn = d * (1 - z) * (1 - n * n);
      const T dr = dn * ghn * r * (1 - r);
      const T dz = d * (hb[j] - n) * z * (1 - z);
      gx[j] = dr;
      gx[H + j] = dz;
      gx[2 * H + j] = dn;
      gh[j] = dr;
      gh[H + j] = dz;
      gh[2 * H + j] = dn * r;
      db[j] = d * z;
    }
  }
}

// body(b0, b1) over the batch rows, in parallel when a step's elementwise work is large.
template <typename Body>
void over_batch(int64_t B, int64_t H, const Body& body) {
  if (B * H * 8 < parallel_work() || kernel_threads() == 1 || B == 1) {
    body(int64_t(0), B);
    return;
  }
  parallel_ranges(B, true, body);
}

// torch's own ops for MKL's packed GEMM, mkl::_mkl_reorder_linear_weight and mkl::_mkl_linear (what
// torch's compiled linear layers use), when this torch has them: absent on a build without MKL.
struct MklLinearOps {
  using Reorder = at::Tensor(const at::Tensor&, int64_t);
  using Linear = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            int64_t);
  std::optional<c10::TypedOperatorHandle<Reorder>> reorder;
  std::optional<c10::TypedOperatorHandle<Linear>> linear;
};

const MklLinearOps& mkl_linear_ops() {
  static const MklLinearOps ops = [] {
    MklLinearOps o;
    auto& d = c10::Dispatcher::singleton();
    auto reorder = d.findOp({"mkl::_mkl_reorder_linear_weight", ""});
    auto linear = d.findOp({"mkl::_mkl_linear", ""});
    if (reorder && linear && reorder->hasKernelForDispatchKey(c10::DispatchKey::CPU) &&
        linear->hasKernelForDispatchKey(c10::DispatchKey::CPU)) {
      o.reorder = reorder->typed<MklLinearOps::Reorder>();
      o.linear = linear->typed<MklLinearOps::Linear>();
    }
    return o;
  }();
  return ops;
}

// Whether a forward packs W_hh for MKL's packed GEMM (the backward never does): where T steps of B
// columns repay the pack, whose buffer is 7.5 MiB larger than W at any size. Measured in the op (one
// thread, an Intel Xeon VM, hidden 128-1,000, B = 4-128, T = 8 and 35, training and inference;
// benchmarks/results/dense_gru_packed_gemm_cpu.md): below hidden 192 it lost or tied (up to 2.84x the
// unpacked time at small B and T); at 200-256 from about 128 columns x steps (0.78-0.96x at T = 35,
// 1.02-1.15x at T = 8, B <= 10); from 512 already at T = 8, B = 4 (0.51-0.94x). At one or two columns
// MKL's unpacked products are as fast (the pack alone took 7 ms at hidden 1,000, B = 1). The backward's
// pack (of a transposed copy) lost or tied everywhere (0.98-1.59x).
bool pack_forward(int64_t B, int64_t T, int64_t H) {
  if (B < 4 || T < 2) return false;
  return H >= 512 ? B * T >= 32 : H >= 192 && B * T >= 128;
}

// x (B, in) -> x W^T (+ b) (B, out) for every step of a sequence with one W (out, in): MKL's packed
// GEMM with W packed once where `pack` (float32, where torch has the ops), else addmm into `out` (W as
// given). Both are GEMMs of the same sums, in MKL's order: the tests check each against float64.
class StepLinear {
 public:
  StepLinear(const at::Tensor& weight, const std::optional<at::Tensor>& bias, int64_t batch, bool pack)
      : weight_(weight), bias_(bias), batch_(batch) {
    const auto& ops = mkl_linear_ops();
    if (pack && ops.reorder && weight_.scalar_type() == at::kFloat) {
      weight_ = weight_.contiguous();
      packed_ = ops.reorder->call(weight_, batch);
    }
  }

  at::Tensor operator()(const at::Tensor& x, at::Tensor& out) const {
    if (packed_.defined()) return mkl_linear_ops().linear->call(x, packed_, weight_, bias_, batch_);
    if (bias_.has_value()) at::addmm_out(out, *bias_, x, weight_.t());
    else at::mm_out(out, x, weight_.t());
    return out;
  }

 private:
  at::Tensor weight_, packed_;
  std::optional<at::Tensor> bias_;
  int64_t batch_;
};

// T, B, H from the operands, checked: gx (T, B, 3H), h0 (B, H), w_hh (3H, H), all of one float dtype.
struct GruSizes {
  int64_t T, B, H;
};

void check_w_hh(const at::Tensor& w_hh, int64_t H) {
  TORCH_CHECK_VALUE(w_hh.dim() == 2 && w_hh.size(0) == 3 * H && w_hh.size(1) == H, "w_hh must have shape (",
                    3 * H, ", ", H, "), got ", w_hh.sizes());
}

GruSizes check_gru(const at::Tensor& gx, const at::Tensor& h0, const at::Tensor& w_hh) {
  TORCH_CHECK_TYPE(gx.scalar_type() == at::kFloat || gx.scalar_type() == at::kDouble,
                   "gx must be float32 or float64, got ", gx.scalar_type());
  TORCH_CHECK_VALUE(h0.dim() == 2, "h0 must be 2-D (batch, hidden), got shape ", h0.sizes());
  const int64_t B = h0.size(0), H = h0.size(1);
  TORCH_CHECK_VALUE(gx.dim() == 3 && gx.size(1) == B && gx.size(2) == 3 * H,
                    "gx must have shape (steps, ", B, ", ", 3 * H, "), got ", gx.sizes());
  TORCH_CHECK_VALUE(gx.size(0) >= 1, "gx must have at least one step");
  check_w_hh(w_hh, H);
  for (const auto* t : {&h0, &w_hh})
    TORCH_CHECK_TYPE(t->scalar_type() == gx.scalar_type(), "h0 and w_hh must have gx's dtype ", gx.scalar_type(),
                     ", got ", t->scalar_type());
  return {gx.size(0), B, H};
}

std::tuple<at::Tensor, at::Tensor> gru_sequence_cpu(const at::Tensor& gx_, const at::Tensor& h0_,
                                                    const at::Tensor& w_hh, const std::optional<at::Tensor>& b_hh,
                                                    bool reverse) {
  const GruSizes s = check_gru(gx_, h0_, w_hh);
  const int64_t T = s.T, B = s.B, H = s.H;
  if (b_hh.has_value())
    TORCH_CHECK_VALUE(b_hh->dim() == 1 && b_hh->numel() == 3 * H && b_hh->scalar_type() == gx_.scalar_type(),
                      "b_hh must be 1-D with ", 3 * H, " entries of gx's dtype, got ", b_hh->sizes(), " ",
                      b_hh->scalar_type());
  const auto gx = gx_.contiguous(), h0 = h0_.contiguous();
  auto y = at::empty({T, B, H}, gx.options());
  auto acts = at::empty({T, B, 4 * H}, gx.options());
  auto gh_buf = at::empty({B, 3 * H}, gx.options());
  const StepLinear hidden_side(w_hh, b_hh, B, pack_forward(B, T, H));  // h W_hh^T + b_hh
  AT_DISPATCH_FLOATING_TYPES(gx.scalar_type(), "gru_sequence", [&] {
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = reverse ? T - 1 - i : i;
      const at::Tensor h = i == 0 ? h0 : y[reverse ? t + 1 : t - 1];
      const at::Tensor gh = hidden_side(h, gh_buf);
      const scalar_t* gxp = gx.data_ptr<scalar_t>() + t * B * 3 * H;
      const scalar_t* ghp = gh.data_ptr<scalar_t>();
      const scalar_t* hp = h.data_ptr<scalar_t>();
      scalar_t* ap = acts.data_ptr<scalar_t>() + t * B * 4 * H;
      scalar_t* yp = y.data_ptr<scalar_t>() + t * B * H;
      over_batch(B, H, [&](int64_t b0, int64_t b1) { gates_forward(gxp, ghp, hp, ap, yp, b0, b1, H); });
    }
  });
  return {y, acts};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_sequence_backward_cpu(
    const at::Tensor& dy_, const at::Tensor& acts_, const at::Tensor& y_, const at::Tensor& h0_,
    const at::Tensor& w_hh, bool reverse, bool has_bias) {
  TORCH_CHECK_TYPE(y_.scalar_type() == at::kFloat || y_.scalar_type() == at::kDouble,
                   "y must be float32 or float64, got ", y_.scalar_type());
  TORCH_CHECK_VALUE(y_.dim() == 3 && y_.size(0) >= 1, "y must be 3-D (steps >= 1, batch, hidden), got shape ",
                    y_.sizes());
  const int64_t T = y_.size(0), B = y_.size(1), H = y_.size(2);
  TORCH_CHECK_VALUE(dy_.sizes() == y_.sizes(), "dy must have y's shape ", y_.sizes(), ", got ", dy_.sizes());
  TORCH_CHECK_VALUE(acts_.dim() == 3 && acts_.size(0) == T && acts_.size(1) == B && acts_.size(2) == 4 * H,
                    "acts must have shape (", T, ", ", B, ", ", 4 * H, "), got ", acts_.sizes());
  TORCH_CHECK_VALUE(h0_.dim() == 2 && h0_.size(0) == B && h0_.size(1) == H, "h0 must have shape (", B, ", ", H,
                    "), got ", h0_.sizes());
  check_w_hh(w_hh, H);
  for (const auto* t : {&dy_, &acts_, &h0_, &w_hh})
    TORCH_CHECK_TYPE(t->scalar_type() == y_.scalar_type(), "dy, acts, h0 and w_hh must have y's dtype ",
                     y_.scalar_type(), ", got ", t->scalar_type());
  const auto dy = dy_.contiguous(), acts = acts_.contiguous(), y = y_.contiguous(), h0 = h0_.contiguous();
  auto dgx = at::empty({T, B, 3 * H}, y.options());
  auto dgh = at::empty({T, B, 3 * H}, y.options());
  auto dh = at::zeros({B, H}, y.options());
  auto direct = at::empty({B, H}, y.options());
  auto dht = at::empty({B, H}, y.options());
  auto back_buf = at::empty({B, H}, y.options());
  const StepLinear back(w_hh.t(), std::nullopt, B, false);  // dgh W_hh
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "gru_sequence_backward", [&] {
    for (int64_t i = T - 1; i >= 0; --i) {
      const int64_t t = reverse ? T - 1 - i : i;
      const at::Tensor h = i == 0 ? h0 : y[reverse ? t + 1 : t - 1];
      at::add_out(dht, dh, dy[t]);
      const scalar_t* ap = acts.data_ptr<scalar_t>() + t * B * 4 * H;
      const scalar_t* hp = h.data_ptr<scalar_t>();
      const scalar_t* dp = dht.data_ptr<scalar_t>();
      scalar_t* gxp = dgx.data_ptr<scalar_t>() + t * B * 3 * H;
      scalar_t* ghp = dgh.data_ptr<scalar_t>() + t * B * 3 * H;
      scalar_t* dirp = direct.data_ptr<scalar_t>();
      over_batch(B, H, [&](int64_t b0, int64_t b1) { gates_backward(ap, hp, dp, gxp, ghp, dirp, b0, b1, H); });
      at::add_out(dh, direct, back(dgh[t], back_buf));  // the gradient of h before the step
    }
  });
  // dW_hh = sum_t dgh_t^T h_(t-1): the steps whose previous state is in y in one product, the
  // first step's (from h0) added
  const int64_t first = reverse ? T - 1 : 0;
  auto dw = at::mm(dgh[first].t(), h0);
  if (T > 1) {
    const auto g = reverse ? dgh.narrow(0, 0, T - 1) : dgh.narrow(0, 1, T - 1);
    const auto hs = reverse ? y.narrow(0, 1, T - 1) : y.narrow(0, 0, T - 1);
    dw.addmm_(g.reshape({(T - 1) * B, 3 * H}).t(), hs.reshape({(T - 1) * B, H}));
  }
  auto db = has_bias ? dgh.sum(at::IntArrayRef{0, 1}) : at::Tensor();
  return {dgx, dh, dw, db};
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CPU, m) {
  m.impl("gru_sequence", &gru_sequence_cpu);
  m.impl("gru_sequence_backward", &gru_sequence_backward_cpu);
}

}  // namespace sparse_engine
