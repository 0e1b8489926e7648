// Topology kernels for dynamic sparse training (CPU/OpenMP): selecting the weights to prune,
// compacting the CSR, drawing empty positions, merging new entries, RigL's gradient top-k at
// empty positions computed tile by tile, remapping per-entry state, and `rewire`, which chains
// those steps into one update of a layer (one operator call per layer and update). Everything is
// O(nnz) (or O(tiles) for RigL) and never builds a rows x cols array.
//
// Tie rule shared by every selection: among equal scores the entry with the lower position
// (CSR position, or linear key row*cols+col for empty positions) is selected first, so results
// are deterministic and can be compared with a stable numpy sort.
//
// Why one file of about 800 lines: it is the topology family's CPU file (one per op family,
// tests/test_op_registry.py), and `rewire` calls the step kernels directly, which it can because
// they share this translation unit; the sections follow an update's order.
#include <c10/util/accumulate.h>
#include <torch/library.h>
#include <omp.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <tuple>
#include "common.h"

namespace sparse_engine {
namespace {

// Small inputs run on one thread: waking a team costs more than the work, and much more when
// the machine is oversubscribed.
inline bool parallel_worth(int64_t work) { return work >= parallel_work(); }

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
  const int nt = kernel_threads();
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
#pragma omp parallel for num_threads(kernel_threads()) if(parallel_worth(n))
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
// are always removed; of equal magnitudes at a cut, the earliest go. Writes the keep mask.
// Both signs in the same passes (mark_smallest's radix selection, once for both): a histogram of
// the magnitudes' top 16 bits per sign, the values of each cut's bin, and the mask, with a pass
// counting the ties before each chunk only where not every value equal to a cut goes (rare for
// trained weights); 4 passes over the values where two selections took 9, 1.7 s at 128M.
template <typename scalar_t>
void set_keep(const scalar_t* v, int64_t n, double zeta, bool* keep) {
  constexpr int kBits = 16;
  constexpr int kShift = sizeof(scalar_t) * 8 - kBits;
  constexpr size_t kBins = size_t(1) << kBits;
  const int nt = kernel_threads();
  const bool par = parallel_worth(n);
  auto bin_of = [](scalar_t magnitude) { return static_cast<size_t>(ordered_key(magnitude) >> kShift); };
  std::vector<int64_t> hist(2 * kBins * nt, 0);  // per thread: positives' bins, then negatives'
  std::atomic<bool> nan{false};
#pragma omp parallel num_threads(nt) if(par)
  {
    int64_t* h = hist.data() + 2 * kBins * omp_get_thread_num();
    bool bad = false;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const scalar_t x = v[i];
      bad |= std::isnan(x);
      const size_t b = bin_of(std::abs(x));
      h[b] += x > 0;
      h[kBins + b] += x < 0;
    }
    if (bad) nan = true;
  }
  TORCH_CHECK_VALUE(!nan, "values must not contain NaN");
  for (int t = 1; t < nt; ++t)
    for (size_t b = 0; b < 2 * kBins; ++b) hist[b] += hist[2 * kBins * t + b];
  struct Cut {  // one sign's: drop the magnitudes below t, and `ties` of those equal to t
    int64_t k = 0, below = 0, ties = 0;
    size_t bin = kBins;
    scalar_t t = scalar_t(-1);  // below every magnitude: nothing dropped
    bool every_tie = true;
  } cut[2];
  for (int sign = 0; sign < 2; ++sign) {
    const int64_t* h = hist.data() + sign * kBins;
    const int64_t count = std::accumulate(h, h + kBins, int64_t(0));
    Cut& c = cut[sign];
    c.k = std::llround(zeta * static_cast<double>(count));
    if (c.k == 0) continue;
    for (c.bin = 0; c.below + h[c.bin] < c.k; ++c.bin) c.below += h[c.bin];
  }
  std::vector<std::vector<scalar_t>> parts(2 * nt);
#pragma omp parallel num_threads(nt) if(par)
  {
    auto* mine = &parts[2 * omp_get_thread_num()];
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const scalar_t x = v[i], m = std::abs(x);
      const size_t b = bin_of(m);
      if (x > 0 && b == cut[0].bin) mine[0].push_back(m);
      if (x < 0 && b == cut[1].bin) mine[1].push_back(m);
    }
  }
  for (int sign = 0; sign < 2; ++sign) {
    Cut& c = cut[sign];
    if (c.k == 0) continue;
    std::vector<scalar_t> band;
    for (int t = 0; t < nt; ++t) band.insert(band.end(), parts[2 * t + sign].begin(), parts[2 * t + sign].end());
    const int64_t kin = c.k - c.below;
    std::nth_element(band.begin(), band.begin() + (kin - 1), band.end());
    c.t = band[kin - 1];
    int64_t less = c.below, equal = 0;
    for (const scalar_t x : band) {
      less += x < c.t;
      equal += x == c.t;
    }
    c.ties = c.k - less;
    c.every_tie = c.ties == equal;
  }
  // where some ties stay: chunks count theirs first, so that the earliest ties are the ones dropped
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(n / 65536 + 1, 4 * nt));
  std::vector<int64_t> before(2 * (chunks + 1), 0);
  if (!cut[0].every_tie || !cut[1].every_tie) {
#pragma omp parallel for schedule(static) num_threads(nt) if(par)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      int64_t e0 = 0, e1 = 0;
      for (int64_t i = n * ch / chunks; i < n * (ch + 1) / chunks; ++i) {
        e0 += v[i] > 0 && v[i] == cut[0].t;
        e1 += v[i] < 0 && -v[i] == cut[1].t;
      }
      before[2 * (ch + 1)] = e0;
      before[2 * (ch + 1) + 1] = e1;
    }
    for (int64_t ch = 0; ch < chunks; ++ch) {
      before[2 * (ch + 1)] += before[2 * ch];
      before[2 * (ch + 1) + 1] += before[2 * ch + 1];
    }
  }
