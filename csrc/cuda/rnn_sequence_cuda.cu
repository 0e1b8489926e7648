// Persistent recurrent kernels: a layer-direction's whole sequence, forward or backward, in one
// cooperative launch (the GPU kernels of the rnn_sequence ops; contract: launchers.h, and the
// composite kernels of sparse_engine/kernels/rnn_sequence_torch.py, which are the per-step ops in a
// loop). Why: at a few thousand units a step is a few microseconds of work, and the per-step path
// pays several kernel launches and their gaps for each of the T steps (Diamos et al. 2016,
// Persistent RNNs; Zhu et al. 2018, Sparse Persistent RNNs).
//
// Forward (seq_forward_kernel): every block of the grid is resident for the whole launch and owns
// a contiguous range of hidden units with all their gate rows; a warp takes one unit at a time, a
// lane one batch column (tiles of 32). Per step it gathers the unit's G rows of W_hh against the
// state h written by the step before (read with __ldcg: other blocks wrote it in this launch, so
// not through the non-coherent read-only cache), adds the step's input part (one product over all
// T*B columns made before the launch), applies the gate math and writes h' into Y[t] (the
// state the next step reads), c' and the saved activations; then a grid-wide barrier (SE_GRID_SYNC,
// cooperative groups) before the next step.
// Backward (seq_backward_kernel), per step from the last: phase A, each thread its units' gate
// gradients dG from the saved activations and the running dh (and dc), written into the T*B-column
// dG that the weight gradients read afterwards (one sddmm over all steps); a grid barrier; phase B,
// each thread its units' dh_prev = W_hh^T dG (their columns of W_hh: the transposed index and the
// values in its order)
// plus the direct term (GRU). A thread keeps the same units and columns in both phases and in
// every step, so the running dh and dc need no barrier of their own: one grid barrier a step.
// Staging: before its first step each block copies its rows of W_hh (forward: its units' G gate
// rows; backward: its units' columns, the transposed index) into dynamic shared memory, values then
// the index (uint16 where every index fits 16 bits, else int32), as many entries as the launch
// gave it (stage_entries: what is left of the SM's shared memory by the blocks the registers allow,
// unless set_rnn_sequence_stage_bytes lowers it); an entry past that is read from global memory
// (L2) each step. The staged prefix and the rest are summed in index order, so staging changes no
// bit (the emulator checks staged, partly staged, unstaged and int32-staged runs for equal outputs).
// Split rows (set_rnn_sequence_split, off by default): a row's entries across a warp's lanes, S at
// a time, the slots' sums then reduced (split_dot).
// Every sum has a fixed order (each output by one thread, in index order; split rows: each slot in
// index order, then a fixed tree): bitwise reproducible.
#include <atomic>

#include "common.cuh"
#include "launchers.h"
#include "sequence_dot.cuh"

