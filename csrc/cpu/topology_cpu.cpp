// Topology kernels for dynamic sparse training (CPU/OpenMP): selecting the weights to prune,
// compacting the CSR, drawing empty positions, merging new entries, and RigL's gradient top-k
// at empty positions computed tile by tile. Everything is O(nnz) (or O(tiles) for RigL) and
// never builds a rows x cols array.
//
// Tie rule shared by every selection: among equal scores the entry with the lower position
// (CSR position, or linear key row*cols+col for empty positions) is selected first, so results
// are deterministic and can be compared with a stable numpy sort.
#include <torch/library.h>
#include <omp.h>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <parallel/algorithm>
#include <random>
#include "common.h"

namespace sparse_engine {
namespace {

// Small inputs run on one thread: waking a team costs more than the work, and much more when
// the machine is oversubscribed.
inline bool parallel_worth(int64_t work) { return work >= (int64_t(1) << 15); }

// ------------------------------------------------------------------ random numbers
// Counter-based generator: draw j of a stream depends only on (seed, j), so parallel draws
// give the same result for any number of threads.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Uniform integer in [0, n) from a 64-bit draw (multiply-shift; bias < n / 2^64).
inline int64_t bounded(uint64_t r, int64_t n) {
  return static_cast<int64_t>((static_cast<unsigned __int128>(r) * static_cast<uint64_t>(n)) >> 64);
}

// ------------------------------------------------------------------ selection
// Order-preserving unsigned key of a float/double (radix selection on the bit pattern).
// -0.0 is mapped to +0.0 so that keys agree with float equality.
inline uint32_t ordered_key(float x) {
  if (x == 0) x = 0.0f;
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
inline uint64_t ordered_key(double x) {
  if (x == 0) x = 0.0;
  uint64_t u;
  std::memcpy(&u, &x, 8);
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

// Marks in `out` (OR-ed into it) the k entries with the smallest score(i) among those with
// include(i), ties to the lower index. Radix selection: a parallel histogram of the top 16 key bits finds the bin of
// the k-th score, nth_element runs on that bin only, and a parallel two-pass marking selects
// "score < t, or score == t for the first ones in index order". O(n), no copy of all scores.
template <typename scalar_t, typename Include, typename Score>
void mark_smallest(int64_t n, int64_t k, Include include, Score score, bool* out) {
  if (k <= 0) return;
  constexpr int kBits = 16;
  constexpr int kShift = sizeof(scalar_t) * 8 - kBits;
  const int nt = at::get_num_threads();
  std::vector<int64_t> hist(static_cast<size_t>(nt) << kBits, 0);
#pragma omp parallel num_threads(nt) if(parallel_worth(n))
  {
    int64_t* h = hist.data() + (static_cast<size_t>(omp_get_thread_num()) << kBits);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) h[ordered_key(score(i)) >> kShift] += include(i);
  }
  for (int t = 1; t < nt; ++t)
    for (size_t b = 0; b < (size_t(1) << kBits); ++b) hist[b] += hist[(size_t(t) << kBits) + b];
  int64_t below = 0;
  size_t bin = 0;
  for (; bin < (size_t(1) << kBits); ++bin) {
    if (below + hist[bin] >= k) break;
    below += hist[bin];
  }
  TORCH_CHECK_VALUE(bin < (size_t(1) << kBits), "cannot select ", k, " entries out of ", below);
  std::vector<std::vector<scalar_t>> parts(nt);
#pragma omp parallel num_threads(nt) if(parallel_worth(n))
  {
    auto& mine = parts[omp_get_thread_num()];
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i)
      if (include(i) & ((ordered_key(score(i)) >> kShift) == bin)) mine.push_back(score(i));
  }
  std::vector<scalar_t> band;
  band.reserve(hist[bin]);
  for (auto& part : parts) band.insert(band.end(), part.begin(), part.end());
  const int64_t kin = k - below;
  std::nth_element(band.begin(), band.begin() + (kin - 1), band.end());
  const scalar_t t = band[kin - 1];
  int64_t less = below;
  for (const scalar_t x : band) less += x < t;
  const int64_t equal_needed = k - less;
  // marking: chunks count their ties first so the earliest ties are the selected ones
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(n / 65536 + 1, 4 * nt));
  std::vector<int64_t> eq(chunks + 1, 0);
#pragma omp parallel for schedule(static) num_threads(nt) if(parallel_worth(n))
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t cnt = 0;
    for (int64_t i = n * c / chunks; i < n * (c + 1) / chunks; ++i) cnt += include(i) & (score(i) == t);
    eq[c + 1] = cnt;
  }
  for (int64_t c = 0; c < chunks; ++c) eq[c + 1] += eq[c];
#pragma omp parallel for schedule(static) num_threads(nt) if(parallel_worth(n))
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t budget = std::max<int64_t>(0, equal_needed - eq[c]);
    for (int64_t i = n * c / chunks; i < n * (c + 1) / chunks; ++i) {
      // branch-free on include(i), which may be a coin flip (the sign, for SET)
      const bool inc = include(i);
      const scalar_t x = score(i);
      out[i] = out[i] | (inc & (x < t));
      if (inc & (x == t) & (budget > 0)) {
        out[i] = true;
        --budget;
      }
    }
  }
}