#pragma omp parallel for schedule(static) num_threads(nt) if(par)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    int64_t budget[2] = {std::max<int64_t>(0, cut[0].ties - before[2 * ch]),
                         std::max<int64_t>(0, cut[1].ties - before[2 * ch + 1])};
    for (int64_t i = n * ch / chunks; i < n * (ch + 1) / chunks; ++i) {
      const scalar_t x = v[i];
      if (x == 0) {
        keep[i] = false;
        continue;
      }
      const int sign = x < 0;
      const Cut& c = cut[sign];
      const scalar_t m = std::abs(x);
      bool drop = m < c.t;
      if (m == c.t && (c.every_tie || budget[sign] > 0)) {
        drop = true;
        --budget[sign];
      }
      keep[i] = !drop;
    }
  }
}

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

// ------------------------------------------------------------------ CSR patterns
// A checked CSR pattern: its sizes and arrays.
struct Csr {
  int64_t rows, nnz;
  const int64_t* row_ptr;
  const int32_t* col_idx;
};

// rewire checks its input pattern once (remembered: index_check.h, check_sorted_csr_remembered)
// and then runs the steps below on it and on the patterns they build: while a StepsOfRewire lives
// on this thread, csr_view skips the O(nnz) content scan (the O(1) checks stay). Scanning at every
// step cost SET's update at 1M nnz about 4 scans, 10-15% of its time, and the one scan left, 2%
// (benchmarks/results/topology_one_pass.md).
thread_local bool in_rewire = false;
struct StepsOfRewire {
  const bool outer = in_rewire;
  StepsOfRewire() { in_rewire = true; }
  ~StepsOfRewire() { in_rewire = outer; }
};

// row_ptr and col_idx: contiguous tensors, checked whole (index_check.h): row_ptr non-decreasing
// from 0 to nnz, columns in [0, n_cols) and, with `sorted`, sorted and unique in each row (what
// drawing empty positions, merging and the gradient's top-k rely on).
Csr csr_view(const at::Tensor& row_ptr, const at::Tensor& col_idx, int64_t n_cols, bool sorted) {
  const CsrSizes s = check_csr(row_ptr, col_idx);
  if (!in_rewire) check_csr_content(row_ptr, col_idx, n_cols, sorted);
  return {s.rows, s.nnz, row_ptr.data_ptr<int64_t>(), col_idx.data_ptr<int32_t>()};
}

