"""Sparse weight storage: CSR with a COO view and a transposed index; the CSR checks."""
from .csr import check_csr, check_index
from .weight import SparseWeight, sparse_weights

__all__ = ["SparseWeight", "sparse_weights", "check_csr", "check_index"]