template <typename scalar_t>
void check_finite(const scalar_t* v, int64_t n, const char* name) {
  std::atomic<bool> bad{false};
#pragma omp parallel for num_threads(at::get_num_threads()) if(parallel_worth(n))
  for (int64_t i = 0; i < n; ++i)
    if (std::isnan(v[i])) bad = true;
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

// SET pruning (Mocanu et al. 2018): removes round(zeta * P) of the P positive weights nearest
// zero and, separately, round(zeta * N) of the N negative weights nearest zero (the largest
// negative ones). Exact zeros lie inside the pruned band of the reference implementation and
// are always removed. Returns the keep mask.
template <typename scalar_t>
void set_keep(const scalar_t* v, int64_t n, double zeta, bool* keep) {
  int64_t P = 0, N = 0;
#pragma omp parallel for reduction(+ : P, N) num_threads(at::get_num_threads()) if(parallel_worth(n))
  for (int64_t i = 0; i < n; ++i) {
    P += v[i] > 0;
    N += v[i] < 0;
  }
  std::vector<uint8_t> drop(n, 0);
  bool* d = reinterpret_cast<bool*>(drop.data());
  auto mag = [v](int64_t i) { return std::abs(v[i]); };
  mark_smallest<scalar_t>(n, std::llround(zeta * static_cast<double>(P)), [v](int64_t i) { return v[i] > 0; }, mag, d);
  mark_smallest<scalar_t>(n, std::llround(zeta * static_cast<double>(N)), [v](int64_t i) { return v[i] < 0; }, mag, d);
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads()) if(parallel_worth(n))
  for (int64_t i = 0; i < n; ++i) keep[i] = !drop[i] && v[i] != 0;
}

at::Tensor set_prune_cpu(const at::Tensor& values, double zeta) {
  TORCH_CHECK_TYPE(values.scalar_type() == at::kFloat || values.scalar_type() == at::kDouble,
                   "values must be float32 or float64, got ", values.scalar_type());
  TORCH_CHECK_VALUE(values.dim() == 1, "values must be 1-D, got ", values.dim(), " dims");
  TORCH_CHECK_VALUE(zeta >= 0.0 && zeta <= 1.0, "zeta must be in [0, 1], got ", zeta);
  auto v = values.contiguous();
  auto keep = at::empty({v.numel()}, v.options().dtype(at::kBool));
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "set_prune_cpu", [&] {
    check_finite(v.data_ptr<scalar_t>(), v.numel(), "values");
    set_keep<scalar_t>(v.data_ptr<scalar_t>(), v.numel(), zeta, keep.data_ptr<bool>());
  });
  return keep;
}

// ------------------------------------------------------------------ CSR checks
struct Csr {
  int64_t rows, nnz;
  const int64_t* ptr;
  const int32_t* col;
};

