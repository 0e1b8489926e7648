// Argument checks of the operators, one definition each, shared by the CPU kernels (csrc/cpu)
// and the CUDA glue (csrc/cuda/*_glue.cpp): the sparse index (CSR and its transpose), values,
// dense operands, and for the CUDA ops one CUDA device and int32-sized dimensions. Tests match
// on these messages. TORCH_CHECK_VALUE / TORCH_CHECK_TYPE surface in Python as ValueError /
// TypeError.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <limits>

namespace sparse_engine {

struct IndexSizes {
  int64_t rows, cols, nnz;
};

struct CsrSizes {
  int64_t rows, nnz;
};

namespace detail {

inline void check_dtype(const at::Tensor& t, const char* name, at::ScalarType dtype, const char* dtype_name) {
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " must be ", dtype_name, ", got ", t.scalar_type());
}

// A pointer array (row_ptr: rows+1 entries, csc_ptr: cols+1).
inline void check_ptr_shape(const at::Tensor& ptr, const char* name, const char* count) {
  TORCH_CHECK_VALUE(ptr.dim() == 1 && ptr.numel() >= 1, name, " must be 1-D with ", count, "+1 >= 1 entries");
}

// O(1) ends check, so a wrong pointer array cannot make a kernel read out of bounds. The
// pointer is read only when it is in host memory: a CUDA op called with mixed devices (a CPU
// row_ptr, a CUDA csc_ptr) must reach its device check, not dereference a device pointer.
inline void check_ptr_ends(const at::Tensor& ptr, const char* name, int64_t nnz) {
  if (!ptr.device().is_cpu()) return;
  const int64_t* p = ptr.const_data_ptr<int64_t>();
  const int64_t first = p[0], last = p[(ptr.numel() - 1) * ptr.stride(0)];
  TORCH_CHECK_VALUE(first == 0 && last == nnz, name, " must start at 0 and end at nnz=", nnz, ", got ", first,
                    " and ", last);
}

}  // namespace detail

// A CSR pattern (row_ptr int64 [rows+1], col_idx int32 [nnz]); returns its sizes. Its content
// (row_ptr non-decreasing, the column range, sorted rows) is checked by index_check.h: once per
// pattern for the products (cpu_checked_max_len), on every call for the ops that read the whole
// pattern anyway (check_csr_content).
inline CsrSizes check_csr(const at::Tensor& row_ptr, const at::Tensor& col_idx) {
  detail::check_dtype(row_ptr, "row_ptr", at::kLong, "int64");
  detail::check_dtype(col_idx, "col_idx", at::kInt, "int32");
  detail::check_ptr_shape(row_ptr, "row_ptr", "rows");
  TORCH_CHECK_VALUE(col_idx.dim() == 1, "col_idx must be 1-D");
  const int64_t nnz = col_idx.numel();
  detail::check_ptr_ends(row_ptr, "row_ptr", nnz);
  return {row_ptr.numel() - 1, nnz};
}

// The index of an operand, CSR + transposed (see csrc/ops.cpp); returns the matrix sizes.
// The transposed index may be absent where the op does not read it (need_transpose false: spmm,
// sddmm): csc_row and csc_perm then hold no entries and csc_ptr still has cols+1 entries (any
// values; SparseWeight passes a zero-stride tensor), so the column count is still checked.
// A SparseWeight builds its transposed index only when an op needs it (a layer whose input
// needs no gradient never does).
inline IndexSizes check_index(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                              const at::Tensor& csc_row, const at::Tensor& csc_perm, bool need_transpose = true) {
  detail::check_dtype(row_ptr, "row_ptr", at::kLong, "int64");
  detail::check_dtype(col_idx, "col_idx", at::kInt, "int32");
  detail::check_dtype(csc_ptr, "csc_ptr", at::kLong, "int64");
  detail::check_dtype(csc_row, "csc_row", at::kInt, "int32");
  detail::check_dtype(csc_perm, "csc_perm", at::kInt, "int32");
  detail::check_ptr_shape(row_ptr, "row_ptr", "rows");
  detail::check_ptr_shape(csc_ptr, "csc_ptr", "cols");
  const int64_t nnz = col_idx.numel();
  TORCH_CHECK_VALUE(col_idx.dim() == 1 && csc_row.dim() == 1 && csc_perm.dim() == 1,
                    "col_idx, csc_row and csc_perm must be 1-D");
  const bool absent = nnz > 0 && csc_row.numel() == 0 && csc_perm.numel() == 0;
  TORCH_CHECK_VALUE(!absent || !need_transpose,
                    "this op needs the transposed index (csc_row and csc_perm with nnz=", nnz,
                    " entries), got none: take the index from SparseWeight.index, which builds it");
  TORCH_CHECK_VALUE(absent || (csc_row.numel() == nnz && csc_perm.numel() == nnz),
                    "csc_row and csc_perm must have nnz=", nnz, " entries, got ", csc_row.numel(),
                    " and ", csc_perm.numel());
  detail::check_ptr_ends(row_ptr, "row_ptr", nnz);
  if (!absent) detail::check_ptr_ends(csc_ptr, "csc_ptr", nnz);
  return {row_ptr.numel() - 1, csc_ptr.numel() - 1, nnz};
}

// Every column index in [0, n_cols); reports the first one that is not (host memory).
inline void check_col_range(const int32_t* col_idx, int64_t nnz, int64_t n_cols) {
  for (int64_t k = 0; k < nnz; ++k)
    TORCH_CHECK_VALUE(col_idx[k] >= 0 && col_idx[k] < n_cols, "col_idx entry ", col_idx[k], " out of range [0, ",
                      n_cols, ")");
}

