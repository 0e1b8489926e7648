// Fused recurrent step on the GPU: W_hh h and the gate nonlinearities of one time step in one
// kernel, and the matching backward. Same contract as the CPU ops (csrc/cpu/rnn_step_cpu.cpp)
// and launchers.h's rnn_step section; gates per mode from csrc/constants.h.
//
// Forward (step_forward_kernel): one block per (group of U hidden units, batch tile), one warp
// per gate row: LSTM 2 units x 4 gates, GRU 2 x 3, RNN/CT-RNN 8 x 1 (6 or 8 warps). A warp
// computes its row's dot products for the tile with spmm_cuda.cu's row loop (common.cuh's
// gather_range: 32 index entries per coalesced load, broadcast by shuffles, 16-byte loads of h,
// the slot layout for narrow batches) and leaves them in shared memory; after one barrier the whole
// block applies the gate math to the tile's U x (tile width) elements, reading gx and writing
// h', c' and the saved activations with consecutive threads on consecutive batch entries. No
// pre-activation ever goes to global memory.
// Long rows: the warp loops over the row (correct; a row 100x the mean keeps its block busy
// longer). What would make them faster: the long-row list of spmm_cuda.cu, with the block's warps
// splitting one long row's chunks and a second pass for the gate math of those units.
//
// Backward: gates_backward_kernel (elementwise, grid-stride) writes dG and the other
// elementwise outputs, then launch_gather (spmm_cuda.cu) computes W_hh^T dG over the transposed
// index, with its long-column handling, and for GRU/CT-RNN add_direct_kernel adds the direct
// path (dh z, dh (1 - dt/tau)). launch_rnn_step_backward_wgrad adds W_hh's gradient: where
// both products run one batch tile of the same lane layout and list no long row, W_hh^T dG and
// the gradient share one pass over the transposed index (wgrad_rows_kernel: each dG row gathered
// once for both, their sums in their own orders), else launch_sddmm_add after the backward.
// Every sum has a fixed order: the results are bitwise reproducible.
#include "common.cuh"
#include "launchers.h"