Csr check_csr(const at::Tensor& row_ptr, const at::Tensor& col_idx) {
  TORCH_CHECK_TYPE(row_ptr.scalar_type() == at::kLong, "row_ptr must be int64, got ", row_ptr.scalar_type());
  TORCH_CHECK_TYPE(col_idx.scalar_type() == at::kInt, "col_idx must be int32, got ", col_idx.scalar_type());
  TORCH_CHECK_VALUE(row_ptr.dim() == 1 && row_ptr.numel() >= 1, "row_ptr must be 1-D with rows+1 >= 1 entries");
  TORCH_CHECK_VALUE(col_idx.dim() == 1, "col_idx must be 1-D");
  TORCH_CHECK_VALUE(row_ptr.is_contiguous() && col_idx.is_contiguous(), "row_ptr and col_idx must be contiguous");
  const int64_t* ptr = row_ptr.data_ptr<int64_t>();
  const int64_t rows = row_ptr.numel() - 1;
  TORCH_CHECK_VALUE(ptr[0] == 0 && ptr[rows] == col_idx.numel(), "row_ptr must run from 0 to nnz=",
                    col_idx.numel(), ", got ", ptr[0], "..", ptr[rows]);
  return {rows, col_idx.numel(), ptr, col_idx.data_ptr<int32_t>()};
}

// ------------------------------------------------------------------ compaction
template <typename scalar_t>
void compact_fill(const Csr& c, const bool* k, const int64_t* np, const scalar_t* src, int32_t* nc,
                  scalar_t* dst, int64_t* kpos) {
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads()) if(parallel_worth(c.rows + c.nnz))
  for (int64_t i = 0; i < c.rows; ++i) {
    int64_t d = np[i];
    for (int64_t e = c.ptr[i]; e < c.ptr[i + 1]; ++e) {
      if (!k[e]) continue;
      nc[d] = c.col[e];
      dst[d] = src[e];
      kpos[d] = e;
      ++d;
    }
  }
}

// compact(row_ptr, col_idx, values, keep) -> (row_ptr, col_idx, values, kept_pos): the CSR
// holding only the entries with keep[k]; kept_pos[j] is the old position of new entry j.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> compact_cpu(const at::Tensor& row_ptr,
                                                                       const at::Tensor& col_idx,
                                                                       const at::Tensor& values,
                                                                       const at::Tensor& keep) {
  auto rp = row_ptr.contiguous(), ci = col_idx.contiguous(), v = values.contiguous(), kp = keep.contiguous();
  auto c = check_csr(rp, ci);
  check_values(v, c.nnz);
  TORCH_CHECK_TYPE(kp.scalar_type() == at::kBool, "keep must be bool, got ", kp.scalar_type());
  TORCH_CHECK_VALUE(kp.dim() == 1 && kp.numel() == c.nnz, "keep must be 1-D with nnz=", c.nnz, " entries");
  const bool* k = kp.data_ptr<bool>();
  auto new_ptr = at::zeros({c.rows + 1}, rp.options());
  int64_t* np = new_ptr.data_ptr<int64_t>();
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads()) if(parallel_worth(c.rows + c.nnz))
  for (int64_t i = 0; i < c.rows; ++i) {
    int64_t cnt = 0;
    for (int64_t e = c.ptr[i]; e < c.ptr[i + 1]; ++e) cnt += k[e];
    np[i + 1] = cnt;
  }
  for (int64_t i = 0; i < c.rows; ++i) np[i + 1] += np[i];
  const int64_t m = np[c.rows];
  auto new_col = at::empty({m}, ci.options());
  auto new_val = at::empty({m}, v.options());
  auto kept = at::empty({m}, rp.options());
  int32_t* nc = new_col.data_ptr<int32_t>();
  int64_t* kpos = kept.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "compact_cpu", [&] {
    compact_fill<scalar_t>(c, k, np, v.data_ptr<scalar_t>(), nc, new_val.data_ptr<scalar_t>(), kpos);
  });
  return {new_ptr, new_col, new_val, kept};
}

// ------------------------------------------------------------------ empty positions

// Keeps a uniformly random subset of n of the keys (partial Fisher-Yates), then sorts them.
void random_subset(std::vector<int64_t>& keys, int64_t n, uint64_t seed) {
  std::mt19937_64 gen(splitmix64(seed ^ 0x5bd1e995ULL));
  const int64_t m = keys.size();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = i + bounded(gen(), m - i);
    std::swap(keys[i], keys[j]);
  }
  keys.resize(n);
  std::sort(keys.begin(), keys.end());
}

