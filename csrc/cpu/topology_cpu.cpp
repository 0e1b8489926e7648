// Topology kernels for dynamic sparse training (CPU): selecting the weights to prune,
// compacting the CSR, drawing empty positions, merging new entries, RigL's gradient top-k at
// empty positions computed tile by tile, remapping per-entry state, and `rewire`, which chains
// those steps into one update of a layer (one operator call per layer and update). Everything is
// O(nnz) (or O(tiles) for RigL) and never builds a rows x cols array.
//
// Tie rule shared by every selection: among equal scores the entry with the lower position
// (CSR position, or linear key row*cols+col for empty positions) is selected first, so results
// are deterministic and can be compared with a stable numpy sort.
//
// Why one file above 500 lines: it is the topology family's CPU file (one per op family,
// tests/ops/test_registry.py) with the ten ops and the loops only they run, and `rewire` calls the
// step kernels directly, which it can because they share this translation unit; the sections
// follow an update's order. What stands apart is in headers: the counter-based generator
// (random_streams.h), the radix selection (radix_select.h), the drawing of empty positions
// (empty_positions.h) and what they share with the ops (topology_common.h: parallel_worth, Csr).
#include <c10/util/accumulate.h>
#include <torch/library.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>
#include "common.h"
#include "empty_positions.h"
#include "radix_select.h"
#include "topology_common.h"

namespace sparse_engine {
namespace {

template <typename scalar_t>
void check_finite(const scalar_t* v, int64_t n, const char* name) {
  std::atomic<bool> bad{false};
  parallel_ranges(n, parallel_worth(n), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      if (std::isnan(v[i])) bad = true;
  });
  TORCH_CHECK_VALUE(!bad, name, " must not contain NaN");
}

template <typename scalar_t>
void select_smallest_impl(const scalar_t* s, int64_t n, int64_t k, bool* out) {
  mark_smallest<scalar_t>(n, k, [](int64_t) { return true; }, [s](int64_t i) { return s[i]; }, out);
}

// select_smallest(scores, k) -> bool mask of the k smallest scores.
at::Tensor select_smallest_cpu(const at::Tensor& scores, int64_t k) {
  TORCH_CHECK_TYPE(scores.scalar_type() == at::kFloat || scores.scalar_type() == at::kDouble,
                   "scores must be float32 or float64, got ", scores.scalar_type());
  TORCH_CHECK_VALUE(scores.dim() == 1, "scores must be 1-D, got ", scores.dim(), " dims");
  const int64_t n = scores.numel();
  TORCH_CHECK_VALUE(k >= 0 && k <= n, "k must be in [0, ", n, "], got ", k);
  auto s = scores.contiguous();
  auto out = at::zeros({n}, s.options().dtype(at::kBool));
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "select_smallest_cpu", [&] {
    check_finite(s.data_ptr<scalar_t>(), n, "scores");
    select_smallest_impl<scalar_t>(s.data_ptr<scalar_t>(), n, k, out.data_ptr<bool>());
  });
  return out;
}

// set_prune(values, zeta) -> keep mask: SET's prune of each sign (set_keep, radix_select.h).
at::Tensor set_prune_cpu(const at::Tensor& values, double zeta) {
  TORCH_CHECK_TYPE(values.scalar_type() == at::kFloat || values.scalar_type() == at::kDouble,
                   "values must be float32 or float64, got ", values.scalar_type());
  TORCH_CHECK_VALUE(values.dim() == 1, "values must be 1-D, got ", values.dim(), " dims");
  TORCH_CHECK_VALUE(zeta >= 0.0 && zeta <= 1.0, "zeta must be in [0, 1], got ", zeta);
  auto v = values.contiguous();
  auto keep = at::empty({v.numel()}, v.options().dtype(at::kBool));
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "set_prune_cpu", [&] {
    set_keep<scalar_t>(v.data_ptr<scalar_t>(), v.numel(), zeta, keep.data_ptr<bool>());
  });
  return keep;
}

// ------------------------------------------------------------------ compaction
// Copies the kept entries of each row to the compacted row starting at out_ptr[i]; kept_pos
// records each one's old position.
template <typename scalar_t>
void compact_fill(const Csr& csr, const bool* keep, const int64_t* out_ptr, const scalar_t* values, int32_t* out_col,
                  scalar_t* out_values, int64_t* kept_pos) {
  parallel_ranges(csr.rows, parallel_worth(csr.rows + csr.nnz), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      int64_t d = out_ptr[i];
      for (int64_t k = csr.row_ptr[i]; k < csr.row_ptr[i + 1]; ++k) {
        if (!keep[k]) continue;
        out_col[d] = csr.col_idx[k];
        if (out_values) out_values[d] = values[k];
        kept_pos[d] = k;
        ++d;
      }
    }
  });
}

