// Host-side entry points of the CUDA kernels (csrc/cuda/*.cu). Plain pointers and sizes,
// no torch types, so the .cu files compile with nvcc alone and the torch glue
// (ops_cuda.cpp) compiles with the host compiler alone.
//
// Layout: activations are feature-major, row-major (features x B, B contiguous).
// A "gather" is the operation out[i, :] = sum_{k in [ptr[i], ptr[i+1])} val(k) * src[idx[k], :]
// with val(k) = values[perm ? perm[k] : k]: spmm is a gather over the CSR index,
// spmm_t the same gather over the transposed index (csc_ptr, csc_row, csc_perm).
// Every launcher returns the error of its last launch (cudaSuccess when nothing to do)
// and enqueues work on `stream` only; none of them synchronises.
// dtypes: float, double, and __half / __nv_bfloat16 storage (computed in float32, each
// output rounded to the storage type once).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace sparse_engine {
namespace cuda {

// Number of int32 workspace entries the gather needs for the long-row list
// (0: no row can be long, pass nullptr).
int64_t gather_workspace_len(int64_t n_out, int64_t nnz);

// out (n_out x B) = gather(ptr, idx, perm, values, src (n_src x B)). perm may be nullptr.
// workspace: gather_workspace_len(n_out, nnz) int32 entries in device memory (or nullptr
// when that is 0). Deterministic: every output element is summed in a fixed order.
cudaError_t launch_gather(const int64_t* ptr, const int32_t* idx, const int64_t* perm,
                          const float* values, const float* src, float* out, int64_t n_out,
                          int64_t B, int64_t nnz, int32_t* workspace, cudaStream_t stream);
cudaError_t launch_gather(const int64_t* ptr, const int32_t* idx, const int64_t* perm,
                          const double* values, const double* src, double* out, int64_t n_out,
                          int64_t B, int64_t nnz, int32_t* workspace, cudaStream_t stream);
cudaError_t launch_gather(const int64_t* ptr, const int32_t* idx, const int64_t* perm,
                          const __half* values, const __half* src, __half* out, int64_t n_out,
                          int64_t B, int64_t nnz, int32_t* workspace, cudaStream_t stream);
cudaError_t launch_gather(const int64_t* ptr, const int32_t* idx, const int64_t* perm,
                          const __nv_bfloat16* values, const __nv_bfloat16* src, __nv_bfloat16* out,
                          int64_t n_out, int64_t B, int64_t nnz, int32_t* workspace, cudaStream_t stream);

// Workspace (int32 entries) for sddmm's long-row list; 0 means pass nullptr.
int64_t sddmm_workspace_len(int64_t rows, int64_t nnz);

// out[k] = sum_b G[row_k, b] * X[col_idx[k], b] for the CSR pattern (row_ptr, col_idx).
// G: rows x B, X: cols x B, out: nnz. Deterministic.
cudaError_t launch_sddmm(const int64_t* row_ptr, const int32_t* col_idx, const float* G,
                         const float* X, float* out, int64_t rows, int64_t B, int64_t nnz,
                         int32_t* workspace, cudaStream_t stream);
cudaError_t launch_sddmm(const int64_t* row_ptr, const int32_t* col_idx, const double* G,
                         const double* X, double* out, int64_t rows, int64_t B, int64_t nnz,
                         int32_t* workspace, cudaStream_t stream);
cudaError_t launch_sddmm(const int64_t* row_ptr, const int32_t* col_idx, const __half* G,
                         const __half* X, __half* out, int64_t rows, int64_t B, int64_t nnz,
                         int32_t* workspace, cudaStream_t stream);
cudaError_t launch_sddmm(const int64_t* row_ptr, const int32_t* col_idx, const __nv_bfloat16* G,
                         const __nv_bfloat16* X, __nv_bfloat16* out, int64_t rows, int64_t B,
                         int64_t nnz, int32_t* workspace, cudaStream_t stream);

// Bytes of device workspace launch_transpose_index needs.
size_t transpose_index_workspace_bytes(int64_t rows, int64_t cols, int64_t nnz);

// Transposed index of a CSR pattern: csc_ptr (cols+1), csc_row (nnz), csc_perm (nnz), with
// each column's rows ascending (a stable radix sort by column). Requires 0 <= col_idx < cols
// (checked by the caller) and a valid row_ptr.
cudaError_t launch_transpose_index(const int64_t* row_ptr, const int32_t* col_idx, int64_t rows,
                                   int64_t cols, int64_t nnz, int64_t* csc_ptr, int32_t* csc_row,
                                   int64_t* csc_perm, void* workspace, size_t workspace_bytes,
                                   cudaStream_t stream);

}  // namespace cuda
}  // namespace sparse_engine
