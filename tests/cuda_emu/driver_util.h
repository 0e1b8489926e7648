// What the recurrent kernels' emulator drivers (rnn_driver.cpp, seq_driver.cpp) share: random CSR
// patterns and their transposed index, device-like arrays between sentinels (a write outside its
// array is seen), the check against a float64 reference, the hash of every output (equal across
// the emulator's seeds: fixed summation orders) and the caller's stream. Header-only, in an
// unnamed namespace: each driver has its own copy of the counters.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "emu_runtime.h"

namespace {

constexpr double kSentinel = 777.0;

struct Csr { int64_t rows, cols; std::vector<int64_t> ptr; std::vector<int32_t> col; };

// Row i: len[i] random columns, plus columns 0..forced-1 in every row (long columns).
Csr make(int64_t rows, int64_t cols, const std::vector<int64_t>& len, std::mt19937& g, int64_t forced = 0) {
  Csr m{rows, cols, {0}, {}};
  std::vector<int32_t> all(cols);
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t L = std::min(len[i] + forced, cols);
    for (int64_t j = 0; j < cols; ++j) all[j] = static_cast<int32_t>(j);
    std::shuffle(all.begin() + forced, all.end(), g);
    std::sort(all.begin(), all.begin() + L);
    m.col.insert(m.col.end(), all.begin(), all.begin() + L);
    m.ptr.push_back(static_cast<int64_t>(m.col.size()));
  }
  return m;
}

// The transposed index with its permutation into the CSR positions (like transpose_index).
void transpose(const Csr& m, std::vector<int64_t>& cp, std::vector<int32_t>& cr, std::vector<int32_t>& pm) {
  const int64_t nnz = static_cast<int64_t>(m.col.size());
  cp.assign(m.cols + 1, 0); cr.resize(nnz); pm.resize(nnz);
  for (auto c : m.col) cp[c + 1]++;
  for (int64_t j = 0; j < m.cols; ++j) cp[j + 1] += cp[j];
  std::vector<int64_t> next(cp.begin(), cp.end() - 1);
  for (int64_t i = 0; i < m.rows; ++i)
    for (int64_t k = m.ptr[i]; k < m.ptr[i + 1]; ++k) { const int64_t d = next[m.col[k]]++; cr[d] = (int32_t)i; pm[d] = (int32_t)k; }
}

// A device-like array: n values at offset `off` (1: not 16-byte aligned) inside sentinels.
template <class T> struct Buf {
  std::vector<T> v; int off; int64_t n;
  Buf(int64_t n_, int off_) : v(n_ + 8, T(kSentinel)), off(off_), n(n_) {}
  T* p() { return v.data() + off; }
  const T& operator[](int64_t i) const { return v[off + i]; }
  void randomize(std::mt19937& g, double scale = 1.0) {
    std::normal_distribution<double> nd(0.0, scale);
    for (int64_t i = 0; i < n; ++i) v[off + i] = T(nd(g));
  }
  bool intact() const {
    for (int64_t i = 0; i < (int64_t)v.size(); ++i)
      if ((i < off || i >= off + n) && v[i] != T(kSentinel)) return false;
    return true;
  }
};

int failures = 0;
const cudaStream_t kStream = reinterpret_cast<cudaStream_t>(uintptr_t{0x5e1f});  // not the default stream
uint64_t out_hash = 1469598103934665603ull;  // FNV-1a over every output's bytes
template <class T> void hash_outputs(const Buf<T>& b) {
  const auto* p = reinterpret_cast<const unsigned char*>(b.v.data());
  for (size_t i = 0; i < b.v.size() * sizeof(T); ++i) out_hash = (out_hash ^ p[i]) * 1099511628211ull;
}

// |out - ref| <= rel * (1 + scale) element by element (scale: sum of |terms| behind ref).
template <class T>
bool check(const char* what, const Buf<T>& out, const std::vector<double>& ref, const std::vector<double>& scale,
           double rel) {
  if (!out.intact()) { printf("  FAIL %s: wrote outside its array\n", what); ++failures; return false; }
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = std::fabs((double)out[i] - ref[i]);
    if (!(d <= rel * (1.0 + scale[i]))) {
      printf("  FAIL %s at %zu: %.17g vs %.17g\n", what, i, (double)out[i], ref[i]);
      ++failures;
      return false;
    }
  }
  return true;
}

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// A driver's command line, `driver [small|full|sanitize] [seed]`, with the emulator configured for
// its seed and the test stream; false (after a message) for an unknown suite.
struct Args {
  std::string suite = "small";
  uint64_t seed = 1;
  bool full() const { return suite == "full"; }
  bool sanitize() const { return suite == "sanitize"; }
};
bool parse_args(int argc, char** argv, Args& a) {
  setvbuf(stdout, nullptr, _IONBF, 0);
  if (argc > 1) a.suite = argv[1];
  if (argc > 2) a.seed = std::strtoull(argv[2], nullptr, 10);
  if (a.suite != "small" && a.suite != "full" && a.suite != "sanitize") {
    printf("unknown suite %s\n", a.suite.c_str());
    return false;
  }
  emu::configure(a.seed, kStream);
  return true;
}

// The run's last three lines, which tests/cuda_emu/emu_testing.py reads; the exit status.
int finish(const Args& a) {
  const emu::Stats st = emu::stats();
  printf("emu seed=%llu launches=%ld blocks=%ld threads=%ld block_switches=%ld max_live_blocks=%d order=%016llx "
         "outputs=%016llx\n", (unsigned long long)a.seed, st.launches, st.blocks, st.threads, st.block_switches,
         st.max_live_blocks, (unsigned long long)st.order_hash, (unsigned long long)out_hash);
  printf("emu kernels=%s\n", emu::kernels_launched());
  printf("%s (%d failures)\n", failures ? "FAILED" : "ALL OK", failures);
  return failures != 0;
}

}  // namespace
