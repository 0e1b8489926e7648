// Helpers shared by the torch glue files (csrc/cuda/<family>_glue.cpp): the CUDA type of a
// torch storage dtype, int32 workspaces from the caching allocator, and the content check of an
// index (cuda_checked_max_len). The argument checks are
// csrc/checks.h's, the same as the CPU ops'. (c10/cuda headers only, not
// ATen/cuda/CUDAContext.h, which pulls in cuBLAS/cuSPARSE headers we do not need.)
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>
#include <optional>

#include "../index_check.h"
#include "launchers.h"

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

// The content check of an index on the GPU (csrc/index_check.h): ValueError naming the argument
// for an index a kernel would read out of bounds with, and the index's longest row, which sizes the
// long-row workspace (none, so no long-row launch, when no row is long). Call it under the op's
// CUDAGuard, after the argument checks (so every tensor is on the device). Cost: a remembered index
// (the same tensors, unchanged since the last check) costs a lookup; a new or edited one costs one
// scan kernel (launch_index_scan, O(rows + nnz)) and a 48-byte copy to the host, a sync, once per
// pattern. While the current stream is captured into a CUDA graph nothing may sync: an index not
// checked before the capture is then used unchecked, with the long-row kernels on (a graph is
// normally captured after warm-up calls, which check it).
inline int64_t cuda_checked_max_len(const CompressedIndex& ix, int64_t n_src) {
  return checked_max_len(ix, n_src, [&]() -> std::optional<IndexScan> {
    if (c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None) return std::nullopt;
    const at::Tensor ptr = ix.ptr.contiguous(), idx = ix.idx.contiguous();
    const at::Tensor perm = ix.perm ? ix.perm->contiguous() : at::Tensor();
    at::Tensor out = at::empty({6}, ptr.options());
    C10_CUDA_CHECK(cuda::launch_index_scan(ptr.const_data_ptr<int64_t>(), idx.const_data_ptr<int32_t>(),
                                           ix.perm ? perm.const_data_ptr<int32_t>() : nullptr, ptr.numel() - 1,
                                           idx.numel(), n_src, out.data_ptr<int64_t>(),
                                           c10::cuda::getCurrentCUDAStream()));
    const at::Tensor host = out.cpu();  // the sync
    IndexScan s;
    std::memcpy(&s, host.const_data_ptr<int64_t>(), sizeof(s));
    return s;
  });
}

}  // namespace cuda_glue
}  // namespace sparse_engine
