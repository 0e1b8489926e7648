// The topology kernels' random numbers: a counter-based generator (draw j of a stream depends
// only on (seed, j)) and the samplers built on it, used to draw empty positions
// (empty_positions.h). Separate from topology_cpu.cpp because nothing here knows about sparse
// patterns: a small library that the drawing code uses.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace sparse_engine {

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

// Keeps a uniformly random subset of n of the keys (partial Fisher-Yates), then sorts them.
inline void random_subset(std::vector<int64_t>& keys, int64_t n, uint64_t seed) {
  std::mt19937_64 gen(splitmix64(seed ^ 0x5bd1e995ULL));
  const int64_t m = keys.size();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = i + bounded(gen(), m - i);
    std::swap(keys[i], keys[j]);
  }
  keys.resize(n);
  std::sort(keys.begin(), keys.end());
}

// A Poisson(lambda) count from `parts` uniforms of a counter-based stream (inverse CDF, lambda
// split into `parts` equal parts of at most 64 so that e^-part cannot underflow).
inline int64_t poisson_count(double lambda, int64_t parts, uint64_t stream) {
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

}  // namespace sparse_engine