// ------------------------------------------------------------------ compaction
// Copies the kept entries of each row to the compacted row starting at out_ptr[i]; kept_pos
// records each one's old position.
template <typename scalar_t>
void compact_fill(const Csr& csr, const bool* keep, const int64_t* out_ptr, const scalar_t* values, int32_t* out_col,
                  scalar_t* out_values, int64_t* kept_pos) {
#pragma omp parallel for schedule(static) num_threads(kernel_threads()) if(parallel_worth(csr.rows + csr.nnz))
  for (int64_t i = 0; i < csr.rows; ++i) {
    int64_t d = out_ptr[i];
    for (int64_t k = csr.row_ptr[i]; k < csr.row_ptr[i + 1]; ++k) {
      if (!keep[k]) continue;
      out_col[d] = csr.col_idx[k];
      if (out_values) out_values[d] = values[k];
      kept_pos[d] = k;
      ++d;
    }
  }
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
#pragma omp parallel for schedule(static) num_threads(kernel_threads()) if(parallel_worth(csr.rows + csr.nnz))
  for (int64_t i = 0; i < csr.rows; ++i) {
    int64_t count = 0;
    for (int64_t k = csr.row_ptr[i]; k < csr.row_ptr[i + 1]; ++k) count += kept[k];
    out_ptr_data[i + 1] = count;
  }
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

// A Poisson(lambda) count from `parts` uniforms of a counter-based stream (inverse CDF, lambda
// split into `parts` equal parts of at most 64 so that e^-part cannot underflow).
int64_t poisson_count(double lambda, int64_t parts, uint64_t stream) {
  const double part = lambda / parts, p0 = std::exp(-part);
  int64_t count = 0;
  for (int64_t t = 0; t < parts; ++t) {
    const double u = static_cast<double>(splitmix64(stream + t) >> 11) * 0x1.0p-53;
    double p = p0, cdf = p0;
    int64_t k = 0;
    while (u > cdf && p > 0) {
      ++k;
      p *= part / k;
      cdf += p;
    }
    count += k;
  }
  return count;
}

// n distinct uniformly random empty positions (at least 4n are empty), as (rows, cols) sorted:
// each row draws a Poisson number of candidate columns, the same mean for every row (together a
// Poisson number of uniformly random positions of the matrix), sorts them and keeps the distinct
// ones that are not stored; if fewer than n survive (unlikely by the margin) all is drawn again
// with twice the mean, else a uniformly random surplus is dropped (Floyd's sampling). Every
// empty position is treated alike, so the n returned are a uniform n-subset. Rows work on their
// own counter-based streams in parallel (any thread count gives the same draw), with no global
// sort and 4 bytes a candidate: the global draw-sort-dedupe this replaces moved ~20 bytes a
// candidate through memory, half of a SET update's time at 128M entries.
std::tuple<at::Tensor, at::Tensor> draw_empty_by_rows(const Csr& csr, int64_t cols, int64_t n, uint64_t seed) {
  const int64_t rows = csr.rows, total = rows * cols, empty = total - csr.nnz;
  const int nt = kernel_threads();
  const bool par = parallel_worth(rows + n);
  std::vector<int64_t> start(rows + 1, 0), kept(rows + 1, 0);  // candidates' and survivors' offsets
  for (int round = 0;; ++round) {
    // survivors wanted: n, a margin for the Poisson spread and a little for duplicates
    const double want = std::ldexp(n + n / 64.0 + 8.0 * std::sqrt(static_cast<double>(n)) + 16.0, round);
    const double lambda = want / rows * (static_cast<double>(total) / empty);
    const int64_t parts = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(lambda / 64)));
    const uint64_t counts = splitmix64(seed + 0x632BE59BD9B4E019ULL * (round + 1)), draws = splitmix64(counts);
#pragma omp parallel for schedule(static) num_threads(nt) if(par)
    for (int64_t i = 0; i < rows; ++i) start[i + 1] = poisson_count(lambda, parts, counts + i * parts);
    for (int64_t i = 0; i < rows; ++i) start[i + 1] += start[i];
    std::vector<int32_t> cand(start[rows]);  // each row's survivors, at the row's candidate offset
#pragma omp parallel for schedule(dynamic, 1024) num_threads(nt) if(par)
    for (int64_t i = 0; i < rows; ++i) {
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
#pragma omp parallel for schedule(static) num_threads(nt) if(par)
    for (int64_t i = 0; i < rows; ++i) {
      int64_t s = 0;
      for (int64_t j = first[i]; j < first[i + 1]; ++j) s += !drop[j];
      out_start[i + 1] = s;
    }
    for (int64_t i = 0; i < rows; ++i) out_start[i + 1] += out_start[i];
    auto out_rows = at::empty({n}, at::kLong);
    auto out_cols = at::empty({n}, at::kInt);
    int64_t* r = out_rows.data_ptr<int64_t>();
    int32_t* cc = out_cols.data_ptr<int32_t>();
#pragma omp parallel for schedule(static) num_threads(nt) if(par)
    for (int64_t i = 0; i < rows; ++i) {
      int64_t d = out_start[i];
      const int32_t* c = cand.data() + start[i];
      for (int64_t j = first[i]; j < first[i + 1]; ++j) {
        if (drop[j]) continue;
        r[d] = i;
        cc[d++] = c[j - first[i]];
      }
    }
    return {out_rows, out_cols};
  }
}