// compact(row_ptr, col_idx, values, keep) -> (row_ptr, col_idx, values, kept_pos): the CSR
// holding only the entries with keep[k]; kept_pos[j] is the old position of new entry j.
// with_values false: no values out (undefined; rewire's merge reads them through kept_pos).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> compact_impl(const at::Tensor& row_ptr,
                                                                        const at::Tensor& col_idx,
                                                                        const at::Tensor& values,
                                                                        const at::Tensor& keep, bool with_values) {
  auto row_ptr_c = row_ptr.contiguous(), col_idx_c = col_idx.contiguous(), values_c = values.contiguous();
  auto keep_c = keep.contiguous();
  const Csr csr = csr_view(row_ptr_c, col_idx_c, kAnyColumn, /*sorted=*/false);  // columns copied as they are
  check_values(values_c, csr.nnz);
  TORCH_CHECK_TYPE(keep_c.scalar_type() == at::kBool, "keep must be bool, got ", keep_c.scalar_type());
  TORCH_CHECK_VALUE(keep_c.dim() == 1 && keep_c.numel() == csr.nnz, "keep must be 1-D with nnz=", csr.nnz,
                    " entries");
  const bool* kept = keep_c.data_ptr<bool>();
  auto out_ptr = at::zeros({csr.rows + 1}, row_ptr_c.options());
  int64_t* out_ptr_data = out_ptr.data_ptr<int64_t>();
  parallel_ranges(csr.rows, parallel_worth(csr.rows + csr.nnz), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      int64_t count = 0;
      for (int64_t k = csr.row_ptr[i]; k < csr.row_ptr[i + 1]; ++k) count += kept[k];
      out_ptr_data[i + 1] = count;
    }
  });
  for (int64_t i = 0; i < csr.rows; ++i) out_ptr_data[i + 1] += out_ptr_data[i];
  const int64_t m = out_ptr_data[csr.rows];
  auto out_col = at::empty({m}, col_idx_c.options());
  auto out_val = with_values ? at::empty({m}, values_c.options()) : at::Tensor();
  auto kept_pos = at::empty({m}, row_ptr_c.options());
  AT_DISPATCH_FLOATING_TYPES(values_c.scalar_type(), "compact_cpu", [&] {
    compact_fill<scalar_t>(csr, kept, out_ptr_data, values_c.data_ptr<scalar_t>(), out_col.data_ptr<int32_t>(),
                           with_values ? out_val.data_ptr<scalar_t>() : nullptr, kept_pos.data_ptr<int64_t>());
  });
  return {out_ptr, out_col, out_val, kept_pos};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> compact_cpu(const at::Tensor& row_ptr,
                                                                       const at::Tensor& col_idx,
                                                                       const at::Tensor& values,
                                                                       const at::Tensor& keep) {
  return compact_impl(row_ptr, col_idx, values, keep, /*with_values=*/true);
}

// ------------------------------------------------------------------ empty positions

// random_empty(row_ptr, col_idx, n_cols, n, seed) -> (rows int64, cols int32), sorted.
std::tuple<at::Tensor, at::Tensor> random_empty_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                                    int64_t n_cols, int64_t n, int64_t seed) {
  TORCH_CHECK_VALUE(n_cols >= 0 && n_cols <= INT32_MAX, "n_cols must be in [0, 2^31), got ", n_cols);
  auto row_ptr_c = row_ptr.contiguous(), col_idx_c = col_idx.contiguous();
  const Csr csr = csr_view(row_ptr_c, col_idx_c, n_cols, /*sorted=*/true);
  TORCH_CHECK_VALUE(n >= 0, "n must be >= 0, got ", n);
  return draw_empty(csr, n_cols, n, static_cast<uint64_t>(seed));
}

// ------------------------------------------------------------------ merge
// Row by row, merges the old entries of row i with its new ones (both sorted by column) into
// the merged row starting at out_ptr[i], and records where each old and each new entry went.
// new_values null: the new entries are zeros; value_at non-null: old entry k's value is
// old_values[value_at[k]] (rewire's: the values before compaction, no copy of them compacted).
// A new entry at a stored position is reported in `clash` (its number; any one of them).
template <typename scalar_t>
void merge_fill(const Csr& csr, const int64_t* new_row_ptr, const int32_t* new_col, const int64_t* out_ptr,
                const scalar_t* old_values, const int64_t* value_at, const scalar_t* new_values, int32_t* out_col,
                scalar_t* out_values, int64_t* old_pos, int64_t* new_pos, std::atomic<int64_t>& clash) {
  constexpr int64_t kRows = 256;  // rows per chunk
  parallel_chunks((csr.rows + kRows - 1) / kRows, parallel_worth(csr.rows + csr.nnz), [&](int64_t c) {
    for (int64_t i = c * kRows; i < std::min(csr.rows, (c + 1) * kRows); ++i) {
      int64_t k = csr.row_ptr[i], k_end = csr.row_ptr[i + 1];  // old entries of row i
      int64_t j = new_row_ptr[i], j_end = new_row_ptr[i + 1];  // new entries of row i
      int64_t d = out_ptr[i];                                   // next merged position
      while (k < k_end || j < j_end) {
        if (j >= j_end || (k < k_end && csr.col_idx[k] < new_col[j])) {
          out_col[d] = csr.col_idx[k]; out_values[d] = old_values[value_at ? value_at[k] : k]; old_pos[k] = d; ++k;
        } else {
          if (k < k_end && csr.col_idx[k] == new_col[j]) clash = j;
          out_col[d] = new_col[j]; out_values[d] = new_values ? new_values[j] : scalar_t(0); new_pos[j] = d; ++j;
        }
        ++d;
      }
    }
  });
}