// Sorts linear keys row*cols+col: a counting sort by row (one pass), then a small sort inside
// each row, in parallel. O(m + rows) plus the in-row sorts.
void sort_keys_by_row(std::vector<int64_t>& keys, int64_t rows, int64_t cols) {
  const int64_t m = keys.size();
  if (m < 4096 || rows < 2) {
    __gnu_parallel::sort(keys.begin(), keys.end());
    return;
  }
  std::vector<int64_t> start(rows + 1, 0);
  for (int64_t j = 0; j < m; ++j) ++start[keys[j] / cols + 1];
  for (int64_t i = 0; i < rows; ++i) start[i + 1] += start[i];
  std::vector<int64_t> out(m);
  {
    std::vector<int64_t> next(start.begin(), start.end() - 1);
    for (int64_t j = 0; j < m; ++j) out[next[keys[j] / cols]++] = keys[j];
  }
#pragma omp parallel for schedule(dynamic, 64) num_threads(at::get_num_threads()) if(parallel_worth(m))
  for (int64_t i = 0; i < rows; ++i) std::sort(out.begin() + start[i], out.begin() + start[i + 1]);
  keys.swap(out);
}

// Removes the keys (sorted, unique) that are stored entries of the pattern, keeping the order.
void drop_occupied(const Csr& c, int64_t cols, std::vector<int64_t>& keys) {
  const int64_t m = keys.size();
  std::vector<uint8_t> occ(m);
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(m / 4096 + 1, 8 * at::get_num_threads()));
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads()) if(parallel_worth(m))
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t lo = m * ch / chunks, hi = m * (ch + 1) / chunks;
    int64_t cur = -1;
    const int32_t *p = nullptr, *e = nullptr;
    for (int64_t j = lo; j < hi; ++j) {
      const int64_t row = keys[j] / cols;
      const int32_t col = static_cast<int32_t>(keys[j] - row * cols);
      if (row != cur) {
        cur = row;
        p = c.col + c.ptr[row];
        e = c.col + c.ptr[row + 1];
      }
      while (p < e && *p < col) ++p;
      occ[j] = p < e && *p == col;
    }
  }
  int64_t d = 0;
  for (int64_t j = 0; j < m; ++j)
    if (!occ[j]) keys[d++] = keys[j];
  keys.resize(d);
}

// Exactly n distinct positions drawn uniformly from the empty positions of the pattern, as
// sorted linear keys row*cols+col. Sparse case (at least 4n empty positions): rejection
// sampling: uniform linear positions are drawn, sorted, deduplicated and checked against the
// rows in order, until at least n remain; then a uniformly random surplus is dropped.
// Expected O(n log n + nnz) (the row walk touches each row's entries once). Dense case:
// enumerate the empty positions (O(rows*cols), which is then O(nnz + n)) and pick n.
std::vector<int64_t> draw_empty(const Csr& c, int64_t cols, int64_t n, uint64_t seed) {
  const int64_t total = c.rows * cols;
  const int64_t empty = total - c.nnz;
  TORCH_CHECK_VALUE(n >= 0 && n <= empty, "cannot grow ", n, " entries: only ", empty,
                    " empty positions in a ", c.rows, " x ", cols, " matrix with nnz=", c.nnz);
  std::vector<int64_t> keys;
  if (n == 0) return keys;
  if (empty < 4 * n) {
    keys.reserve(empty);
    for (int64_t i = 0; i < c.rows; ++i) {
      int64_t e = c.ptr[i];
      for (int64_t j = 0; j < cols; ++j) {
        if (e < c.ptr[i + 1] && c.col[e] == j) { ++e; continue; }
        keys.push_back(i * cols + j);
      }
    }
    random_subset(keys, n, seed);
    return keys;
  }
  uint64_t counter = 0;
  const uint64_t stream = splitmix64(seed);
  while (static_cast<int64_t>(keys.size()) < n) {
    const int64_t need = n - keys.size();
    const int64_t m = need + need / 8 + 16;
    const int64_t base = keys.size();
    keys.resize(base + m);
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads()) if(parallel_worth(m))
    for (int64_t j = 0; j < m; ++j) keys[base + j] = bounded(splitmix64(stream + counter + j), total);
    counter += m;
    // sorted candidates are checked against the rows in order (cache friendly, unlike a
    // binary search in a random row per draw)
    sort_keys_by_row(keys, c.rows, cols);
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    drop_occupied(c, cols, keys);
  }
  const int64_t m = keys.size();
  if (m > n) {  // drop a uniformly random subset of the surplus, keeping the order
    std::vector<int64_t> idx(m);
    for (int64_t i = 0; i < m; ++i) idx[i] = i;
    std::mt19937_64 gen(splitmix64(seed ^ 0x5bd1e995ULL ^ counter));
    std::vector<uint8_t> drop(m, 0);
    for (int64_t i = 0; i < m - n; ++i) {
      const int64_t j = i + bounded(gen(), m - i);
      std::swap(idx[i], idx[j]);
      drop[idx[i]] = 1;
    }
    int64_t d = 0;
    for (int64_t i = 0; i < m; ++i)
      if (!drop[i]) keys[d++] = keys[i];
    keys.resize(n);
  }
  return keys;
}

