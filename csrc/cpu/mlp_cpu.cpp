// The elementwise passes of SET-MLP training on the CPU, each one pass in place over a tensor of
// a batch's activations or of all the weights (25 million at a million neurons), where torch's
// ops take several passes, a fresh allocation and a serial random generator:
//
//   relu_dropout(z, p, seed, scale)
//                              z <- relu(z) * keep * scale, keep = (u >= p), u uniform; scale
//                              1 / (1 - p) unless given (SET-MLP's faithful mode: 1)
//   sgd_step(param, buf, grad, lr, momentum, decay)
//                              buf <- momentum * buf + grad; param <- param - decay * param - lr * buf
//
// The random numbers of relu_dropout are a counter-based hash of (seed, element index), so the
// result does not depend on the thread count (tests/ops/test_mlp.py). CUDA runs the same steps
// with torch's ops (sparse_engine/nn/mlp.py, sparse_engine/training/set_mlp.py).
#include <torch/library.h>
#include <cmath>
#include <optional>
#include "common.h"
#include "storage.h"

namespace sparse_engine {
namespace {

// splitmix64's output function: a bijective mix of a 64-bit counter, good enough that
// consecutive counters give independent-looking uniform bits.
inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBULL;
  x ^= x >> 31;
  return x;
}

// Elements per block of the parallel loops (a multiple of every vector width).
inline constexpr int64_t kElementBlock = 1 << 14;

// body(i0, i1) over [0, n) in blocks of kElementBlock, the blocks spread over the threads (one
// block is always one thread's, so a block's results do not depend on the thread count), from
// parallel_work() / cost elements: `cost`, how many units of parallel_work() (a gather's
// multiply-adds) an element counts for, is set per pass from where its second thread was measured
// to pay (relu_dropout_threads.md).
template <typename Body>
void for_each_block(int64_t n, const Body& body, int64_t cost = 1) {
  const int64_t blocks = (n + kElementBlock - 1) / kElementBlock;
  parallel_chunks(blocks, n * cost >= parallel_work(), [&](int64_t blk) {
    const int64_t i0 = blk * kElementBlock;
    body(i0, std::min(n, i0 + kElementBlock));
  });
}

// relu_dropout's cost per element for for_each_block (its 64-bit hash): parallel from 262,144
// elements, where 2 threads took 185 us against 235 on one (benchmarks/results/
// relu_dropout_threads.md, Intel Xeon VM, passive waits); with cost 4 it went parallel from 131,072
// too, where 2 threads were 0.94x as fast. sgd_step keeps cost 1 (2 threads 1.02x at 524,288).
inline constexpr int64_t kHashCost = 2;

// Elements per unit of the float16 passes: widened to float and rounded back by F16C, 8 or 16 at
// a time (storage.h), because c10's conversion of one float16 is not vectorised: float16
// relu_dropout took 28-30x float32's time, sgd_step 5-12x (benchmarks/results/
// elementwise_two_byte_before_after.md, AMD EPYC VM). bfloat16's conversions are shifts and an
// integer rounding that the compiler vectorises in the plain loop (there sgd_step went from 8-19x
// float32's time to 0.6-1.3x once its two updates were two loops; through units of floats,
// relu_dropout was 1.5x slower than in the plain loop).
// A block (kElementBlock) is whole units.
inline constexpr int kUnit = 64;

// a[0][i] <- f(i, x) for i in [i0, i1), x[k] = a[k][i] as the accumulator type: in place on
// float32 / float64 / bfloat16, through units of floats on float16. Either way each result is
// f's value rounded once to S, so the path does not change the bits (up to a NaN's payload).
template <typename S, int K, typename F>
SE_ALWAYS_INLINE void update_block(S* const (&a)[K], int64_t i0, int64_t i1, const F& f) {
  using A = acc_t<S>;
  if constexpr (!std::is_same_v<S, at::Half>) {
    S* __restrict__ out = a[0];  // a[0] is read and written through it alone; a[1:] only read
    for (int64_t i = i0; i < i1; ++i) {
      A x[K];
      x[0] = static_cast<A>(out[i]);
      for (int k = 1; k < K; ++k) x[k] = static_cast<A>(a[k][i]);
      out[i] = static_cast<S>(f(i, x));
    }
  } else {
    alignas(64) float in[K][kUnit];
    alignas(64) float res[kUnit];
    for (int64_t c = i0; c < i1; c += kUnit) {
      const int64_t m = std::min<int64_t>(kUnit, i1 - c);
      for (int k = 0; k < K; ++k) {
        if (m == kUnit) widen<kUnit>(a[k] + c, in[k]);
        else for (int64_t j = 0; j < m; ++j) in[k][j] = static_cast<float>(a[k][c + j]);
      }
      for (int64_t j = 0; j < m; ++j) {
        float x[K];
        for (int k = 0; k < K; ++k) x[k] = in[k][j];
        res[j] = f(c + j, x);
      }
      for (int64_t j = m; j < ((m + 7) & ~int64_t{7}); ++j) res[j] = 0.0f;  // narrow reads whole units of 8
      narrow<S>(res, a[0] + c, m);
    }
  }
}

template <typename S>
void relu_dropout_kernel(S* z, int64_t n, double p, uint64_t seed, double scale_by) {
  using A = acc_t<S>;
  // keep iff the top 24 bits of the hash, r / 2^24 (torch.rand's float resolution), are >= p
  const uint64_t threshold = static_cast<uint64_t>(std::ceil(p * 16777216.0));
  const A scale = static_cast<A>(scale_by);
  const uint64_t base = mix64(seed);  // so that seeds s and s + 1 do not share counters
  // Branch-free on locals of the block: the loop vectorises (the 64-bit hash on AVX-512DQ lanes).
  for_each_block(n, [&](int64_t i0, int64_t i1) {
    const uint64_t t = threshold, b = base;
    const A s = scale;
    S* const arrays[1] = {z};
    update_block<S, 1>(arrays, i0, i1, [t, b, s](int64_t i, const A* x) SE_ALWAYS_INLINE_LAMBDA {
      const uint64_t r = mix64(b + static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ULL) >> 40;
      const A keep = static_cast<A>(r >= t) * s;  // scale or 0
      const A v = x[0];
      const A relu = v > A(0) || v != v ? v : A(0);  // NaN stays NaN, as in torch.relu
      return relu * keep;
    });
  }, kHashCost);
}

void relu_dropout_cpu(at::Tensor& z, double p, int64_t seed, std::optional<double> scale) {
  TORCH_CHECK_VALUE(z.is_contiguous(), "relu_dropout: z must be contiguous");
  TORCH_CHECK_VALUE(p >= 0.0 && p < 1.0, "relu_dropout: p must be in [0, 1), got ", p);
  TORCH_CHECK_VALUE(!scale || std::isfinite(*scale), "relu_dropout: scale must be finite, got ", scale.value_or(0.0));
  check_float_storage(z.scalar_type(), "relu_dropout: z", /*allow_half=*/true);
  const double by = scale ? *scale : 1.0 / (1.0 - p);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "relu_dropout_cpu", [&] {
    relu_dropout_kernel<scalar_t>(z.data_ptr<scalar_t>(), z.numel(), p, static_cast<uint64_t>(seed), by);
  });
}

