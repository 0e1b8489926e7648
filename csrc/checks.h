// Argument checks shared by the CUDA glue files (ops_cuda.cpp, rnn_cuda.cpp): on top of the
// CPU ops' checks (../cpu/common.h), everything on one CUDA device and int32-sized dimensions.
#pragma once
#include <torch/library.h>

#include <limits>

namespace sparse_engine {
namespace cuda_glue {

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

}  // namespace cuda_glue
}  // namespace sparse_engine
