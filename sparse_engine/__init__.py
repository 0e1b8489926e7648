"""sparse-engine: truly sparse RNNs and LSTMs (CSR weights, compiled CPU/CUDA kernels).

The package, top down (docs/architecture.md has the whole map):

* ``cli`` (the ``sparse-engine`` command) and ``runs`` (train / bench / analyze as functions),
  ``models`` (the networks the command trains);
* ``analysis``: structure of trained CSR matrices; ``training``: topology updates and their
  controllers; ``nn``: the sparse modules; ``distributed``: data-parallel training;
* ``ops`` (spmm / spmm_t / sddmm on a weight), ``sparse`` (``SparseWeight``: CSR + transposed index),
  ``init`` (initializers), ``data`` (tasks and datasets), ``testing`` (seeded inputs, references);
* ``kernels``: the operator library (compiled extension, fake kernels, what is built);
  ``io``: checkpoints, resume, safe unpickling, ONNX export; ``runtime``: threads and measurement.
"""
from . import _moved

_moved.install()  # old module paths (sparse_engine.runtime.threads, .checkpoint, ...) keep working, with a warning
from .runtime import threads  # noqa: E402,F401  (first: passive OpenMP waiting and huge pages, before torch loads)
from . import kernels  # noqa: E402,F401  (loads the compiled operators once)
threads.shorten_torch_spin()  # torch imported first: libgomp's idle threads spin briefly
from . import ops  # noqa: E402
from .sparse import SparseWeight  # noqa: E402
from . import nn  # noqa: E402
from . import training  # noqa: E402
from . import data  # noqa: E402
from . import distributed  # noqa: E402
from . import init, io  # noqa: E402

__version__ = "0.1.0"
__all__ = ["SparseWeight", "ops", "nn", "training", "analysis", "data", "init", "io", "__version__"]


def __getattr__(name):
    """``sparse_engine.analysis`` is imported on first use: it pulls in scipy.sparse, which
    would add about 0.25 s to every ``import sparse_engine``. The old names of moved modules
    (``sparse_engine.runtime.threads``, ...) answer with their new module and a DeprecationWarning."""
    import importlib

    if name == "analysis":
        return importlib.import_module(".analysis", __name__)
    return _moved.old_name(__name__, stacklevel=4)(name)
