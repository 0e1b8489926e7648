"""How torch's CUDA caching allocator gets its memory: a run planned to fit a card asks for
expandable segments. The memory model (:mod:`sparse_engine.memory`) counts tensors, as
``max_memory_allocated`` does; the card holds the allocator's segments, and with fixed-size segments
the freed blocks between live ones can be too small for the next request (fragmentation). Planned
at 95% of an 8 or 12 GiB cap on an H200, a GRU of 1.2-1.8M units with recomputation failed so, the
same LSTMs not (benchmarks/results/caps_cuda.md). Expandable segments grow one segment by pages
instead, which PyTorch's own out-of-memory message recommends against fragmentation."""
from __future__ import annotations

import os
import sys

#: the variables through which a user configures the allocator (the second is torch's newer name)
ALLOC_CONF_VARIABLES = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")
EXPANDABLE = "expandable_segments:True"


def prefer_expandable_segments() -> bool:
    """Sets ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` for this process, unless the user
    configured the allocator (then theirs stands) or CUDA is already initialised (the allocator has
    read its settings). Whether it set it."""
    if any(os.environ.get(v) for v in ALLOC_CONF_VARIABLES):
        return False
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return False
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = EXPANDABLE
    return True