namespace sparse_engine {
namespace cuda {
namespace {

using namespace detail;

// Gate rows per hidden unit (constants.h), and hidden units per forward block (6 or 8 warps, one
// per gate row). (Variable templates, not constexpr functions: device code may read them without
// flags.)
template <CellMode M> constexpr int kGates = cell_gates(M);
template <CellMode M> constexpr int kUnits = kGates<M> == 1 ? 8 : 2;
constexpr int kEltThreads = 256;  // threads per block of the elementwise kernels

template <typename T>
struct StepArgs {
  const int64_t* __restrict__ ptr;
  const int32_t* __restrict__ idx;
  const T* __restrict__ values;
  const T* __restrict__ gx;
  const T* __restrict__ h;
  const T* __restrict__ c;
  const T* __restrict__ bhh;  // GRU's b_hh or nullptr
  T* __restrict__ h2;
  T* __restrict__ c2;
  T* __restrict__ acts;
  int64_t H, B;
  int64_t C;      // vector columns: B / VEC
  int64_t tiles;  // ceil(C / CW)
  T decay, sdt;   // CT-RNN: 1 - dt/tau, dt
};

// Gate math of hidden unit j, batch entry b (o = j * B + b); p: the hidden-side sums W_q h.
template <typename T, CellMode M>
__device__ __forceinline__ void gate_math(const StepArgs<T>& a, T (&p)[kGates<M>], int64_t j, int64_t o) {
  const int64_t HB = a.H * a.B;
  if constexpr (M == CellMode::LSTM) {
    const T i = sigm(p[0] + a.gx[o]), f = sigm(p[1] + a.gx[HB + o]);
    const T g = th(p[2] + a.gx[2 * HB + o]), og = sigm(p[3] + a.gx[3 * HB + o]);
    const T cn = f * a.c[o] + i * g;
    a.c2[o] = cn;
    a.h2[o] = og * th(cn);
    a.acts[o] = i; a.acts[HB + o] = f; a.acts[2 * HB + o] = g; a.acts[3 * HB + o] = og;
  } else if constexpr (M == CellMode::GRU) {
    if (a.bhh != nullptr) {
#pragma unroll
      for (int q = 0; q < 3; ++q) p[q] += a.bhh[q * a.H + j];
    }
    const T ghn = p[2];
    const T r = sigm(p[0] + a.gx[o]), z = sigm(p[1] + a.gx[HB + o]);
    const T n = th(a.gx[2 * HB + o] + r * ghn);
    a.h2[o] = n + z * (a.h[o] - n);
    a.acts[o] = r; a.acts[HB + o] = z; a.acts[2 * HB + o] = n; a.acts[3 * HB + o] = ghn;
  } else if constexpr (M == CellMode::RNN_TANH) {
    a.h2[o] = th(p[0] + a.gx[o]);
  } else if constexpr (M == CellMode::RNN_RELU) {
    const T v = p[0] + a.gx[o];
    a.h2[o] = v > T(0) ? v : T(0);
  } else {  // CT-RNN Euler step
    const T t = th(p[0] + a.gx[o]);
    a.acts[o] = t;
    a.h2[o] = a.decay * a.h[o] + a.sdt * t;
  }
}

template <typename T, CellMode M, int VEC, int CW>
__global__ void __launch_bounds__(kGates<M> * kUnits<M> * kWarp, kMinBlocks<kGates<M> * kUnits<M> * kWarp>)
step_forward_kernel(const StepArgs<T> a) {
  constexpr int NG = kGates<M>, U = kUnits<M>, TW = CW * VEC;
  // Loaded bytes in flight per lane in the gather (common.cuh): GRU's 6-warp blocks need 3 per SM for the
  // occupancy floor, which caps them at 96 registers, and ptxas spilled there with more than 64 bytes
  constexpr int kInflightBytes = NG == 3 ? 64 : 256;
  __shared__ T pre[NG][U][TW];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int q = warp / U, u = warp % U;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * U;
  int64_t start = 0, end = 0;  // a unit past H: an empty row, and the warp still meets the barriers
  if (j0 + u < a.H) {
    const int64_t row = q * a.H + j0 + u;
    start = a.ptr[row];
    end = a.ptr[row + 1];
  }
  const int c = lane % CW, s = lane / CW;
  for (int64_t t = blockIdx.y; t < a.tiles; t += gridDim.y) {  // uniform per block
    const int64_t cv = t * CW + c;
    T acc[VEC];
    gather_range<T, VEC, CW, kInflightBytes>(a.idx, a.values, nullptr, a.h, a.B, start, end, kWarp, cv, cv < a.C, lane, acc);
    if (s == 0) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) pre[q][u][c * VEC + e] = acc[e];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < U * TW; i += blockDim.x) {
      const int uu = i / TW, l = i % TW;
      const int64_t j = j0 + uu, b = t * TW + l;
      if (j < a.H && b < a.B) {
        T p[NG];
#pragma unroll
        for (int g = 0; g < NG; ++g) p[g] = pre[g][uu][l];
        gate_math<T, M>(a, p, j, j * a.B + b);
      }
    }
    __syncthreads();  // pre is reused by the next tile
  }
}

template <typename T, CellMode M, int VEC, int CW>
cudaError_t forward_launch(StepArgs<T> a, cudaStream_t stream) {
  constexpr int U = kUnits<M>, NG = kGates<M>;
  a.tiles = cdiv(a.C, CW);
  const dim3 grid(static_cast<unsigned>(cdiv(a.H, U)), static_cast<unsigned>(std::min<int64_t>(a.tiles, kMaxGridY)));
  step_forward_kernel<T, M, VEC, CW><<<grid, NG * U * kWarp, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename T, CellMode M>
cudaError_t forward_mode(StepArgs<T> a, cudaStream_t stream) {
  constexpr int kWide = kWideVec<T>;
  const bool wide = a.B % kWide == 0 && aligned16(a.h);  // only h is read with vector loads
  a.C = wide ? a.B / kWide : a.B;
  return dispatch_vec_lanes<T>(wide, a.C, [&](auto vec, auto lanes) {
    return forward_launch<T, M, decltype(vec)::value, decltype(lanes)::value>(a, stream);
  });
}

template <typename T>
cudaError_t forward(CellMode mode, const int64_t* row_ptr, const int32_t* col_idx, const T* values, const T* gx,
                    const T* h, const T* c, const T* b_hh, T* h_new, T* c_new, T* acts, int64_t H, int64_t B,
                    double dt, double tau, cudaStream_t stream) {
  if (H <= 0 || B <= 0) return cudaSuccess;
  const StepArgs<T> a{row_ptr, col_idx, values, gx, h, c, b_hh, h_new, c_new, acts, H, B, 0, 0,
                      static_cast<T>(1 - dt / tau), static_cast<T>(dt)};
  return dispatch_mode(mode, [&](auto m) { return forward_mode<T, decltype(m)::value>(a, stream); });
}

// ------------------------------------------------------------------------------ backward
template <typename T>
struct BackArgs {
  const T* __restrict__ acts;
  const T* __restrict__ c_prev;
  const T* __restrict__ c;
  const T* __restrict__ h;  // GRU: h_prev; RNN: h_new
  const T* __restrict__ dh;
  const T* __restrict__ dc;
  T* __restrict__ dG;
  T* __restrict__ dgx;
  T* __restrict__ dc_prev;
  T* __restrict__ dh_prev;
  int64_t H, B;
  T decay, sdt;
};

// dG (hidden-side pre-activation gradient) and GRU's dgx, LSTM's dc_prev; as rnn_step_cpu.cpp.
template <typename T, CellMode M>
__global__ void __launch_bounds__(kEltThreads, kMinBlocks<kEltThreads>) gates_backward_kernel(const BackArgs<T> a) {
  const int64_t HB = a.H * a.B;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < HB; e += stride) {
    const T dh = a.dh[e];
    if constexpr (M == CellMode::LSTM) {
      const T i = a.acts[e], f = a.acts[HB + e], g = a.acts[2 * HB + e], o = a.acts[3 * HB + e];
      const T tc = th(a.c[e]);
      const T dct = a.dc[e] + dh * o * (T(1) - tc * tc);
      a.dG[e] = dct * g * i * (T(1) - i);
      a.dG[HB + e] = dct * a.c_prev[e] * f * (T(1) - f);
      a.dG[2 * HB + e] = dct * i * (T(1) - g * g);
      a.dG[3 * HB + e] = dh * tc * o * (T(1) - o);
      a.dc_prev[e] = dct * f;
    } else if constexpr (M == CellMode::GRU) {
      const T r = a.acts[e], z = a.acts[HB + e], n = a.acts[2 * HB + e], ghn = a.acts[3 * HB + e];
      const T dn = dh * (T(1) - z) * (T(1) - n * n);
      const T dr = dn * ghn * r * (T(1) - r);
      const T dz = dh * (a.h[e] - n) * z * (T(1) - z);
      a.dgx[e] = dr; a.dgx[HB + e] = dz; a.dgx[2 * HB + e] = dn;
      a.dG[e] = dr; a.dG[HB + e] = dz; a.dG[2 * HB + e] = dn * r;
    } else if constexpr (M == CellMode::RNN_TANH) {
      const T y = a.h[e];
      a.dG[e] = dh * (T(1) - y * y);
    } else if constexpr (M == CellMode::RNN_RELU) {
      a.dG[e] = a.h[e] > T(0) ? dh : T(0);
    } else {
      const T t = a.acts[e];
      a.dG[e] = dh * a.sdt * (T(1) - t * t);
    }
  }
}

// dh_prev += the direct path: dh z (GRU), dh (1 - dt/tau) (CT-RNN).
template <typename T, CellMode M>
__global__ void __launch_bounds__(kEltThreads, kMinBlocks<kEltThreads>) add_direct_kernel(const BackArgs<T> a) {
  const int64_t HB = a.H * a.B;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < HB; e += stride) {
    if constexpr (M == CellMode::GRU)
      a.dh_prev[e] += a.dh[e] * a.acts[HB + e];
    else
      a.dh_prev[e] += a.dh[e] * a.decay;
  }
}

