// Operator schemas of sparse_engine. Kernels live in cpu/ and cuda/ and register
// implementations per dispatch key; autograd and fake (meta) kernels are registered
// from Python (sparse_engine/ops.py).
//
// Every sparse operand is passed as its full index: CSR (row_ptr int64 [rows+1],
// col_idx int32 [nnz]) and the transposed index (csc_ptr int64 [cols+1], csc_row int32
// [nnz], csc_perm int64 [nnz], a permutation of CSR positions into column order), then
// the values [nnz]. Activations are feature-major: (features x batch).
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(sparse_engine, m) {
  // Y = W X: X (cols x B) -> (rows x B)
  m.def("spmm(Tensor row_ptr, Tensor col_idx, Tensor csc_ptr, Tensor csc_row, "
        "Tensor csc_perm, Tensor values, Tensor X) -> Tensor");
  // W^T G: G (rows x B) -> (cols x B); uses the transposed index, no atomics
  m.def("spmm_t(Tensor row_ptr, Tensor col_idx, Tensor csc_ptr, Tensor csc_row, "
        "Tensor csc_perm, Tensor values, Tensor G) -> Tensor");
  // out[k] = sum_b G[row_k, b] * X[col_k, b]: the weight gradient sampled at the nonzeros
  m.def("sddmm(Tensor row_ptr, Tensor col_idx, Tensor csc_ptr, Tensor csc_row, "
        "Tensor csc_perm, Tensor G, Tensor X) -> Tensor");
  // Transposed index of a CSR pattern: (csc_ptr, csc_row, csc_perm), O(nnz + cols)
  m.def("transpose_index(Tensor row_ptr, Tensor col_idx, int n_cols) -> (Tensor, Tensor, Tensor)");
}

// A minimal module init so `import sparse_engine._C` loads the library (and runs the
// static registrations above) like any Python extension.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
