// CPU (OpenMP) kernels: spmm, spmm_t, sddmm and the transposed index.
// Activations are feature-major (features x batch) so every gathered row is contiguous.
#include <torch/library.h>
#include <omp.h>
#include <cstring>
#include <type_traits>
#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#include "common.h"

namespace sparse_engine {
namespace {

// Storage type S (float, double, at::Half, at::BFloat16) and its accumulator: float16 and
// bfloat16 are only storage; every product and sum is in float32, and the result is
// rounded to the storage type once, when it is written.
template <typename S>
using acc_t = std::conditional_t<std::is_same_v<S, double>, double, float>;

template <typename S>
constexpr bool kIsHalf = !std::is_same_v<S, acc_t<S>>;

// Batch columns are processed in blocks whose width is a compile-time constant, so the
// accumulators stay in vector registers (32 floats / 16 doubles = two AVX-512 registers; a
// 2-byte type reads the same 128 bytes per gathered row, 64 values, into four).
template <typename S>
constexpr int block_width() { return 128 / static_cast<int>(sizeof(S)); }

// out[0:W] = float(x[0:W]) for a compile-time W (a multiple of 16), written so that it
// vectorises: bfloat16 is the high half of a float (a shift); float16 uses the hardware
// conversion at the width the compiler gives the loop that reads `out` (AVX-512 where there
// is one: 8-wide conversions feeding 16-wide loads stall store forwarding, 3-4x slower,
// measured), else the branch-free bit conversion (GCC 12 vectorises neither c10::Half's nor
// _Float16's scalar conversion).
// std::bit_cast is C++20; torch builds extensions as C++17 on some versions.
template <typename To, typename From>
inline To bits_as(From x) {
  static_assert(sizeof(To) == sizeof(From));
  To out;
  std::memcpy(&out, &x, sizeof(out));
  return out;
}

template <int W>
inline void widen(const at::BFloat16* x, float* out) {
  uint16_t bits[W];
  std::memcpy(bits, x, sizeof(bits));
  uint32_t wide[W];
#pragma omp simd
  for (int b = 0; b < W; ++b) wide[b] = static_cast<uint32_t>(bits[b]) << 16;
  std::memcpy(out, wide, sizeof(wide));
}

template <int W>
inline void widen(const at::Half* x, float* out) {
  static_assert(W % 16 == 0);
#if defined(__AVX512F__)
  for (int b = 0; b < W; b += 16)
    _mm512_storeu_ps(out + b, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + b))));
#elif defined(__F16C__) && defined(__AVX__)
  for (int b = 0; b < W; b += 8)
    _mm256_storeu_ps(out + b, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + b))));
#else
  uint16_t bits[W];
  std::memcpy(bits, x, sizeof(bits));