// W_hh^T dG and W_hh's gradient in one pass over the transposed index: for W_hh's column j, each
// entry k gathers dG's row r_k = csc_row[k] once for both dh_prev[j] = sum_k v_k dG[r_k] (launch_gather)
// and dw_t[k] += <h_in[j], dG[r_k]> (launch_sddmm_add on the transposed index), which gathered it
// each (at 10^6 units a pass gathers 128M rows of 80 bytes, most from memory). One warp a column,
// one batch tile of CW lanes of VEC columns: gather_chunk's loads and sum for dh, sddmm_chunk's dots
// and reduce-scatter for dw, so both results are those two kernels' bit for bit.
template <typename T>
struct WgradArgs {
  const int64_t* __restrict__ ptr;   // csc_ptr
  const int32_t* __restrict__ idx;   // csc_row
  const int32_t* __restrict__ perm;  // csc_perm, or nullptr: the values in column order
  const T* __restrict__ values;
  const T* __restrict__ dG;
  const T* __restrict__ h_in;
  T* __restrict__ dh_prev;
  T* __restrict__ dw_t;
  int64_t H, B;
  int64_t C;  // vector columns: B / VEC, at most CW (one tile)
};

// The 32 entries [k0, min(k0 + 32, end)) of column `row`: g, this lane's slice of h_in[row]; acc, its
// running part of dh_prev[row].
template <typename T, int VEC, int CW, bool FULL>
__device__ __forceinline__ void wgrad_chunk(const WgradArgs<T>& a, const acc_t<T> (&g)[VEC], int64_t k0, int64_t end,
                                            int64_t cv, bool active, int lane, acc_t<T> (&acc)[VEC]) {
  using A = acc_t<T>;
  constexpr int S = kWarp / CW;
  const int s = lane / CW, c = lane % CW;
  const int64_t k = k0 + lane, m = end - k0;
  int32_t my_idx = 0;
  A my_val = A(0);
  if (FULL || k < end) {
    my_idx = a.idx[k];
    my_val = to_acc(a.values[a.perm ? a.perm[k] : k]);
  }
  A p[CW];  // the dots of this lane's slot's entries, over its columns
#pragma unroll
  for (int jj = 0; jj < CW; ++jj) p[jj] = A(0);
#pragma unroll
  for (int jj = 0; jj < CW; ++jj) {
    const int j = jj * S + s;
    const int32_t col = __shfl_sync(kFullMask, my_idx, j);
    const A v = __shfl_sync(kFullMask, my_val, j);
    if (active && (FULL || j < m)) {
      A x[VEC];
      load_vec<T, VEC>(a.dG + static_cast<int64_t>(col) * a.B + cv * VEC, x);
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[e] = fma(v, x[e], acc[e]);
#pragma unroll
      for (int e = 0; e < VEC; ++e) p[jj] = fma(g[e], x[e], p[jj]);
    }
  }
  reduce_scatter<CW / 2>(p, c);
  const A r = __shfl_sync(kFullMask, p[0], (lane % S) * CW + lane / S);  // entry `lane`'s dot
  if (FULL || k < end) a.dw_t[k] = from_acc<T>(to_acc(a.dw_t[k]) + to_acc(from_acc<T>(r)));
}

