"""sparse-engine: truly sparse RNNs and LSTMs (CSR weights, compiled CPU/CUDA kernels)."""
from . import _ext  # noqa: F401  (loads the compiled operators once)
from . import ops
from .sparse import SparseWeight
from . import nn
from . import training

__version__ = "0.1.0"
__all__ = ["SparseWeight", "ops", "nn", "__version__"]
