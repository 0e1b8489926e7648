// Runs the CUDA kernels of csrc/cuda/spmm_cuda.cu and sddmm_cuda.cu on the CPU through emu.h and
// checks them against float64 references, including that nothing is written out of bounds.
// float16/bfloat16 storage: the reference is exact float64 math on the stored (rounded)
// inputs, and the bound is what float32 accumulation plus one final rounding allows:
// |out - ref| <= u_T |ref| + 2 (n + 1) u_32 sum |terms| (+ half of float16's smallest subnormal),
// u = unit roundoff, n = terms in the sum. A float16/bfloat16 accumulator would miss it.
// Built and run by tests/cuda_emu/emu_testing.py (for tests/ops/test_spmm.py, test_sddmm.py, test_transpose.py,
// test_index_check.py, and tests/kernels/test_cuda_emulator.py) and tests/kernels/test_cuda_sanitizers.py. Arguments: the suite
// ("small"; "full" adds bigger cases; "sanitize" is a subset that still reaches every kernel, for the
// sanitizer stages of tests/cuda_emu/planted_bugs.py) and the emulator's seed (block and thread orders). Every launcher gets the
// same non-default stream (the emulator checks every launch is on it), workspaces hold garbage as a
// fresh cudaMalloc would, and the last line has a hash of every output: the same for every seed.
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <random>
#include <vector>
#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>
#include "launchers.h"
#include "emu_runtime.h"
using namespace sparse_engine::cuda;

struct Csr { int64_t rows, cols; std::vector<int64_t> ptr; std::vector<int32_t> col; };

Csr make(int64_t rows, int64_t cols, std::vector<int64_t> len, std::mt19937& g) {
  Csr m{rows, cols, {0}, {}};
  for (int64_t i = 0; i < rows; ++i) {
    int64_t L = std::min(len[i], cols);
    std::vector<int32_t> all(cols); for (int64_t j = 0; j < cols; ++j) all[j] = j;
    std::shuffle(all.begin(), all.end(), g);
    std::sort(all.begin(), all.begin() + L);
    m.col.insert(m.col.end(), all.begin(), all.begin() + L);
    m.ptr.push_back(m.col.size());
  }
  return m;
}
// CSC with perm, like the CPU transpose.
void transpose(const Csr& m, std::vector<int64_t>& cp, std::vector<int32_t>& cr, std::vector<int32_t>& pm) {
  int64_t nnz = m.col.size(); cp.assign(m.cols + 1, 0); cr.resize(nnz); pm.resize(nnz);
  for (auto c : m.col) cp[c + 1]++;
  for (int64_t j = 0; j < m.cols; ++j) cp[j + 1] += cp[j];
  std::vector<int64_t> next(cp.begin(), cp.end() - 1);
  for (int64_t i = 0; i < m.rows; ++i) for (int64_t k = m.ptr[i]; k < m.ptr[i + 1]; ++k) { int64_t d = next[m.col[k]]++; cr[d] = i; pm[d] = (int32_t)k; }
}

template <class T> constexpr bool kHalf = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;
template <class T> double to_d(T x) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(x);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(x);
  else return x;
}
template <class T> T from_d(double x) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn((float)x);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn((float)x);
  else return (T)x;
}
template <class T> bool same_bits(T a, T b) { return std::memcmp(&a, &b, sizeof(T)) == 0; }
template <class T> const char* tname() {
  if constexpr (std::is_same_v<T, __half>) return "f16";
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return "bf16";
  else return sizeof(T) == 4 ? "f32" : "f64";
}

int failures = 0;
const cudaStream_t kStream = reinterpret_cast<cudaStream_t>(uintptr_t{0x5e1f});  // not the default stream
uint64_t out_hash = 1469598103934665603ull;  // FNV-1a over every output's bytes
template <class T> void hash_outputs(const std::vector<T>& v) {
  const auto* p = reinterpret_cast<const unsigned char*>(v.data());
  for (size_t i = 0; i < v.size() * sizeof(T); ++i) out_hash = (out_hash ^ p[i]) * 1099511628211ull;
}
// A device workspace as cudaMalloc leaves it: garbage (the launchers must initialise what they read).
template <class T> std::vector<T> garbage(size_t n) {
  std::vector<T> v(n);
  std::memset(v.data(), 0x5a, n * sizeof(T));
  return v;
}
// |out - ref| <= tol: for float/double rel * bound (bound = sum |terms|), for the 2-byte types
// the storage rounding of the result plus float32 accumulation over n terms.
template <class T>
void check(const char* what, const std::vector<T>& out, const std::vector<double>& ref, const std::vector<double>& bound,
           const std::vector<int64_t>& n, double rel) {
  const double u = std::is_same_v<T, __half> ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8), u32 = std::ldexp(1.0, -24);
  for (size_t i = 0; i < ref.size(); ++i) {
    const double tol = kHalf<T> ? u * std::fabs(ref[i]) + 2.0 * (n[i] + 1) * u32 * bound[i] + std::ldexp(1.0, -25)
                                : rel * bound[i] + 1e-300;
    if (!(std::fabs(to_d(out[i]) - ref[i]) <= tol)) { printf("  FAIL %s at %zu: %g vs %g (tol %g)\n", what, i, to_d(out[i]), ref[i], tol); ++failures; return; }
  }
}