#pragma omp simd
  for (int b = 0; b < W; ++b) {  // IEEE binary16 -> binary32, subnormals included (as in FP16/c10)
    const uint32_t w = static_cast<uint32_t>(bits[b]) << 16;
    const uint32_t sign = w & 0x80000000u, two_w = w + w;
    const float normal = bits_as<float>((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float subnormal = bits_as<float>((two_w >> 17) | (126u << 23)) - 0.5f;
    out[b] = bits_as<float>(sign | (two_w < (1u << 27) ? bits_as<uint32_t>(subnormal)
                                                              : bits_as<uint32_t>(normal)));
  }
#endif
}

// The gathered rows are random, so the hardware prefetcher cannot follow them; fetching the
// row needed kPrefetch entries ahead makes the loop 4-10x faster (measured on 2 cores).
constexpr int64_t kPrefetch = 16;

template <int Bytes>
inline void prefetch_row(const void* p) {
  for (int line = 0; line < Bytes; line += 64) __builtin_prefetch(static_cast<const char*>(p) + line);
}

// y[0:W] = sum_{k in [k0, k1)} vals[k] * src[idx[k], b0:b0+W]; nnz bounds the prefetch.
template <typename S, int W>
inline void accumulate_block(int64_t k0, int64_t k1, const int32_t* idx, const S* vals,
                             const S* src, int64_t B, int64_t b0, S* y, int64_t nnz) {
  using A = acc_t<S>;
  A acc[W];
  for (int b = 0; b < W; ++b) acc[b] = 0;
  for (int64_t k = k0; k < k1; ++k) {
    if (k + kPrefetch < nnz)
      prefetch_row<W * sizeof(S)>(src + static_cast<int64_t>(idx[k + kPrefetch]) * B + b0);
    const A v = static_cast<A>(vals[k]);
    const S* x = src + static_cast<int64_t>(idx[k]) * B + b0;
    if constexpr (kIsHalf<S>) {
      float xf[W];
      widen<W>(x, xf);
#pragma omp simd
      for (int b = 0; b < W; ++b) acc[b] += v * xf[b];
    } else {
#pragma omp simd
      for (int b = 0; b < W; ++b) acc[b] += v * x[b];
    }
  }
  for (int b = 0; b < W; ++b) y[b] = static_cast<S>(acc[b]);
}

// The same for a block narrower than 8 columns, whose width is only known at run time.
template <typename S>
inline void accumulate_tail(int64_t k0, int64_t k1, const int32_t* idx, const S* vals,
                            const S* src, int64_t B, int64_t b0, int64_t width, S* y) {
  using A = acc_t<S>;
  A acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t k = k0; k < k1; ++k) {
    const A v = static_cast<A>(vals[k]);
    const S* x = src + static_cast<int64_t>(idx[k]) * B + b0;
    for (int64_t b = 0; b < width; ++b) acc[b] += v * static_cast<A>(x[b]);
  }
  for (int64_t b = 0; b < width; ++b) y[b] = static_cast<S>(acc[b]);
}

// out[i, :] = sum_{k in [ptr[i], ptr[i+1])} vals[k] * src[idx[k], :] for i in [0, n).
// Covers spmm (CSR) and spmm_t (transposed index, with vals already in column order).
template <typename scalar_t>
void gather_rows(const int64_t* ptr, const int32_t* idx, const scalar_t* vals,
                 const scalar_t* src, scalar_t* out, int64_t n, int64_t B) {
  constexpr int W = block_width<scalar_t>();
  const int64_t chunks = num_chunks(n);
  const auto bounds = balanced_bounds(ptr, n, chunks);
  const int64_t nnz = ptr[n];
  const bool parallel = (nnz + n) * B >= kParallelWork;
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads()) if (parallel)
  for (int64_t c = 0; c < chunks; ++c) {
    for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
      const int64_t k0 = ptr[i], k1 = ptr[i + 1];
      scalar_t* y = out + i * B;
      int64_t b0 = 0;
      for (; b0 + W <= B; b0 += W) accumulate_block<scalar_t, W>(k0, k1, idx, vals, src, B, b0, y + b0, nnz);
      if (B - b0 >= W / 2) {
        accumulate_block<scalar_t, W / 2>(k0, k1, idx, vals, src, B, b0, y + b0, nnz);
        b0 += W / 2;
      }
      if (B - b0 >= W / 4) {
        accumulate_block<scalar_t, W / 4>(k0, k1, idx, vals, src, B, b0, y + b0, nnz);
        b0 += W / 4;
      }
      for (; b0 < B; b0 += 8) accumulate_tail(k0, k1, idx, vals, src, B, b0, std::min<int64_t>(8, B - b0), y + b0);
    }
  }
}

// out[k] = values[perm[k]], prefetching ahead of the random reads.
template <typename scalar_t>
void gather_values(const scalar_t* values, const int64_t* perm, scalar_t* out, int64_t nnz) {
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads()) if (nnz >= kParallelWork)
  for (int64_t k = 0; k < nnz; ++k) {
    if (k + 4 * kPrefetch < nnz) __builtin_prefetch(values + perm[k + 4 * kPrefetch]);
    out[k] = values[perm[k]];
  }
}

