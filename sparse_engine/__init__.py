"""sparse-engine: truly sparse RNNs and LSTMs (CSR weights, compiled CPU/CUDA kernels)."""
from . import _ext  # noqa: F401  (loads the compiled operators once)
from . import ops
from .sparse import SparseWeight
from . import nn
from . import training
from . import analysis
from . import data

__version__ = "0.1.0"
__all__ = ["SparseWeight", "ops", "nn", "training", "analysis", "data", "__version__"]