// The gather's long-row multiples of the mean row (set_gather_long_rows; the driver's third argument "L,S",
// default "4,2"): the checks below compute the threshold and segment with them on their own.
int g_long_mult = 4, g_seg_mult = 2;

int64_t longest(const std::vector<int64_t>& ptr) {
  int64_t best = 0;
  for (size_t i = 0; i + 1 < ptr.size(); ++i) best = std::max(best, ptr[i + 1] - ptr[i]);
  return best;
}

// Kernel launches of f() (emu.h counts them).
template <class F> long launches_of(F&& f) {
  const long before = emu::launches;
  f();
  return emu::launches - before;
}

// known_max: the workspaces are sized knowing the longest row and column (as the glue does with a
// checked index, csrc/index_check.h), so a pattern without long rows gets none and the long-row
// kernel is not launched; without it, whenever nnz allows a long row. Either way the long-row kernel
// must run exactly when there is a workspace (the row kernel alone when there is none).
template <class T>
void run(const char* name, const Csr& m, int64_t B, bool misalign, std::mt19937& g, bool known_max = false) {
  const double rel = sizeof(T) == 4 ? 2e-5 : 1e-12;
  std::normal_distribution<double> nd;
  int64_t nnz = m.col.size();
  std::vector<T> vals(nnz); for (auto& v : vals) v = from_d<T>(nd(g));
  int off = misalign ? 1 : 0;
  std::vector<T> Xb(m.cols * B + 4), Gb(m.rows * B + 4);
  for (auto& v : Xb) v = from_d<T>(nd(g)); for (auto& v : Gb) v = from_d<T>(nd(g));
  const T* X = Xb.data() + off; const T* G = Gb.data() + off;
  std::vector<int64_t> cp; std::vector<int32_t> cr; std::vector<int32_t> pm; transpose(m, cp, cr, pm);
  {  // transpose_cuda.cu gives the CPU's index exactly (cub replaced by a stable sort, cub_shim.h)
    std::vector<int64_t> cp2(m.cols + 2, -7); std::vector<int32_t> cr2(nnz + 1, -7), pm2(nnz + 1, -7);
    std::vector<char> ws = garbage<char>(transpose_index_workspace_bytes(m.rows, m.cols, nnz) + 1);
    cudaError_t e = launch_transpose_index(m.ptr.data(), m.col.data(), m.rows, m.cols, nnz, cp2.data(), cr2.data(),
                                           pm2.data(), ws.size() > 1 ? ws.data() : nullptr, ws.size() - 1, kStream);
    bool same = e == cudaSuccess && std::equal(cp.begin(), cp.end(), cp2.begin()) &&
                std::equal(cr.begin(), cr.end(), cr2.begin()) && std::equal(pm.begin(), pm.end(), pm2.begin()) &&
                cp2[m.cols + 1] == -7 && cr2[nnz] == -7 && pm2[nnz] == -7;
    if (!same) { printf("  FAIL transpose_index (%s)\n", name); ++failures; }
  }
  // references
  std::vector<double> Y(m.rows * B, 0), Yb(m.rows * B, 0), Z(m.cols * B, 0), Zb(m.cols * B, 0), S(nnz, 0), Sb(nnz, 0);
  for (int64_t i = 0; i < m.rows; ++i) for (int64_t k = m.ptr[i]; k < m.ptr[i + 1]; ++k) {
    int64_t j = m.col[k];
    const double v = to_d(vals[k]);
    for (int64_t b = 0; b < B; ++b) {
      const double x = to_d(X[j * B + b]), gg = to_d(G[i * B + b]);
      Y[i * B + b] += v * x; Yb[i * B + b] += std::fabs(v * x);
      Z[j * B + b] += v * gg; Zb[j * B + b] += std::fabs(v * gg);
      S[k] += gg * x; Sb[k] += std::fabs(gg * x);
    }
  }
  const T sentinel = from_d<T>(777.0);
  std::vector<T> outY(m.rows * B + 4, sentinel), outZ(m.cols * B + 4, sentinel), outS(nnz + 1, sentinel);
  T* y = outY.data() + off; T* z = outZ.data() + off;
  const int64_t max_row = longest(m.ptr), max_col = longest(cp);
  const int64_t e = sizeof(T);
  const int64_t wl_rows = known_max ? gather_workspace_len(m.rows, nnz, max_row, B, e) : gather_workspace_len(m.rows, nnz, B, e);
  const int64_t wl_cols = known_max ? gather_workspace_len(m.cols, nnz, max_col, B, e) : gather_workspace_len(m.cols, nnz, B, e);
  const int64_t wl_sddmm = known_max ? sddmm_workspace_len(m.rows, nnz, max_row) : sddmm_workspace_len(m.rows, nnz);
  std::vector<int32_t> ws = garbage<int32_t>(std::max<int64_t>(1, wl_rows));
  const long l_spmm = launches_of([&] {
    launch_gather(m.ptr.data(), m.col.data(), nullptr, vals.data(), X, y, m.rows, B, nnz, wl_rows ? ws.data() : nullptr, kStream);
  });
  std::vector<int32_t> ws2 = garbage<int32_t>(std::max<int64_t>(1, wl_cols));
  const long l_spmm_t = launches_of([&] {
    launch_gather(cp.data(), cr.data(), pm.data(), vals.data(), G, z, m.cols, B, nnz, wl_cols ? ws2.data() : nullptr, kStream);
  });
  std::vector<int32_t> ws3 = garbage<int32_t>(std::max<int64_t>(1, wl_sddmm));
  const long l_sddmm = launches_of([&] {
    launch_sddmm(m.ptr.data(), m.col.data(), G, X, outS.data(), m.rows, B, nnz, wl_sddmm ? ws3.data() : nullptr, kStream);
  });
  // launches: none for an empty output, the row kernel, plus the long-row kernel exactly when there is a
  // workspace, plus the segments' sum where rows can be split
  const int64_t split_rows = gather_split_list_offset(m.rows, nnz, B, e), split_cols = gather_split_list_offset(m.cols, nnz, B, e);
  const long want_spmm = (m.rows > 0 && B > 0) ? 1 + (wl_rows > 0) * (1 + (split_rows >= 0)) : 0;
  const long want_spmm_t = (m.cols > 0 && B > 0) ? 1 + (wl_cols > 0) * (1 + (split_cols >= 0)) : 0;
  const long want_sddmm = (m.rows > 0 && nnz > 0 && B > 0) ? 1 + (wl_sddmm > 0) : 0;
  if (l_spmm != want_spmm || l_spmm_t != want_spmm_t || l_sddmm != want_sddmm) {
    printf("  FAIL launches spmm/spmm_t/sddmm %ld/%ld/%ld, expected %ld/%ld/%ld\n", l_spmm, l_spmm_t, l_sddmm, want_spmm,
           want_spmm_t, want_sddmm);
    ++failures;
  }
  // a known longest row: the long-row list exists exactly when some row is longer than the threshold,
  // 1,024 or L x the mean (default 4), whichever is more, the 1,024 divided by the source row's 16-byte slices
  // (at most 8); a segment: S x the mean (default 2) or 1,024, whichever is more, rounded up to 256
  const int64_t slices = std::min<int64_t>(8, std::max<int64_t>(1, B * e / 16));
  const int64_t mean = (nnz + m.rows - 1) / std::max<int64_t>(m.rows, 1);
  const int64_t threshold = std::max<int64_t>(1024 / slices, g_long_mult * mean);
  if (threshold != gather_long_row_threshold(m.rows, nnz, B, e)) {
    printf("  FAIL long-row threshold %ld, expected %ld\n", (long)gather_long_row_threshold(m.rows, nnz, B, e), (long)threshold);
    ++failures;
  }
  const int64_t segment = (std::max<int64_t>(g_seg_mult * mean, 1024) + 255) / 256 * 256;
  if (segment != gather_segment_entries(m.rows, nnz)) {
    printf("  FAIL segment %ld, expected %ld\n", (long)gather_segment_entries(m.rows, nnz), (long)segment);
    ++failures;
  }
  // the row kernels listed exactly the rows (columns) longer than the threshold: those up to a segment
  // in the long-row list, the longer ones in the split list with one slot per segment, the row in its
  // first and -i in the i-th after it
  auto check_lists = [&](const char* what, const std::vector<int64_t>& ptr, int64_t n_out, const std::vector<int32_t>& w,
                         int64_t wl, int64_t split_at) -> long {
    if (wl <= 0) return -1;
    const int64_t t = gather_long_row_threshold(n_out, nnz, B, e), seg = gather_segment_entries(n_out, nnz);
    long want_listed = 0, want_slots = 0, got_starts = 0;
    std::vector<int64_t> split_len(n_out, 0);
    for (int64_t i = 0; i < n_out; ++i) {
      const int64_t len = ptr[i + 1] - ptr[i];
      if (len <= t) continue;
      if (split_at >= 0 && len > seg) { want_slots += (len + seg - 1) / seg; split_len[i] = len; } else { ++want_listed; }
    }
    bool ok = w[0] == want_listed && (split_at < 0 ? want_slots == 0 : w[split_at] == want_slots);
    for (int64_t sl = 0; ok && split_at >= 0 && sl < want_slots; ++sl) {
      const int32_t v = w[split_at + 1 + sl];
      if (v < 0) continue;
      ++got_starts;
      const int64_t k = (split_len[v] + seg - 1) / seg;
      ok = split_len[v] > 0 && sl + k <= want_slots;
      for (int64_t i = 1; ok && i < k; ++i) ok = w[split_at + 1 + sl + i] == -i;
    }
    long want_starts = 0;
    for (int64_t l : split_len) want_starts += l > 0;
    if (!ok || got_starts != want_starts) {
      printf("  FAIL %s lists: %d listed, %d split slots (%ld rows), expected %ld, %ld (%ld rows)\n", what, w[0],
             split_at >= 0 ? w[split_at] : 0, got_starts, want_listed, want_slots, want_starts);
      ++failures;
    }
    return w[0] + got_starts;  // the long rows: listed, or split
  };
  const long n_long_rows = check_lists("spmm", m.ptr, m.rows, ws, wl_rows, split_rows);
  const long n_long_cols = check_lists("spmm_t", cp, m.cols, ws2, wl_cols, split_cols);
  if (known_max && ((wl_rows > 0) != (max_row > threshold))) {
    printf("  FAIL known longest row %ld: workspace %ld\n", (long)max_row, (long)wl_rows);
    ++failures;
  }
  std::vector<T> yv(y, y + m.rows * B), zv(z, z + m.cols * B), sv(outS.begin(), outS.begin() + nnz);
  int before = failures;
  std::vector<int64_t> nY(m.rows * B), nZ(m.cols * B), nS(nnz, B);  // terms per output
  for (int64_t i = 0; i < m.rows * B; ++i) nY[i] = m.ptr[i / B + 1] - m.ptr[i / B];
  for (int64_t j = 0; j < m.cols * B; ++j) nZ[j] = cp[j / B + 1] - cp[j / B];
  check("spmm", yv, Y, Yb, nY, rel); check("spmm_t", zv, Z, Zb, nZ, rel); check("sddmm", sv, S, Sb, nS, rel);
  // nothing written past the ends
  if (!same_bits(outY[m.rows * B + off], sentinel) || (off && !same_bits(outY[0], sentinel))) { printf("  FAIL spmm wrote out of bounds\n"); ++failures; }
  if (!same_bits(outZ[m.cols * B + off], sentinel) || (off && !same_bits(outZ[0], sentinel))) { printf("  FAIL spmm_t wrote out of bounds\n"); ++failures; }
  if (!same_bits(outS[nnz], sentinel)) { printf("  FAIL sddmm wrote out of bounds\n"); ++failures; }
  if constexpr (sizeof(T) >= 4) {
    // launch_sddmm_add on the transposed index (the fused step's weight gradient): its rows are the
    // columns, G and X swap, and it adds into out in the transposed order. The same dot products as
    // sddmm's, bit for bit, each added to what out held (the products' order over the batch is the
    // same; the pattern's rows and columns differ, so long rows and columns take other kernels)
    std::vector<T> outT(nnz + 1, sentinel), init(nnz);
    for (int64_t j = 0; j < nnz; ++j) outT[j] = init[j] = from_d<T>(nd(g));
    const int64_t wl_t = known_max ? sddmm_workspace_len(m.cols, nnz, max_col) : sddmm_workspace_len(m.cols, nnz);
    std::vector<int32_t> ws4 = garbage<int32_t>(std::max<int64_t>(1, wl_t));
    launch_sddmm_add(cp.data(), cr.data(), X, G, outT.data(), m.cols, B, nnz, wl_t ? ws4.data() : nullptr, kStream);
    long wrong = 0;
    for (int64_t j = 0; j < nnz; ++j) {
      const T want = B > 0 ? static_cast<T>(init[j] + outS[pm[j]]) : init[j];
      wrong += !same_bits(outT[j], want);
    }
    if (wrong || !same_bits(outT[nnz], sentinel)) {
      printf("  FAIL sddmm_add: %ld entries differ from init + sddmm's (or it wrote past the end)\n", wrong);
      ++failures;
    }
    hash_outputs(outT);
  }
  hash_outputs(outY); hash_outputs(outZ); hash_outputs(outS);
  printf("%-4s %-10s B=%-3ld mis=%d nnz=%-6ld long rows=%ld long cols=%ld known=%d launches=%ld/%ld/%ld %s\n", tname<T>(),
         name, (long)B, (int)misalign, (long)nnz, n_long_rows, n_long_cols, (int)known_max, l_spmm, l_spmm_t, l_sddmm,
         failures == before ? "ok" : "FAILED");
}