namespace sparse_engine {
namespace cuda {
namespace {

using namespace detail;
using namespace seq;

constexpr int kSeqWarps = 8;  // warps per block: each takes one hidden unit at a time
constexpr int kSeqThreads = kSeqWarps * kWarp;
// at least 2 blocks per SM (16 of its 64 warps): a register budget of 128 a thread, which ptxas
// otherwise undercuts with spills around the grid barrier (CUDA 13, sm_80/sm_90; the ptxas gate of
// tests/kernels/test_cuda_build.py)
constexpr int kSeqMinBlocks = 2;
template <CellMode M> constexpr int kGates = cell_gates(M);
// A staged index entry takes 2 bytes where every index fits 16 bits (forward: H <= 65,536
// columns; backward: G*H rows), else 4: a third more entries on chip in float32.
constexpr int64_t kCompactIndexRange = 65536;
// The launch's dynamic shared memory starts with this many bytes of the block's own (the forward's
// stage offset of each gate: int64s kept there rather than in registers, which the split rows need),
// then the stage.
constexpr int64_t kStageHeader = 64;
std::atomic<int64_t> g_stage_bytes{-1};        // set_rnn_sequence_stage_bytes: -1 no cap, else bytes a block
std::atomic<bool> g_compact_index{true};       // set_rnn_sequence_compact_index
std::atomic<int> g_split{1};                   // set_rnn_sequence_split: 1, 2, 4, 8, or 0 (split_for's rule)

template <typename T>
struct SeqArgs {
  const int64_t* __restrict__ ptr;  // W_hh (G*H rows)
  const int32_t* __restrict__ idx;
  const T* __restrict__ values;
  const T* __restrict__ gx;   // (G*H) x (T*B): every step's input part, biases in; column t*B + b
  const T* h0;
  const T* c0;                 // LSTM
  const T* __restrict__ bhh;  // GRU's b_hh (3H) or nullptr
  T* y;                        // T x H x B: the state after each step, in time order
  T* cs;                       // T x H x B: LSTM's c after each step
  T* acts;                     // T x 4H x B: LSTM [i; f; g; o], GRU [r; z; n; W_hn h + b_hn]
  int64_t H, B, steps;  // hidden units, batch, time steps
  bool reverse;
  int64_t stage_entries;  // W_hh entries a block stages in shared memory (set by launch())
  bool stage_compact;     // their index as uint16 (set by launch())
  int split;              // row_dot's S: 1, 2, 4 or 8 (set by launch())
};

template <typename T, CellMode M>
__global__ void __launch_bounds__(kSeqThreads, kSeqMinBlocks) seq_forward_kernel(const SeqArgs<T> a) {
  constexpr int NG = kGates<M>;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t per = (a.H + gridDim.x - 1) / gridDim.x;  // units per block
  const int64_t u0 = blockIdx.x * per, u1 = u0 + per < a.H ? u0 + per : a.H;
  const int64_t HB = a.H * a.B, TB = a.steps * a.B;
  // this block's G gate rows of W_hh in shared memory (the launch's: stage_entries values, then as
  // many int32 indices), gate q's segment from position off[q]
  extern __shared__ __align__(16) char seq_smem[];
  const Stage<T> st = stage_at<T>(seq_smem + kStageHeader, a.stage_entries, a.stage_compact);
  int64_t base[NG], off[NG + 1];
  off[0] = 0;
#pragma unroll
  for (int q = 0; q < NG; ++q) {
    base[q] = u0 < u1 ? a.ptr[q * a.H + u0] : 0;
    off[q + 1] = off[q] + (u0 < u1 ? a.ptr[q * a.H + u1] - base[q] : 0);
  }
  // one loop over the stage's positions (a loop per gate made CUDA 13's cicc run out of memory)
  const int64_t n = off[NG] < a.stage_entries ? off[NG] : a.stage_entries;
  for (int64_t e = threadIdx.x; e < n; e += blockDim.x) {
    int q = 0;
#pragma unroll
    for (int r = 1; r < NG; ++r) q += e >= off[r];
    stage_entry(st, e, a.values, a.idx, base[q] + (e - off[q]));
  }
  // entry k of gate q's rows is at stage position k + shift[q]: in shared memory, not registers
  int64_t* shift = reinterpret_cast<int64_t*>(seq_smem);
  static_assert(NG * sizeof(int64_t) <= kStageHeader, "the header holds a shift per gate");
  if (threadIdx.x < NG) shift[threadIdx.x] = off[threadIdx.x] - base[threadIdx.x];
  __syncthreads();  // every thread's staged entries (and the shifts) before any thread's first step reads them
  for (int64_t s = 0; s < a.steps; ++s) {
    const int64_t t = a.reverse ? a.steps - 1 - s : s, tp = a.reverse ? t + 1 : t - 1;  // tp: the step before
    const T* h = s == 0 ? a.h0 : a.y + tp * HB;
    const T* c = nullptr;
    if constexpr (M == CellMode::LSTM) c = s == 0 ? a.c0 : a.cs + tp * HB;
    for (int64_t j = u0 + warp; j < u1; j += kSeqWarps) {
      for (int64_t tile = 0; tile < a.B; tile += kWarp) {  // every lane: split rows shuffle
        const int64_t b = tile + lane;
        const int64_t o = j * a.B + b, col = t * a.B + b;
        // the step's input part, read from memory once: loaded before the rows' gathers so that its
        // latency passes under theirs rather than after them
        T x[NG];
#pragma unroll
        for (int q = 0; q < NG; ++q) x[q] = b < a.B ? a.gx[(q * a.H + j) * TB + col] : T(0);
        T p[NG];
#pragma unroll
        for (int q = 0; q < NG; ++q) {
          const int64_t k0 = a.ptr[q * a.H + j];
          p[q] = row_dot<ForwardRows>(a.split, st, k0 + shift[q], a.values, a.idx, k0, a.ptr[q * a.H + j + 1], h, a.B,
                         a.B, tile, lane);
        }
        if (b >= a.B) continue;
        T* hn = a.y + t * HB + o;
        if constexpr (M == CellMode::LSTM) {
          const T i = sigm(p[0] + x[0]), f = sigm(p[1] + x[1]);
          const T g = th(p[2] + x[2]), og = sigm(p[3] + x[3]);
          const T cn = f * c[o] + i * g;  // c[o]: this thread's own write of the step before
          a.cs[t * HB + o] = cn;
          *hn = og * th(cn);
          T* s_acts = a.acts + t * 4 * HB + o;
          s_acts[0] = i; s_acts[HB] = f; s_acts[2 * HB] = g; s_acts[3 * HB] = og;
        } else if constexpr (M == CellMode::GRU) {
          if (a.bhh != nullptr) {
#pragma unroll
            for (int q = 0; q < 3; ++q) p[q] += a.bhh[q * a.H + j];
          }
          const T r = sigm(p[0] + x[0]), z = sigm(p[1] + x[1]);
          const T n = th(x[2] + r * p[2]);
          *hn = n + z * (__ldcg(h + o) - n);
          T* s_acts = a.acts + t * 4 * HB + o;
          s_acts[0] = r; s_acts[HB] = z; s_acts[2 * HB] = n; s_acts[3 * HB] = p[2];
        } else if constexpr (M == CellMode::RNN_TANH) {
          *hn = th(p[0] + x[0]);
        } else {  // RNN_RELU
          const T v = p[0] + x[0];
          *hn = v > T(0) ? v : T(0);
        }
      }
    }
    if (s + 1 < a.steps) SE_GRID_SYNC();  // every unit's h' of step t before any reads it
  }
}

template <typename T>
struct SeqBackArgs {
  const int64_t* __restrict__ cptr;  // W_hh's transposed index (csc_ptr, csc_row)
  const int32_t* __restrict__ crow;
  const T* __restrict__ values_t;     // W_hh's values in that index's order (values[csc_perm])
  const T* __restrict__ y;     // the forward's outputs: states, c's, saved activations
  const T* __restrict__ h0;
  const T* __restrict__ cs;
  const T* __restrict__ c0;
  const T* __restrict__ acts;
  const T* __restrict__ dy;    // T x H x B, or nullptr (the output sequence took no gradient)
  T* dG;                       // (G*H) x (T*B): the hidden-side gate gradients, column t*B + b
  T* dgx;                      // GRU: (3H) x (T*B), the input-side ones
  T* dh;                       // H x B: dh_T in, the running gradient, dh_0 out
  T* dc;                       // LSTM: dc_T in, dc_0 out
  int64_t H, B, steps;  // hidden units, batch, time steps
  bool reverse;
  int64_t stage_entries;  // W_hh^T entries a block stages in shared memory (set by launch())
  bool stage_compact;     // their index as uint16 (set by launch())
  int split;              // row_dot's S (set by launch())
};

template <typename T, CellMode M>
__global__ void __launch_bounds__(kSeqThreads, kSeqMinBlocks) seq_backward_kernel(const SeqBackArgs<T> a) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t per = (a.H + gridDim.x - 1) / gridDim.x;  // units per block
  const int64_t u0 = blockIdx.x * per, u1 = u0 + per < a.H ? u0 + per : a.H;
  const int64_t HB = a.H * a.B, TB = a.steps * a.B;
  // this block's columns of W_hh (its units' rows of the transposed index) in shared memory
  extern __shared__ __align__(16) char seq_smem[];
  const Stage<T> st = stage_at<T>(seq_smem + kStageHeader, a.stage_entries, a.stage_compact);
  const int64_t base = u0 < u1 ? a.cptr[u0] : 0;
  const int64_t len = u0 < u1 ? a.cptr[u1] - base : 0, n = len < a.stage_entries ? len : a.stage_entries;
  for (int64_t e = threadIdx.x; e < n; e += blockDim.x) stage_entry(st, e, a.values_t, a.crow, base + e);
  __syncthreads();  // every thread's staged entries before any thread's first step reads them
  for (int64_t s = a.steps - 1; s >= 0; --s) {
    const int64_t t = a.reverse ? a.steps - 1 - s : s, tp = a.reverse ? t + 1 : t - 1;
    // phase A: this thread's units' gate gradients of step t (and the direct part of dh_prev)
    for (int64_t j = u0 + warp; j < u1; j += kSeqWarps) {
      for (int64_t b = lane; b < a.B; b += kWarp) {
        const int64_t o = j * a.B + b, col = t * a.B + b;
        const T d = a.dh[o] + (a.dy != nullptr ? a.dy[t * HB + o] : T(0));
        T* g = a.dG + j * TB + col;  // gate q's row: g[q * H * TB]
        if constexpr (M == CellMode::LSTM) {
          const T* s_acts = a.acts + t * 4 * HB + o;
          const T i = s_acts[0], f = s_acts[HB], gg = s_acts[2 * HB], og = s_acts[3 * HB];
          const T c_prev = s == 0 ? a.c0[o] : a.cs[tp * HB + o];
          const T tc = th(a.cs[t * HB + o]);
          const T dcn = a.dc[o] + d * og * (T(1) - tc * tc);
          g[0] = dcn * gg * i * (T(1) - i);
          g[a.H * TB] = dcn * c_prev * f * (T(1) - f);
          g[2 * a.H * TB] = dcn * i * (T(1) - gg * gg);
          g[3 * a.H * TB] = d * tc * og * (T(1) - og);
          a.dc[o] = dcn * f;
          a.dh[o] = T(0);
        } else if constexpr (M == CellMode::GRU) {
          const T* s_acts = a.acts + t * 4 * HB + o;
          const T r = s_acts[0], z = s_acts[HB], n = s_acts[2 * HB], ghn = s_acts[3 * HB];
          const T h_prev = s == 0 ? a.h0[o] : a.y[tp * HB + o];
          const T dpn = d * (T(1) - z) * (T(1) - n * n);
          const T dpr = dpn * ghn * r * (T(1) - r), dpz = d * (h_prev - n) * z * (T(1) - z);
          g[0] = dpr;
          g[a.H * TB] = dpz;
          g[2 * a.H * TB] = dpn * r;
          T* gx = a.dgx + j * TB + col;
          gx[0] = dpr;
          gx[a.H * TB] = dpz;
          gx[2 * a.H * TB] = dpn;
          a.dh[o] = d * z;
        } else {
          const T hn = a.y[t * HB + o];
          g[0] = M == CellMode::RNN_TANH ? d * (T(1) - hn * hn) : (hn > T(0) ? d : T(0));
          a.dh[o] = T(0);
        }
      }
    }
    SE_GRID_SYNC();  // every gate gradient of step t before any unit's W_hh^T dG reads it
    // phase B: this thread's units' dh_prev, from their columns of W_hh
    for (int64_t j = u0 + warp; j < u1; j += kSeqWarps) {
      for (int64_t tile = 0; tile < a.B; tile += kWarp) {  // every lane: split rows shuffle
        const int64_t k0 = a.cptr[j];
        // dG's row r, column t*B + b: (dG + t*B)[r * TB + b]
        const T d = row_dot<BackwardRows>(a.split, st, k0 - base, a.values_t, a.crow, k0, a.cptr[j + 1], a.dG + t * a.B, TB, a.B,
                            tile, lane);
        if (tile + lane < a.B) a.dh[j * a.B + tile + lane] += d;
      }
    }
  }
}

// The grid: every block resident at once (what the occupancy query allows on every SM without
// shared memory: the registers decide), at most one unit per warp; and the entries each block stages:
// the SM's shared memory split among those blocks (1 KiB of each block's reserved), at most the
// block opt-in limit, the whole matrix (nnz) and set_rnn_sequence_stage_bytes's cap. The occupancy
// is asked again with that shared memory, so the grid always fits.
template <typename T, typename K>
cudaError_t grid_for(K kernel, int64_t H, int64_t nnz, int64_t index_range, int64_t& blocks, int64_t& stage_entries,
                     bool& compact, size_t& shmem) {
  int per_sm = 0, dev = 0, sm_bytes = 0, optin = 0;
  if (const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kSeqThreads, 0);
      e != cudaSuccess)
    return e;
  if (per_sm <= 0) return cudaErrorCooperativeLaunchTooLarge;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sm_bytes, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
    cudaGetLastError();
    sm_bytes = optin = 0;  // no staging
  }
  compact = g_compact_index.load() && index_range <= kCompactIndexRange;
  const int64_t entry = static_cast<int64_t>(sizeof(T)) + (compact ? 2 : 4);
  int64_t bytes = std::min<int64_t>({static_cast<int64_t>(sm_bytes) / per_sm - 1024 - kStageHeader,
                                      static_cast<int64_t>(optin) - kStageHeader, nnz * entry});
  if (const int64_t cap = g_stage_bytes.load(); cap >= 0) bytes = std::min(bytes, cap);
  stage_entries = std::max<int64_t>(bytes, 0) / entry;
  shmem = static_cast<size_t>(kStageHeader + stage_entries * entry);
  if (const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(shmem));
      e != cudaSuccess)
    return e;
  if (const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kSeqThreads, shmem);
      e != cudaSuccess)
    return e;
  blocks = std::min<int64_t>(static_cast<int64_t>(per_sm) * num_sms(), cdiv(H, kSeqWarps));
  return blocks > 0 ? cudaSuccess : cudaErrorCooperativeLaunchTooLarge;
}