// New entries at (R[j], C[j]), j < n: checks that they are inside the rows x n_cols matrix and
// sorted by (row, col) without duplicates (ValueError naming the first one that is not), and
// returns where each row's new entries start (rows + 1 offsets).
std::vector<int64_t> new_entry_rows(int64_t rows, int64_t n_cols, const int64_t* R, const int32_t* C, int64_t n) {
  auto entry_ok = [&](int64_t j) {
    return R[j] >= 0 && R[j] < rows && C[j] >= 0 && C[j] < n_cols &&
           (j == 0 || R[j] > R[j - 1] || (R[j] == R[j - 1] && C[j] > C[j - 1]));
  };
  std::atomic<bool> bad_entry{false};
  parallel_ranges(n, parallel_worth(n), [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j)
      if (!entry_ok(j)) bad_entry = true;
  });
  if (bad_entry) {  // find the first one for the message
    for (int64_t j = 0; j < n; ++j) {
      TORCH_CHECK_VALUE(R[j] >= 0 && R[j] < rows && C[j] >= 0 && C[j] < n_cols, "new entry ", j, " at (", R[j],
                        ", ", C[j], ") is outside the ", rows, " x ", n_cols, " matrix");
      TORCH_CHECK_VALUE(entry_ok(j), "new entries must be sorted by (row, col) without duplicates: entry ", j,
                        " at (", R[j], ", ", C[j], ")");
    }
  }
  std::vector<int64_t> row_start(rows + 1, 0);
  for (int64_t j = 0; j < n; ++j) ++row_start[R[j] + 1];
  for (int64_t i = 0; i < rows; ++i) row_start[i + 1] += row_start[i];
  return row_start;
}

// merge(row_ptr, col_idx, values, new_row, new_col, new_values) -> (row_ptr, col_idx, values,
// old_pos, new_pos): inserts new entries (sorted by (row, col), unique, all at empty
// positions; anything else is a ValueError) keeping every row sorted. old_pos[k] / new_pos[j]
// are the positions of old entry k / new entry j in the merged CSR.
// rewire's merge: new_values undefined, the new entries are zeros; value_at defined (the kept
// positions of compact_impl without values), old entry k's value is values[value_at[k]].
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> merge_impl(
    const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& values, int64_t n_cols,
    const at::Tensor& new_row, const at::Tensor& new_col, const at::Tensor& new_values,
    const at::Tensor& value_at = at::Tensor()) {
  TORCH_CHECK_VALUE(n_cols >= 0 && n_cols <= INT32_MAX, "n_cols must be in [0, 2^31), got ", n_cols);
  auto row_ptr_c = row_ptr.contiguous(), col_idx_c = col_idx.contiguous(), values_c = values.contiguous();
  const Csr csr = csr_view(row_ptr_c, col_idx_c, n_cols, /*sorted=*/true);
  if (!value_at.defined()) check_values(values_c, csr.nnz);
  TORCH_CHECK_TYPE(new_row.scalar_type() == at::kLong, "new_row must be int64, got ", new_row.scalar_type());
  TORCH_CHECK_TYPE(new_col.scalar_type() == at::kInt, "new_col must be int32, got ", new_col.scalar_type());
  const bool zeros = !new_values.defined();
  TORCH_CHECK_TYPE(zeros || new_values.scalar_type() == values.scalar_type(), "new_values must have dtype ",
                   values.scalar_type(), ", got ", new_values.scalar_type());
  const int64_t n = new_row.numel();
  TORCH_CHECK_VALUE(new_row.dim() == 1 && new_col.dim() == 1 && new_col.numel() == n &&
                        (zeros || (new_values.dim() == 1 && new_values.numel() == n)),
                    "new_row, new_col and new_values must be 1-D of the same length");
  auto new_row_c = new_row.contiguous(), new_col_c = new_col.contiguous();
  auto new_values_c = zeros ? new_values : new_values.contiguous();
  const int64_t* R = new_row_c.data_ptr<int64_t>();  // new entry j is at (R[j], C[j])
  const int32_t* C = new_col_c.data_ptr<int32_t>();
  const std::vector<int64_t> new_row_ptr = new_entry_rows(csr.rows, n_cols, R, C, n);
  auto out_ptr = at::empty({csr.rows + 1}, row_ptr_c.options());
  int64_t* out_ptr_data = out_ptr.data_ptr<int64_t>();
  for (int64_t i = 0; i <= csr.rows; ++i) out_ptr_data[i] = csr.row_ptr[i] + new_row_ptr[i];
  const int64_t m = csr.nnz + n;
  auto out_col = at::empty({m}, col_idx_c.options());
  auto out_val = at::empty({m}, values_c.options());
  auto old_pos = at::empty({csr.nnz}, row_ptr_c.options());
  auto new_pos = at::empty({n}, row_ptr_c.options());
  std::atomic<int64_t> clash{-1};
  AT_DISPATCH_FLOATING_TYPES(values_c.scalar_type(), "merge_cpu", [&] {
    merge_fill<scalar_t>(csr, new_row_ptr.data(), C, out_ptr_data, values_c.data_ptr<scalar_t>(),
                         value_at.defined() ? value_at.data_ptr<int64_t>() : nullptr,
                         zeros ? nullptr : new_values_c.data_ptr<scalar_t>(), out_col.data_ptr<int32_t>(), out_val.data_ptr<scalar_t>(),
                         old_pos.data_ptr<int64_t>(), new_pos.data_ptr<int64_t>(), clash);
  });
  TORCH_CHECK_VALUE(clash.load() < 0, "new entry ", clash.load(), " at (", R[std::max<int64_t>(0, clash.load())],
                    ", ", C[std::max<int64_t>(0, clash.load())], ") is already stored");
  return {out_ptr, out_col, out_val, old_pos, new_pos};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> merge_cpu(
    const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& values, int64_t n_cols,
    const at::Tensor& new_row, const at::Tensor& new_col, const at::Tensor& new_values) {
  return merge_impl(row_ptr, col_idx, values, n_cols, new_row, new_col, new_values);
}

// ------------------------------------------------------------------ state remap
// remap_index(kept_pos, old_pos, new_nnz) -> origin: origin[p] = old position of the entry now at
// p, or -1 for a new entry (kept_pos from compact, old_pos from merge).
at::Tensor remap_index_cpu(const at::Tensor& kept_pos, const at::Tensor& old_pos, int64_t new_nnz) {
  TORCH_CHECK_TYPE(kept_pos.scalar_type() == at::kLong && old_pos.scalar_type() == at::kLong,
                   "kept_pos and old_pos must be int64");
  TORCH_CHECK_VALUE(kept_pos.dim() == 1 && old_pos.dim() == 1 && kept_pos.numel() == old_pos.numel(),
                    "kept_pos and old_pos must be 1-D of the same length");
  TORCH_CHECK_VALUE(new_nnz >= 0, "new_nnz must be >= 0, got ", new_nnz);
  auto kept_pos_c = kept_pos.contiguous(), old_pos_c = old_pos.contiguous();
  auto origin = at::full({new_nnz}, -1, kept_pos_c.options());
  const int64_t* kept = kept_pos_c.data_ptr<int64_t>();
  const int64_t* moved_to = old_pos_c.data_ptr<int64_t>();
  int64_t* out = origin.data_ptr<int64_t>();
  const int64_t n = kept_pos_c.numel();
  std::atomic<bool> bad{false};
  parallel_ranges(n, parallel_worth(n), [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      if (moved_to[j] < 0 || moved_to[j] >= new_nnz) { bad = true; continue; }
      out[moved_to[j]] = kept[j];
    }
  });
  TORCH_CHECK_VALUE(!bad, "old_pos entries must be in [0, new_nnz=", new_nnz, ")");
  return origin;
}

