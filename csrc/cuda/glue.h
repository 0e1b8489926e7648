// Helpers shared by the torch glue files (csrc/cuda/<family>_glue.cpp): the CUDA type of a
// torch storage dtype, and int32 workspaces from the caching allocator. The argument checks are
// csrc/checks.h's, the same as the CPU ops'. (c10/cuda headers only, not
// ATen/cuda/CUDAContext.h, which pulls in cuBLAS/cuSPARSE headers we do not need.)
#pragma once
#include <ATen/ATen.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace sparse_engine {
namespace cuda_glue {

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

// An int32 workspace of `len` entries on the device of `like` (undefined when len is 0), and its
// pointer for a launcher (nullptr when undefined).
inline at::Tensor int_workspace(int64_t len, const at::Tensor& like) {
  return len > 0 ? at::empty({len}, like.options().dtype(at::kInt)) : at::Tensor();
}

inline int32_t* workspace_ptr(const at::Tensor& workspace) {
  return workspace.defined() ? workspace.data_ptr<int32_t>() : nullptr;
}

}  // namespace cuda_glue
}  // namespace sparse_engine
