// When the CPU gathers (gather.h's gather_rows: spmm, spmm_t, the fused recurrent steps; sddmm_cpu.cpp)
// take their source in cache-sized panels, and the bounds that decide it (sparse_engine._C._set_tiling
// lowers them for tests). Apart from gather.h because sddmm and the fused steps ask gather_panels too,
// and because these bounds are the machine-dependent part of the gathers.
#pragma once
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>
#include <vector>
#include "storage.h"

namespace sparse_engine {

// Cache tiling of the gathers from a large source (the activations of a layer of 10^5-10^6 units):
// every nonzero gathers a random source row, and once the source outgrows the last-level cache
// each gather is a trip to memory. From kTileFromBytes of source the rows are taken in panels of
// about kPanelBytes (whole source rows), every output row consuming one panel before the next
// is loaded, so its gathers hit the cache; each output row's sum is carried across panels in the
// output itself (written by the first panel, added to by the others), which costs one pass over
// the output per panel. Measured on a 2-core AMD EPYC VM (32 MB L3), random 96-byte rows from a
// table of 80 MB 10.3 GB/s, 16 MB 25 GB/s, 8 MB 28 GB/s (benchmarks/floor.py). The entries of a
// row in a panel are those up to its first entry at a later panel's source row: any order of
// columns is summed exactly once (the last panel takes every entry left), sorted rows are what
// makes the panels' entries contiguous. The sum of a row is then taken panel by panel, so a tiled
// product rounds differently from an untiled one (within float tolerance; every tiled call on
// any thread count gives the same bits). float/double with B > 1 only (a 2-byte output would be
// rounded between panels). Both bounds can be lowered for tests: sparse_engine._C._set_tiling.
//
// Where it pays (benchmarks/results/floor_cpu.md, 2 threads, the same run): SET-MLP's 333,333-unit
// layer at B = 40 (51 MiB of 160-byte rows, 4 panels) spmm and spmm_t 1.47x, sddmm 1.22x faster;
// rows of B = 20 floats (96 bytes padded) lost: 1,048,576 square at 32 per row 0.94x (spmm) and
// 0.73x (sddmm), the LSTM step at hidden 10^6 0.58x. So rows of fewer than kTileFromRowBytes stay
// untiled: per (row, panel) they gather too little to pay the row's pass over its output.
//
// The bound is the larger of 32 MiB and the last-level cache a core shares: the kernel's level-3
// cache of cpu 0 in sysfs, else glibc's sysconf(_SC_LEVEL3_CACHE_SIZE). A source that fits it is
// gathered from the cache untiled. On AMD EPYC VMs sysconf reports the L3 of every core complex
// together (384 MiB where a core reaches 32: sysfs says so), which left a 128 MiB source untiled and
// spmm_t at 65,536 / 1%, B = 512 (Zipf rows) at 0.90x MKL; tiled 1.8x faster (docs/cpu_kernels.md,
// "Tiling by the pattern"). Measured on an Intel Xeon VM reporting 480 MiB of L3 (floor_cpu_xeon.md,
// a cache every core there shares), SET-MLP's 51 MiB layer ran 0.6-0.75x as fast tiled as untiled
// (random 160-byte rows from 64 MiB at 24 GB/s there, against 10 GB/s from 80 MiB on the AMD VM's
// 32 MiB L3, where tiling won 1.22-1.47x).
inline int64_t sysfs_level3_bytes() {
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream level(dir + "level"), size(dir + "size");
    int l = 0;
    std::string text;
    if (!(level >> l) || l != 3 || !(size >> text) || text.empty()) continue;
    char* end = nullptr;
    const long long value = std::strtoll(text.c_str(), &end, 10);
    const int64_t unit = *end == 'K' ? 1 << 10 : *end == 'M' ? 1 << 20 : *end == 'G' ? 1 << 30 : 1;
    if (value > 0) return static_cast<int64_t>(value) * unit;
  }
  return 0;
}
inline int64_t last_level_cache_bytes() {
  if (const int64_t l3 = sysfs_level3_bytes(); l3 > 0) return l3;
#if defined(_SC_LEVEL3_CACHE_SIZE)  // glibc's; elsewhere 0 (the 32 MiB bound)
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return l3 > 0 ? static_cast<int64_t>(l3) : 0;
#else
  return 0;
#endif
}
inline std::atomic<int64_t> kTileFromBytes{std::max<int64_t>(int64_t(32) << 20, last_level_cache_bytes())};
inline std::atomic<int64_t> kPanelBytes{int64_t(16) << 20};
inline std::atomic<int64_t> kTileFromRowBytes{128};

// How many panels the gathers from a source of src_rows rows (stride elements each) take: 1 (untiled)
// below kTileFromBytes or kTileFromRowBytes, for a 2-byte type and for B = 1.
template <typename S>
inline int64_t gather_panels(int64_t src_rows, int64_t stride, int64_t B) {
  const int64_t row = stride * static_cast<int64_t>(sizeof(S)), bytes = src_rows * row;
  if (kIsHalf<S> || B <= 1 || src_rows < 2 || bytes < kTileFromBytes.load() || row < kTileFromRowBytes.load())
    return 1;
  const int64_t panel = std::max<int64_t>(1, kPanelBytes.load());
  return std::min(src_rows, (bytes + panel - 1) / panel);
}