template <typename S>
void sgd_step_kernel(S* param, S* buf, const S* grad, int64_t n, double lr, double momentum, double decay) {
  using A = acc_t<S>;
  const A keep = static_cast<A>(1.0 - decay), a_lr = static_cast<A>(lr), m = static_cast<A>(momentum);
  for_each_block(n, [&](int64_t i0, int64_t i1) {
    if constexpr (kIsHalf<S>) {  // two passes over the block (in cache): one loop of both was scalar
      S* const moment[2] = {buf, const_cast<S*>(grad)};  // buf <- m buf + grad (grad only read)
      update_block<S, 2>(moment, i0, i1, [m](int64_t, const A* x) SE_ALWAYS_INLINE_LAMBDA {
        return m * x[0] + x[1];
      });
      S* const step[2] = {param, buf};  // param <- keep param - lr buf, buf as stored (rounded)
      update_block<S, 2>(step, i0, i1, [keep, a_lr](int64_t, const A* x) SE_ALWAYS_INLINE_LAMBDA {
        return keep * x[0] - a_lr * x[1];
      });
    } else {  // one pass: two were 1.3x slower on float32
#pragma omp simd
      for (int64_t i = i0; i < i1; ++i) {
        const A b = m * buf[i] + grad[i];
        buf[i] = b;
        param[i] = keep * param[i] - a_lr * b;
      }
    }
  });
}

void sgd_step_cpu(at::Tensor& param, at::Tensor& buf, const at::Tensor& grad, double lr, double momentum,
                  double decay) {
  TORCH_CHECK_VALUE(param.is_contiguous() && buf.is_contiguous() && grad.is_contiguous(),
                    "sgd_step: param, buf and grad must be contiguous");
  TORCH_CHECK_VALUE(param.sizes() == buf.sizes() && param.sizes() == grad.sizes(),
                    "sgd_step: param, buf and grad must have one shape, got ", param.sizes(), ", ", buf.sizes(),
                    " and ", grad.sizes());
  TORCH_CHECK_TYPE(param.scalar_type() == buf.scalar_type() && param.scalar_type() == grad.scalar_type(),
                   "sgd_step: param, buf and grad must have one dtype");
  check_float_storage(param.scalar_type(), "sgd_step: param", /*allow_half=*/true);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, param.scalar_type(), "sgd_step_cpu", [&] {
    sgd_step_kernel<scalar_t>(param.data_ptr<scalar_t>(), buf.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                              param.numel(), lr, momentum, decay);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CPU, m) {
  m.impl("relu_dropout", &relu_dropout_cpu);
  m.impl("sgd_step", &sgd_step_cpu);
}

}  // namespace sparse_engine
