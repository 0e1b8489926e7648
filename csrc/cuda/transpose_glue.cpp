// CUDA implementation of transpose_index (kernels: transpose_cuda.cu, see launchers.h): the
// same argument checks as the CPU op (csrc/checks.h) plus "on one CUDA device", the pattern's
// content checked (csrc/index_check.h), the outputs and workspace from the caching allocator,
// launches on the current stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../checks.h"
#include "glue.h"
#include "launchers.h"

namespace sparse_engine {
namespace {

using namespace cuda_glue;

std::tuple<at::Tensor, at::Tensor, at::Tensor> transpose_index_cuda(const at::Tensor& row_ptr,
                                                                    const at::Tensor& col_idx,
                                                                    int64_t n_cols) {
  const CsrSizes s = check_transpose_args(row_ptr, col_idx, n_cols, /*on_cuda=*/true);
  const c10::cuda::CUDAGuard guard(row_ptr.device());
  auto row_ptr_c = row_ptr.contiguous(), col_idx_c = col_idx.contiguous();
  const int64_t rows = s.rows, nnz = s.nnz;
  auto csc_ptr = at::empty({n_cols + 1}, row_ptr_c.options());
  auto csc_row = at::empty({nnz}, col_idx_c.options());
  auto csc_perm = at::empty({nnz}, col_idx_c.options());  // int32, like col_idx
  // The sort indexes by column and row_of by row_ptr: an out-of-range column or a bad row_ptr
  // would write out of bounds, so check the pattern first (one scan and sync, at pattern changes
  // only; remembered, so the spmm/sddmm calls that follow with this CSR do not scan it again).
  cuda_checked_max_len({row_ptr, col_idx, nullptr, "row_ptr", "col_idx", nullptr}, n_cols);
  const size_t workspace_bytes = cuda::transpose_index_workspace_bytes(rows, n_cols, nnz);
  at::Tensor workspace = workspace_bytes > 0
                             ? at::empty({static_cast<int64_t>(workspace_bytes)}, row_ptr_c.options().dtype(at::kByte))
                             : at::Tensor();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  C10_CUDA_CHECK(cuda::launch_transpose_index(row_ptr_c.data_ptr<int64_t>(), col_idx_c.data_ptr<int32_t>(), rows,
                                              n_cols, nnz, csc_ptr.data_ptr<int64_t>(), csc_row.data_ptr<int32_t>(),
                                              csc_perm.data_ptr<int32_t>(),
                                              workspace_bytes > 0 ? workspace.data_ptr() : nullptr, workspace_bytes,
                                              stream));
  return {csc_ptr, csc_row, csc_perm};
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CUDA, m) {
  m.impl("transpose_index", &transpose_index_cuda);
}

}  // namespace sparse_engine