// Entry d of dst (rows of `bytes` bytes) = entry s of src, or zeros for s < 0: gather_or_zero's
// and carry_over's copy.
inline void copy_or_zero(char* dst, int64_t d, const char* src, int64_t s, int64_t bytes) {
  if (bytes == 4) {
    reinterpret_cast<uint32_t*>(dst)[d] = s < 0 ? 0u : reinterpret_cast<const uint32_t*>(src)[s];
  } else if (bytes == 8) {
    reinterpret_cast<uint64_t*>(dst)[d] = s < 0 ? 0ull : reinterpret_cast<const uint64_t*>(src)[s];
  } else if (s < 0) {
    std::memset(dst + d * bytes, 0, bytes);
  } else {
    std::memcpy(dst + d * bytes, src + s * bytes, bytes);
  }
}

// gather_or_zero(t, origin) -> out with out[p] = t[origin[p]] (whole trailing slices), zero where
// origin[p] < 0. Any dtype; t's first dimension is the old nnz.
at::Tensor gather_or_zero_cpu(const at::Tensor& t, const at::Tensor& origin) {
  TORCH_CHECK_TYPE(origin.scalar_type() == at::kLong, "origin must be int64");
  TORCH_CHECK_VALUE(t.dim() >= 1, "t must have at least one dimension");
  auto tc = t.contiguous(), oc = origin.contiguous();
  auto sizes = tc.sizes().vec();
  const int64_t old_n = sizes[0];
  sizes[0] = oc.numel();
  auto out = at::empty(sizes, tc.options());
  const int64_t inner = sizes[0] ? out.numel() / sizes[0] : 0;
  const int64_t bytes = inner * out.element_size();
  const char* src = static_cast<const char*>(tc.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  const int64_t* org = oc.data_ptr<int64_t>();
  const int64_t n = oc.numel();
  std::atomic<bool> bad{false};
  parallel_ranges(n, parallel_worth(n), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t o = org[p];
      if (o >= old_n) {
        bad = true;
      } else {
        copy_or_zero(dst, p, src, o, bytes);
      }
    }
  });
  TORCH_CHECK_VALUE(!bad, "origin entries must be < ", old_n, " (the first dimension of t)");
  return out;
}

// ------------------------------------------------------------------ RigL growth
// coo_dot(rows, cols, G, X) -> out[j] = dot(G[rows[j], :], X[cols[j], :]): the gradient at a
// list of candidate positions (sampled RigL growth), without building an index for them.
template <typename scalar_t>
void coo_dot_loop(const int64_t* rows, const int32_t* cols, const scalar_t* G, const scalar_t* X, scalar_t* out,
                  int64_t n, int64_t M) {
  parallel_ranges(n, parallel_worth(n * M), [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const scalar_t* G_row = G + rows[j] * M;
      const scalar_t* X_row = X + static_cast<int64_t>(cols[j]) * M;
      scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t b = 0; b < M; ++b) acc += G_row[b] * X_row[b];
      out[j] = acc;
    }
  });
}

