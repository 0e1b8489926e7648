// Host entry points of the fused recurrent step kernels (csrc/cuda/rnn_step.cu). Plain pointers,
// sizes and a cudaStream_t, like launchers.h, so rnn_step.cu compiles with nvcc alone and the
// torch glue (rnn_cuda.cpp) with the host compiler alone.
//
// Contract: the CPU ops of csrc/cpu/rnn_cpu.cpp (see its header comment). W_hh stacks G gates
// in one CSR of G*H rows (LSTM i,f,g,o: G=4; GRU r,z,n: G=3; RNN/CT-RNN: G=1); every dense
// array is feature-major (rows x B, B contiguous) and contiguous.
// Every launcher enqueues work on `stream` only, never synchronises, and returns the error of
// its last launch (cudaSuccess when there is nothing to do).
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

namespace sparse_engine {
namespace cuda {

enum RnnStepMode : int { kRnnLSTM = 0, kRnnGRU = 1, kRnnTanh = 2, kRnnRelu = 3, kRnnCT = 4 };

// Gates per hidden unit (rows of W_hh per unit): 4, 3, 1, 1, 1.
int rnn_step_gates(int mode);

// Forward of one step. For hidden unit j (0 <= j < H): pre_q = sum_k W[qH+j, k] h[k, :] (+ gx[qH+j, :])
// and the gate math of the mode:
//   LSTM  h_new, c_new (H x B), acts = [i; f; g; o] (4H x B); needs c.
//   GRU   h_new, acts = [r; z; n; W_hn h + b_hn] (4H x B); b_hh (3H) may be nullptr.
//   Tanh/Relu  h_new only.  CT  h_new = (1 - dt/tau) h + dt tanh(pre), acts = tanh(pre) (H x B).
// Pointers a mode does not use may be nullptr. Deterministic (fixed summation order).
cudaError_t launch_rnn_step_forward(int mode, const int64_t* row_ptr, const int32_t* col_idx,
                                    const float* values, const float* gx, const float* h, const float* c,
                                    const float* b_hh, float* h_new, float* c_new, float* acts, int64_t H,
                                    int64_t B, double dt, double tau, cudaStream_t stream);
cudaError_t launch_rnn_step_forward(int mode, const int64_t* row_ptr, const int32_t* col_idx,
                                    const double* values, const double* gx, const double* h,
                                    const double* c, const double* b_hh, double* h_new, double* c_new,
                                    double* acts, int64_t H, int64_t B, double dt, double tau,
                                    cudaStream_t stream);

// int32 workspace entries launch_rnn_step_backward needs (0: pass nullptr).
int64_t rnn_step_backward_workspace_len(int64_t H, int64_t nnz);

// Backward of one step: the elementwise gate gradient, then dh_prev = direct + W_hh^T dG through
// the transposed index (csc_ptr, csc_row, csc_perm; launch_gather of launchers.h).
//   LSTM  in: acts, c_prev, c, dh, dc.   out: dG (4H x B), dh_prev, dc_prev.
//   GRU   in: acts, h (= h_prev), dh.    out: dG (3H x B, hidden side), dgx (3H x B), dh_prev.
//   Tanh/Relu in: h (= h_new), dh.       out: dG (H x B), dh_prev.
//   CT    in: acts, dh.                  out: dG (H x B), dh_prev.
// nnz: entries of W_hh. workspace: rnn_step_backward_workspace_len(H, nnz) int32 entries.
cudaError_t launch_rnn_step_backward(int mode, const int64_t* csc_ptr, const int32_t* csc_row,
                                     const int64_t* csc_perm, const float* values, int64_t nnz,
                                     const float* acts, const float* c_prev, const float* c, const float* h,
                                     const float* dh, const float* dc, float* dG, float* dgx, float* dc_prev,
                                     float* dh_prev, int64_t H, int64_t B, double dt, double tau,
                                     int32_t* workspace, cudaStream_t stream);
cudaError_t launch_rnn_step_backward(int mode, const int64_t* csc_ptr, const int32_t* csc_row,
                                     const int64_t* csc_perm, const double* values, int64_t nnz,
                                     const double* acts, const double* c_prev, const double* c,
                                     const double* h, const double* dh, const double* dc, double* dG,
                                     double* dgx, double* dc_prev, double* dh_prev, int64_t H, int64_t B,
                                     double dt, double tau, int32_t* workspace, cudaStream_t stream);

}  // namespace cuda
}  // namespace sparse_engine
