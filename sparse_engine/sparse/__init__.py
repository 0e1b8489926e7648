"""Sparse weight storage: CSR with a COO view and a transposed index (:mod:`.weight`); the argument
checks of the sparse ops, the Python twin of the kernels' (:mod:`.csr`); random patterns and the
values a new weight starts with (:mod:`.patterns`)."""
from .._moved import old_name
from ..kernels.checks import check_csr, check_index
from .weight import SparseWeight, sparse_weights

__all__ = ["SparseWeight", "sparse_weights", "check_csr", "check_index"]

__getattr__ = old_name(__name__)  # its old names, answered with a warning (sparse_engine._moved)
