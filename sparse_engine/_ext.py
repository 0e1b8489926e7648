"""Loads the compiled extension once; every other module imports from here."""
import torch  # noqa: F401  (first: _C links against libc10/libtorch, which torch loads)

try:
    from . import _C  # noqa: F401  (registers torch.ops.sparse_engine.*)
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "sparse_engine._C is not built. Install the package with "
        "`pip install --no-build-isolation -e .` (or run `make test`)."
    ) from exc

import torch

#: True when this build holds the CUDA kernels (a CUDA torch and nvcc were present).
HAS_CUDA_KERNELS = torch._C._dispatch_has_kernel_for_dispatch_key("sparse_engine::spmm", "CUDA")
