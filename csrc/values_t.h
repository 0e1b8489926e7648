// values_t: the values of a sparse operand in the order of its transposed index, values[csc_perm]
// (csc_perm[p]: the CSR position of the p-th entry in column order). W^T G (spmm_t, and the
// backward of the fused recurrent steps) reads the values in that order. Given values_t, the
// product reads it directly (it is then exactly spmm over the CSR (csc_ptr, csc_row, values_t));
// without it, every call gathers values[csc_perm[k]] itself, random reads that cost as much as
// the product where the values do not fit in the caches.
//
// The caller makes it once for all the products that share the values (a recurrence: once per
// sequence, for its T backward steps; sparse_engine.ops.transposed_values). It is not compared
// with values (that would cost what it saves): a values_t that is not values[csc_perm] gives a
// wrong product. Gradients go to values, never to values_t.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

namespace sparse_engine {

// values_t (undefined: not given) checked against values, made contiguous: 1-D with the
// values' entry count, dtype and device.
inline at::Tensor check_values_t(const at::Tensor& values_t, const at::Tensor& values) {
  if (!values_t.defined()) return values_t;
  TORCH_CHECK_VALUE(values_t.dim() == 1 && values_t.numel() == values.numel(), "values_t must be 1-D with nnz=",
                    values.numel(), " entries like values, got shape ", values_t.sizes());
  TORCH_CHECK_TYPE(values_t.scalar_type() == values.scalar_type(), "values_t must have the dtype of values (",
                   values.scalar_type(), "), got ", values_t.scalar_type());
  TORCH_CHECK_VALUE(values_t.device() == values.device(), "values_t must be on ", values.device(),
                    " like values, got ", values_t.device());
  return values_t.contiguous();
}

inline at::Tensor check_values_t(const std::optional<at::Tensor>& values_t, const at::Tensor& values) {
  return check_values_t(values_t.has_value() ? *values_t : at::Tensor(), values);
}

}  // namespace sparse_engine
