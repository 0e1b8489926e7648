// The emulator's own checks, one small kernel each (tests only): `selftest_plain <case>` runs one case.
// "ok" must pass (a block-wide sum with shuffles, shared memory and barriers, equal to the host's);
// every other case breaks one CUDA rule and must end with the emulator's error (exit status 86) or,
// for the misaligned store, UBSan's. Compiled with emu_build.py's rewrite like the real kernels;
// tests/kernels/test_cuda_emulator.py runs every case.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "emu_runtime.h"

namespace {

constexpr unsigned kFull = 0xffffffffu;
const cudaStream_t kStream = reinterpret_cast<cudaStream_t>(uintptr_t{0x5e1f});

// Sums `in` (blockDim.x values per block) into out[blockIdx.x]: warp sums with shuffles, then the
// warps' sums through shared memory.
__global__ void __launch_bounds__(256) sum_kernel(const float* in, float* out) {
  __shared__ float part[8];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float v = in[blockIdx.x * blockDim.x + threadIdx.x];
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(kFull, v, o);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0;
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) s += part[w];
    out[blockIdx.x] = s;
  }
}

__global__ void __launch_bounds__(64) rule_kernel(int which, float* data) {
  const int lane = threadIdx.x % 32;
  float v = static_cast<float>(threadIdx.x);
  switch (which) {
    case 0:  // lanes 16-31 call a shuffle whose mask names lanes 0-15 only
      v = __shfl_sync(0x0000ffffu, v, 0);
      break;
    case 1:  // lanes 0-15 read lane 20, outside their mask
      if (lane < 16) v = __shfl_sync(0x0000ffffu, v, 20);
      break;
    case 2:  // the two halves of a warp at different shuffles, both naming the whole warp
      if (lane < 16)
        v = __shfl_sync(kFull, v, 0);
      else
        v = __shfl_sync(kFull, v, 1);
      break;
    case 3:  // lanes 16-31 return, the others shuffle with all 32 named
      if (lane >= 16) return;
      v = __shfl_sync(kFull, v, 0);
      break;
    case 4:  // lane 0 goes to the barrier while its warp shuffles
      if (lane == 0) __syncthreads();
      else v = __shfl_sync(kFull, v, 0);
      break;
    case 5:  // the second warp returns before a barrier the first reaches
      if (threadIdx.x >= 32) return;
      __syncthreads();
      break;
    case 6:  // the halves of the block at two different barriers
      if (threadIdx.x < 32)
        __syncthreads();
      else
        __syncthreads();
      break;
    case 7:  // a 16-byte load from an address 4 bytes past a 16-byte boundary
      v = __ldg(reinterpret_cast<const float4*>(data + 1)).x;
      break;
    case 8:  // a 16-byte store to an address 4 bytes past a 16-byte boundary
      *reinterpret_cast<float4*>(data + 1) = make_float4(v, v, v, v);
      break;
    case 9: {  // 52 KB of static shared memory
      __shared__ float big[13000];
      big[threadIdx.x] = v;
      v = big[(threadIdx.x + 1) % 64];
      break;
    }
    default:
      break;
  }
  if (threadIdx.x == 0 && which != 7 && which != 8) data[64 + blockIdx.x] = v;
}

int fail_count = 0;

void ok_case() {
  for (int blocks : {1, 5, 9}) {
    std::vector<float> in(blocks * 256), out(blocks, -1.0f);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i % 7) - 3.0f;  // exact sums
    sum_kernel<<<blocks, 256, 0, kStream>>>(in.data(), out.data());
    for (int b = 0; b < blocks; ++b) {
      float want = 0;
      for (int t = 0; t < 256; ++t) want += in[b * 256 + t];
      if (out[b] != want) {
        printf("FAIL block %d: %g vs %g\n", b, out[b], want);
        ++fail_count;
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IONBF, 0);
  emu::configure(argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1, kStream);
  const std::string c = argc > 1 ? argv[1] : "ok";
  alignas(16) static float data[256];
  const char* rules[] = {"mask-excludes-caller", "source-outside-mask", "divergent-shuffle", "shuffle-after-return",
                         "shuffle-vs-barrier",   "partial-barrier",     "two-barriers",      "misaligned-load",
                         "misaligned-store",     "shared-too-big"};
  for (int i = 0; i < 10; ++i)
    if (c == rules[i]) rule_kernel<<<2, 64, 0, kStream>>>(i, data);
  if (c == "ok") ok_case();
  if (c == "block-too-big") sum_kernel<<<1, 2048, 0, kStream>>>(data, data);
  if (c == "grid-y") sum_kernel<<<dim3(1, 3), 32, 0, kStream>>>(data, data);
  if (c == "launch-bounds") rule_kernel<<<1, 128, 0, kStream>>>(-1, data);
  if (c == "default-stream") sum_kernel<<<1, 32>>>(data, data);
  if (c == "dynamic-shared") sum_kernel<<<1, 32, 64 * 1024, kStream>>>(data, data);
  printf("%s %s\n", fail_count ? "FAILED" : "ALL OK", c.c_str());
  return fail_count != 0;
}