// n distinct uniformly random empty positions, as (rows int64, cols int32) sorted by (row, col):
// drawn by rows (draw_empty_by_rows) while at least 4n positions are empty; else the empty
// positions are enumerated (O(rows * cols), which is then O(nnz + n)) and n picked.
std::tuple<at::Tensor, at::Tensor> draw_empty(const Csr& csr, int64_t cols, int64_t n, uint64_t seed) {
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
#pragma omp parallel for schedule(dynamic, 256) num_threads(kernel_threads()) \
    if(parallel_worth(csr.rows + csr.nnz))
  for (int64_t i = 0; i < csr.rows; ++i) {
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
#pragma omp parallel for schedule(static) num_threads(kernel_threads()) if(parallel_worth(n))
  for (int64_t j = 0; j < n; ++j)
    if (!entry_ok(j)) bad_entry = true;
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
#pragma omp parallel for schedule(static) num_threads(kernel_threads()) if(parallel_worth(n))
  for (int64_t j = 0; j < n; ++j) {
    if (moved_to[j] < 0 || moved_to[j] >= new_nnz) { bad = true; continue; }
    out[moved_to[j]] = kept[j];
  }
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
#pragma omp parallel for schedule(static) num_threads(kernel_threads()) if(parallel_worth(n))
  for (int64_t p = 0; p < n; ++p) {
    const int64_t o = org[p];
    if (o >= old_n) {
      bad = true;
    } else {
      copy_or_zero(dst, p, src, o, bytes);
    }
  }
  TORCH_CHECK_VALUE(!bad, "origin entries must be < ", old_n, " (the first dimension of t)");
  return out;
}

// ------------------------------------------------------------------ RigL growth
// coo_dot(rows, cols, G, X) -> out[j] = dot(G[rows[j], :], X[cols[j], :]): the gradient at a
// list of candidate positions (sampled RigL growth), without building an index for them.
template <typename scalar_t>
void coo_dot_loop(const int64_t* rows, const int32_t* cols, const scalar_t* G, const scalar_t* X, scalar_t* out,
                  int64_t n, int64_t M) {
#pragma omp parallel for schedule(static) num_threads(kernel_threads()) if(parallel_worth(n * M))
  for (int64_t j = 0; j < n; ++j) {
    const scalar_t* G_row = G + rows[j] * M;
    const scalar_t* X_row = X + static_cast<int64_t>(cols[j]) * M;
    scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t b = 0; b < M; ++b) acc += G_row[b] * X_row[b];
    out[j] = acc;
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
        at::Tensor T = at::mm(Gc.slice(0, r0, r1), Xc.slice(0, c0, c1).t()).to(at::kDouble).contiguous();
        const double* t = T.data_ptr<double>();
        const int64_t w = c1 - c0;
        const double lo = bound;
#pragma omp parallel num_threads(nt) if(parallel_worth((r1 - r0) * w))
        {
          auto& mine = local[omp_get_thread_num()];
#pragma omp for schedule(static)
          for (int64_t i = r0; i < r1; ++i) {
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
#pragma omp parallel num_threads(kernel_threads()) if(parallel_worth(n_kept + n_new))
  {
#pragma omp for schedule(static) nowait
    for (int64_t j = 0; j < n_kept; ++j)
      for (const Part& p : parts) copy_or_zero(p.dst, to[j], p.src, from[j], p.bytes);
#pragma omp for schedule(static)
    for (int64_t j = 0; j < n_new; ++j)
      for (const Part& p : parts) copy_or_zero(p.dst, fresh[j], p.src, -1, p.bytes);
  }
  return out;
}

// The pruned entries (keep[k] false) of the pattern whose position was grown again: sets back[k]
// and clears fresh[j] of the grown position j they take (grown positions sorted, rows starting at
// grow_start). Returns how many there are.
int64_t mark_regrown(const Csr& csr, const bool* keep, const int64_t* grow_start, const int32_t* grow_col,
                     bool* back, bool* fresh) {
  int64_t count = 0;
#pragma omp parallel for schedule(dynamic, 256) reduction(+ : count) num_threads(kernel_threads()) \
    if(parallel_worth(csr.rows + csr.nnz))
  for (int64_t i = 0; i < csr.rows; ++i) {
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
