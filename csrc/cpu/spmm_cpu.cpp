// spmm and spmm_t on the CPU: Y = W X over the CSR index, W^T G over the transposed
// index, both as one row gather (gather_rows, gather.h). Activations are feature-major
// (features x batch) so every gathered row is contiguous; blocks of the batch have compile-time
// widths (whole units: gather.h), the last one read from a copy padded to whole units or, with few
// entries per source row, with masked loads (gather.h, gather_source). spmm_t with
// values_t (the values in column order, made once by the caller: ../values_t.h) is spmm over the
// transposed index; without it each call gathers values[csc_perm[k]] row by row, or for B = 1
// and large values scatters the CSR's rows instead (scatter.h, use_scatter).
#include <torch/library.h>
#include <optional>
#include "common.h"
#include "gather.h"
#include "scatter.h"
#include "../values_t.h"

namespace sparse_engine {
namespace {

// Y = W X (spmm) and W^T G (spmm_t, through the transposed index: no atomics).
// Locals ending in _c are contiguous copies of the arguments.
at::Tensor spmm_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                    const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& values,
                    const at::Tensor& X) {
  const IndexSizes s = check_spmm_args(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, X,
                                       /*transposed=*/false, /*on_cuda=*/false);
  cpu_checked_max_len({row_ptr, col_idx, nullptr, "row_ptr", "col_idx", nullptr}, X.size(0));  // once per pattern
  auto row_ptr_c = row_ptr.contiguous(), col_idx_c = col_idx.contiguous(), values_c = values.contiguous();
  const int64_t B = X.size(1);
  auto Y = at::empty({s.rows, B}, X.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "spmm_cpu", [&] {
    const int64_t stride = padded_stride<scalar_t>(B);
    const auto [X_p, ld] = gather_source<scalar_t>(X, stride, col_idx.numel());
    gather_rows<scalar_t>(row_ptr_c.data_ptr<int64_t>(), col_idx_c.data_ptr<int32_t>(), values_c.data_ptr<scalar_t>(),
                          nullptr, X_p.data_ptr<scalar_t>(), s.cols, stride, nullptr, Y.data_ptr<scalar_t>(), s.rows,
                          B, ld);
  });
  return Y;
}

at::Tensor spmm_t_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                      const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& values,
                      const at::Tensor& G, const std::optional<at::Tensor>& values_t) {
  const IndexSizes s = check_spmm_args(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, G,
                                       /*transposed=*/true, /*on_cuda=*/false);
  cpu_checked_max_len({csc_ptr, csc_row, &csc_perm, "csc_ptr", "csc_row", "csc_perm"}, G.size(0));
  const at::Tensor values_t_c = check_values_t(values_t, values);
  const int64_t B = G.size(1);
  auto Z = at::empty({s.cols, B}, G.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "spmm_t_cpu", [&] {
    using A = acc_t<scalar_t>;
    const int64_t stride = padded_stride<scalar_t>(B);
    const int64_t values_bytes = values.numel() * values.element_size();
    if (!values_t_c.defined() && use_scatter(s.rows, s.cols, values.numel(), B, stride, values_bytes, sizeof(A))) {
      // the values read in CSR order: scatter the CSR's rows (scatter.h)
      cpu_checked_max_len({row_ptr, col_idx, nullptr, "row_ptr", "col_idx", nullptr}, s.cols);
      auto row_ptr_c = row_ptr.contiguous(), col_idx_c = col_idx.contiguous(), values_c = values.contiguous();
      auto G_p = padded_batch(G, stride);
      const int64_t parts = scatter_parts(s.rows, s.cols, values.numel(), stride);
      const bool in_place = parts == 1 && !kIsHalf<scalar_t> && stride == B;  // Z itself holds the sum
      auto acc = in_place ? Z : at::empty({parts, s.cols, stride}, G.options().dtype(c10::CppTypeToScalarType<A>::value));
      scatter_rows<scalar_t>(row_ptr_c.data_ptr<int64_t>(), col_idx_c.data_ptr<int32_t>(),
                             values_c.data_ptr<scalar_t>(), G_p.data_ptr<scalar_t>(), s.rows, s.cols, stride, parts,
                             reinterpret_cast<A*>(acc.data_ptr()), Z.data_ptr<scalar_t>(), B);
      return;
    }
    const bool direct = values_t_c.defined();  // values in column order: no csc_perm
    auto csc_ptr_c = csc_ptr.contiguous(), csc_row_c = csc_row.contiguous();
    auto csc_perm_c = direct ? at::Tensor() : csc_perm.contiguous();
    auto values_c = direct ? values_t_c : values.contiguous();
    const auto [G_p, ld] = gather_source<scalar_t>(G, stride, csc_row.numel());
    gather_rows<scalar_t>(csc_ptr_c.data_ptr<int64_t>(), csc_row_c.data_ptr<int32_t>(), values_c.data_ptr<scalar_t>(),
                          direct ? nullptr : csc_perm_c.data_ptr<int32_t>(), G_p.data_ptr<scalar_t>(), s.rows, stride,
                          nullptr, Z.data_ptr<scalar_t>(), s.cols, B, ld);
  });
  return Z;
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CPU, m) {
  m.impl("spmm", &spmm_cpu);
  m.impl("spmm_t", &spmm_t_cpu);
}

}  // namespace sparse_engine
