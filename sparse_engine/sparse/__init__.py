"""Sparse weight storage: CSR with a COO view and a transposed index."""
from .weight import SparseWeight

__all__ = ["SparseWeight"]