template <typename T, int VEC, int CW>
__global__ void __launch_bounds__(kRowWarps * kWarp, kMinBlocks<kRowWarps * kWarp>) wgrad_rows_kernel(const WgradArgs<T> a) {
  using A = acc_t<T>;
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / kWarp;
  if (row >= a.H) return;  // whole warp leaves: no block-level sync in this kernel
  const int64_t start = a.ptr[row], end = a.ptr[row + 1];
  const int c = lane % CW, s = lane / CW;
  const bool active = c < a.C;
  A g[VEC], acc[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) g[e] = acc[e] = A(0);
  if (active) load_vec<T, VEC>(a.h_in + row * a.B + c * VEC, g);
  for (int64_t k0 = start; k0 < end; k0 += kWarp) {
    if (end - k0 >= kWarp)
      wgrad_chunk<T, VEC, CW, true>(a, g, k0, end, c, active, lane, acc);
    else
      wgrad_chunk<T, VEC, CW, false>(a, g, k0, end, c, active, lane, acc);
  }
#pragma unroll
  for (int o = CW; o < kWarp; o *= 2) {  // the slots' parts of dh_prev, as gather_range adds them
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[e] += __shfl_xor_sync(kFullMask, acc[e], o);
  }
  if (s == 0 && active) store_vec<T, VEC>(a.dh_prev + row * a.B + c * VEC, acc);
}

// The widest tile of the one pass: sddmm_cuda.cu's kSddmmLanes (its tile; the gather's is as wide as
// the batch, up to 32 lanes), so that both kernels would run this batch in one tile of this layout.
constexpr int kWgradLanes = 8;