// row_dot's S for a matrix of `rows` rows and B batch columns: set_rnn_sequence_split's, or where that
// is 0 the rule: the largest of 1, 2, 4, 8 with S * B <= 32 (a lane gathers at most one real column
// per entry, so the split only puts idle lanes to work) that leaves each slot 16 entries of a row of
// mean length. Why S * B <= 32: on an H200 (2026-11-28, T = 35, B = 20) S chosen by row length alone
// ran 0.52-1.00x the lane per column on every cell (each lane then gathered as many entries as before,
// plus the reduction); the rule's cells at small B are not yet timed.
int split_for(int64_t nnz, int64_t rows, int64_t B) {
  if (const int forced = g_split.load(); forced > 0) return forced;
  int split = 1;
  while (split < 8 && 2 * split * B <= kWarp && nnz >= rows * 16 * 2 * split) split *= 2;
  return split;
}

bool sequence_mode(CellMode mode) {
  return mode == CellMode::LSTM || mode == CellMode::GRU || mode == CellMode::RNN_TANH || mode == CellMode::RNN_RELU;
}

// One cooperative launch of the kernel that kernel_of(mode tag) names, on the grid of grid_for.
template <typename T, typename Args, typename KernelOf>
cudaError_t launch(CellMode mode, Args a, int64_t nnz, bool backward, cudaStream_t stream, KernelOf kernel_of) {
  if (!sequence_mode(mode)) return cudaErrorInvalidValue;
  if (a.H <= 0 || a.B <= 0 || a.steps <= 0) return cudaSuccess;
  return dispatch_mode(mode, [&](auto m) -> cudaError_t {
    if constexpr (decltype(m)::value == CellMode::CTRNN) {
      return cudaErrorInvalidValue;
    } else {
      auto seq_kernel = kernel_of(m);
      // the staged index's values: W_hh's columns (forward), or its rows (backward's transposed index)
      const int64_t index_range = backward ? cell_gates(mode) * a.H : a.H;
      a.split = split_for(nnz, backward ? a.H : cell_gates(mode) * a.H, a.B);  // rows: W_hh^T's, W_hh's
      int64_t blocks = 0;
      size_t shmem = 0;
      if (const cudaError_t e = grid_for<T>(seq_kernel, a.H, nnz, index_range, blocks, a.stage_entries,
                                            a.stage_compact, shmem);
          e != cudaSuccess)
        return e;
      return SE_LAUNCH_COOPERATIVE(seq_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kSeqThreads), shmem, stream,
                                   a);
    }
  });
}