// A sample of a pattern's gathers, in the order a thread takes them (rows in order, each row's
// entries in order), against panels of panel_rows source rows whose gathered rows fill the cache
// after `window` gathers: `reuse`, the share of gathers whose source row was among those of the
// window gathers before them (hits untiled); `misses_per_pass`, the other gathers (what the panels
// would turn into hits) over the (row, panel) pairs holding an entry (each such pair a pass over
// the output row, or for sddmm a read of its G row, that the panels add). Sampled, not counted: up
// to 8 stretches of 2 x window entries spread evenly over the rows, the first window of each only
// filling the history, at most nnz / 64 entries (a random read of a src_rows table each: 0.3 ms for
// the 16 MiB window, 0.9 for the 64 MiB one at N = 262,144 / 0.05%, B = 512, against 0.4-1.5 s for the
// product); stretch 0 starts at row 0, so a sampled pattern counts at least a window. Fewer than 128 windows
// of entries are not sampled (`sampled` false). Deterministic: the same pattern gives the same sample
// on any thread count.
struct GatherSample {
  bool sampled = false;
  double reuse = 0, misses_per_pass = 0;
};

inline GatherSample sample_gathers(const int64_t* ptr, const int32_t* idx, int64_t n, int64_t src_rows,
                                   int64_t window, int64_t panel_rows) {
  const int64_t nnz = n > 0 ? ptr[n] : 0;
  if (window < 1 || window > (int64_t(1) << 24) || nnz < 128 * window || src_rows < 1) return {};
  panel_rows = std::max<int64_t>(1, panel_rows);
  const int64_t span = 2 * window, stretches = std::min<int64_t>(nnz / (64 * span), 8);
  std::vector<int32_t> last(src_rows, std::numeric_limits<int32_t>::min() / 2);  // a gather's number, per source row
  int64_t hits = 0, counted = 0, passes = 0;
  int32_t seq = 0;  // the number of the next gather; each stretch starts more than a window after the last
  for (int64_t s = 0; s < stretches; ++s) {
    int64_t row = n * s / stretches;
    const int64_t k0 = ptr[row], k1 = std::min(nnz, k0 + span);
    int64_t pass_row = -1, pass_panel = -1;  // the (row, panel) pair of the last counted gather
    seq += static_cast<int32_t>(window) + 1;
    for (int64_t k = k0; k < k1; ++k, ++seq) {
      while (ptr[row + 1] <= k) ++row;
      const int32_t col = idx[k];
      int32_t& seen = last[col];
      if (k - k0 >= window) {
        hits += static_cast<int64_t>(seq) - seen <= window;
        ++counted;
        const int64_t panel = col / panel_rows;
        if (row != pass_row || panel != pass_panel) ++passes;
        pass_row = row;
        pass_panel = panel;
      }
      seen = seq;
    }
  }
  return {true, static_cast<double>(hits) / static_cast<double>(counted),
          static_cast<double>(counted - hits) / static_cast<double>(std::max<int64_t>(passes, 1))};
}

// The panels by the pattern (sample_gathers), measured on an AMD EPYC VM at N = 65,536 (1% and 0.1%)
// and 262,144 (0.05%), B = 128-512, every row law (docs/cpu_kernels.md, "Tiling by the pattern"): a
// panel pays where the gathers it turns from misses into hits outweigh the passes it adds. Spread
// gathers (uniform rows; spmm and sddmm on Zipf rows, whose columns are uniform) gain from 16 MiB
// panels down to about 4 misses a pass; gathers that repeat (banded and block rows, 97-99% reuse,
// about 1 miss a pass) lose, and so do gathers that mostly go to a few hot rows (spmm_t on Zipf rows,
// 52-76% reuse going to the hub rows of G) unless each pass saves many misses: at 262,144 / 0.05%,
// 3-15 misses a pass, tiled 0.65-0.8x as fast as untiled; at 65,536 / 1%, 28-37, tiled 1.2-2.1x
// faster. So: 16 MiB panels where a pass saves kMissesPerPass misses (kHubMissesPerPass where the
// reuse reaches kHubReuse), else panels 4 times as large if theirs do (fewer, longer passes: spmm_t
// on Zipf 0.8 rows at 262,144, B = 512, 1,165 ms against 1,429 untiled and 1,665 in 16 MiB panels),
// else none. Untiled gathers that repeat (reuse from kLocalReuse) skip the software prefetch
// (gather.h): their rows are in the cache, and its address arithmetic cost banded rows 15% (`reuse`
// returns the sampled share, 0 where nothing was sampled). _set_tiling's 4th argument turns the
// pattern's part off (the size alone decides).
inline std::atomic<bool> kTileByReuse{true};
inline constexpr double kMissesPerPass = 3.0, kHubReuse = 0.5, kHubMissesPerPass = 16.0, kLocalReuse = 0.9;
inline constexpr int64_t kWidePanelScale = 4;

template <typename S>
inline int64_t gather_panels(int64_t src_rows, int64_t stride, int64_t B, const int64_t* ptr, const int32_t* idx,
                             int64_t n, double* reuse = nullptr) {
  if (reuse != nullptr) *reuse = 0;
  const int64_t panels = gather_panels<S>(src_rows, stride, B);
  if (panels == 1 || !kTileByReuse.load()) return panels;
  const int64_t row = stride * static_cast<int64_t>(sizeof(S)), panel = std::max<int64_t>(1, kPanelBytes.load());
  for (const int64_t scale : {int64_t(1), kWidePanelScale}) {
    const int64_t p = scale == 1 ? panels : std::min(src_rows, (src_rows * row + scale * panel - 1) / (scale * panel));
    if (p <= 1) break;
    const GatherSample sample = sample_gathers(ptr, idx, n, src_rows, scale * panel / row, (src_rows + p - 1) / p);
    if (!sample.sampled) return scale == 1 ? panels : 1;  // too few entries to sample: the size decides
    if (scale == 1 && reuse != nullptr) *reuse = sample.reuse;
    if (sample.misses_per_pass >= (sample.reuse >= kHubReuse ? kHubMissesPerPass : kMissesPerPass)) return p;
  }
  return 1;
}

}  // namespace sparse_engine