std::tuple<at::Tensor, at::Tensor> keys_to_coo(const std::vector<int64_t>& keys, int64_t cols) {
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

// random_empty(row_ptr, col_idx, n_cols, n, seed) -> (rows int64, cols int32), sorted.
std::tuple<at::Tensor, at::Tensor> random_empty_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                                    int64_t n_cols, int64_t n, int64_t seed) {
  auto rp = row_ptr.contiguous(), ci = col_idx.contiguous();
  auto c = check_csr(rp, ci);
  TORCH_CHECK_VALUE(n_cols >= 0 && n_cols <= INT32_MAX, "n_cols must be in [0, 2^31), got ", n_cols);
  TORCH_CHECK_VALUE(n >= 0, "n must be >= 0, got ", n);
  return keys_to_coo(draw_empty(c, n_cols, n, static_cast<uint64_t>(seed)), n_cols);
}

// ------------------------------------------------------------------ merge
template <typename scalar_t>
void merge_fill(const Csr& c, const int64_t* nptr, const int32_t* C, const int64_t* op, const scalar_t* ov,
                const scalar_t* nvv, int32_t* oc, scalar_t* dv, int64_t* opos, int64_t* npos,
                std::atomic<int64_t>& clash) {
#pragma omp parallel for schedule(dynamic, 256) num_threads(at::get_num_threads()) if(parallel_worth(c.rows + c.nnz))
  for (int64_t i = 0; i < c.rows; ++i) {
    int64_t a = c.ptr[i], ae = c.ptr[i + 1], b = nptr[i], be = nptr[i + 1], d = op[i];
    while (a < ae || b < be) {
      if (b >= be || (a < ae && c.col[a] < C[b])) {
        oc[d] = c.col[a]; dv[d] = ov[a]; opos[a] = d; ++a;
      } else {
        if (a < ae && c.col[a] == C[b]) clash = b;
        oc[d] = C[b]; dv[d] = nvv[b]; npos[b] = d; ++b;
      }
      ++d;
    }
  }
}