at::Tensor coo_dot_cpu(const at::Tensor& rows, const at::Tensor& cols, const at::Tensor& G, const at::Tensor& X) {
  TORCH_CHECK_TYPE(rows.scalar_type() == at::kLong, "rows must be int64, got ", rows.scalar_type());
  TORCH_CHECK_TYPE(cols.scalar_type() == at::kInt, "cols must be int32, got ", cols.scalar_type());
  TORCH_CHECK_VALUE(rows.dim() == 1 && cols.dim() == 1 && rows.numel() == cols.numel(),
                    "rows and cols must be 1-D of the same length");
  TORCH_CHECK_TYPE(G.scalar_type() == at::kFloat || G.scalar_type() == at::kDouble,
                   "G must be float32 or float64, got ", G.scalar_type());
  TORCH_CHECK_TYPE(X.scalar_type() == G.scalar_type(), "X must have the dtype of G");
  TORCH_CHECK_VALUE(G.dim() == 2 && X.dim() == 2 && G.size(1) == X.size(1),
                    "G and X must be 2-D with the same number of columns");
  auto r = rows.contiguous(), c = cols.contiguous(), Gc = G.contiguous(), Xc = X.contiguous();
  const int64_t n = r.numel();
  if (n) {
    TORCH_CHECK_VALUE(r.min().item<int64_t>() >= 0 && r.max().item<int64_t>() < G.size(0), "rows out of range");
    TORCH_CHECK_VALUE(c.min().item<int32_t>() >= 0 && c.max().item<int32_t>() < X.size(0), "cols out of range");
  }
  auto out = at::empty({n}, G.options());
  AT_DISPATCH_FLOATING_TYPES(G.scalar_type(), "coo_dot_cpu", [&] {
    coo_dot_loop<scalar_t>(r.data_ptr<int64_t>(), c.data_ptr<int32_t>(), Gc.data_ptr<scalar_t>(),
                           Xc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), n, G.size(1));
  });
  return out;
}

struct Cand {
  double mag;   // |grad|
  int64_t key;  // row * cols + col
  double grad;
};
// "a is better than b": larger |grad|, ties to the lower key.
inline bool better(const Cand& a, const Cand& b) {
  return a.mag > b.mag || (a.mag == b.mag && a.key < b.key);
}

// Keeps the best k of buf (in place); returns the k-th best magnitude (the admission bound).
double shrink(std::vector<Cand>& buf, int64_t k) {
  if (static_cast<int64_t>(buf.size()) > k) {
    std::nth_element(buf.begin(), buf.begin() + (k - 1), buf.end(), better);
    buf.resize(k);
  }
  if (static_cast<int64_t>(buf.size()) < k) return -1.0;
  double worst = buf[0].mag;
  for (const auto& x : buf) worst = std::min(worst, x.mag);
  return worst;
}

// The columns of a GEMM's inner dimension per call of tile_product: BLAS libraries split a long
// inner dimension across threads (MKL here from about 1,000 columns), which makes the bits depend on
// the thread count; at 256 each output is one thread's sum, and the chunks add in a fixed order.
constexpr int64_t kInnerChunk = 256;

// A tile G_r X_c^T (as float64), its inner dimension summed in chunks of kInnerChunk in order,
// each chunk added into the tile by the GEMM itself (addmm_, beta 1).
at::Tensor tile_product(const at::Tensor& G, const at::Tensor& X) {
  const int64_t M = G.size(1);
  const int64_t first = std::min(M, kInnerChunk);
  at::Tensor T = at::mm(G.slice(1, 0, first), X.slice(1, 0, first).t());
  for (int64_t k0 = first; k0 < M; k0 += kInnerChunk) {
    const int64_t k1 = std::min(M, k0 + kInnerChunk);
    T.addmm_(G.slice(1, k0, k1), X.slice(1, k0, k1).t());
  }
  return T.to(at::kDouble).contiguous();
}

