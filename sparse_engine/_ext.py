"""Loads the compiled extension once, then its Python half (:mod:`.library`: fake kernels,
autograd, autocast, the kernels written in Python); every other module imports from here."""
import torch  # (first: _C links against libc10/libtorch, which torch loads)

try:
    from . import _C  # noqa: F401  (registers torch.ops.sparse_engine.*)
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "sparse_engine._C is not built. Install the package with "
        "`pip install --no-build-isolation -e .` (or run `make test`)."
    ) from exc

#: True when this build holds the CUDA kernels (a CUDA torch and nvcc were present).
HAS_CUDA_KERNELS = torch._C._dispatch_has_kernel_for_dispatch_key("sparse_engine::spmm", "CUDA")

from . import library  # noqa: E402,F401  (after HAS_CUDA_KERNELS: it registers Python CUDA kernels)