template <typename T>
cudaError_t forward(CellMode mode, const SeqArgs<T>& a, int64_t nnz, cudaStream_t stream) {
  return launch<T>(mode, a, nnz, false, stream, [](auto m) { return seq_forward_kernel<T, decltype(m)::value>; });
}

template <typename T>
cudaError_t backward(CellMode mode, const SeqBackArgs<T>& a, int64_t nnz, cudaStream_t stream) {
  return launch<T>(mode, a, nnz, true, stream, [](auto m) { return seq_backward_kernel<T, decltype(m)::value>; });
}

}  // namespace

bool rnn_sequence_mode(CellMode mode) { return sequence_mode(mode); }

int64_t set_rnn_sequence_stage_bytes(int64_t bytes) { return g_stage_bytes.exchange(bytes < 0 ? -1 : bytes); }

bool set_rnn_sequence_compact_index(bool allow) { return g_compact_index.exchange(allow); }

int set_rnn_sequence_split(int split) {
  return split == 0 || split == 1 || split == 2 || split == 4 || split == 8 ? g_split.exchange(split) : -1;
}

cudaError_t launch_rnn_sequence_forward(CellMode mode, const int64_t* row_ptr, const int32_t* col_idx,
                                        const float* values, int64_t nnz, const float* gx, const float* h0,
                                        const float* c0, const float* b_hh, float* y, float* cs, float* acts, int64_t H,
                                        int64_t B, int64_t T, bool reverse, cudaStream_t stream) {
  return forward<float>(mode, {row_ptr, col_idx, values, gx, h0, c0, b_hh, y, cs, acts, H, B, T, reverse, 0, false, 1},
                        nnz, stream);
}