// grad_topk(row_ptr, col_idx, G, X, k, tile_rows, tile_cols) -> (rows, cols, grads):
// the k empty positions with the largest |(G X^T)[i, j]| (ties to the lower linear key),
// sorted by (row, col), with their signed gradient. G: rows x M, X: cols x M. The dense
// gradient is formed one tile_rows x tile_cols tile at a time (one GEMM per tile) and only a
// running top-k of at most 2k candidates is kept, so memory is O(tile + k).
std::tuple<at::Tensor, at::Tensor, at::Tensor> grad_topk_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                                             const at::Tensor& G, const at::Tensor& X, int64_t k,
                                                             int64_t tile_rows, int64_t tile_cols) {
  auto row_ptr_c = row_ptr.contiguous(), col_idx_c = col_idx.contiguous();
  const CsrSizes sizes = check_csr(row_ptr_c, col_idx_c);
  TORCH_CHECK_TYPE(G.scalar_type() == at::kFloat || G.scalar_type() == at::kDouble,
                   "G must be float32 or float64, got ", G.scalar_type());
  TORCH_CHECK_VALUE(G.dim() == 2 && G.size(0) == sizes.rows, "G must be 2-D with rows=", sizes.rows, " rows, got ",
                    G.sizes());
  TORCH_CHECK_VALUE(X.dim() == 2 && X.size(1) == G.size(1), "X must be 2-D (cols x M) with M=", G.size(1),
                    " like G, got ", X.sizes());
  TORCH_CHECK_TYPE(X.scalar_type() == G.scalar_type(), "X must have the dtype of G");
  TORCH_CHECK_VALUE(tile_rows > 0 && tile_cols > 0, "tile_rows and tile_cols must be > 0");
  const int64_t cols = X.size(0);
  TORCH_CHECK_VALUE(cols <= INT32_MAX, "X has too many rows (cols) for int32 column indices");
  const Csr csr = csr_view(row_ptr_c, col_idx_c, cols, /*sorted=*/true);
  const int64_t empty = csr.rows * cols - csr.nnz;
  TORCH_CHECK_VALUE(k >= 0 && k <= empty, "k must be in [0, ", empty, "] (the empty positions), got ", k);
  std::vector<Cand> best;
  if (k > 0) {
    auto Gc = G.contiguous(), Xc = X.contiguous();
    best.reserve(2 * k + 16);
    double bound = -1.0;
    const int nt = kernel_threads();
    std::vector<std::vector<Cand>> local(nt);
    for (int64_t r0 = 0; r0 < csr.rows; r0 += tile_rows) {
      const int64_t r1 = std::min(csr.rows, r0 + tile_rows);
      for (int64_t c0 = 0; c0 < cols; c0 += tile_cols) {
        const int64_t c1 = std::min(cols, c0 + tile_cols);
        at::Tensor T = tile_product(Gc.slice(0, r0, r1), Xc.slice(0, c0, c1));
        const double* t = T.data_ptr<double>();
        const int64_t w = c1 - c0;
        const double lo = bound;
        // each thread's candidates in a list of its own (slot); the best k of them all do not
        // depend on which thread found which (ties go to the lower key, unique)
        const int64_t n_rows = r1 - r0, chunks = num_chunks(n_rows);
        run_chunks(chunks, parallel_worth(n_rows * w) ? nt : 1, [&](int64_t c, int slot) {
          auto& mine = local[slot];
          for (int64_t i = r0 + n_rows * c / chunks; i < r0 + n_rows * (c + 1) / chunks; ++i) {
            const int32_t* b = csr.col_idx + csr.row_ptr[i];
            const int32_t* e = csr.col_idx + csr.row_ptr[i + 1];
            const int32_t* p = std::lower_bound(b, e, static_cast<int32_t>(c0));
            const double* trow = t + (i - r0) * w;
            for (int64_t j = c0; j < c1; ++j) {
              if (p < e && *p == j) { ++p; continue; }
              const double g = trow[j - c0];
              if (std::abs(g) >= lo) mine.push_back({std::abs(g), i * cols + j, g});
            }
          }
        });
        for (auto& mine : local) {
          best.insert(best.end(), mine.begin(), mine.end());
          mine.clear();
          if (static_cast<int64_t>(best.size()) > 2 * k) bound = shrink(best, k);
        }
      }
    }
    shrink(best, k);
    // (a NaN gradient is never a candidate: fewer than k are left only where G X^T holds NaNs)
    TORCH_CHECK_VALUE(static_cast<int64_t>(best.size()) == k, "grad_topk: the gradient G X^T is not a number at ",
                      "empty positions (NaN in G or X), so only ", best.size(), " of the k=", k,
                      " positions can be chosen");
  }
  std::sort(best.begin(), best.end(), [](const Cand& a, const Cand& b) { return a.key < b.key; });
  std::vector<int64_t> keys(best.size());
  for (size_t j = 0; j < best.size(); ++j) keys[j] = best[j].key;
  auto coo = keys_to_coo(keys, cols);
  auto grads = at::empty({static_cast<int64_t>(best.size())}, at::kDouble);
  double* gp = grads.data_ptr<double>();
  for (size_t j = 0; j < best.size(); ++j) gp[j] = best[j].grad;
  return {std::get<0>(coo), std::get<1>(coo), grads.to(G.scalar_type())};
}

// ------------------------------------------------------------------ one update in one pass
// rewire: the steps above chained in one call (training.topology.rewire's single operator call
// per layer and update): compact -> grow at empty positions of the compacted pattern (so an entry
// pruned now may be grown again, as in SET, RigL and sparselearning) -> merge -> every per-entry
// tensor of `carry` in the new order.