inline void check_dense(const at::Tensor& t, const char* name, int64_t rows, at::ScalarType dtype,
                        const at::Device& device) {
  TORCH_CHECK_VALUE(t.dim() == 2, name, " must be 2-D (features x batch), got ", t.dim(), " dims");
  TORCH_CHECK_VALUE(t.size(0) == rows, name, " must have ", rows, " rows, got ", t.size(0));
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == device, name, " must be on ", device, ", got ", t.device());
}

// A (rows x batch) operand with the dtype and device of `values` (the fused step's state-like operands).
inline void check_batch_operand(const at::Tensor& t, const char* name, int64_t rows, int64_t batch,
                                const at::Tensor& values) {
  check_dense(t, name, rows, values.scalar_type(), values.device());
  TORCH_CHECK_VALUE(t.size(1) == batch, name, " must have batch size ", batch, ", got ", t.size(1));
}

// Storage dtypes of spmm, spmm_t and sddmm: float32/float64, and float16/bfloat16 (stored in
// 2 bytes, accumulated in float32). Other kernels (RNN steps, topology) take only the first two.
inline bool is_float_storage(at::ScalarType t, bool allow_half) {
  return t == at::kFloat || t == at::kDouble || (allow_half && (t == at::kHalf || t == at::kBFloat16));
}

inline void check_float_storage(at::ScalarType t, const char* name, bool allow_half) {
  TORCH_CHECK_TYPE(is_float_storage(t, allow_half), name, " must be float32 or float64",
                   allow_half ? " (or float16/bfloat16)" : "", ", got ", t);
}

inline void check_values(const at::Tensor& values, int64_t nnz, bool allow_half = false) {
  check_float_storage(values.scalar_type(), "values", allow_half);
  TORCH_CHECK_VALUE(values.dim() == 1 && values.numel() == nnz, "values must be 1-D with nnz=", nnz,
                    " entries, got shape ", values.sizes());
}

// ------------------------------------------------------------------ the CUDA ops
// On top of the checks above: every tensor on one CUDA device, and int32-sized dimensions.
inline void check_device(const at::Tensor& t, const char* name, const at::Device& device) {
  TORCH_CHECK_VALUE(t.device() == device, name, " must be on ", device, " like the other inputs, got ",
                    t.device());
}

// Index tensors on `device`, which must be a CUDA device (the values' device).
inline void check_index_device(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                               const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Device& device) {
  TORCH_CHECK_VALUE(device.is_cuda(), "expected CUDA tensors, got a tensor on ", device);
  check_device(row_ptr, "row_ptr", device);
  check_device(col_idx, "col_idx", device);
  check_device(csc_ptr, "csc_ptr", device);
  check_device(csc_row, "csc_row", device);
  check_device(csc_perm, "csc_perm", device);
}

inline void check_int32_size(int64_t n, const char* what) {
  TORCH_CHECK_VALUE(n <= std::numeric_limits<int32_t>::max(), what, " must be < 2^31 for the CUDA kernels, got ", n);
}

// ------------------------------------------------------------------ per op family
// The arguments of each operator family, checked in one order for both devices; on_cuda adds
// the CUDA ops' device and size checks.

// spmm (the dense operand X has cols rows) and spmm_t (G, rows rows): index, values of any
// storage dtype, and the dense operand with the values' dtype and device.
inline IndexSizes check_spmm_args(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                                  const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& values,
                                  const at::Tensor& dense, bool transposed, bool on_cuda) {
  const IndexSizes s = check_index(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, /*need_transpose=*/transposed);
  check_values(values, s.nnz, /*allow_half=*/true);
  if (on_cuda) check_index_device(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, values.device());
  check_dense(dense, transposed ? "G" : "X", transposed ? s.rows : s.cols, values.scalar_type(), values.device());
  return s;
}

// sddmm: index, G (rows x B) of any storage dtype, X (cols x B) like G.
inline IndexSizes check_sddmm_args(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                                   const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& G,
                                   const at::Tensor& X, bool on_cuda) {
  const IndexSizes s = check_index(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, /*need_transpose=*/false);
  check_float_storage(G.scalar_type(), "G", /*allow_half=*/true);
  if (on_cuda) check_index_device(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, G.device());
  check_dense(G, "G", s.rows, G.scalar_type(), G.device());
  check_dense(X, "X", s.cols, G.scalar_type(), G.device());
  TORCH_CHECK_VALUE(G.size(1) == X.size(1), "G and X must have the same batch size, got ", G.size(1),
                    " and ", X.size(1));
  if (on_cuda) check_int32_size(s.rows, "rows");
  return s;
}

// transpose_index: a CSR pattern and its column count (the column range is the kernel's).
inline CsrSizes check_transpose_args(const at::Tensor& row_ptr, const at::Tensor& col_idx, int64_t n_cols,
                                     bool on_cuda) {
  const CsrSizes s = check_csr(row_ptr, col_idx);
  TORCH_CHECK_VALUE(n_cols >= 0 && n_cols <= std::numeric_limits<int32_t>::max(), "n_cols must be in [0, 2^31), got ",
                    n_cols);  // col_idx is int32: no column past 2^31 - 1
  TORCH_CHECK_VALUE(s.nnz <= std::numeric_limits<int32_t>::max(),
                    "nnz must be < 2^31 (csc_perm holds int32 positions), got ", s.nnz);
  if (on_cuda) {
    TORCH_CHECK_VALUE(row_ptr.is_cuda(), "expected CUDA tensors, got row_ptr on ", row_ptr.device());
    check_device(col_idx, "col_idx", row_ptr.device());
    check_int32_size(s.rows, "rows");
  }
  return s;
}

}  // namespace sparse_engine
