// Drawing n distinct uniformly random empty positions of a CSR pattern (random_empty, and so
// rewire's random growth and sampled RigL growth's candidates): row by row on counter-based
// streams (random_streams.h) where at least 4n positions are empty, else by enumerating them;
// keys_to_coo also serves grad_topk. Separate from topology_cpu.cpp as one algorithm with its own
// guarantees (a uniform n-subset, the same on any number of threads).
#pragma once
#include <ATen/ATen.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <tuple>
#include <vector>
#include "random_streams.h"
#include "topology_common.h"

namespace sparse_engine {

// Linear keys (row * cols + col) as positions (rows int64, cols int32).
inline std::tuple<at::Tensor, at::Tensor> keys_to_coo(const std::vector<int64_t>& keys, int64_t cols) {
  const int64_t n = keys.size();
  auto rows = at::empty({n}, at::kLong);
  auto cidx = at::empty({n}, at::kInt);
  int64_t* r = rows.data_ptr<int64_t>();
  int32_t* cc = cidx.data_ptr<int32_t>();
  for (int64_t j = 0; j < n; ++j) {
    r[j] = keys[j] / cols;
    cc[j] = static_cast<int32_t>(keys[j] - r[j] * cols);
  }
  return {rows, cidx};
}

// n distinct uniformly random empty positions (at least 4n are empty), as (rows, cols) sorted:
// each row draws a Poisson number of candidate columns, the same mean for every row (together a
// Poisson number of uniformly random positions of the matrix), sorts them and keeps the distinct
// ones that are not stored; if fewer than n survive (unlikely by the margin) all is drawn again
// with twice the mean, else a uniformly random surplus is dropped (Floyd's sampling). Every
// empty position is treated alike, so the n returned are a uniform n-subset. Rows work on their
// own counter-based streams in parallel (any thread count gives the same draw), with no global
// sort and 4 bytes a candidate, where a global draw-sort-dedupe moves ~20 bytes a candidate
// through memory (half of a SET update's time at 128M entries).
inline std::tuple<at::Tensor, at::Tensor> draw_empty_by_rows(const Csr& csr, int64_t cols, int64_t n, uint64_t seed) {
  const int64_t rows = csr.rows, total = rows * cols, empty = total - csr.nnz;
  const bool par = parallel_worth(rows + n);
  std::vector<int64_t> start(rows + 1, 0), kept(rows + 1, 0);  // candidates' and survivors' offsets
  for (int round = 0;; ++round) {
    // survivors wanted: n, a margin for the Poisson spread and a little for duplicates
    const double want = std::ldexp(n + n / 64.0 + 8.0 * std::sqrt(static_cast<double>(n)) + 16.0, round);
    const double lambda = want / rows * (static_cast<double>(total) / empty);
    const int64_t parts = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(lambda / 64)));
    const uint64_t counts = splitmix64(seed + 0x632BE59BD9B4E019ULL * (round + 1)), draws = splitmix64(counts);
    parallel_ranges(rows, par, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) start[i + 1] = poisson_count(lambda, parts, counts + i * parts);
    });
    for (int64_t i = 0; i < rows; ++i) start[i + 1] += start[i];
    std::vector<int32_t> cand(start[rows]);  // each row's survivors, at the row's candidate offset
    constexpr int64_t kRows = 1024;  // rows per chunk
    parallel_chunks((rows + kRows - 1) / kRows, par, [&](int64_t chunk) {
     for (int64_t i = chunk * kRows; i < std::min(rows, (chunk + 1) * kRows); ++i) {
      int32_t* c = cand.data() + start[i];
      const int64_t m = start[i + 1] - start[i];
      for (int64_t t = 0; t < m; ++t) c[t] = static_cast<int32_t>(bounded(splitmix64(draws + start[i] + t), cols));
      std::sort(c, c + m);
      const int32_t *p = csr.col_idx + csr.row_ptr[i], *e = csr.col_idx + csr.row_ptr[i + 1];
      int64_t s = 0;
      int32_t prev = -1;
      for (int64_t t = 0; t < m; ++t) {
        const int32_t col = c[t];
        if (col == prev) continue;
        prev = col;
        while (p < e && *p < col) ++p;
        if (p < e && *p == col) continue;
        c[s++] = col;
      }
      kept[i + 1] = s;
     }
    });
    std::vector<int64_t> first(rows + 1, 0);  // offsets of each row's survivors among all of them
    for (int64_t i = 0; i < rows; ++i) first[i + 1] = first[i] + kept[i + 1];
    const int64_t found = first[rows];
    if (found < n) continue;
    std::vector<uint8_t> drop(found, 0);
    std::mt19937_64 gen(splitmix64(draws ^ 0x5bd1e995ULL));
    for (int64_t j = n; j < found; ++j) {
      const int64_t k = bounded(gen(), j + 1);
      drop[drop[k] ? j : k] = 1;
    }
    std::vector<int64_t>& out_start = kept;  // reused: each row's offset in the output
    out_start[0] = 0;
    parallel_ranges(rows, par, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        int64_t s = 0;
        for (int64_t j = first[i]; j < first[i + 1]; ++j) s += !drop[j];
        out_start[i + 1] = s;
      }
    });
    for (int64_t i = 0; i < rows; ++i) out_start[i + 1] += out_start[i];
    auto out_rows = at::empty({n}, at::kLong);
    auto out_cols = at::empty({n}, at::kInt);
    int64_t* r = out_rows.data_ptr<int64_t>();
    int32_t* cc = out_cols.data_ptr<int32_t>();
    parallel_ranges(rows, par, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        int64_t d = out_start[i];
        const int32_t* c = cand.data() + start[i];
        for (int64_t j = first[i]; j < first[i + 1]; ++j) {
          if (drop[j]) continue;
          r[d] = i;
          cc[d++] = c[j - first[i]];
        }
      }
    });
    return {out_rows, out_cols};
  }
}

// n distinct uniformly random empty positions, as (rows int64, cols int32) sorted by (row, col):
// drawn by rows (draw_empty_by_rows) while at least 4n positions are empty; else the empty
// positions are enumerated (O(rows * cols), which is then O(nnz + n)) and n picked.
inline std::tuple<at::Tensor, at::Tensor> draw_empty(const Csr& csr, int64_t cols, int64_t n, uint64_t seed) {
  const int64_t total = csr.rows * cols;
  const int64_t empty = total - csr.nnz;
  TORCH_CHECK_VALUE(n >= 0 && n <= empty, "cannot grow ", n, " entries: only ", empty,
                    " empty positions in a ", csr.rows, " x ", cols, " matrix with nnz=", csr.nnz);
  std::vector<int64_t> keys;
  if (n == 0) return keys_to_coo(keys, cols);
  if (empty >= 4 * n) return draw_empty_by_rows(csr, cols, n, seed);
  keys.reserve(empty);
  for (int64_t i = 0; i < csr.rows; ++i) {
    int64_t e = csr.row_ptr[i];
    for (int64_t j = 0; j < cols; ++j) {
      if (e < csr.row_ptr[i + 1] && csr.col_idx[e] == j) { ++e; continue; }
      keys.push_back(i * cols + j);
    }
  }
  random_subset(keys, n, seed);
  return keys_to_coo(keys, cols);
}

}  // namespace sparse_engine