// ------------------------------------------------------------------ launch_index_scan
// The scan must report exactly what a host loop finds: ptr's ends, its first drop, the first
// idx / perm entry out of range, the longest row (-1 where none).
void check_scan(const char* name, const std::vector<int64_t>& ptr, const std::vector<int32_t>& idx,
                const std::vector<int32_t>* perm, int64_t n_src, int64_t planted_drop = -1, int64_t planted_idx = -1,
                int64_t planted_perm = -1) {
  const int64_t n = (int64_t)ptr.size() - 1, nnz = (int64_t)idx.size();
  int64_t ref[6] = {ptr[0], ptr[n], -1, -1, -1, -1};
  for (int64_t i = 0; i < n; ++i) {
    if (ptr[i + 1] < ptr[i] && ref[2] < 0) ref[2] = i;
    ref[5] = std::max(ref[5], ptr[i + 1] - ptr[i]);
  }
  for (int64_t k = 0; k < nnz; ++k) {
    if ((idx[k] < 0 || idx[k] >= n_src) && ref[3] < 0) ref[3] = k;
    if (perm && ((*perm)[k] < 0 || (*perm)[k] >= nnz) && ref[4] < 0) ref[4] = k;
  }
  std::vector<int64_t> out(7, 12345);  // one past the end: must stay
  const cudaError_t e = launch_index_scan(ptr.data(), idx.data(), perm ? perm->data() : nullptr, n, nnz, n_src,
                                          out.data(), kStream);
  bool ok = e == cudaSuccess && std::equal(ref, ref + 6, out.begin()) && out[6] == 12345;
  // the planted problems are the first ones (so the reference loop above is not checked against itself only)
  ok = ok && (planted_drop < 0 || ref[2] == planted_drop) && (planted_idx < 0 || ref[3] == planted_idx) &&
       (planted_perm < 0 || ref[4] == planted_perm);
  printf("scan %-12s n=%-5ld nnz=%-6ld -> %ld %ld %ld %ld %ld %ld %s\n", name, (long)n, (long)nnz, (long)out[0],
         (long)out[1], (long)out[2], (long)out[3], (long)out[4], (long)out[5], ok ? "ok" : "FAILED");
  if (!ok) {
    printf("  FAIL index scan %s: expected %ld %ld %ld %ld %ld %ld\n", name, (long)ref[0], (long)ref[1], (long)ref[2],
           (long)ref[3], (long)ref[4], (long)ref[5]);
    ++failures;
  }
}

