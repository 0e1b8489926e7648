"""Old home of :mod:`sparse_engine.kernels.topology_cuda` and :mod:`sparse_engine.kernels.densify_cuda`
(the topology kernels written with torch primitives, and scatter_csr/gather_csr's), kept so old
imports work: the same functions, also under their operator names (``topology_torch.select_smallest``
is ``topology_cuda.select_smallest_cuda``)."""
from ..kernels.densify_cuda import OPS as _DENSIFY
from ..kernels.densify_cuda import gather_csr_cuda, scatter_csr_cuda  # noqa: F401
from ..kernels.topology_cuda import *  # noqa: F401,F403
from ..kernels.topology_cuda import OPS

globals().update(OPS)
globals().update(_DENSIFY)

__all__ = [*OPS, *_DENSIFY, "OPS", "scatter_csr_cuda", "gather_csr_cuda"]
