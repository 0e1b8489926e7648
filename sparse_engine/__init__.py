"""sparse-engine: truly sparse RNNs and LSTMs (CSR weights, compiled CPU/CUDA kernels)."""
from . import threads  # noqa: F401  (first: passive OpenMP waiting and huge pages, before torch loads)
from . import _ext  # noqa: F401  (loads the compiled operators once)
from . import ops
from .sparse import SparseWeight
from . import nn
from . import training
from . import data
from . import distributed
from . import init, export, serialization

__version__ = "0.1.0"
__all__ = ["SparseWeight", "ops", "nn", "training", "analysis", "data", "init", "export", "serialization",
           "__version__"]


def __getattr__(name):
    """``sparse_engine.analysis`` is imported on first use: it pulls in scipy.sparse, which
    would add about 0.25 s to every ``import sparse_engine``."""
    if name == "analysis":
        import importlib

        return importlib.import_module(".analysis", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