// dot(a[0:W], b[0:W]) with a compile-time width: lane-wise products, then a fixed pairwise
// tree (vectorised, and the same order on every call, so results are deterministic).
template <typename S, int W>
inline acc_t<S> dot_block(const S* a, const S* b) {
  acc_t<S> acc[W];
  if constexpr (kIsHalf<S>) {
    float af[W], bf[W];
    widen<W>(a, af);
    widen<W>(b, bf);
#pragma omp simd
    for (int j = 0; j < W; ++j) acc[j] = af[j] * bf[j];
  } else {
#pragma omp simd
    for (int j = 0; j < W; ++j) acc[j] = a[j] * b[j];
  }
#pragma GCC unroll 8
  for (int w = W / 2; w >= 1; w /= 2) {
#pragma omp simd
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  }
  return acc[0];
}

// Partial dot over batch columns [b0, b1): compile-time blocks, then the scalar tail.
template <typename scalar_t>
inline acc_t<scalar_t> dot_range(const scalar_t* a, const scalar_t* b, int64_t b0, int64_t b1) {
  using A = acc_t<scalar_t>;
  constexpr int W = block_width<scalar_t>();
  A acc = 0;
  int64_t j = b0;
  for (; j + W <= b1; j += W) acc += dot_block<scalar_t, W>(a + j, b + j);
  if (b1 - j >= W / 2) {
    acc += dot_block<scalar_t, W / 2>(a + j, b + j);
    j += W / 2;
  }
  if (b1 - j >= W / 4) {
    acc += dot_block<scalar_t, W / 4>(a + j, b + j);
    j += W / 4;
  }
  for (; j < b1; ++j) acc += static_cast<A>(a[j]) * static_cast<A>(b[j]);
  return acc;
}

// out[k] = dot(G[row_k, :], X[col_k, :]) for every stored entry k. A wide batch (the T*B
// columns of a recurrent layer) is done in tiles of kTile columns, so the X rows a tile
// gathers stay in L2 instead of streaming from memory once per nonzero (about 10% faster at
// B = 700 on one thread, measured); each tile adds its partial dot in a fixed order, so
// results stay deterministic. A 2-byte type keeps the partial sums of all but the last tile
// in `partial` (float32, nnz entries, only when there is more than one tile), so the output
// is rounded once.
template <typename S>
constexpr int64_t sddmm_tile() { return 512 / sizeof(S); }  // 128 floats / 64 doubles / 256 halves
constexpr int64_t kSddmmTile2 = 256;                         // sddmm_tile of a 2-byte type

template <typename scalar_t>
void sddmm_rows(const int64_t* ptr, const int32_t* col, const scalar_t* g, const scalar_t* x,
                scalar_t* o, int64_t rows, int64_t B, float* partial) {
  constexpr int64_t kTile = sddmm_tile<scalar_t>();
  const int64_t chunks = num_chunks(rows);
  const auto bounds = balanced_bounds(ptr, rows, chunks);
  const int64_t nnz = ptr[rows];
  const bool parallel = (nnz + rows) * B >= kParallelWork;
  for (int64_t b0 = 0; b0 < B || b0 == 0; b0 += kTile) {
    const int64_t b1 = std::min(B, b0 + kTile);
    const int64_t tile_bytes = (b1 - b0) * static_cast<int64_t>(sizeof(scalar_t));
    const bool first = b0 == 0, last = b1 == B;
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads()) if (parallel)
    for (int64_t c = 0; c < chunks; ++c) {
      for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
        const scalar_t* gi = g + i * B;
        for (int64_t k = ptr[i]; k < ptr[i + 1]; ++k) {
          if (k + kPrefetch < nnz) {
            const char* next = reinterpret_cast<const char*>(x + static_cast<int64_t>(col[k + kPrefetch]) * B + b0);
            for (int64_t line = 0; line < tile_bytes; line += 64) __builtin_prefetch(next + line);
          }
          const auto part = dot_range(gi, x + static_cast<int64_t>(col[k]) * B, b0, b1);
          if constexpr (kIsHalf<scalar_t>) {
            const float total = first ? part : partial[k] + part;
            if (last) o[k] = static_cast<scalar_t>(total); else partial[k] = total;
          } else {
            o[k] = first ? part : o[k] + part;
          }
        }
      }
    }
    if (B == 0) break;
  }
}