// The one pass's launch, or false where rnn_step_wgrad_one_pass says the two kernels run: then the caller
// runs them.
template <typename T>
bool wgrad_pass(const WgradArgs<T>& a0, int64_t nnz, int64_t max_col, cudaStream_t stream, cudaError_t* err) {
  const bool gather_aligned = aligned16(a0.dG) && aligned16(a0.dh_prev);  // launch_gather's 16-byte loads
  const bool sddmm_aligned = aligned16(a0.h_in) && aligned16(a0.dG);      // launch_sddmm's
  if (!rnn_step_wgrad_one_pass(a0.H, nnz, max_col, a0.B, sizeof(T), gather_aligned, sddmm_aligned)) return false;
  const bool wide = gather_aligned && a0.B % kWideVec<T> == 0;
  WgradArgs<T> a = a0;
  a.C = wide ? a.B / kWideVec<T> : a.B;
  *err = dispatch_vec_lanes<T, kWgradLanes>(wide, a.C, [&](auto vec, auto lanes) {
    wgrad_rows_kernel<T, decltype(vec)::value, decltype(lanes)::value>
        <<<static_cast<unsigned>(cdiv(a.H, kRowWarps)), kRowWarps * kWarp, 0, stream>>>(a);
    return cudaGetLastError();
  });
  return true;
}

// wgrad: W_hh's gradient in the transposed order (dw_t += ...) where not null, with h_in and max_col.
template <typename T, CellMode M>
cudaError_t backward_mode(const BackArgs<T>& a, const int64_t* csc_ptr, const int32_t* csc_row,
                          const int32_t* csc_perm, const T* values, int64_t nnz, const WgradArgs<T>* wgrad,
                          int64_t max_col, int32_t* workspace, cudaStream_t stream) {
  const int64_t blocks = std::min<int64_t>(cdiv(a.H * a.B, kEltThreads), 32LL * num_sms());
  gates_backward_kernel<T, M><<<static_cast<unsigned>(blocks), kEltThreads, 0, stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (wgrad == nullptr || nnz == 0 || !wgrad_pass(*wgrad, nnz, max_col, stream, &err)) {
    err = launch_gather(csc_ptr, csc_row, csc_perm, values, a.dG, a.dh_prev, a.H, a.B, nnz, workspace, stream);
    if (err == cudaSuccess && wgrad != nullptr && nnz > 0)  // on the transposed index: its rows W_hh's columns
      err = launch_sddmm_add(csc_ptr, csc_row, wgrad->h_in, a.dG, wgrad->dw_t, a.H, a.B, nnz, workspace, stream);
  }
  if (err != cudaSuccess || !(M == CellMode::GRU || M == CellMode::CTRNN)) return err;
  add_direct_kernel<T, M><<<static_cast<unsigned>(blocks), kEltThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward(CellMode mode, const int64_t* csc_ptr, const int32_t* csc_row, const int32_t* csc_perm,
                     const T* values, int64_t nnz, const T* acts, const T* c_prev, const T* c, const T* h,
                     const T* dh, const T* dc, T* dG, T* dgx, T* dc_prev, T* dh_prev, int64_t H, int64_t B,
                     double dt, double tau, int32_t* workspace, cudaStream_t stream, const T* h_in = nullptr,
                     T* dw_t = nullptr, int64_t max_col = 0) {
  if (H <= 0 || B <= 0) return cudaSuccess;
  const BackArgs<T> a{acts, c_prev, c, h, dh, dc, dG, dgx, dc_prev, dh_prev, H, B,
                      static_cast<T>(1 - dt / tau), static_cast<T>(dt)};
  const WgradArgs<T> w{csc_ptr, csc_row, csc_perm, values, dG, h_in, dh_prev, dw_t, H, B, 0};
  return dispatch_mode(mode, [&](auto m) {
    return backward_mode<T, decltype(m)::value>(a, csc_ptr, csc_row, csc_perm, values, nnz,
                                                dw_t != nullptr ? &w : nullptr, max_col, workspace, stream);
  });
}

}  // namespace

cudaError_t launch_rnn_step_forward(CellMode mode, const int64_t* row_ptr, const int32_t* col_idx,
                                    const float* values, const float* gx, const float* h, const float* c,
                                    const float* b_hh, float* h_new, float* c_new, float* acts, int64_t H,
                                    int64_t B, double dt, double tau, cudaStream_t stream) {
  return forward<float>(mode, row_ptr, col_idx, values, gx, h, c, b_hh, h_new, c_new, acts, H, B, dt, tau, stream);
}

cudaError_t launch_rnn_step_forward(CellMode mode, const int64_t* row_ptr, const int32_t* col_idx,
                                    const double* values, const double* gx, const double* h,
                                    const double* c, const double* b_hh, double* h_new, double* c_new,
                                    double* acts, int64_t H, int64_t B, double dt, double tau,
                                    cudaStream_t stream) {
  return forward<double>(mode, row_ptr, col_idx, values, gx, h, c, b_hh, h_new, c_new, acts, H, B, dt, tau, stream);
}

