"""The operator library ``torch.ops.sparse_engine``: loads the compiled extension once, then its
Python half, and says what this build holds.

* ``sparse_engine._C`` (built from ``csrc/``): the schemas and the C++/CUDA kernels;
* :mod:`.library`: every fake kernel, the autocast rules, and the registration of
* :mod:`.topology_torch` and :mod:`.densify_torch`: kernels written with torch's primitives, for CUDA
  and every device without a C++ kernel;
* :mod:`.checks`: the argument checks of the sparse ops, the Python twin of ``csrc/checks.h``;
* :mod:`.constants`: the values shared with ``csrc/constants.h``;
* :mod:`.choose`: the measured rule that picks the fused or composed recurrent step on the CPU.

:func:`has_kernel` is the one answer to "is op X built for device Y" (used by ``sparse_engine.nn``,
the CLI, the tests and the benchmarks). Every module that calls ``torch.ops.sparse_engine`` imports
this package first.
"""
from __future__ import annotations

import torch  # (first: _C links against libc10/libtorch, which torch loads)

try:
    from .. import _C  # noqa: F401  (registers torch.ops.sparse_engine.*)
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "sparse_engine._C is not built. Install the package with "
        "`pip install --no-build-isolation -e .` (or run `make test`)."
    ) from exc


def has_kernel(op: str, device) -> bool:
    """Whether ``torch.ops.sparse_engine.<op>`` has a kernel for ``device`` (a ``torch.device``,
    or a device type such as ``"cpu"`` / ``"cuda"``) in this build, compiled or written in Python."""
    key = torch.device(device).type.upper()
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"sparse_engine::{op}", key)


#: True when this build holds the CUDA kernels (a CUDA torch and nvcc were present).
HAS_CUDA_KERNELS = has_kernel("spmm", "cuda")

from .._moved import old_name
from . import library  # noqa: E402,F401  (after HAS_CUDA_KERNELS: it registers the Python CUDA kernels)

__all__ = ["has_kernel", "HAS_CUDA_KERNELS"]

__getattr__ = old_name(__name__)  # its old names, answered with a warning (sparse_engine._moved)
