// Autograd of spmm, spmm_t and sddmm, in C++ for every device: each formula is written with the
// other two ops, called through the dispatcher, so double backward works too. C++, not Python's
// torch.library.register_autograd: that costs about 20 us a call, more than the product itself at
// small sizes (N = 1,024 at 1%: 34 us with a gradient, 14 without).
//
//   spmm(W, X) = W X        d values = sddmm(W, dY, X)    d X = spmm_t(W, dY)
//   spmm_t(W, G) = W^T G    d values = sddmm(W, G, dZ)    d G = spmm(W, dZ)
//   sddmm(W, G, X)[k]       d G = spmm(W_out, X)          d X = spmm_t(W_out, G)   (W_out: the
//                                                          gradient as values at W's pattern)
// spmm_t's optional values_t (values[csc_perm], ../values_t.h) is the values read in another
// order: it gets no gradient; the gradient goes to values. The index gets none.
#include <torch/autograd.h>
#include <torch/library.h>

namespace sparse_engine {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using Op7 = Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                   const Tensor&);
using Op8 = Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                   const Tensor&, const std::optional<Tensor>&);

const c10::TypedOperatorHandle<Op7>& spmm_op() {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("sparse_engine::spmm", "").typed<Op7>();
  return op;
}
const c10::TypedOperatorHandle<Op8>& spmm_t_op() {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("sparse_engine::spmm_t", "").typed<Op8>();
  return op;
}
const c10::TypedOperatorHandle<Op7>& sddmm_op() {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("sparse_engine::sddmm", "").typed<Op7>();
  return op;
}

// Every forward below: saves the index and the op's two tensor operands (a: values or G, b: X or
// G) for the backward, then calls the op below the autograd key (``rest``: spmm_t's values_t,
// which the backward does not read).
template <class Op, class... Rest>
Tensor save_and_call(AutogradContext* ctx, const c10::TypedOperatorHandle<Op>& op, const Tensor& rp,
                     const Tensor& ci, const Tensor& cp, const Tensor& cr, const Tensor& perm, const Tensor& a,
                     const Tensor& b, const Rest&... rest) {
  ctx->save_for_backward({rp, ci, cp, cr, perm, a, b});
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(rp, ci, cp, cr, perm, a, b, rest...);
}

// The five index tensors of a saved list (row_ptr, col_idx, csc_ptr, csc_row, csc_perm first).
#define SE_INDEX(s) s[0], s[1], s[2], s[3], s[4]
// No gradient for the five index tensors
#define SE_NO_INDEX_GRADS Tensor(), Tensor(), Tensor(), Tensor(), Tensor()

struct SpmmFn : torch::autograd::Function<SpmmFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& rp, const Tensor& ci, const Tensor& cp,
                        const Tensor& cr, const Tensor& perm, const Tensor& values, const Tensor& X) {
    return save_and_call(ctx, spmm_op(), rp, ci, cp, cr, perm, values, X);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const Tensor& dY = grads[0];
    Tensor d_values, d_X;
    if (ctx->needs_input_grad(5)) d_values = sddmm_op().call(SE_INDEX(s), dY, s[6]);
    if (ctx->needs_input_grad(6)) d_X = spmm_t_op().call(SE_INDEX(s), s[5], dY, std::nullopt);
    return {SE_NO_INDEX_GRADS, d_values, d_X};
  }
};

struct SpmmTFn : torch::autograd::Function<SpmmTFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& rp, const Tensor& ci, const Tensor& cp,
                        const Tensor& cr, const Tensor& perm, const Tensor& values, const Tensor& G,
                        const std::optional<Tensor>& values_t) {
    return save_and_call(ctx, spmm_t_op(), rp, ci, cp, cr, perm, values, G, values_t);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const Tensor& dZ = grads[0];
    Tensor d_values, d_G;
    if (ctx->needs_input_grad(5)) d_values = sddmm_op().call(SE_INDEX(s), s[6], dZ);
    if (ctx->needs_input_grad(6)) d_G = spmm_op().call(SE_INDEX(s), s[5], dZ);
    return {SE_NO_INDEX_GRADS, d_values, d_G, Tensor()};
  }
};

struct SddmmFn : torch::autograd::Function<SddmmFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& rp, const Tensor& ci, const Tensor& cp,
                        const Tensor& cr, const Tensor& perm, const Tensor& G, const Tensor& X) {
    return save_and_call(ctx, sddmm_op(), rp, ci, cp, cr, perm, G, X);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const Tensor& d_out = grads[0];
    Tensor d_G, d_X;
    if (ctx->needs_input_grad(5)) d_G = spmm_op().call(SE_INDEX(s), d_out, s[6]);
    if (ctx->needs_input_grad(6)) d_X = spmm_t_op().call(SE_INDEX(s), d_out, s[5], std::nullopt);
    return {SE_NO_INDEX_GRADS, d_G, d_X};
  }
};

#undef SE_INDEX
#undef SE_NO_INDEX_GRADS

Tensor spmm_autograd(const Tensor& rp, const Tensor& ci, const Tensor& cp, const Tensor& cr, const Tensor& perm,
                     const Tensor& values, const Tensor& X) {
  return SpmmFn::apply(rp, ci, cp, cr, perm, values, X);
}

Tensor spmm_t_autograd(const Tensor& rp, const Tensor& ci, const Tensor& cp, const Tensor& cr, const Tensor& perm,
                       const Tensor& values, const Tensor& G, const std::optional<Tensor>& values_t) {
  return SpmmTFn::apply(rp, ci, cp, cr, perm, values, G, values_t);
}

Tensor sddmm_autograd(const Tensor& rp, const Tensor& ci, const Tensor& cp, const Tensor& cr, const Tensor& perm,
                      const Tensor& G, const Tensor& X) {
  return SddmmFn::apply(rp, ci, cp, cr, perm, G, X);
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, Autograd, m) {
  m.impl("spmm", &spmm_autograd);
  m.impl("spmm_t", &spmm_t_autograd);
  m.impl("sddmm", &sddmm_autograd);
}

}  // namespace sparse_engine