// The growth of rewire, on the compacted pattern: at the given positions; else n by |G X^T|
// (grad_topk with sample_factor 0, else the best n of sample_factor * n random candidates, as
// training.topology.gradient_growth samples); else n uniformly random empty positions.
std::tuple<at::Tensor, at::Tensor> grow_positions(const at::Tensor& row_ptr, const at::Tensor& col_idx, int64_t n_cols,
                                                  const std::optional<at::Tensor>& grow_row,
                                                  const std::optional<at::Tensor>& grow_col,
                                                  const std::optional<at::Tensor>& G,
                                                  const std::optional<at::Tensor>& X, int64_t n, int64_t seed,
                                                  int64_t tile_rows, int64_t tile_cols, int64_t sample_factor) {
  const bool given = grow_row.has_value() || grow_col.has_value(), by_gradient = G.has_value() || X.has_value();
  TORCH_CHECK_VALUE(!(given && by_gradient), "give the positions (grow_row, grow_col) or the factors (G, X), not both");
  if (given) {
    TORCH_CHECK_VALUE(grow_row.has_value() && grow_col.has_value(), "grow_row and grow_col must be given together");
    TORCH_CHECK_TYPE(grow_row->scalar_type() == at::kLong, "grow_row must be int64, got ", grow_row->scalar_type());
    TORCH_CHECK_TYPE(grow_col->scalar_type() == at::kInt, "grow_col must be int32, got ", grow_col->scalar_type());
    TORCH_CHECK_VALUE(grow_row->dim() == 1 && grow_col->dim() == 1 && grow_row->numel() == grow_col->numel(),
                      "grow_row and grow_col must be 1-D of the same length");
    return {grow_row->contiguous(), grow_col->contiguous()};
  }
  if (!by_gradient) return random_empty_cpu(row_ptr, col_idx, n_cols, n, seed);
  TORCH_CHECK_VALUE(G.has_value() && X.has_value(), "G and X must be given together");
  TORCH_CHECK_VALUE(X->dim() == 2 && X->size(0) == n_cols, "X must be 2-D with n_cols=", n_cols, " rows, got shape ",
                    X->sizes());
  if (sample_factor == 0) {
    auto grown = grad_topk_cpu(row_ptr, col_idx, *G, *X, n, tile_rows, tile_cols);
    return {std::get<0>(grown), std::get<1>(grown)};
  }
  TORCH_CHECK_VALUE(sample_factor > 0, "sample_factor must be >= 0 (0: exact growth), got ", sample_factor);
  const int64_t empty = (row_ptr.numel() - 1) * n_cols - col_idx.numel();
  TORCH_CHECK_VALUE(n >= 0 && n <= empty, "k must be in [0, ", empty, "] (the empty positions), got ", n);
  const int64_t n_cand = n > 0 && sample_factor > empty / n ? empty : std::min(empty, sample_factor * n);  // no overflow
  auto cand = random_empty_cpu(row_ptr, col_idx, n_cols, n_cand, seed);
  const at::Tensor pick = select_smallest_cpu(coo_dot_cpu(std::get<0>(cand), std::get<1>(cand), *G, *X).abs().neg(), n);
  return {std::get<0>(cand).index({pick}), std::get<1>(cand).index({pick})};
}

// Every tensor of `carry` (first dimension the old nnz) in the merged order: old entry kept[j]
// moves to old_pos[j], and the rows of the new entries (new_pos) are zeros. What remap_index and
// gather_or_zero compute, without their new_nnz-long origin index (8 bytes an entry of fresh
// memory each update, 1 GB at 128M entries: page faults cost more than the copies on the VMs
// here) and in one pass over the kept entries for all the tensors.
std::vector<at::Tensor> carry_over(at::TensorList carry, const at::Tensor& kept, const at::Tensor& old_pos,
                                   const at::Tensor& new_pos, int64_t new_nnz) {
  struct Part { const char* src; char* dst; int64_t bytes; };
  std::vector<at::Tensor> out, sources;
  std::vector<Part> parts;
  for (const auto& t : carry) {
    sources.push_back(t.contiguous());
    auto sizes = t.sizes().vec();
    const int64_t inner = c10::multiply_integers(sizes.begin() + 1, sizes.end());  // also when the old nnz is 0
    sizes[0] = new_nnz;
    out.push_back(at::empty(sizes, t.options()));
    parts.push_back({static_cast<const char*>(sources.back().data_ptr()), static_cast<char*>(out.back().data_ptr()),
                     inner * static_cast<int64_t>(t.element_size())});
  }
  if (parts.empty()) return out;
  const int64_t *from = kept.data_ptr<int64_t>(), *to = old_pos.data_ptr<int64_t>(), *fresh = new_pos.data_ptr<int64_t>();
  const int64_t n_kept = kept.numel(), n_new = new_pos.numel();
  // the kept entries' ranges, then the new ones' (disjoint destinations), in one parallel call
  const int64_t kept_chunks = num_chunks(n_kept), new_chunks = n_new > 0 ? num_chunks(n_new) : 0;
  parallel_chunks(kept_chunks + new_chunks, parallel_worth(n_kept + n_new), [&](int64_t c) {
    if (c < kept_chunks) {
      for (int64_t j = n_kept * c / kept_chunks; j < n_kept * (c + 1) / kept_chunks; ++j)
        for (const Part& p : parts) copy_or_zero(p.dst, to[j], p.src, from[j], p.bytes);
    } else {
      c -= kept_chunks;
      for (int64_t j = n_new * c / new_chunks; j < n_new * (c + 1) / new_chunks; ++j)
        for (const Part& p : parts) copy_or_zero(p.dst, fresh[j], p.src, -1, p.bytes);
    }
  });
  return out;
}

