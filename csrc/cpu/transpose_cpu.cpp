// transpose_index on the CPU: the transposed index (csc_ptr, csc_row, csc_perm) of a
// CSR pattern, O(nnz + cols), with each column's rows ascending.
#include <torch/library.h>
#include <algorithm>
#include "common.h"

namespace sparse_engine {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> transpose_index_cpu(const at::Tensor& row_ptr,
                                                                   const at::Tensor& col_idx,
                                                                   int64_t n_cols) {
  const CsrSizes s = check_transpose_args(row_ptr, col_idx, n_cols, /*on_cuda=*/false);
  // row_ptr non-decreasing, columns in range (remembered: the ops that follow with this CSR do
  // not scan it again); the counting loop below still refuses an out-of-range column on its own
  cpu_checked_max_len({row_ptr, col_idx, nullptr, "row_ptr", "col_idx", nullptr}, n_cols);
  auto row_ptr_c = row_ptr.contiguous(), col_idx_c = col_idx.contiguous();
  const int64_t rows = s.rows, nnz = s.nnz;
  auto csc_ptr = at::zeros({n_cols + 1}, row_ptr_c.options());
  auto csc_row = at::empty({nnz}, col_idx_c.options());
  auto csc_perm = at::empty({nnz}, col_idx_c.options());  // int32, like col_idx
  const int64_t* ptr = row_ptr_c.data_ptr<int64_t>();
  const int32_t* col = col_idx_c.data_ptr<int32_t>();
  int64_t* out_ptr = csc_ptr.data_ptr<int64_t>();
  int32_t* out_row = csc_row.data_ptr<int32_t>();
  int32_t* out_perm = csc_perm.data_ptr<int32_t>();
  // Parallel stable counting sort: T blocks of rows (balanced by nnz) count their columns,
  // a prefix over (column, block) gives each block its slots, and blocks scatter in row
  // order, so the rows within each column come out sorted, as with one block. T: up to 4 blocks
  // per thread (a block claimed by a thread that a busy core holds up delays the call by less),
  // where their counters (T x n_cols) stay within about the entries.
  const int64_t threads = kernel_threads();
  const int64_t T = (nnz >= 4 * parallel_work() && rows > 1)
                        ? std::max<int64_t>(1, std::min<int64_t>({4 * threads, rows,
                                                                  std::max<int64_t>(threads, nnz / (n_cols + 1))}))
                        : 1;
  const auto bounds = balanced_bounds(ptr, rows, T);
  std::vector<int64_t> counts(static_cast<size_t>(T) * (n_cols + 1), 0);  // [block][column]
  std::vector<char> block_in_range(T, 1);
  parallel_chunks(T, T > 1, [&](int64_t t) {
    int64_t* block_counts = counts.data() + t * (n_cols + 1);
    for (int64_t k = ptr[bounds[t]]; k < ptr[bounds[t + 1]]; ++k) {
      const int32_t j = col[k];
      if (j < 0 || j >= n_cols) { block_in_range[t] = 0; break; }
      ++block_counts[j];
    }
  });
  const bool in_range = std::all_of(block_in_range.begin(), block_in_range.end(), [](char ok) { return ok != 0; });
  if (!in_range) check_col_range(col, nnz, n_cols);
  int64_t running = 0;  // counts become each block's first slot in each column
  for (int64_t j = 0; j < n_cols; ++j) {
    out_ptr[j] = running;
    for (int64_t t = 0; t < T; ++t) {
      int64_t& slot = counts[t * (n_cols + 1) + j];
      const int64_t n = slot;
      slot = running;
      running += n;
    }
  }
  out_ptr[n_cols] = running;
  parallel_chunks(T, T > 1, [&](int64_t t) {
    int64_t* next = counts.data() + t * (n_cols + 1);
    for (int64_t i = bounds[t]; i < bounds[t + 1]; ++i) {
      for (int64_t k = ptr[i]; k < ptr[i + 1]; ++k) {
        const int64_t dst = next[col[k]]++;
        out_row[dst] = static_cast<int32_t>(i);
        out_perm[dst] = static_cast<int32_t>(k);
      }
    }
  });
  return {csc_ptr, csc_row, csc_perm};
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CPU, m) {
  m.impl("transpose_index", &transpose_index_cpu);
}

}  // namespace sparse_engine
