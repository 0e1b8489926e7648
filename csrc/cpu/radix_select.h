// The radix selection of the topology kernels: the k smallest scores (mark_smallest, behind
// select_smallest and so sampled RigL growth) and SET's prune of both signs in the same passes
// (set_keep, behind set_prune), ties to the lower index (topology_cpu.cpp's tie rule). Separate
// from topology_cpu.cpp as an algorithm of its own: it sees scores, not sparse patterns.
#pragma once
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>
#include "topology_common.h"

namespace sparse_engine {

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
  const int nt = parallel_worth(n) ? kernel_threads() : 1;
  // a histogram and a list per thread (slot): counts, and a band whose order nth_element ignores
  const int64_t scan_chunks = num_chunks(n);
  const auto scan = [&](auto&& body) {
    run_chunks(scan_chunks, nt, [&](int64_t c, int slot) { body(n * c / scan_chunks, n * (c + 1) / scan_chunks, slot); });
  };
  std::vector<int64_t> hist(static_cast<size_t>(nt) << kBits, 0);
  scan([&](int64_t i0, int64_t i1, int slot) {
    int64_t* h = hist.data() + (static_cast<size_t>(slot) << kBits);
    for (int64_t i = i0; i < i1; ++i) h[ordered_key(score(i)) >> kShift] += include(i);
  });
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
  scan([&](int64_t i0, int64_t i1, int slot) {
    auto& mine = parts[slot];
    for (int64_t i = i0; i < i1; ++i)
      if (include(i) & ((ordered_key(score(i)) >> kShift) == bin)) mine.push_back(score(i));
  });
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
  run_chunks(chunks, nt, [&](int64_t c, int) {
    int64_t cnt = 0;
    for (int64_t i = n * c / chunks; i < n * (c + 1) / chunks; ++i) cnt += include(i) & (score(i) == t);
    eq[c + 1] = cnt;
  });
  for (int64_t c = 0; c < chunks; ++c) eq[c + 1] += eq[c];
  run_chunks(chunks, nt, [&](int64_t c, int) {
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
  });
}

// SET pruning (Mocanu et al. 2018): removes round(zeta * P) of the P positive weights nearest
// zero and, separately, round(zeta * N) of the N negative weights nearest zero (the largest
// negative ones). Exact zeros lie inside the pruned band of the reference implementation and
// are always removed; of equal magnitudes at a cut, the earliest go. Writes the keep mask.
// Both signs in the same passes (mark_smallest's radix selection, once for both): a histogram of
// the magnitudes' top 16 bits per sign, the values of each cut's bin, and the mask, with a pass
// counting the ties before each chunk only where not every value equal to a cut goes (rare for
// trained weights): 4 passes over the values, where two selections (one per sign) would take 9.
template <typename scalar_t>
void set_keep(const scalar_t* v, int64_t n, double zeta, bool* keep) {
  constexpr int kBits = 16;
  constexpr int kShift = sizeof(scalar_t) * 8 - kBits;
  constexpr size_t kBins = size_t(1) << kBits;
  const int nt = parallel_worth(n) ? kernel_threads() : 1;
  const int64_t scan_chunks = num_chunks(n);
  const auto scan = [&](auto&& body) {  // body(i0, i1, slot): a histogram and lists per thread (slot)
    run_chunks(scan_chunks, nt, [&](int64_t c, int slot) { body(n * c / scan_chunks, n * (c + 1) / scan_chunks, slot); });
  };
  auto bin_of = [](scalar_t magnitude) { return static_cast<size_t>(ordered_key(magnitude) >> kShift); };
  std::vector<int64_t> hist(2 * kBins * nt, 0);  // per thread: positives' bins, then negatives'
  std::atomic<bool> nan{false};
  scan([&](int64_t i0, int64_t i1, int slot) {
    int64_t* h = hist.data() + 2 * kBins * slot;
    bool bad = false;
    for (int64_t i = i0; i < i1; ++i) {
      const scalar_t x = v[i];
      bad |= std::isnan(x);
      const size_t b = bin_of(std::abs(x));
      h[b] += x > 0;
      h[kBins + b] += x < 0;
    }
    if (bad) nan = true;
  });
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
  scan([&](int64_t i0, int64_t i1, int slot) {
    auto* mine = &parts[2 * slot];
    for (int64_t i = i0; i < i1; ++i) {
      const scalar_t x = v[i], m = std::abs(x);
      const size_t b = bin_of(m);
      if (x > 0 && b == cut[0].bin) mine[0].push_back(m);
      if (x < 0 && b == cut[1].bin) mine[1].push_back(m);
    }
  });
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
    run_chunks(chunks, nt, [&](int64_t ch, int) {
      int64_t e0 = 0, e1 = 0;
      for (int64_t i = n * ch / chunks; i < n * (ch + 1) / chunks; ++i) {
        e0 += v[i] > 0 && v[i] == cut[0].t;
        e1 += v[i] < 0 && -v[i] == cut[1].t;
      }
      before[2 * (ch + 1)] = e0;
      before[2 * (ch + 1) + 1] = e1;
    });
    for (int64_t ch = 0; ch < chunks; ++ch) {
      before[2 * (ch + 1)] += before[2 * ch];
      before[2 * (ch + 1) + 1] += before[2 * ch + 1];
    }
  }
  run_chunks(chunks, nt, [&](int64_t ch, int) {
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
  });
}

}  // namespace sparse_engine