at::Tensor spmm_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                    const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& values,
                    const at::Tensor& X) {
  auto s = check_index(row_ptr, col_idx, csc_ptr, csc_row, csc_perm);
  check_values(values, s.nnz, /*allow_half=*/true);
  check_dense(X, "X", s.cols, values.scalar_type(), values.device());
  auto Xc = X.contiguous();
  auto rp = row_ptr.contiguous(), ci = col_idx.contiguous(), v = values.contiguous();
  const int64_t B = X.size(1);
  auto Y = at::empty({s.rows, B}, X.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "spmm_cpu", [&] {
    gather_rows<scalar_t>(rp.data_ptr<int64_t>(), ci.data_ptr<int32_t>(), v.data_ptr<scalar_t>(),
                          Xc.data_ptr<scalar_t>(), Y.data_ptr<scalar_t>(), s.rows, B);
  });
  return Y;
}

at::Tensor spmm_t_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                      const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& values,
                      const at::Tensor& G) {
  auto s = check_index(row_ptr, col_idx, csc_ptr, csc_row, csc_perm);
  check_values(values, s.nnz, /*allow_half=*/true);
  check_dense(G, "G", s.rows, values.scalar_type(), values.device());
  auto Gc = G.contiguous();
  auto cp = csc_ptr.contiguous(), cr = csc_row.contiguous(), pm = csc_perm.contiguous();
  auto v = values.contiguous();
  const int64_t B = G.size(1);
  auto Z = at::empty({s.cols, B}, G.options());
  // Values in column order first (one parallel O(nnz) gather): measured 2x faster than
  // reading values[perm[k]] inside the product loop, whose random loads stall it.
  auto vt = at::empty({s.nnz}, values.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "spmm_t_cpu", [&] {
    gather_values<scalar_t>(v.data_ptr<scalar_t>(), pm.data_ptr<int64_t>(), vt.data_ptr<scalar_t>(), s.nnz);
    gather_rows<scalar_t>(cp.data_ptr<int64_t>(), cr.data_ptr<int32_t>(), vt.data_ptr<scalar_t>(),
                          Gc.data_ptr<scalar_t>(), Z.data_ptr<scalar_t>(), s.cols, B);
  });
  return Z;
}

