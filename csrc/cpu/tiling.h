// When the CPU gathers (gather.h's gather_rows: spmm, spmm_t, the fused recurrent steps; sddmm_cpu.cpp)
// take their source in cache-sized panels, and the bounds that decide it (sparse_engine._C._set_tiling
// lowers them for tests). Apart from gather.h because sddmm and the fused steps ask gather_panels too,
// and because these bounds are the machine-dependent part of the gathers.
#pragma once
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cstdint>
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
// The bound is the larger of 32 MiB and the last-level cache the OS reports
// (sysconf(_SC_LEVEL3_CACHE_SIZE)): a source that fits it is gathered from the cache untiled. Measured on
// an Intel Xeon VM reporting 480 MiB of L3 (floor_cpu_xeon.md), SET-MLP's 51 MiB layer ran 0.6-0.75x
// as fast tiled as untiled (random 160-byte rows from 64 MiB at 24 GB/s there, against 10 GB/s
// from 80 MiB on the AMD VM's 32 MiB L3, where tiling won 1.22-1.47x).
inline int64_t last_level_cache_bytes() {
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

}  // namespace sparse_engine