// The pruned entries (keep[k] false) of the pattern whose position was grown again: sets back[k]
// and clears fresh[j] of the grown position j they take (grown positions sorted, rows starting at
// grow_start). Returns how many there are.
int64_t mark_regrown(const Csr& csr, const bool* keep, const int64_t* grow_start, const int32_t* grow_col,
                     bool* back, bool* fresh) {
  constexpr int64_t kRows = 256;  // rows per chunk
  const int64_t chunks = (csr.rows + kRows - 1) / kRows;
  std::vector<int64_t> counts(chunks, 0);  // per chunk, added in chunk order
  parallel_chunks(chunks, parallel_worth(csr.rows + csr.nnz), [&](int64_t c) {
    int64_t count = 0;
    for (int64_t i = c * kRows; i < std::min(csr.rows, (c + 1) * kRows); ++i) {
      int64_t j = grow_start[i];
      const int64_t j_end = grow_start[i + 1];
      for (int64_t k = csr.row_ptr[i]; k < csr.row_ptr[i + 1] && j < j_end; ++k) {
        if (keep[k]) continue;
        while (j < j_end && grow_col[j] < csr.col_idx[k]) ++j;
        if (j < j_end && grow_col[j] == csr.col_idx[k]) {
          back[k] = true;
          fresh[j++] = false;
          ++count;
        }
      }
    }
    counts[c] = count;
  });
  int64_t count = 0;
  for (const int64_t c : counts) count += c;
  return count;
}

// rewire(row_ptr, col_idx, values, n_cols, keep, grow_row?, grow_col?, G?, X?, n_grow, seed, tile_rows,
// tile_cols, sample_factor, keep_regrown, carry) -> (row_ptr, col_idx, values, src, dst, new_pos,
// new_row, new_col, carried). New entries get the value 0 and zero state; with keep_regrown a pruned
// entry whose position is grown again stays instead (value and state: Selfish-RNN's masked-dense
// code). src[j] / dst[j]: old and new position of the j-th entry that stays; new_pos[j]: position of
// the new entry at (new_row[j], new_col[j]); carried[i]: carry[i] (first dimension the old nnz) in
// the new order.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           std::vector<at::Tensor>>
rewire_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& values, int64_t n_cols,
           const at::Tensor& keep, const std::optional<at::Tensor>& grow_row, const std::optional<at::Tensor>& grow_col,
           const std::optional<at::Tensor>& G, const std::optional<at::Tensor>& X, int64_t n_grow, int64_t seed,
           int64_t tile_rows, int64_t tile_cols, int64_t sample_factor, bool keep_regrown, at::TensorList carry) {
  TORCH_CHECK_VALUE(n_cols >= 0 && n_cols <= INT32_MAX, "n_cols must be in [0, 2^31), got ", n_cols);
  check_csr(row_ptr, col_idx);
  check_sorted_csr_remembered(row_ptr, col_idx, n_cols);  // the one content scan, none for its own output
  const StepsOfRewire steps;
  for (size_t i = 0; i < carry.size(); ++i)
    TORCH_CHECK_VALUE(carry[i].dim() >= 1 && carry[i].size(0) == col_idx.numel(), "carry[", i,
                      "] must have first dimension nnz=", col_idx.numel(), ", got shape ", carry[i].sizes());
  auto values_c = values.contiguous();
  auto [rp, ci, v, kept] = compact_impl(row_ptr, col_idx, values_c, keep, /*with_values=*/false);
  auto [nr, nc] = grow_positions(rp, ci, n_cols, grow_row, grow_col, G, X, n_grow, seed, tile_rows, tile_cols,
                                 sample_factor);
  if (keep_regrown && nr.numel() > 0) {
    auto row_ptr_c = row_ptr.contiguous(), col_idx_c = col_idx.contiguous(), keep_c = keep.contiguous();
    const Csr csr = csr_view(row_ptr_c, col_idx_c, n_cols, /*sorted=*/true);
    const int32_t* C = nc.data_ptr<int32_t>();
    const auto start = new_entry_rows(csr.rows, n_cols, nr.data_ptr<int64_t>(), C, nr.numel());
    auto back = at::zeros_like(keep_c), fresh = at::ones({nr.numel()}, keep_c.options());
    if (mark_regrown(csr, keep_c.data_ptr<bool>(), start.data(), C, back.data_ptr<bool>(), fresh.data_ptr<bool>())) {
      std::tie(rp, ci, v, kept) = compact_impl(row_ptr, col_idx, values_c, keep_c.logical_or(back), false);
      nr = nr.index({fresh});
      nc = nc.index({fresh});
    }
  }
  auto [out_ptr, out_col, out_val, old_pos, new_pos] = merge_impl(rp, ci, values_c, n_cols, nr, nc, at::Tensor(), kept);
  rp = ci = at::Tensor();  // freed before the carried state is gathered: a lower peak, fewer fresh pages
  std::vector<at::Tensor> carried = carry_over(carry, kept, old_pos, new_pos, out_col.numel());
  remember_sorted_csr(out_ptr, out_col, n_cols);
  return {out_ptr, out_col, out_val, kept, old_pos, new_pos, nr, nc, carried};
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CPU, m) {
  m.impl("select_smallest", &select_smallest_cpu);
  m.impl("set_prune", &set_prune_cpu);
  m.impl("compact", &compact_cpu);
  m.impl("random_empty", &random_empty_cpu);
  m.impl("merge", &merge_cpu);
  m.impl("grad_topk", &grad_topk_cpu);
  m.impl("remap_index", &remap_index_cpu);
  m.impl("coo_dot", &coo_dot_cpu);
  m.impl("gather_or_zero", &gather_or_zero_cpu);
  m.impl("rewire", &rewire_cpu);
}

}  // namespace sparse_engine
