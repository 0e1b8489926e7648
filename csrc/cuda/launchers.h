// Host-side entry points of the CUDA kernels, one section per op family: spmm (spmm_cuda.cu),
// sddmm (sddmm_cuda.cu), transpose (transpose_cuda.cu), rnn_step (rnn_step_cuda.cu), rnn_sequence
// (rnn_sequence_cuda.cu). Plain
// pointers, sizes and a cudaStream_t, no torch types, so the .cu files compile with nvcc alone
// and the torch glue (<family>_glue.cpp) compiles with the host compiler alone.
//
// Layout: activations are feature-major, row-major (features x B, B contiguous).
// A "gather" is the operation out[i, :] = sum_{k in [ptr[i], ptr[i+1])} val(k) * src[idx[k], :]
// with val(k) = values[perm ? perm[k] : k]: spmm is a gather over the CSR index,
// spmm_t the same gather over the transposed index (csc_ptr, csc_row, csc_perm).
// Every launcher returns the error of its last launch (cudaSuccess when nothing to do)
// and enqueues work on `stream` only; none of them synchronises.
// dtypes: float, double, and __half / __nv_bfloat16 storage (computed in float32, each
// output rounded to the storage type once).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "../constants.h"

namespace sparse_engine {
namespace cuda {

// ------------------------------------------------------------------ spmm (spmm_cuda.cu)
// Number of int32 workspace entries the gather needs for the long-row list, the split list and the
// partial sums of the split rows' segments, for a batch of B values of elem_bytes each (0: no row
// can be long, pass nullptr).
int64_t gather_workspace_len(int64_t n_out, int64_t nnz, int64_t B, int64_t elem_bytes);
// The same when the host knows that no row has more than max_len entries (the checked index's
// longest row, csrc/index_check.h): 0 when no row can be longer than the long-row threshold.
int64_t gather_workspace_len(int64_t n_out, int64_t nnz, int64_t max_len, int64_t B, int64_t elem_bytes);

// Rows of the gather longer than this go to its long-row kernel (common.cuh, long_row_threshold:
// lower for wide batches, whose row kernel takes one entry at a time).
int64_t gather_long_row_threshold(int64_t n_out, int64_t nnz, int64_t B, int64_t elem_bytes);

// Entries of a segment of the gather's split rows: a row longer is split, a block per segment, and
// a third kernel adds their sums (launched where rows can be split: gather_split_list_offset >= 0).
int64_t gather_segment_entries(int64_t n_out, int64_t nnz);
// The gather's long-row threshold and segment as multiples of the mean row (common.cuh; defaults 4 and
// 2): long_mult in [1, 64], seg_mult in [2, 64]; returns false (and changes nothing) for others, else
// sets both and puts the settings before in *old_long, *old_seg. Outputs do not depend on them.
bool set_gather_long_rows(int long_mult, int seg_mult, int* old_long, int* old_seg);
// Where the split list ([count, slots...]) starts in the gather's workspace (int32 entries), or -1
// where there is none (no long-row list, or no row can be longer than a segment).
int64_t gather_split_list_offset(int64_t n_out, int64_t nnz, int64_t B, int64_t elem_bytes);

// out (n_out x B) = gather(ptr, idx, perm, values, src (n_src x B)). perm may be nullptr.
// workspace: gather_workspace_len(n_out, nnz[, max_len], B, sizeof(T)) int32 entries in device memory, or
// nullptr when that is 0. A nullptr workspace launches only the row kernel, which then does every
// row itself (correct for any row length, unbalanced for long rows); else the long-row kernel is
// launched too. Deterministic: every output element is summed in a fixed order.
cudaError_t launch_gather(const int64_t* ptr, const int32_t* idx, const int32_t* perm,
                          const float* values, const float* src, float* out, int64_t n_out,
                          int64_t B, int64_t nnz, int32_t* workspace, cudaStream_t stream);
cudaError_t launch_gather(const int64_t* ptr, const int32_t* idx, const int32_t* perm,
                          const double* values, const double* src, double* out, int64_t n_out,
                          int64_t B, int64_t nnz, int32_t* workspace, cudaStream_t stream);
cudaError_t launch_gather(const int64_t* ptr, const int32_t* idx, const int32_t* perm,
                          const __half* values, const __half* src, __half* out, int64_t n_out,
                          int64_t B, int64_t nnz, int32_t* workspace, cudaStream_t stream);
cudaError_t launch_gather(const int64_t* ptr, const int32_t* idx, const int32_t* perm,
                          const __nv_bfloat16* values, const __nv_bfloat16* src, __nv_bfloat16* out,
                          int64_t n_out, int64_t B, int64_t nnz, int32_t* workspace, cudaStream_t stream);

// ------------------------------------------------------------------ sddmm (sddmm_cuda.cu)
// Workspace (int32 entries) for sddmm's long-row list; 0 means pass nullptr (then only the row
// kernel is launched, as for the gather). With max_len: as gather_workspace_len's.
int64_t sddmm_workspace_len(int64_t rows, int64_t nnz);
int64_t sddmm_workspace_len(int64_t rows, int64_t nnz, int64_t max_len);

// out[k] = sum_b G[row_k, b] * X[col_idx[k], b] for the CSR pattern (row_ptr, col_idx).
// G: rows x B, X: cols x B, out: nnz. Deterministic.
cudaError_t launch_sddmm(const int64_t* row_ptr, const int32_t* col_idx, const float* G,
                         const float* X, float* out, int64_t rows, int64_t B, int64_t nnz,
                         int32_t* workspace, cudaStream_t stream);
cudaError_t launch_sddmm(const int64_t* row_ptr, const int32_t* col_idx, const double* G,
                         const double* X, double* out, int64_t rows, int64_t B, int64_t nnz,
                         int32_t* workspace, cudaStream_t stream);
cudaError_t launch_sddmm(const int64_t* row_ptr, const int32_t* col_idx, const __half* G,
                         const __half* X, __half* out, int64_t rows, int64_t B, int64_t nnz,
                         int32_t* workspace, cudaStream_t stream);
cudaError_t launch_sddmm(const int64_t* row_ptr, const int32_t* col_idx, const __nv_bfloat16* G,
                         const __nv_bfloat16* X, __nv_bfloat16* out, int64_t rows, int64_t B,
                         int64_t nnz, int32_t* workspace, cudaStream_t stream);
// out[k] += sum_b G[row_k, b] * X[col_k, b] (the product rounded to storage, then added): the
// same dot products, bit for bit, as launch_sddmm, added in place; same workspace.
cudaError_t launch_sddmm_add(const int64_t* row_ptr, const int32_t* col_idx, const float* G,
                             const float* X, float* out, int64_t rows, int64_t B, int64_t nnz,
                             int32_t* workspace, cudaStream_t stream);
cudaError_t launch_sddmm_add(const int64_t* row_ptr, const int32_t* col_idx, const double* G,
                             const double* X, double* out, int64_t rows, int64_t B, int64_t nnz,
                             int32_t* workspace, cudaStream_t stream);

// ------------------------------------------------------------------ transpose (transpose_cuda.cu)
// Bytes of device workspace launch_transpose_index needs.
size_t transpose_index_workspace_bytes(int64_t rows, int64_t cols, int64_t nnz);

// Transposed index of a CSR pattern: csc_ptr (cols+1), csc_row (nnz), csc_perm (nnz), with
// each column's rows ascending (a stable radix sort by column). Requires 0 <= col_idx < cols
// (checked by the caller) and a valid row_ptr.
cudaError_t launch_transpose_index(const int64_t* row_ptr, const int32_t* col_idx, int64_t rows,
                                   int64_t cols, int64_t nnz, int64_t* csc_ptr, int32_t* csc_row,
                                   int32_t* csc_perm, void* workspace, size_t workspace_bytes,
                                   cudaStream_t stream);

// The content check of a compressed index (csrc/index_check.h): ptr (n+1), idx (nnz), perm (nnz
// or nullptr). Writes 6 int64 to `out` (device memory): ptr[0], ptr[n], the smallest i with
// ptr[i+1] < ptr[i], the smallest k with idx[k] outside [0, n_src), the smallest k with perm[k]
// outside [0, nnz), the largest ptr[i+1] - ptr[i]; -1 where there is none. Reads only inside the
// arrays whatever their content. One pass, O(n + nnz); the caller copies `out` to the host.
cudaError_t launch_index_scan(const int64_t* ptr, const int32_t* idx, const int32_t* perm, int64_t n,
                              int64_t nnz, int64_t n_src, int64_t* out, cudaStream_t stream);

// ------------------------------------------------------------------ rnn_step (rnn_step_cuda.cu)
// The fused recurrent step. Contract: the CPU ops of csrc/cpu/rnn_step_cpu.cpp (see its header
// comment). W_hh stacks G = cell_gates(mode) gates in one CSR of G*H rows (LSTM i,f,g,o: G=4;
// GRU r,z,n: G=3; RNN/CT-RNN: G=1; csrc/constants.h); every dense array is feature-major
// (rows x B, B contiguous) and contiguous. float32/float64 only.

// Forward of one step. For hidden unit j (0 <= j < H): pre_q = sum_k W[qH+j, k] h[k, :] (+ gx[qH+j, :])
// and the gate math of the mode:
//   LSTM  h_new, c_new (H x B), acts = [i; f; g; o] (4H x B); needs c.
//   GRU   h_new, acts = [r; z; n; W_hn h + b_hn] (4H x B); b_hh (3H) may be nullptr.
//   RNN_TANH/RNN_RELU  h_new only.  CTRNN  h_new = (1 - dt/tau) h + dt tanh(pre), acts = tanh(pre) (H x B).
// Pointers a mode does not use may be nullptr. Deterministic (fixed summation order).
cudaError_t launch_rnn_step_forward(CellMode mode, const int64_t* row_ptr, const int32_t* col_idx,
                                    const float* values, const float* gx, const float* h, const float* c,
                                    const float* b_hh, float* h_new, float* c_new, float* acts, int64_t H,
                                    int64_t B, double dt, double tau, cudaStream_t stream);
cudaError_t launch_rnn_step_forward(CellMode mode, const int64_t* row_ptr, const int32_t* col_idx,
                                    const double* values, const double* gx, const double* h,
                                    const double* c, const double* b_hh, double* h_new, double* c_new,
                                    double* acts, int64_t H, int64_t B, double dt, double tau,
                                    cudaStream_t stream);

// int32 workspace entries launch_rnn_step_backward needs for a batch of B values of elem_bytes each
// (0: pass nullptr).
int64_t rnn_step_backward_workspace_len(int64_t H, int64_t nnz, int64_t B, int64_t elem_bytes);
// The same knowing W_hh's longest column (max_col entries, the checked transposed index's longest
// row): 0 when no column is long, and then the backward's gather launches no long-row kernel.
int64_t rnn_step_backward_workspace_len(int64_t H, int64_t nnz, int64_t max_col, int64_t B, int64_t elem_bytes);

// Backward of one step: the elementwise gate gradient, then dh_prev = direct + W_hh^T dG through
// the transposed index (csc_ptr, csc_row, csc_perm; launch_gather above).
//   LSTM  in: acts, c_prev, c, dh, dc.   out: dG (4H x B), dh_prev, dc_prev.
//   GRU   in: acts, h (= h_prev), dh.    out: dG (3H x B, hidden side), dgx (3H x B), dh_prev.
//   RNN_TANH/RNN_RELU in: h (= h_new), dh.  out: dG (H x B), dh_prev.
//   CTRNN in: acts, dh.                  out: dG (H x B), dh_prev.
// nnz: entries of W_hh. workspace: rnn_step_backward_workspace_len(H, nnz, B, sizeof(T)) int32 entries.
cudaError_t launch_rnn_step_backward(CellMode mode, const int64_t* csc_ptr, const int32_t* csc_row,
                                     const int32_t* csc_perm, const float* values, int64_t nnz,
                                     const float* acts, const float* c_prev, const float* c, const float* h,
                                     const float* dh, const float* dc, float* dG, float* dgx, float* dc_prev,
                                     float* dh_prev, int64_t H, int64_t B, double dt, double tau,
                                     int32_t* workspace, cudaStream_t stream);
cudaError_t launch_rnn_step_backward(CellMode mode, const int64_t* csc_ptr, const int32_t* csc_row,
                                     const int32_t* csc_perm, const double* values, int64_t nnz,
                                     const double* acts, const double* c_prev, const double* c,
                                     const double* h, const double* dh, const double* dc, double* dG,
                                     double* dgx, double* dc_prev, double* dh_prev, int64_t H, int64_t B,
                                     double dt, double tau, int32_t* workspace, cudaStream_t stream);

// launch_rnn_step_backward, and W_hh's gradient in the transposed order: dw_t[k] += sum_b h_in[j, b]
// dG[csc_row[k], b] for each entry k of W_hh's column j (launch_sddmm_add on the transposed index:
// the same sums, bit for bit). max_col: W_hh's longest column (the checked transposed index's longest
// row). Where neither product lists a long row and the batch is one tile of both (at most 8 vector
// columns, the same loads), W_hh^T dG and the gradient share one pass that reads each dG row once;
// else the gather, then launch_sddmm_add. dw_t nullptr (h_in unused): launch_rnn_step_backward.
// workspace: the larger of rnn_step_backward_workspace_len(H, nnz, max_col, B, sizeof(T)) and
// sddmm_workspace_len(H, nnz, max_col) int32 entries.
// Whether launch_rnn_step_backward_wgrad takes its one pass for these sizes, the gather's and the
// sddmm's operands 16-byte aligned or not (dG and dh_prev; h_in and dG).
bool rnn_step_wgrad_one_pass(int64_t H, int64_t nnz, int64_t max_col, int64_t B, int64_t elem_bytes,
                             bool gather_aligned, bool sddmm_aligned);
cudaError_t launch_rnn_step_backward_wgrad(CellMode mode, const int64_t* csc_ptr, const int32_t* csc_row,
                                           const int32_t* csc_perm, const float* values, int64_t nnz, int64_t max_col,
                                           const float* acts, const float* c_prev, const float* c, const float* h,
                                           const float* dh, const float* dc, float* dG, float* dgx, float* dc_prev,
                                           float* dh_prev, const float* h_in, float* dw_t, int64_t H, int64_t B,
                                           double dt, double tau, int32_t* workspace, cudaStream_t stream);
cudaError_t launch_rnn_step_backward_wgrad(CellMode mode, const int64_t* csc_ptr, const int32_t* csc_row,
                                           const int32_t* csc_perm, const double* values, int64_t nnz,
                                           int64_t max_col, const double* acts, const double* c_prev,
                                           const double* c, const double* h, const double* dh, const double* dc,
                                           double* dG, double* dgx, double* dc_prev, double* dh_prev,
                                           const double* h_in, double* dw_t, int64_t H, int64_t B, double dt,
                                           double tau, int32_t* workspace, cudaStream_t stream);

// ------------------------------------------------------------------ rnn_sequence (rnn_sequence_cuda.cu)
// A layer-direction's whole sequence in one persistent (cooperative) launch, forward or backward:
// LSTM, GRU, RNN_TANH, RNN_RELU (rnn_sequence_mode), float32/float64. W_hh as in rnn_step; every
// dense array feature-major and contiguous. Contract: the composite kernels of
// sparse_engine/kernels/rnn_sequence_torch.py (the step ops in a loop).
bool rnn_sequence_mode(CellMode mode);
// Caps the bytes of W_hh each block of the persistent kernels stages in shared memory (0: none, the
// weights read through L2 every step; < 0: no cap, the default); returns the cap before. Outputs do
// not depend on it (tests, and the benchmark that compares staged and unstaged).
int64_t set_rnn_sequence_stage_bytes(int64_t bytes);
// Whether the staged index may take 16 bits an entry where every index fits (the default: yes);
// returns the setting before. Outputs do not depend on it (tests).
bool set_rnn_sequence_compact_index(bool allow);
// How many of a row's entries a warp takes at once (rnn_sequence_cuda.cu's split rows): 1 (a lane per
// batch column, the default), 2, 4 or 8, or 0 for the rule by mean row length; returns the setting
// before, or -1 (nothing set) for any other value. The sums' order follows it (not the bits of 1).
int set_rnn_sequence_split(int split);
// Forward. gx: (G*H) x (T*B), every step's input part with its biases (column t*B + b); h0 (and
// LSTM's c0): H x B; b_hh: GRU's (3H) or nullptr. Out: y (T x H x B, the state after each step, in
// time order also for the reverse direction), LSTM's cs (T x H x B, c after each step), acts (T x 4H
// x B: LSTM [i; f; g; o], GRU [r; z; n; W_hn h + b_hn]; nullptr for RNN). Steps run t = 0..T-1, or
// T-1..0 with reverse. nnz: W_hh's nonzeros (the most any block stages in shared memory).
cudaError_t launch_rnn_sequence_forward(CellMode mode, const int64_t* row_ptr, const int32_t* col_idx,
                                        const float* values, int64_t nnz, const float* gx, const float* h0,
                                        const float* c0, const float* b_hh, float* y, float* cs, float* acts, int64_t H,
                                        int64_t B, int64_t T, bool reverse, cudaStream_t stream);
cudaError_t launch_rnn_sequence_forward(CellMode mode, const int64_t* row_ptr, const int32_t* col_idx,
                                        const double* values, int64_t nnz, const double* gx, const double* h0,
                                        const double* c0, const double* b_hh, double* y, double* cs, double* acts,
                                        int64_t H, int64_t B, int64_t T, bool reverse, cudaStream_t stream);
// Backward, from the forward's y, cs, acts (and h0, c0); W_hh as its transposed index (csc_ptr,
// csc_row) and values_t, its values in that order (values[csc_perm], ../values_t.h). dy: the
// output sequence's gradient (T x H x B) or nullptr; dh (and LSTM's dc): H x B, dh_T (dc_T) in,
// dh_0 (dc_0) out. Out: dG ((G*H) x (T*B), the hidden-side gate gradient of every step, column
// t*B + b: dL/dW_hh = dG (the states' columns)^T) and GRU's dgx (3H x T*B, the input side; for the
// other modes the input side is dG itself).
cudaError_t launch_rnn_sequence_backward(CellMode mode, const int64_t* csc_ptr, const int32_t* csc_row,
                                         const float* values_t, int64_t nnz, const float* y,
                                         const float* h0, const float* cs, const float* c0, const float* acts,
                                         const float* dy, float* dG, float* dgx, float* dh, float* dc, int64_t H,
                                         int64_t B, int64_t T, bool reverse, cudaStream_t stream);
cudaError_t launch_rnn_sequence_backward(CellMode mode, const int64_t* csc_ptr, const int32_t* csc_row,
                                         const double* values_t, int64_t nnz, const double* y,
                                         const double* h0, const double* cs, const double* c0, const double* acts,
                                         const double* dy, double* dG, double* dgx, double* dh, double* dc, int64_t H,
                                         int64_t B, int64_t T, bool reverse, cudaStream_t stream);

}  // namespace cuda
}  // namespace sparse_engine