at::Tensor sddmm_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                     const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& G,
                     const at::Tensor& X) {
  auto s = check_index(row_ptr, col_idx, csc_ptr, csc_row, csc_perm);
  check_float_storage(G.scalar_type(), "G", /*allow_half=*/true);
  check_dense(G, "G", s.rows, G.scalar_type(), G.device());
  check_dense(X, "X", s.cols, G.scalar_type(), G.device());
  TORCH_CHECK_VALUE(G.size(1) == X.size(1), "G and X must have the same batch size, got ", G.size(1),
                    " and ", X.size(1));
  auto Gc = G.contiguous(), Xc = X.contiguous();
  auto rp = row_ptr.contiguous(), ci = col_idx.contiguous();
  const int64_t B = G.size(1);
  auto out = at::empty({s.nnz}, G.options());
  // float32 partial sums between batch tiles, for a 2-byte type with more than one tile
  const bool half = G.element_size() == 2;
  at::Tensor partial = half && B > kSddmmTile2 ? at::empty({s.nnz}, G.options().dtype(at::kFloat))
                                               : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, G.scalar_type(), "sddmm_cpu", [&] {
    sddmm_rows<scalar_t>(rp.data_ptr<int64_t>(), ci.data_ptr<int32_t>(), Gc.data_ptr<scalar_t>(),
                         Xc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), s.rows, B,
                         partial.defined() ? partial.data_ptr<float>() : nullptr);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> transpose_index_cpu(const at::Tensor& row_ptr,
                                                                   const at::Tensor& col_idx,
                                                                   int64_t n_cols) {
  TORCH_CHECK_TYPE(row_ptr.scalar_type() == at::kLong, "row_ptr must be int64");
  TORCH_CHECK_TYPE(col_idx.scalar_type() == at::kInt, "col_idx must be int32");
  TORCH_CHECK_VALUE(n_cols >= 0, "n_cols must be >= 0, got ", n_cols);
  TORCH_CHECK_VALUE(row_ptr.dim() == 1 && row_ptr.numel() >= 1 && col_idx.dim() == 1,
                    "row_ptr and col_idx must be 1-D, row_ptr with rows+1 >= 1 entries");
  auto rp = row_ptr.contiguous(), ci = col_idx.contiguous();
  const int64_t rows = rp.numel() - 1, nnz = ci.numel();
  TORCH_CHECK_VALUE(rp.data_ptr<int64_t>()[0] == 0 && rp.data_ptr<int64_t>()[rows] == nnz,
                    "row_ptr must start at 0 and end at nnz=", nnz);
  auto csc_ptr = at::zeros({n_cols + 1}, rp.options());
  auto csc_row = at::empty({nnz}, ci.options());
  auto csc_perm = at::empty({nnz}, rp.options());
  const int64_t* ptr = rp.data_ptr<int64_t>();
  const int32_t* col = ci.data_ptr<int32_t>();
  int64_t* cptr = csc_ptr.data_ptr<int64_t>();
  int32_t* crow = csc_row.data_ptr<int32_t>();
  int64_t* perm = csc_perm.data_ptr<int64_t>();
  // Parallel stable counting sort: T blocks of rows (balanced by nnz) count their columns,
  // a prefix over (column, block) gives each block its slots, and blocks scatter in row
  // order, so the rows within each column come out sorted, as with one thread.
  const int64_t T = (nnz >= 4 * kParallelWork && rows > 1)
                        ? std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows)) : 1;
  const auto bounds = balanced_bounds(ptr, rows, T);
  std::vector<int64_t> counts(static_cast<size_t>(T) * (n_cols + 1), 0);
  bool in_range = true;
#pragma omp parallel for schedule(static, 1) num_threads(T) reduction(&& : in_range)
  for (int64_t t = 0; t < T; ++t) {
    int64_t* c = counts.data() + t * (n_cols + 1);
    for (int64_t k = ptr[bounds[t]]; k < ptr[bounds[t + 1]]; ++k) {
      const int32_t j = col[k];
      if (j < 0 || j >= n_cols) { in_range = false; break; }
      ++c[j];
    }
  }
  if (!in_range) {
    for (int64_t k = 0; k < nnz; ++k)
      TORCH_CHECK_VALUE(col[k] >= 0 && col[k] < n_cols, "col_idx entry ", col[k], " out of range [0, ",
                        n_cols, ")");
  }
  int64_t running = 0;  // counts become each block's first slot in each column
  for (int64_t j = 0; j < n_cols; ++j) {
    cptr[j] = running;
    for (int64_t t = 0; t < T; ++t) {
      int64_t& c = counts[t * (n_cols + 1) + j];
      const int64_t n = c;
      c = running;
      running += n;
    }
  }
  cptr[n_cols] = running;
#pragma omp parallel for schedule(static, 1) num_threads(T)
  for (int64_t t = 0; t < T; ++t) {
    int64_t* next = counts.data() + t * (n_cols + 1);
    for (int64_t i = bounds[t]; i < bounds[t + 1]; ++i) {
      for (int64_t k = ptr[i]; k < ptr[i + 1]; ++k) {
        const int64_t dst = next[col[k]]++;
        crow[dst] = static_cast<int32_t>(i);
        perm[dst] = k;
      }
    }
  }
  return {csc_ptr, csc_row, csc_perm};
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CPU, m) {
  m.impl("spmm", &spmm_cpu);
  m.impl("spmm_t", &spmm_t_cpu);
  m.impl("sddmm", &sddmm_cpu);
  m.impl("transpose_index", &transpose_index_cpu);
}

}  // namespace sparse_engine
