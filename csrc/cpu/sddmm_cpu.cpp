// sddmm on the CPU: out[k] = dot(G[row_k, :], X[col_k, :]) for every stored entry k,
// the weight gradient sampled at the nonzeros. Activations are feature-major (features x batch)
// so both rows of each dot product are contiguous.
#include <torch/library.h>
#include <limits>
#include <type_traits>
#include <vector>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include "common.h"
#include "gather.h"
#include "sddmm_rows.h"

namespace sparse_engine {
namespace {

// dot(a[b0:b1], b[b0:b1]) over a padded batch (gather.h): b1 - b0 is a whole number of
// units (P elements: gather.h's pad_unit), or 1 (B = 1, no padding). Each unit is added
// lane-wise into one P-wide vector accumulator (one vector FMA per unit), then the P lanes are
// summed by a fixed pairwise tree: one horizontal reduction per nonzero instead of one per 4
// units, and the same order on every call, so results are deterministic.
template <typename scalar_t>
inline acc_t<scalar_t> dot_range(const scalar_t* a, const scalar_t* b, int64_t b0, int64_t b1) {
  using A = acc_t<scalar_t>;
  constexpr int P = pad_unit<scalar_t>();
  if ((b1 - b0) % P != 0) {  // B = 1
    A acc = 0;
    for (int64_t j = b0; j < b1; ++j) acc += static_cast<A>(a[j]) * static_cast<A>(b[j]);
    return acc;
  }
  A acc[P];
  for (int l = 0; l < P; ++l) acc[l] = 0;
  for (int64_t j = b0; j < b1; j += P) {
    if constexpr (kIsHalf<scalar_t>) {
      float af[P], bf[P];
      widen<P>(a + j, af);
      widen<P>(b + j, bf);
#pragma omp simd
      for (int l = 0; l < P; ++l) acc[l] += af[l] * bf[l];
    } else {
#pragma omp simd
      for (int l = 0; l < P; ++l) acc[l] += a[j + l] * b[j + l];
    }
  }
#pragma GCC unroll 8
  for (int w = P / 2; w >= 1; w /= 2) {
#pragma omp simd
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  }
  return acc[0];
}


// out[k] = dot(G[row_k, :], X[col_k, :]) for every stored entry k. A wide batch (the T*B
// columns of a recurrent layer) is done in tiles of sddmm_tile() columns, so the X rows a tile
// gathers stay in L2 instead of streaming from memory once per nonzero (about 10% faster at
// B = 700 on one thread, measured); each tile adds its partial dot in a fixed order, so
// results stay deterministic. A 2-byte type keeps the partial sums of all but the last tile
// in `partial` (float32, nnz entries, only when there is more than one tile), so the output
// is rounded once.
template <typename S>
constexpr int64_t sddmm_tile() { return 512 / sizeof(S); }  // 128 floats / 64 doubles / 256 halves

// The tiles pay only where rows are long and a tile's X rows fit the core's L2: a tile of G's row
// is then reused by many entries and the tile of X's rows by many G rows. Where rows hold a few
// entries, or the X rows' tile outgrows L2, each entry reading its X row in separate 512-byte
// pieces, one pass over the index per tile, cost more than reading it whole. Measured on the
// 2-core Xeon VM (2 MB L2 per core), quiet; tiled / whole, one thread: 1,500 / 33% (495 a row,
// 0.75 MB tile set), B = 700, 34 / 73 ms; 4,096 / 1% (41, 2 MB), B = 700, 16 / 21; 8,192 / 1% (82,
// 4 MB), B = 256, 32 / 30; 4,096 / 0.1% (4), B = 512, 2.6 / 1.7; 16,384 / 0.05% (8, 8 MB),
// B = 512, 27.6 / 15.5 (torch.sparse.sampled_addmm 16.1). Two threads against sampled_addmm at
// 16,384 / 1%, B = 512 (164 a row, 8 MB): tiled 0.50-0.61x (the row-law grid), whole 1.03-1.17x.
inline constexpr int64_t kSddmmTileFromRowMean = 16;
inline constexpr int64_t kSddmmTileSetBytes = int64_t(2) << 20;
template <typename S>
bool sddmm_tiles_batch(int64_t nnz, int64_t rows, int64_t x_rows) {
  const int64_t tile_bytes = sddmm_tile<S>() * static_cast<int64_t>(sizeof(S));
  return nnz >= kSddmmTileFromRowMean * rows && x_rows * tile_bytes <= kSddmmTileSetBytes;
}

// B: the batch columns summed; stride: the row stride of G and X (B, or B padded to whole units
// for the generic loop, whose tiles are whole units).
//
// Batch tiles of sddmm_tile() columns where sddmm_tiles_batch, else one tile of all B.
//
// The X rows an entry gathers are cache-tiled like spmm's (tiling.h, gather_panels): from a large X
// (the states of a layer of 10^5-10^6 units) the rows are taken in panels, every row of G
// consuming one panel before the next. Each entry's dot product is the same whichever panel
// computes it, so the results are the same bits as untiled.
template <typename scalar_t>
void sddmm_rows(const int64_t* row_ptr, const int32_t* col_idx, const scalar_t* G, const scalar_t* X,
                scalar_t* out, int64_t rows, int64_t B, int64_t stride, float* partial, int64_t x_rows) {
  const int64_t nnz = row_ptr[rows];
  const int64_t tile = sddmm_tiles_batch<scalar_t>(nnz, rows, x_rows) ? sddmm_tile<scalar_t>() : std::max<int64_t>(B, 1);
  const int64_t panels = gather_panels<scalar_t>(x_rows, stride, std::min(B, tile), row_ptr, col_idx, rows);
  const int64_t chunks = panel_chunks(rows, panels);
  const auto bounds = balanced_bounds(row_ptr, rows, chunks);
  const bool parallel = (nnz + rows) * B >= parallel_work();
  const int64_t panel_rows = (x_rows + panels - 1) / panels;
  std::vector<int64_t> next(panels > 1 ? rows : 0);  // per row, its first entry not done yet
  for (int64_t b0 = 0; b0 < B || b0 == 0; b0 += tile) {
    const int64_t b1 = std::min(B, b0 + tile);
    const int64_t tile_bytes = (b1 - b0) * static_cast<int64_t>(sizeof(scalar_t));
    const bool first = b0 == 0, last = b1 == B;
    if (panels > 1) std::copy(row_ptr, row_ptr + rows, next.begin());
    for (int64_t p = 0; p < panels; ++p) {
    const int64_t end = p + 1 == panels ? std::numeric_limits<int64_t>::max() : (p + 1) * panel_rows;
    parallel_chunks(chunks, parallel, [&](int64_t c) {
      for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
        const scalar_t* G_i = G + i * stride;
        int64_t k0 = row_ptr[i], k1 = row_ptr[i + 1], bound = nnz;  // bound: of the prefetch
        if (panels > 1) {  // this panel's entries of the row: up to its first at a later panel's X row
          int64_t k = k0 = next[i];
          while (k < k1 && col_idx[k] < end) ++k;
          next[i] = k1 = bound = k;
        }
        if (B == 1) {  // one column: out[k] = G[i] X[col_k], vectorised over the entries (gathers)
          using A = acc_t<scalar_t>;
          const A g = static_cast<A>(G_i[0]);
#pragma omp simd
          for (int64_t k = k0; k < k1; ++k)
            out[k] = static_cast<scalar_t>(g * static_cast<A>(X[col_idx[k]]));
          continue;
        }
#if defined(__AVX2__) && defined(__FMA__)
        if constexpr (kSddmmVec<scalar_t>) {
          sddmm_row(G_i + b0, X + b0, stride, b1 - b0, col_idx, k0, k1, bound, tile_bytes, first, last, out, partial);
          continue;
        }
#endif
        for (int64_t k = k0; k < k1; ++k) {
          if (k + kPrefetch < bound)
            prefetch_x_row(X + static_cast<int64_t>(col_idx[k + kPrefetch]) * stride + b0, tile_bytes);
          const auto part = dot_range(G_i, X + static_cast<int64_t>(col_idx[k]) * stride, b0, b1);
          if constexpr (kIsHalf<scalar_t>) {
            const float total = first ? part : partial[k] + part;
            if (last) out[k] = static_cast<scalar_t>(total); else partial[k] = total;
          } else {
            out[k] = first ? part : out[k] + part;
          }
        }
      }
    });
    }
    if (B == 0) break;
  }
}

// float32 with AVX2: G and X are read as they are, the last unit of each row with masked loads
// (copying both padded to whole units on the calling thread cost more than the product at few
// entries per row: 4,096 / 0.1%, B = 20, 105 us on two threads, MKL 66); the other types pad.
#if defined(__AVX2__) && defined(__FMA__)
inline constexpr bool kUnpaddedF32 = true;
#else
inline constexpr bool kUnpaddedF32 = false;
#endif

// out[k] = sum_b G[row_k, b] * X[col_k, b]. Locals ending in _c are contiguous copies, in _p
// copies padded with zeros to whole units (gather.h), which add nothing to the dots.
at::Tensor sddmm_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& csc_ptr,
                     const at::Tensor& csc_row, const at::Tensor& csc_perm, const at::Tensor& G,
                     const at::Tensor& X) {
  const IndexSizes s = check_sddmm_args(row_ptr, col_idx, csc_ptr, csc_row, csc_perm, G, X, /*on_cuda=*/false);
  cpu_checked_max_len({row_ptr, col_idx, nullptr, "row_ptr", "col_idx", nullptr}, X.size(0));  // once per pattern
  auto row_ptr_c = row_ptr.contiguous(), col_idx_c = col_idx.contiguous();
  auto out = at::empty({s.nnz}, G.options());
  if (G.size(1) == 0) return out.zero_();  // empty sums
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, G.scalar_type(), "sddmm_cpu", [&] {
    const int64_t B = G.size(1);
    const bool unpadded = kUnpaddedF32 && std::is_same_v<scalar_t, float>;
    const int64_t stride = unpadded ? B : padded_stride<scalar_t>(B);
    auto G_p = padded_batch(G, stride), X_p = padded_batch(X, stride);
    // float32 partial sums between batch tiles, for a 2-byte type with more than one tile
    at::Tensor partial = kIsHalf<scalar_t> && stride > sddmm_tile<scalar_t>() && sddmm_tiles_batch<scalar_t>(s.nnz, s.rows, X.size(0))
                             ? at::empty({s.nnz}, G.options().dtype(at::kFloat)) : at::Tensor();
    sddmm_rows<scalar_t>(row_ptr_c.data_ptr<int64_t>(), col_idx_c.data_ptr<int32_t>(), G_p.data_ptr<scalar_t>(),
                         X_p.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), s.rows, unpadded ? B : stride, stride,
                         partial.defined() ? partial.data_ptr<float>() : nullptr, X.size(0));
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CPU, m) {
  m.impl("sddmm", &sddmm_cpu);
}

}  // namespace sparse_engine