// merge(row_ptr, col_idx, values, new_row, new_col, new_values) -> (row_ptr, col_idx, values,
// old_pos, new_pos): inserts new entries (sorted by (row, col), unique, all at empty
// positions; anything else is a ValueError) keeping every row sorted. old_pos[k] / new_pos[j]
// are the positions of old entry k / new entry j in the merged CSR.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> merge_cpu(
    const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& values, int64_t n_cols,
    const at::Tensor& new_row, const at::Tensor& new_col, const at::Tensor& new_values) {
  auto rp = row_ptr.contiguous(), ci = col_idx.contiguous(), v = values.contiguous();
  auto c = check_csr(rp, ci);
  check_values(v, c.nnz);
  TORCH_CHECK_TYPE(new_row.scalar_type() == at::kLong, "new_row must be int64, got ", new_row.scalar_type());
  TORCH_CHECK_TYPE(new_col.scalar_type() == at::kInt, "new_col must be int32, got ", new_col.scalar_type());
  TORCH_CHECK_TYPE(new_values.scalar_type() == v.scalar_type(), "new_values must have dtype ", v.scalar_type(),
                   ", got ", new_values.scalar_type());
  const int64_t n = new_row.numel();
  TORCH_CHECK_VALUE(new_row.dim() == 1 && new_col.dim() == 1 && new_values.dim() == 1 &&
                        new_col.numel() == n && new_values.numel() == n,
                    "new_row, new_col and new_values must be 1-D of the same length");
  auto nr = new_row.contiguous(), nc = new_col.contiguous(), nv = new_values.contiguous();
  const int64_t* R = nr.data_ptr<int64_t>();
  const int32_t* C = nc.data_ptr<int32_t>();
  auto entry_ok = [&](int64_t j) {
    return R[j] >= 0 && R[j] < c.rows && C[j] >= 0 && C[j] < n_cols &&
           (j == 0 || R[j] > R[j - 1] || (R[j] == R[j - 1] && C[j] > C[j - 1]));
  };
  std::atomic<bool> bad_entry{false};
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads()) if(parallel_worth(n))
  for (int64_t j = 0; j < n; ++j)
    if (!entry_ok(j)) bad_entry = true;
  if (bad_entry) {  // find the first one for the message
    for (int64_t j = 0; j < n; ++j) {
      TORCH_CHECK_VALUE(R[j] >= 0 && R[j] < c.rows && C[j] >= 0 && C[j] < n_cols, "new entry ", j, " at (",
                        R[j], ", ", C[j], ") is outside the ", c.rows, " x ", n_cols, " matrix");
      TORCH_CHECK_VALUE(entry_ok(j), "new entries must be sorted by (row, col) without duplicates: entry ", j,
                        " at (", R[j], ", ", C[j], ")");
    }
  }
  // first new entry of each row
  std::vector<int64_t> nptr(c.rows + 1, 0);
  for (int64_t j = 0; j < n; ++j) ++nptr[R[j] + 1];
  for (int64_t i = 0; i < c.rows; ++i) nptr[i + 1] += nptr[i];
  auto out_ptr = at::empty({c.rows + 1}, rp.options());
  int64_t* op = out_ptr.data_ptr<int64_t>();
  for (int64_t i = 0; i <= c.rows; ++i) op[i] = c.ptr[i] + nptr[i];
  const int64_t m = c.nnz + n;
  auto out_col = at::empty({m}, ci.options());
  auto out_val = at::empty({m}, v.options());
  auto old_pos = at::empty({c.nnz}, rp.options());
  auto new_pos = at::empty({n}, rp.options());
  int32_t* oc = out_col.data_ptr<int32_t>();
  int64_t* opos = old_pos.data_ptr<int64_t>();
  int64_t* npos = new_pos.data_ptr<int64_t>();
  std::atomic<int64_t> clash{-1};
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "merge_cpu", [&] {
    merge_fill<scalar_t>(c, nptr.data(), C, op, v.data_ptr<scalar_t>(), nv.data_ptr<scalar_t>(), oc,
                         out_val.data_ptr<scalar_t>(), opos, npos, clash);
  });
  TORCH_CHECK_VALUE(clash.load() < 0, "new entry ", clash.load(), " at (", R[std::max<int64_t>(0, clash.load())],
                    ", ", C[std::max<int64_t>(0, clash.load())], ") is already stored");
  return {out_ptr, out_col, out_val, old_pos, new_pos};
}

