"""Drop-in sparse replacements for torch.nn layers."""
from .linear import SparseLinear

__all__ = ["SparseLinear"]
