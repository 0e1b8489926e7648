// CUDA implementations of the sparse_engine operators: argument checks (the same as the CPU
// kernels, plus "everything on one CUDA device"), output and workspace allocation through
// the caching allocator, and launches on the current stream. (c10/cuda headers only, not
// ATen/cuda/CUDAContext.h, which pulls in cuBLAS/cuSPARSE headers we do not need.) The kernels themselves are
// plain CUDA in gather.cu, sddmm.cu and transpose.cu (see launchers.h).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "../cpu/common.h"
#include "../checks.h"
#include "launchers.h"

namespace sparse_engine {
namespace {

using namespace cuda_glue;

// at::Half / at::BFloat16 have the layout of CUDA's __half / __nv_bfloat16 (2-byte IEEE
// binary16 / bfloat16): the launchers take the CUDA types through a pointer cast.
template <typename T> struct CudaType { using type = T; };
template <> struct CudaType<at::Half> { using type = __half; };
template <> struct CudaType<at::BFloat16> { using type = __nv_bfloat16; };
static_assert(sizeof(at::Half) == sizeof(__half) && sizeof(at::BFloat16) == sizeof(__nv_bfloat16));

template <typename T>
auto cuda_ptr(const at::Tensor& t) {
  return reinterpret_cast<typename CudaType<T>::type*>(t.data_ptr<T>());
}

at::Tensor int_workspace(int64_t len, const at::Tensor& like) {
  return at::empty({len}, like.options().dtype(at::kInt));
}

// out = gather over (ptr, idx, perm) of values and src; shared by spmm and spmm_t.
at::Tensor gather(const at::Tensor& ptr, const at::Tensor& idx, const at::Tensor* perm,
                  const at::Tensor& values, const at::Tensor& src, int64_t n_out, int64_t nnz) {
  const c10::cuda::CUDAGuard guard(values.device());
  check_int32_size(n_out, "the output row count");
  auto p = ptr.contiguous(), i = idx.contiguous(), v = values.contiguous(), x = src.contiguous();
  at::Tensor pm = perm ? perm->contiguous() : at::Tensor();
  const int64_t B = x.size(1);
  auto out = at::empty({n_out, B}, x.options());
  if (n_out == 0 || B == 0) return out;
  const int64_t ws_len = cuda::gather_workspace_len(n_out, nnz);
  at::Tensor ws = ws_len > 0 ? int_workspace(ws_len, x) : at::Tensor();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "sparse_engine_gather_cuda", [&] {
    C10_CUDA_CHECK(cuda::launch_gather(p.data_ptr<int64_t>(), i.data_ptr<int32_t>(),
                                       perm ? pm.data_ptr<int64_t>() : nullptr, cuda_ptr<scalar_t>(v),
                                       cuda_ptr<scalar_t>(x), cuda_ptr<scalar_t>(out), n_out, B, nnz,
                                       ws_len > 0 ? ws.data_ptr<int32_t>() : nullptr, stream));
  });
  return out;
}

at::Tensor spmm_cuda(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                     const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& values,
                     const at::Tensor& X) {
  auto s = check_index(row_ptr, col_idx, csc_ptr, csc_row, csc_perm);
  check_values(values, s.nnz, /*allow_half=*/true);
  check_index_device(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values.device());
  check_dense(X, "X", s.cols, values.scalar_type(), values.device());
  return gather(row_ptr, col_idx, nullptr, values, X, s.rows, s.nnz);
}

at::Tensor spmm_t_cuda(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                       const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& values,
                       const at::Tensor& G) {
  auto s = check_index(row_ptr, col_idx, csc_ptr, csc_row, csc_perm);
  check_values(values, s.nnz, /*allow_half=*/true);
  check_index_device(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values.device());
  check_dense(G, "G", s.rows, values.scalar_type(), values.device());
  return gather(csc_ptr, csc_row, &csc_perm, values, G, s.cols, s.nnz);
}

at::Tensor sddmm_cuda(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                      const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& G,
                      const at::Tensor& X) {
  auto s = check_index(row_ptr, col_idx, csc_ptr, csc_row, csc_perm);
  check_float_storage(G.scalar_type(), "G", /*allow_half=*/true);
  check_index_device(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, G.device());
  check_dense(G, "G", s.rows, G.scalar_type(), G.device());
  check_dense(X, "X", s.cols, G.scalar_type(), G.device());
  TORCH_CHECK_VALUE(G.size(1) == X.size(1), "G and X must have the same batch size, got ", G.size(1),
                    " and ", X.size(1));
  check_int32_size(s.rows, "rows");
  const c10::cuda::CUDAGuard guard(G.device());
  auto Gc = G.contiguous(), Xc = X.contiguous();
  auto rp = row_ptr.contiguous(), ci = col_idx.contiguous();
  const int64_t B = G.size(1);
  auto out = at::empty({s.nnz}, G.options());
  if (s.nnz == 0) return out;
  const int64_t ws_len = cuda::sddmm_workspace_len(s.rows, s.nnz);
  at::Tensor ws = ws_len > 0 ? int_workspace(ws_len, Gc) : at::Tensor();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, G.scalar_type(), "sparse_engine_sddmm_cuda", [&] {
    C10_CUDA_CHECK(cuda::launch_sddmm(rp.data_ptr<int64_t>(), ci.data_ptr<int32_t>(), cuda_ptr<scalar_t>(Gc),
                                      cuda_ptr<scalar_t>(Xc), cuda_ptr<scalar_t>(out), s.rows, B, s.nnz,
                                      ws_len > 0 ? ws.data_ptr<int32_t>() : nullptr, stream));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> transpose_index_cuda(const at::Tensor& row_ptr,
                                                                    const at::Tensor& col_idx,
                                                                    int64_t n_cols) {
  TORCH_CHECK_TYPE(row_ptr.scalar_type() == at::kLong, "row_ptr must be int64");
  TORCH_CHECK_TYPE(col_idx.scalar_type() == at::kInt, "col_idx must be int32");
  TORCH_CHECK_VALUE(n_cols >= 0, "n_cols must be >= 0, got ", n_cols);
  TORCH_CHECK_VALUE(row_ptr.dim() == 1 && row_ptr.numel() >= 1, "row_ptr must be 1-D with rows+1 >= 1 entries");
  TORCH_CHECK_VALUE(col_idx.dim() == 1, "col_idx must be 1-D");
  TORCH_CHECK_VALUE(row_ptr.is_cuda(), "expected CUDA tensors, got row_ptr on ", row_ptr.device());
  check_device(col_idx, "col_idx", row_ptr.device());
  const c10::cuda::CUDAGuard guard(row_ptr.device());
  auto rp = row_ptr.contiguous(), ci = col_idx.contiguous();
  const int64_t rows = rp.numel() - 1, nnz = ci.numel();
  check_int32_size(rows, "rows");
  auto csc_ptr = at::empty({n_cols + 1}, rp.options());
  auto csc_row = at::empty({nnz}, ci.options());
  auto csc_perm = at::empty({nnz}, rp.options());
  if (nnz > 0) {
    // The sort and the column pointers index by column: an out-of-range entry would write
    // out of bounds, so check (one device-to-host sync, at pattern changes only).
    auto [lo, hi] = at::aminmax(ci);
    const int64_t mn = lo.item<int64_t>(), mx = hi.item<int64_t>();
    TORCH_CHECK_VALUE(mn >= 0 && mx < n_cols, "col_idx entries must be in [0, ", n_cols, "), got range [",
                      mn, ", ", mx, "]");
  }
  const size_t ws_bytes = cuda::transpose_index_workspace_bytes(rows, n_cols, nnz);
  at::Tensor ws = ws_bytes > 0 ? at::empty({static_cast<int64_t>(ws_bytes)}, rp.options().dtype(at::kByte))
                               : at::Tensor();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  C10_CUDA_CHECK(cuda::launch_transpose_index(rp.data_ptr<int64_t>(), ci.data_ptr<int32_t>(), rows, n_cols, nnz,
                                              csc_ptr.data_ptr<int64_t>(), csc_row.data_ptr<int32_t>(),
                                              csc_perm.data_ptr<int64_t>(), ws_bytes > 0 ? ws.data_ptr() : nullptr,
                                              ws_bytes, stream));
  return {csc_ptr, csc_row, csc_perm};
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CUDA, m) {
  m.impl("spmm", &spmm_cuda);
  m.impl("spmm_t", &spmm_t_cuda);
  m.impl("sddmm", &sddmm_cuda);
  m.impl("transpose_index", &transpose_index_cuda);
}

}  // namespace sparse_engine