// ------------------------------------------------------------------ state remap
// remap_index(kept_pos, old_pos, new_nnz) -> origin: origin[p] = old position of the entry now at
// p, or -1 for a new entry (kept_pos from compact, old_pos from merge).
at::Tensor remap_index_cpu(const at::Tensor& kept_pos, const at::Tensor& old_pos, int64_t new_nnz) {
  TORCH_CHECK_TYPE(kept_pos.scalar_type() == at::kLong && old_pos.scalar_type() == at::kLong,
                   "kept_pos and old_pos must be int64");
  TORCH_CHECK_VALUE(kept_pos.dim() == 1 && old_pos.dim() == 1 && kept_pos.numel() == old_pos.numel(),
                    "kept_pos and old_pos must be 1-D of the same length");
  auto kp = kept_pos.contiguous(), op = old_pos.contiguous();
  auto origin = at::full({new_nnz}, -1, kp.options());
  const int64_t* k = kp.data_ptr<int64_t>();
  const int64_t* o = op.data_ptr<int64_t>();
  int64_t* out = origin.data_ptr<int64_t>();
  const int64_t n = kp.numel();
  std::atomic<bool> bad{false};
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads()) if(parallel_worth(n))
  for (int64_t j = 0; j < n; ++j) {
    if (o[j] < 0 || o[j] >= new_nnz) { bad = true; continue; }
    out[o[j]] = k[j];
  }
  TORCH_CHECK_VALUE(!bad, "old_pos entries must be in [0, new_nnz=", new_nnz, ")");
  return origin;
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
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads()) if(parallel_worth(n))
  for (int64_t p = 0; p < n; ++p) {
    const int64_t o = org[p];
    if (o >= old_n) {
      bad = true;
    } else if (bytes == 4) {
      reinterpret_cast<uint32_t*>(dst)[p] = o < 0 ? 0u : reinterpret_cast<const uint32_t*>(src)[o];
    } else if (bytes == 8) {
      reinterpret_cast<uint64_t*>(dst)[p] = o < 0 ? 0ull : reinterpret_cast<const uint64_t*>(src)[o];
    } else if (o < 0) {
      std::memset(dst + p * bytes, 0, bytes);
    } else {
      std::memcpy(dst + p * bytes, src + o * bytes, bytes);
    }
  }
  TORCH_CHECK_VALUE(!bad, "origin entries must be < ", old_n, " (the first dimension of t)");
  return out;
}

// ------------------------------------------------------------------ RigL growth
// coo_dot(rows, cols, G, X) -> out[j] = dot(G[rows[j], :], X[cols[j], :]): the gradient at a
// list of candidate positions (sampled RigL growth), without building an index for them.
template <typename scalar_t>
void coo_dot_loop(const int64_t* r, const int32_t* c, const scalar_t* g, const scalar_t* x, scalar_t* o,
                  int64_t n, int64_t M) {
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads()) if(parallel_worth(n * M))
  for (int64_t j = 0; j < n; ++j) {
    const scalar_t* gi = g + r[j] * M;
    const scalar_t* xj = x + static_cast<int64_t>(c[j]) * M;
    scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t b = 0; b < M; ++b) acc += gi[b] * xj[b];
    o[j] = acc;
  }
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