cudaError_t launch_rnn_sequence_forward(CellMode mode, const int64_t* row_ptr, const int32_t* col_idx,
                                        const double* values, int64_t nnz, const double* gx, const double* h0,
                                        const double* c0, const double* b_hh, double* y, double* cs, double* acts,
                                        int64_t H, int64_t B, int64_t T, bool reverse, cudaStream_t stream) {
  return forward<double>(mode, {row_ptr, col_idx, values, gx, h0, c0, b_hh, y, cs, acts, H, B, T, reverse, 0, false, 1},
                         nnz, stream);
}

cudaError_t launch_rnn_sequence_backward(CellMode mode, const int64_t* csc_ptr, const int32_t* csc_row,
                                         const float* values_t, int64_t nnz, const float* y,
                                         const float* h0, const float* cs, const float* c0, const float* acts,
                                         const float* dy, float* dG, float* dgx, float* dh, float* dc, int64_t H,
                                         int64_t B, int64_t T, bool reverse, cudaStream_t stream) {
  return backward<float>(mode, {csc_ptr, csc_row, values_t, y, h0, cs, c0, acts, dy, dG, dgx, dh, dc, H, B,
                                T, reverse, 0, false, 1}, nnz, stream);
}

cudaError_t launch_rnn_sequence_backward(CellMode mode, const int64_t* csc_ptr, const int32_t* csc_row,
                                         const double* values_t, int64_t nnz, const double* y,
                                         const double* h0, const double* cs, const double* c0, const double* acts,
                                         const double* dy, double* dG, double* dgx, double* dh, double* dc, int64_t H,
                                         int64_t B, int64_t T, bool reverse, cudaStream_t stream) {
  return backward<double>(mode, {csc_ptr, csc_row, values_t, y, h0, cs, c0, acts, dy, dG, dgx, dh, dc, H, B,
                                 T, reverse, 0, false, 1}, nnz, stream);
}

}  // namespace cuda
}  // namespace sparse_engine