int64_t rnn_step_backward_workspace_len(int64_t H, int64_t nnz, int64_t B, int64_t elem_bytes) {
  return gather_workspace_len(H, nnz, B, elem_bytes);
}

// The backward's only long-row class is its gather's (long columns of W_hh).
int64_t rnn_step_backward_workspace_len(int64_t H, int64_t nnz, int64_t max_col, int64_t B, int64_t elem_bytes) {
  return gather_workspace_len(H, nnz, max_col, B, elem_bytes);
}

cudaError_t launch_rnn_step_backward(CellMode mode, const int64_t* csc_ptr, const int32_t* csc_row,
                                     const int32_t* csc_perm, const float* values, int64_t nnz,
                                     const float* acts, const float* c_prev, const float* c, const float* h,
                                     const float* dh, const float* dc, float* dG, float* dgx, float* dc_prev,
                                     float* dh_prev, int64_t H, int64_t B, double dt, double tau,
                                     int32_t* workspace, cudaStream_t stream) {
  return backward<float>(mode, csc_ptr, csc_row, csc_perm, values, nnz, acts, c_prev, c, h, dh, dc, dG, dgx,
                         dc_prev, dh_prev, H, B, dt, tau, workspace, stream);
}

cudaError_t launch_rnn_step_backward(CellMode mode, const int64_t* csc_ptr, const int32_t* csc_row,
                                     const int32_t* csc_perm, const double* values, int64_t nnz,
                                     const double* acts, const double* c_prev, const double* c,
                                     const double* h, const double* dh, const double* dc, double* dG,
                                     double* dgx, double* dc_prev, double* dh_prev, int64_t H, int64_t B,
                                     double dt, double tau, int32_t* workspace, cudaStream_t stream) {
  return backward<double>(mode, csc_ptr, csc_row, csc_perm, values, nnz, acts, c_prev, c, h, dh, dc, dG, dgx,
                          dc_prev, dh_prev, H, B, dt, tau, workspace, stream);
}

bool rnn_step_wgrad_one_pass(int64_t H, int64_t nnz, int64_t max_col, int64_t B, int64_t elem_bytes,
                             bool gather_aligned, bool sddmm_aligned) {
  const int64_t wide_vec = 16 / elem_bytes;
  const bool gather_wide = B % wide_vec == 0 && gather_aligned, sddmm_wide = B % wide_vec == 0 && sddmm_aligned;
  const int64_t C = gather_wide ? B / wide_vec : B;
  return H > 0 && B > 0 && nnz > 0 && gather_wide == sddmm_wide && C <= kWgradLanes &&
         gather_workspace_len(H, nnz, max_col, B, elem_bytes) == 0 && sddmm_workspace_len(H, nnz, max_col) == 0;
}

cudaError_t launch_rnn_step_backward_wgrad(CellMode mode, const int64_t* csc_ptr, const int32_t* csc_row,
                                           const int32_t* csc_perm, const float* values, int64_t nnz, int64_t max_col,
                                           const float* acts, const float* c_prev, const float* c, const float* h,
                                           const float* dh, const float* dc, float* dG, float* dgx, float* dc_prev,
                                           float* dh_prev, const float* h_in, float* dw_t, int64_t H, int64_t B,
                                           double dt, double tau, int32_t* workspace, cudaStream_t stream) {
  return backward<float>(mode, csc_ptr, csc_row, csc_perm, values, nnz, acts, c_prev, c, h, dh, dc, dG, dgx,
                         dc_prev, dh_prev, H, B, dt, tau, workspace, stream, h_in, dw_t, max_col);
}

cudaError_t launch_rnn_step_backward_wgrad(CellMode mode, const int64_t* csc_ptr, const int32_t* csc_row,
                                           const int32_t* csc_perm, const double* values, int64_t nnz,
                                           int64_t max_col, const double* acts, const double* c_prev,
                                           const double* c, const double* h, const double* dh, const double* dc,
                                           double* dG, double* dgx, double* dc_prev, double* dh_prev,
                                           const double* h_in, double* dw_t, int64_t H, int64_t B, double dt,
                                           double tau, int32_t* workspace, cudaStream_t stream) {
  return backward<double>(mode, csc_ptr, csc_row, csc_perm, values, nnz, acts, c_prev, c, h, dh, dc, dG, dgx,
                          dc_prev, dh_prev, H, B, dt, tau, workspace, stream, h_in, dw_t, max_col);
}

}  // namespace cuda
}  // namespace sparse_engine
