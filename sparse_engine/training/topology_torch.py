"""Old home of :mod:`sparse_engine.kernels.topology_cuda` (the torch-primitive topology kernels),
kept so old imports work: the same functions, also under their operator names
(``topology_torch.select_smallest`` is ``topology_cuda.select_smallest_cuda``)."""
from ..kernels.topology_cuda import *  # noqa: F401,F403
from ..kernels.topology_cuda import OPS

globals().update(OPS)

__all__ = [*OPS, "OPS"]