void scan_cases(const Csr& pw, std::mt19937& g) {
  std::vector<int64_t> cp; std::vector<int32_t> cr, pm;
  transpose(pw, cp, cr, pm);
  const int64_t nnz = pw.col.size();
  check_scan("valid csr", pw.ptr, pw.col, nullptr, pw.cols);
  check_scan("valid csc", cp, cr, &pm, pw.rows);
  // more entries than the emulated grid's threads (8 blocks x 256), so the grid-stride loops and
  // the cross-warp and cross-block minimum matter: plant two problems, the first one late in the
  // first thread's walk and the second earlier in another thread's
  {
    std::vector<int32_t> col = pw.col;
    col[nnz - 3] = (int32_t)pw.cols;  // too large, last positions
    col[2049 + 17] = -1;               // negative: the first
    check_scan("bad idx", pw.ptr, col, nullptr, pw.cols, -1, 2049 + 17);
    col[2049 + 17] = 3;
    check_scan("bad idx end", pw.ptr, col, nullptr, pw.cols, -1, nnz - 3);
    col[0] = 1 << 30;
    check_scan("bad idx 0", pw.ptr, col, nullptr, pw.cols, -1, 0);
    // two in one thread's walk (positions 18 + 2048 j): its first; two in one warp: the lower lane's
    col = pw.col;
    col[18 + 2 * 2048] = -2;
    col[18 + 2048] = -3;
    check_scan("one thread", pw.ptr, col, nullptr, pw.cols, -1, 18 + 2048);
    col[5] = -1;
    col[3] = (int32_t)pw.cols + 1;
    check_scan("one warp", pw.ptr, col, nullptr, pw.cols, -1, 3);
  }
  {
    std::vector<int32_t> perm = pm;
    perm[nnz - 1] = (int32_t)nnz;
    perm[300] = -5;
    check_scan("bad perm", cp, cr, &perm, pw.rows, -1, -1, 300);
    std::vector<int32_t> row = cr;
    row[7] = (int32_t)pw.rows;
    check_scan("bad csc_row", cp, row, &pm, pw.rows, -1, 7);
  }
  {
    std::vector<int64_t> ptr = pw.ptr;  // 97 entries: a drop at row 61, then also one at row 21
    ptr[61] = ptr[62] + 1;
    check_scan("drop", ptr, pw.col, nullptr, pw.cols, 61);
    ptr[21] = ptr[22] + 1;
    check_scan("two drops", ptr, pw.col, nullptr, pw.cols, 21);
    ptr = pw.ptr;
    ptr.back() += 3;  // wrong end, and a row running past nnz
    check_scan("bad end", ptr, pw.col, nullptr, pw.cols);
    ptr = pw.ptr;
    ptr[0] = -1;
    check_scan("bad start", ptr, pw.col, nullptr, pw.cols);
  }
  {  // many rows (grid-stride over ptr), a drop far out
    std::vector<int64_t> len(5000);
    std::uniform_int_distribution<int> u(0, 3);
    for (auto& l : len) l = u(g);
    Csr big = make(5000, 20, len, g);
    check_scan("many rows", big.ptr, big.col, nullptr, big.cols);
    std::vector<int64_t> ptr = big.ptr;
    ptr[4000] = ptr[4001] + 1;  // row 4000 has -1 entries
    check_scan("late drop", ptr, big.col, nullptr, big.cols, 4000);
  }
  check_scan("empty", {0}, {}, nullptr, 0);
  check_scan("no entries", {0, 0, 0}, {}, nullptr, 5);
  check_scan("no cols", {0, 1}, {0}, nullptr, 0, -1, 0);
}

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IONBF, 0);
  const std::string suite = argc > 1 ? argv[1] : "small";
  const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
  if (argc > 3) {
    int old_long = 0, old_seg = 0;
    if (std::sscanf(argv[3], "%d,%d", &g_long_mult, &g_seg_mult) != 2 ||
        !set_gather_long_rows(g_long_mult, g_seg_mult, &old_long, &old_seg)) {
      printf("bad long-row multiples %s\n", argv[3]);
      return 2;
    }
    printf("gather long rows: threshold %d x the mean, segments %d x\n", g_long_mult, g_seg_mult);
  }
  if (suite != "small" && suite != "full" && suite != "sanitize") { printf("unknown suite %s\n", suite.c_str()); return 2; }
  emu::configure(seed, kStream);
  const bool full = suite == "full", sanitize = suite == "sanitize";
  std::mt19937 g(1);  // the inputs do not depend on the emulator's seed
  // Power-law-like rows: mostly 0-12 entries, plus rows long enough (> 1024) for the
  // block-per-row kernels; more of them than the emulated long-row grid (4 blocks).
  auto power = [&](int64_t rows, int64_t cols, std::vector<int64_t> longs) {
    std::vector<int64_t> len(rows); std::uniform_int_distribution<int> u(0, 12);
    for (auto& l : len) l = u(g);
    for (size_t i = 0; i < longs.size(); ++i) len[(i * 37 + 5) % rows] = longs[i];
    return make(rows, cols, len, g);
  };
  Csr pw = power(96, 1100, {1100, 1090, 1080, 1050, 1030});
  // Rows of up to 5,000 entries: split into up to 5 segments of 1,024 (gather_segment_length), each
  // a block of its own, whose sums the third kernel adds
  Csr longr = power(200, 6000, {5000, 4100, 3000, 2050, 1500});
  // Rows of 200-900 entries among short ones (mean 16): long for the gather from 32-byte source rows
  // up (its threshold 1,024 / the rows' 16-byte slices: 512 at B = 8 floats, 128 from B = 32), not
  // at B = 1 or 4 floats (1,024)
  Csr medium = power(200, 1000, {900, 600, 300, 200});
  Csr pwT{pw.cols, pw.rows, {0}, {}};  // long columns: the block-per-row path of spmm_t
  { std::vector<int64_t> cp; std::vector<int32_t> cr; std::vector<int32_t> pm; transpose(pw, cp, cr, pm); pwT.ptr = cp; pwT.col = cr; }
  Csr uni = make(37, 50, std::vector<int64_t>(37, 7), g);
  std::vector<int64_t> el(30, 0); el[3] = 5; el[17] = 33; el[29] = 1; Csr empt = make(30, 40, el, g);
  Csr zero = make(5, 6, std::vector<int64_t>(5, 0), g);
  Csr onec = make(20, 1, std::vector<int64_t>(20, 1), g);
  // A pattern with more entries than the threshold but no long row (2400 entries, 8 per row, 60
  // per column): sized without the longest row the long-row kernels would be launched for
  // nothing; sized with it (known=1) only the row kernels run.
  Csr flat = make(300, 40, std::vector<int64_t>(300, 8), g);
  // Rows of 100-300 entries, none long (the threshold is 4x the mean): several full 32-entry chunks
  // a row in the row kernel, which a single vector column (B = 1, or B = 4 floats, 8 halves) takes
  // kOneColumnChunks at a time; with "power"'s long rows the long-row kernel does the same.
  std::vector<int64_t> ml(40); { std::uniform_int_distribution<int> u(100, 300); for (auto& l : ml) l = u(g); }
  Csr mid = make(40, 400, ml, g);
  if (sanitize) {
    // The planted-bug script's sanitizer subset: every kernel (row and long-row kernels of spmm, spmm_t and sddmm,
    // the four of transpose_index, the index scan), scalar and vector loads, one to three tiles
    // (B = 300: more than the lowered grid.y), every dtype, misaligned inputs, empty rows and zero nnz.
    for (int64_t B : {1, 4, 33, 300}) run<float>("uniform", uni, B, false, g);
    for (int64_t B : {2, 64}) run<double>("uniform", uni, B, false, g);
    run<float>("empty", empt, 4, false, g);
    run<float>("zero", zero, 4, false, g);
    run<float>("onecol", onec, 1, false, g);
    run<float>("uniform", uni, 4, true, g);
    run<double>("uniform", uni, 2, true, g);
    run<__half>("uniform", uni, 8, false, g);
    run<__half>("uniform", uni, 520, false, g);
    run<__nv_bfloat16>("uniform", uni, 3, false, g);
    run<__nv_bfloat16>("uniform", uni, 64, true, g);
    run<float>("power", pw, 32, false, g);
    run<float>("powerT", pwT, 32, false, g);
    run<double>("power", pw, 2, false, g);
    run<__half>("powerT", pwT, 5, false, g);
    for (bool known : {false, true}) run<float>("flat", flat, 4, false, g, known);
    run<float>("power", pw, 32, false, g, true);
    for (int64_t B : {1, 4}) run<float>("mid", mid, B, false, g);
    run<float>("power", pw, 1, false, g);
    for (int64_t B : {1, 32, 33}) run<float>("long", longr, B, false, g);
    run<double>("long", longr, 2, false, g);
    run<__half>("long", longr, 8, false, g);
    run<float>("long", longr, 32, false, g, true);
    for (int64_t B : {4, 32}) run<float>("medium", medium, B, false, g);
    scan_cases(pw, g);
  } else {
    // batch widths reaching every lane layout: scalar / 16-byte loads, 1..32 lanes, 1-3 tiles
    for (int64_t B : {1, 2, 3, 4, 20, 32, 33, 64, 256, 300}) run<float>("uniform", uni, B, false, g);
    for (int64_t B : {1, 2, 3, 20, 64, 300}) run<double>("uniform", uni, B, false, g);
    for (int64_t B : {1, 4, 32, 33}) run<float>("empty", empt, B, false, g);
    for (int64_t B : {2, 20}) run<double>("empty", empt, B, false, g);
    for (int64_t B : {1, 4, 33}) { run<float>("zero", zero, B, false, g); run<float>("onecol", onec, B, false, g); }
    for (int64_t B : {4, 32}) run<float>("uniform", uni, B, true, g);   // misaligned: scalar path
    for (int64_t B : {2, 20}) run<double>("uniform", uni, B, true, g);
    // 5 long rows / columns > the emulated 4-block long-row grid: its grid-stride loop runs
    run<float>("power", pw, 32, false, g);
    run<float>("powerT", pwT, 32, false, g);
    run<double>("power", pw, 2, false, g);
    // float16 / bfloat16 storage (VEC = 8 halves per 16-byte load): B = 8..256 reach 1..32
    // lanes with vector loads, 520 three tiles; odd B and a misaligned start take the scalar
    // path; the power-law patterns the long-row kernels.
    for (int64_t B : {1, 3, 8, 16, 33, 64, 256, 520}) run<__half>("uniform", uni, B, false, g);
    for (int64_t B : {1, 5, 24, 32, 44, 128}) run<__nv_bfloat16>("uniform", uni, B, false, g);
    for (int64_t B : {8, 33}) { run<__half>("empty", empt, B, false, g); run<__nv_bfloat16>("zero", zero, B, false, g); }
    for (int64_t B : {1, 16}) { run<__nv_bfloat16>("onecol", onec, B, false, g); run<__half>("zero", zero, B, false, g); }
    for (int64_t B : {8, 64}) { run<__half>("uniform", uni, B, true, g); run<__nv_bfloat16>("uniform", uni, B, true, g); }
    run<__half>("power", pw, 32, false, g);
    run<__half>("powerT", pwT, 5, false, g);
    run<float>("long", longr, 33, false, g);
    run<__nv_bfloat16>("power", pw, 3, false, g);
    for (bool known : {false, true}) {
      run<float>("flat", flat, 4, false, g, known);
      run<__half>("flat", flat, 16, false, g, known);
    }
    // one vector column over rows of several full chunks, short and long: 1, 4 floats, 8 halves; and
    // wide rows of them, long only under a lower multiple of the mean (the third argument "1,S")
    for (int64_t B : {1, 4, 32, 300}) run<float>("mid", mid, B, false, g);
    run<double>("mid", mid, 1, false, g);
    run<__half>("mid", mid, 8, false, g);
    run<__nv_bfloat16>("mid", mid, 1, false, g);
    for (int64_t B : {1, 4}) run<float>("power", pw, B, false, g);
    run<double>("power", pw, 1, false, g);
    // long rows and columns known to be there: the long-row kernels run as before
    run<float>("power", pw, 32, false, g, true);
    run<float>("powerT", pwT, 32, false, g, true);
    // wide batches: rows of 200-900 entries go to the long-row kernel (B >= 8 floats, 16 halves)
    for (int64_t B : {1, 4, 8, 32, 300}) run<float>("medium", medium, B, false, g);
    for (bool known : {false, true}) run<float>("medium", medium, 64, false, g, known);
    run<__half>("medium", medium, 64, false, g);
    run<double>("medium", medium, 20, false, g);
    scan_cases(pw, g);
  }
  if (full) {
    run<__nv_bfloat16>("powerT", pwT, 16, false, g);
    for (int64_t B : {8, 64, 300}) { run<__half>("power", pw, B, false, g); run<__nv_bfloat16>("powerT", pwT, B, false, g); }
    for (int64_t B : {1, 5, 64, 300}) { run<float>("power", pw, B, false, g); run<float>("powerT", pwT, B, false, g); }
    for (int64_t B : {256, 300}) { run<float>("empty", empt, B, false, g); run<float>("uniform", uni, B, true, g); }
    for (int64_t B : {20, 300}) { run<double>("power", pw, B, false, g); run<double>("powerT", pwT, B, false, g); }
  }
  const emu::Stats st = emu::stats();
  printf("emu seed=%llu launches=%ld blocks=%ld threads=%ld block_switches=%ld max_live_blocks=%d order=%016llx "
         "outputs=%016llx\n", (unsigned long long)seed, st.launches, st.blocks, st.threads, st.block_switches,
         st.max_live_blocks, (unsigned long long)st.order_hash, (unsigned long long)out_hash);
  printf("emu kernels=%s\n", emu::kernels_launched());
  printf("%s (%d failures)\n", failures ? "FAILED" : "ALL OK", failures);
  return failures != 0;
}
