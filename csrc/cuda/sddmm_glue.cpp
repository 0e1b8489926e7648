// CUDA implementation of sddmm (kernels: sddmm_cuda.cu, see launchers.h): the same argument
// checks as the CPU op (csrc/checks.h) plus "everything on one CUDA device", the index's content
// checked once per pattern (csrc/index_check.h), the output and workspace from the caching
// allocator, launches on the current stream.
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

// out[k] = sum_b G[row_k, b] * X[col_k, b]. Locals ending in _c are contiguous copies.
at::Tensor sddmm_cuda(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                      const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& G,
                      const at::Tensor& X) {
  const IndexSizes s = check_sddmm_args(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, G, X, /*on_cuda=*/true);
  const c10::cuda::CUDAGuard guard(G.device());
  const int64_t max_len = cuda_checked_max_len({row_ptr, col_idx, nullptr, "row_ptr", "col_idx", nullptr}, X.size(0));
  auto G_c = G.contiguous(), X_c = X.contiguous(), row_ptr_c = row_ptr.contiguous(), col_idx_c = col_idx.contiguous();
  const int64_t B = G.size(1);
  auto out = at::empty({s.nnz}, G.options());
  if (s.nnz == 0) return out;
  const at::Tensor workspace = int_workspace(cuda::sddmm_workspace_len(s.rows, s.nnz, max_len), G_c);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, G.scalar_type(), "sparse_engine_sddmm_cuda", [&] {
    C10_CUDA_CHECK(cuda::launch_sddmm(row_ptr_c.data_ptr<int64_t>(), col_idx_c.data_ptr<int32_t>(),
                                      cuda_ptr<scalar_t>(G_c), cuda_ptr<scalar_t>(X_c), cuda_ptr<scalar_t>(out),
                                      s.rows, B, s.nnz, workspace_ptr(workspace), stream));
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CUDA, m) {
  m.impl("sddmm", &sddmm_cuda);
}

}  // namespace sparse_engine
