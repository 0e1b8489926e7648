// Shared helpers for the CPU kernels: argument checks and load-balanced row ranges.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <vector>

namespace sparse_engine {

struct IndexSizes {
  int64_t rows, cols, nnz;
};

// Checks the CSR + transposed index tensors and returns the matrix sizes.
// TORCH_CHECK_VALUE / TORCH_CHECK_TYPE surface in Python as ValueError / TypeError.
inline IndexSizes check_index(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                              const at::Tensor& csc_ptr, const at::Tensor& csc_row,
                              const at::Tensor& csc_perm) {
  TORCH_CHECK_TYPE(row_ptr.scalar_type() == at::kLong, "row_ptr must be int64, got ", row_ptr.scalar_type());
  TORCH_CHECK_TYPE(col_idx.scalar_type() == at::kInt, "col_idx must be int32, got ", col_idx.scalar_type());
  TORCH_CHECK_TYPE(csc_ptr.scalar_type() == at::kLong, "csc_ptr must be int64, got ", csc_ptr.scalar_type());
  TORCH_CHECK_TYPE(csc_row.scalar_type() == at::kInt, "csc_row must be int32, got ", csc_row.scalar_type());
  TORCH_CHECK_TYPE(csc_perm.scalar_type() == at::kLong, "csc_perm must be int64, got ", csc_perm.scalar_type());
  TORCH_CHECK_VALUE(row_ptr.dim() == 1 && row_ptr.numel() >= 1, "row_ptr must be 1-D with rows+1 >= 1 entries");
  TORCH_CHECK_VALUE(csc_ptr.dim() == 1 && csc_ptr.numel() >= 1, "csc_ptr must be 1-D with cols+1 >= 1 entries");
  int64_t nnz = col_idx.numel();
  TORCH_CHECK_VALUE(col_idx.dim() == 1 && csc_row.dim() == 1 && csc_perm.dim() == 1,
                    "col_idx, csc_row and csc_perm must be 1-D");
  TORCH_CHECK_VALUE(csc_row.numel() == nnz && csc_perm.numel() == nnz,
                    "csc_row and csc_perm must have nnz=", nnz, " entries, got ", csc_row.numel(),
                    " and ", csc_perm.numel());
  // O(1) ends check, so a wrong row_ptr cannot read out of bounds. Each pointer is read only
  // when it is in host memory: a CUDA op called with mixed devices (a CPU row_ptr, a CUDA
  // csc_ptr) must reach its device check, not dereference a device pointer on the host.
  auto ends = [](const at::Tensor& p) {
    const int64_t* d = p.const_data_ptr<int64_t>();
    return std::make_pair(d[0], d[(p.numel() - 1) * p.stride(0)]);
  };
  if (row_ptr.device().is_cpu()) {
    const auto [first, last] = ends(row_ptr);
    TORCH_CHECK_VALUE(first == 0 && last == nnz, "row_ptr must start at 0 and end at nnz=", nnz,
                      ", got ", first, " and ", last);
  }
  if (csc_ptr.device().is_cpu()) {
    const auto [cfirst, clast] = ends(csc_ptr);
    TORCH_CHECK_VALUE(cfirst == 0 && clast == nnz, "csc_ptr must start at 0 and end at nnz=", nnz,
                      ", got ", cfirst, " and ", clast);
  }
  return {row_ptr.numel() - 1, csc_ptr.numel() - 1, nnz};
}

inline void check_dense(const at::Tensor& t, const char* name, int64_t rows, at::ScalarType dtype,
                        const at::Device& device) {
  TORCH_CHECK_VALUE(t.dim() == 2, name, " must be 2-D (features x batch), got ", t.dim(), " dims");
  TORCH_CHECK_VALUE(t.size(0) == rows, name, " must have ", rows, " rows, got ", t.size(0));
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == device, name, " must be on ", device, ", got ", t.device());
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

// Splits [0, n) into `chunks` ranges of about equal (items + work): ptr is a prefix sum of
// per-item work (row_ptr or csc_ptr), so a few very long rows do not stall one thread.
inline std::vector<int64_t> balanced_bounds(const int64_t* ptr, int64_t n, int64_t chunks) {
  std::vector<int64_t> bounds(chunks + 1);
  const int64_t total = n + ptr[n];
  bounds[0] = 0;
  for (int64_t c = 1; c < chunks; ++c) {
    const int64_t target = total * c / chunks;
    int64_t lo = bounds[c - 1], hi = n;  // first i with ptr[i] + i >= target
    while (lo < hi) {
      int64_t mid = (lo + hi) / 2;
      if (ptr[mid] + mid < target) lo = mid + 1; else hi = mid;
    }
    bounds[c] = lo;
  }
  bounds[chunks] = n;
  return bounds;
}

// Below this much work (multiply-adds) a kernel stays on one thread: waking a thread costs
// more than the whole product, and much more on a busy machine.
constexpr int64_t kParallelWork = 1 << 15;

inline int64_t num_chunks(int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>(n, 8 * at::get_num_threads()));
}

}  // namespace sparse_engine
