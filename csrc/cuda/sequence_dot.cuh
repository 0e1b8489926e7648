// The row products of the persistent recurrent kernels (rnn_sequence_cuda.cu): a unit's row of W_hh
// (or of its transposed index) against the state, its first entries read from the block's stage in
// shared memory and the rest through L2, summed in a fixed order, with a lane per batch column
// (staged_dot) or a row's entries split across the warp's lanes (split_dot). Apart from the kernels
// so that each file stays readable; nothing else includes it.
#pragma once
#include "common.cuh"

namespace sparse_engine {
namespace cuda {
namespace seq {

using namespace detail;

// A block's rows of W_hh in shared memory: positions [0, entries) hold the first entries of its
// segments laid end to end (segment q from position off[q]); the index as int32 (i) or, compact,
// as uint16 (i16): one of the two is set.
template <typename T>
struct Stage {
  T* v;
  int32_t* i;
  uint16_t* i16;
  int64_t entries;
};

// The stage in a launch's dynamic shared memory: `entries` values, then as many indices.
template <typename T>
__device__ __forceinline__ Stage<T> stage_at(char* smem, int64_t entries, bool compact) {
  T* v = reinterpret_cast<T*>(smem);
  return {v, compact ? nullptr : reinterpret_cast<int32_t*>(v + entries),
          compact ? reinterpret_cast<uint16_t*>(v + entries) : nullptr, entries};
}

// Copies entry src of (values, idx) to stage position e.
template <typename T>
__device__ __forceinline__ void stage_entry(const Stage<T>& st, int64_t e, const T* values, const int32_t* idx,
                                            int64_t src) {
  st.v[e] = values[src];
  if (st.i16 != nullptr)
    st.i16[e] = static_cast<uint16_t>(idx[src]);
  else
    st.i[e] = idx[src];
}

// acc + sum over e in [0, n) of v[e] * x[i[e] * B + b] (x read through L2), added in order; the
// gathers go A at a time, so that they are in flight together rather than one behind the other (a
// step's critical path is its longest row's chain of L2 reads: a warp's rows, one after the other),
// the adds still in order; with kTailTogether the last (n mod A) entries' gathers go together too,
// predicated, else one behind the other. A and the tail: each kernel's, by the registers it has left.
template <int A, bool kTailTogether, typename T, typename I>
__device__ __forceinline__ T dot_run(T acc, const T* v, const I* i, int64_t n, const T* x, int64_t B, int64_t b) {
  int64_t e = 0;
  for (; e + A <= n; e += A) {
    T g[A];
#pragma unroll
    for (int u = 0; u < A; ++u) g[u] = __ldcg(x + static_cast<int64_t>(i[e + u]) * B + b);
#pragma unroll
    for (int u = 0; u < A; ++u) acc += v[e + u] * g[u];
  }
  if (!kTailTogether) {
    for (; e < n; ++e) acc += v[e] * __ldcg(x + static_cast<int64_t>(i[e]) * B + b);
  } else if (e < n) {
    T g[A];
#pragma unroll
    for (int u = 0; u < A; ++u) g[u] = e + u < n ? __ldcg(x + static_cast<int64_t>(i[e + u]) * B + b) : T(0);
#pragma unroll
    for (int u = 0; u < A; ++u)
      if (e + u < n) acc += v[e + u] * g[u];
  }
  return acc;
}
// The look-ahead of each kernel's rows (ptxas, CUDA 13, sm_80/sm_90): the forward has the registers
// for 8 and the tail together (float32 LSTM 118-122 of its 128, no spill; 96 at 4 with the tail one
// by one), the backward spills with either (its float32 GRU: 12 bytes on sm_90), so it keeps 4, the
// tail one by one. Why: the H200's Nsight Compute profile (2026-11-28, 4,096 units @ 1%) found both
// kernels bound by the gathers in flight (L2 at 22-36% of its throughput, issue slots 43-50%), not
// by bandwidth; a warp's step is its rows' rounds of L2 latency, one after the other.
struct ForwardRows {
  static constexpr int kAhead = 8;
  static constexpr bool kTailTogether = true;
};
struct BackwardRows {
  static constexpr int kAhead = 4;
  static constexpr bool kTailTogether = false;
};
// split_run's gathers at once, all of a lane's S columns included
constexpr int kSplitAhead = 4;

// How many of a row's n entries, from stage position pos, the stage holds (the rest: global memory).
template <typename T>
__device__ __forceinline__ int64_t staged_entries(const Stage<T>& st, int64_t pos, int64_t n) {
  const int64_t room = st.entries > pos ? st.entries - pos : 0;
  return n < room ? n : room;
}

// sum over k in [k0, k1) of values[k] * x[idx[k] * B + b], in index order: the entries from stage
// position pos onward that the stage holds, then the rest from global memory (dot_run, with the
// look-ahead of R: ForwardRows or BackwardRows).
template <typename R, typename T>
__device__ __forceinline__ T staged_dot(const Stage<T>& st, int64_t pos, const T* values, const int32_t* idx,
                                        int64_t k0, int64_t k1, const T* x, int64_t B, int64_t b) {
  const int64_t staged = staged_entries(st, pos, k1 - k0);
  constexpr int A = R::kAhead;
  constexpr bool tail = R::kTailTogether;
  const T acc = st.i16 != nullptr ? dot_run<A, tail>(T(0), st.v + pos, st.i16 + pos, staged, x, B, b)
                                   : dot_run<A, tail>(T(0), st.v + pos, st.i + pos, staged, x, B, b);
  return dot_run<A, tail>(acc, values + k0 + staged, idx + k0 + staged, k1 - k0 - staged, x, B, b);
}

// Split rows (Args::split = S > 1): a warp's 32 lanes take S of a row's entries at a time, each
// entry's gathers for 32 / S of the tile's batch columns: lane = s * C + c (C = 32 / S) takes the
// entries at row positions e = s (mod S) and the columns c + C*k, k < S, in S accumulators; the S
// slots' sums then meet by reduce_scatter (common.cuh), after which lane b holds column b's. Why: with
// a lane per batch column (S = 1) a unit's row is one chain of dependent L2 reads per lane, its
// length the row's (500 entries at 1,500 units and 33%; 12 of 32 lanes idle at B = 20); split, the
// chain is a row's S-th and every lane gathers. The sum's order is fixed (each slot's entries in
// index order, then the reduce's tree), so the bits are the same run to run, and with the stage
// (positions counted from the row's start, whichever part holds them), but not those of S = 1.
// The entries of this lane's slot among row positions [lo, hi) (v, i: position 0 of the row).
template <int S, typename T, typename I>
__device__ __forceinline__ void split_run(T (&acc)[S], const T* v, const I* i, int64_t lo, int64_t hi, int s,
                                          const T* x, int64_t ld, int64_t b0, int64_t B) {
  constexpr int C = kWarp / S;
  constexpr int U = kSplitAhead / S > 1 ? kSplitAhead / S : 1;  // entries a lane gathers at once
  int64_t e = lo + ((s - lo % S) % S + S) % S;             // the first position >= lo in slot s
#pragma unroll 1
  for (; e + (U - 1) * S < hi; e += U * S) {
    T w[U], g[U][S];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      w[u] = v[e + u * S];
      const T* xr = x + static_cast<int64_t>(i[e + u * S]) * ld + b0;
#pragma unroll
      for (int k = 0; k < S; ++k) g[u][k] = b0 + C * k < B ? __ldcg(xr + C * k) : T(0);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int k = 0; k < S; ++k) acc[k] += w[u] * g[u][k];
    }
  }
#pragma unroll 1
  for (; e < hi; e += S) {
    const T w = v[e];
    const T* xr = x + static_cast<int64_t>(i[e]) * ld + b0;
#pragma unroll
    for (int k = 0; k < S; ++k) acc[k] += w * (b0 + C * k < B ? __ldcg(xr + C * k) : T(0));
  }
}

// staged_dot's sum, split S ways, for the tile of batch columns from `tile` (every lane of the warp
// calls it; lane l gets column tile + l's sum, of no use where that is >= B).
template <int S, typename T>
__device__ __forceinline__ T split_dot(const Stage<T>& st, int64_t pos, const T* values, const int32_t* idx,
                                       int64_t k0, int64_t k1, const T* x, int64_t ld, int64_t B, int64_t tile,
                                       int lane) {
  constexpr int C = kWarp / S;
  const int s = lane / C;
  const int64_t b0 = tile + lane % C;
  const int64_t n = k1 - k0, staged = staged_entries(st, pos, n);
  T acc[S];
#pragma unroll
  for (int k = 0; k < S; ++k) acc[k] = T(0);
  if (st.i16 != nullptr)
    split_run<S>(acc, st.v + pos, st.i16 + pos, 0, staged, s, x, ld, b0, B);
  else
    split_run<S>(acc, st.v + pos, st.i + pos, 0, staged, s, x, ld, b0, B);
  split_run<S>(acc, values + k0, idx + k0, staged, n, s, x, ld, b0, B);
  reduce_scatter<S / 2, C>(acc, s);
  return acc[0];
}

// A unit's row against the state, for batch column tile + lane: S = 1 (one lane per column) or split
// S ways (split_dot); R: the rows' look-ahead with a lane per column (ForwardRows, BackwardRows).
// Every lane of the warp calls it.
template <typename R, typename T>
__device__ __forceinline__ T row_dot(int split, const Stage<T>& st, int64_t pos, const T* values, const int32_t* idx,
                                     int64_t k0, int64_t k1, const T* x, int64_t ld, int64_t B, int64_t tile,
                                     int lane) {
  switch (split) {
    case 2: return split_dot<2>(st, pos, values, idx, k0, k1, x, ld, B, tile, lane);
    case 4: return split_dot<4>(st, pos, values, idx, k0, k1, x, ld, B, tile, lane);
    case 8: return split_dot<8>(st, pos, values, idx, k0, k1, x, ld, B, tile, lane);
    default: return tile + lane < B ? staged_dot<R>(st, pos, values, idx, k0, k1, x, ld, tile + lane) : T(0);
  }
}

}  // namespace seq
}  // namespace cuda
}  // namespace sparse_engine