// grad_topk(row_ptr, col_idx, G, X, k, tile_rows, tile_cols) -> (rows, cols, grads):
// the k empty positions with the largest |(G X^T)[i, j]| (ties to the lower linear key),
// sorted by (row, col), with their signed gradient. G: rows x M, X: cols x M. The dense
// gradient is formed one tile_rows x tile_cols tile at a time (one GEMM per tile) and only a
// running top-k of at most 2k candidates is kept, so memory is O(tile + k).
std::tuple<at::Tensor, at::Tensor, at::Tensor> grad_topk_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                                             const at::Tensor& G, const at::Tensor& X, int64_t k,
                                                             int64_t tile_rows, int64_t tile_cols) {
  auto rp = row_ptr.contiguous(), ci = col_idx.contiguous();
  auto c = check_csr(rp, ci);
  TORCH_CHECK_TYPE(G.scalar_type() == at::kFloat || G.scalar_type() == at::kDouble,
                   "G must be float32 or float64, got ", G.scalar_type());
  TORCH_CHECK_VALUE(G.dim() == 2 && G.size(0) == c.rows, "G must be 2-D with rows=", c.rows, " rows, got ",
                    G.sizes());
  TORCH_CHECK_VALUE(X.dim() == 2 && X.size(1) == G.size(1), "X must be 2-D (cols x M) with M=", G.size(1),
                    " like G, got ", X.sizes());
  TORCH_CHECK_TYPE(X.scalar_type() == G.scalar_type(), "X must have the dtype of G");
  TORCH_CHECK_VALUE(tile_rows > 0 && tile_cols > 0, "tile_rows and tile_cols must be > 0");
  const int64_t cols = X.size(0);
  TORCH_CHECK_VALUE(cols <= INT32_MAX, "X has too many rows (cols) for int32 column indices");
  const int64_t empty = c.rows * cols - c.nnz;
  TORCH_CHECK_VALUE(k >= 0 && k <= empty, "k must be in [0, ", empty, "] (the empty positions), got ", k);
  for (int64_t e = 0; e < c.nnz; ++e)
    TORCH_CHECK_VALUE(c.col[e] >= 0 && c.col[e] < cols, "col_idx entry ", c.col[e], " out of range [0, ", cols, ")");
  std::vector<Cand> best;
  if (k > 0) {
    auto Gc = G.contiguous(), Xc = X.contiguous();
    best.reserve(2 * k + 16);
    double bound = -1.0;
    const int nt = at::get_num_threads();
    std::vector<std::vector<Cand>> local(nt);
    for (int64_t r0 = 0; r0 < c.rows; r0 += tile_rows) {
      const int64_t r1 = std::min(c.rows, r0 + tile_rows);
      for (int64_t c0 = 0; c0 < cols; c0 += tile_cols) {
        const int64_t c1 = std::min(cols, c0 + tile_cols);
        at::Tensor T = at::mm(Gc.slice(0, r0, r1), Xc.slice(0, c0, c1).t()).to(at::kDouble).contiguous();
        const double* t = T.data_ptr<double>();
        const int64_t w = c1 - c0;
        const double lo = bound;
#pragma omp parallel num_threads(nt) if(parallel_worth((r1 - r0) * w))
        {
          auto& mine = local[omp_get_thread_num()];
#pragma omp for schedule(static)
          for (int64_t i = r0; i < r1; ++i) {
            const int32_t* b = c.col + c.ptr[i];
            const int32_t* e = c.col + c.ptr[i + 1];
            const int32_t* p = std::lower_bound(b, e, static_cast<int32_t>(c0));
            const double* trow = t + (i - r0) * w;
            for (int64_t j = c0; j < c1; ++j) {
              if (p < e && *p == j) { ++p; continue; }
              const double g = trow[j - c0];
              if (std::abs(g) >= lo) mine.push_back({std::abs(g), i * cols + j, g});
            }
          }
        }
        for (auto& mine : local) {
          best.insert(best.end(), mine.begin(), mine.end());
          mine.clear();
          if (static_cast<int64_t>(best.size()) > 2 * k) bound = shrink(best, k);
        }
      }
    }
    shrink(best, k);
    TORCH_CHECK(static_cast<int64_t>(best.size()) == k, "grad_topk found ", best.size(), " of ", k, " entries");
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

}  // namespace

TORCH_LIBRARY_FRAGMENT(sparse_engine, m) {
  // bool mask of the k smallest scores (ties: lower index first)
  m.def("select_smallest(Tensor scores, int k) -> Tensor");
  // SET keep mask: drops round(zeta*P) positives and round(zeta*N) negatives nearest zero, and zeros
  m.def("set_prune(Tensor values, float zeta) -> Tensor");
  // CSR without the entries where keep is False; kept_pos = their old positions
  m.def("compact(Tensor row_ptr, Tensor col_idx, Tensor values, Tensor keep) -> (Tensor, Tensor, Tensor, Tensor)");
  // n distinct uniformly random empty positions (rows int64, cols int32), sorted
  m.def("random_empty(Tensor row_ptr, Tensor col_idx, int n_cols, int n, int seed) -> (Tensor, Tensor)");
  // inserts new entries at empty positions: (row_ptr, col_idx, values, old_pos, new_pos)
  m.def("merge(Tensor row_ptr, Tensor col_idx, Tensor values, int n_cols, Tensor new_row, Tensor new_col, "
        "Tensor new_values) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // origin[p]: old position of the entry now at p, -1 for new entries
  m.def("remap_index(Tensor kept_pos, Tensor old_pos, int new_nnz) -> Tensor");
  // out[p] = t[origin[p]] (zero where origin[p] < 0)
  m.def("gather_or_zero(Tensor t, Tensor origin) -> Tensor");
  // out[j] = dot(G[rows[j]], X[cols[j]])
  m.def("coo_dot(Tensor rows, Tensor cols, Tensor G, Tensor X) -> Tensor");
  // top-k |G X^T| at empty positions, tile by tile: (rows int64, cols int32, grads)
  m.def("grad_topk(Tensor row_ptr, Tensor col_idx, Tensor G, Tensor X, int k, int tile_rows, int tile_cols) "
        "-> (Tensor, Tensor, Tensor)");
}

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
}

}  // namespace sparse_engine
