"""Starting a process group the way the examples and most scripts do: from torchrun's environment,
or, started with plain ``python``, a world of one process (the same code path on one core)."""
from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist

__all__ = ["init_from_env"]


def init_from_env() -> tuple[int, int, torch.device]:
    """Initializes torch.distributed (NCCL where CUDA is available, else gloo) from torchrun's
    environment (RANK, WORLD_SIZE, LOCAL_RANK), or as a world of one process without it; sets
    this rank's GPU. Returns (rank, world size, device)."""
    cuda = torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if "RANK" in os.environ:
        dist.init_process_group(backend)
    else:
        store = os.path.join(tempfile.mkdtemp(), "store")
        dist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=1)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device
