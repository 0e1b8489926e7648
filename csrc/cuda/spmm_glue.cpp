// CUDA implementations of spmm and spmm_t (kernels: spmm_cuda.cu, see launchers.h): the same
// argument checks as the CPU ops (csrc/checks.h) plus "everything on one CUDA device", the
// index's content checked once per pattern (csrc/index_check.h), the output and workspace from
// the caching allocator, launches on the current stream.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>

#include "../checks.h"
#include "../values_t.h"
#include "glue.h"
#include "launchers.h"

namespace sparse_engine {
namespace {

using namespace cuda_glue;

// out = gather over the index ix (ptr, idx, perm) of values and src; shared by spmm and spmm_t.
// The index's content is checked (once per pattern, cuda_checked_max_len), and its longest row
// decides whether the long-row kernel runs.
at::Tensor gather(const CompressedIndex& ix, const at::Tensor& values, const at::Tensor& src, int64_t n_out,
                  int64_t nnz) {
  const c10::cuda::CUDAGuard guard(values.device());
  check_int32_size(n_out, "the output row count");
  const int64_t max_len = cuda_checked_max_len(ix, src.size(0));
  auto ptr_c = ix.ptr.contiguous(), idx_c = ix.idx.contiguous(), values_c = values.contiguous(),
       src_c = src.contiguous();
  const at::Tensor* perm = ix.perm;
  at::Tensor perm_c = perm ? perm->contiguous() : at::Tensor();
  const int64_t B = src_c.size(1);
  auto out = at::empty({n_out, B}, src_c.options());
  if (n_out == 0 || B == 0) return out;
  const at::Tensor workspace = int_workspace(cuda::gather_workspace_len(n_out, nnz, max_len, B, src_c.element_size()), src_c);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values_c.scalar_type(), "sparse_engine_gather_cuda", [&] {
    C10_CUDA_CHECK(cuda::launch_gather(ptr_c.data_ptr<int64_t>(), idx_c.data_ptr<int32_t>(),
                                       perm ? perm_c.data_ptr<int32_t>() : nullptr, cuda_ptr<scalar_t>(values_c),
                                       cuda_ptr<scalar_t>(src_c), cuda_ptr<scalar_t>(out), n_out, B, nnz,
                                       workspace_ptr(workspace), stream));
  });
  return out;
}

// Y = W X over the CSR index.
at::Tensor spmm_cuda(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                     const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& values,
                     const at::Tensor& X) {
  const IndexSizes s = check_spmm_args(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, X,
                                       /*transposed=*/false, /*on_cuda=*/true);
  return gather({row_ptr, col_idx, nullptr, "row_ptr", "col_idx", nullptr}, values, X, s.rows, s.nnz);
}

// W^T G over the transposed index: no atomics; values_t (the values in column order,
// ../values_t.h) read directly when given.
at::Tensor spmm_t_cuda(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                       const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& values,
                       const at::Tensor& G, const std::optional<at::Tensor>& values_t) {
  const IndexSizes s = check_spmm_args(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values, G,
                                       /*transposed=*/true, /*on_cuda=*/true);
  const at::Tensor values_t_c = check_values_t(values_t, values);
  if (values_t_c.defined())  // values in column order: csc_perm is not read
    return gather({csc_ptr, csc_row, nullptr, "csc_ptr", "csc_row", nullptr}, values_t_c, G, s.cols, s.nnz);
  return gather({csc_ptr, csc_row, &csc_perm, "csc_ptr", "csc_row", "csc_perm"}, values, G, s.cols, s.nnz);
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CUDA, m) {
  m.impl("spmm", &spmm_cuda);
  m.impl("spmm_t", &spmm_t_cuda);
}

}  // namespace sparse_engine
