"""Starting a process group the way the examples and most scripts do: from torchrun's environment,
or, started with plain ``python``, a world of one process (the same code path on one core); and
ending it so that the process exits cleanly."""
from __future__ import annotations

import gc
import os
import tempfile

import torch
import torch.distributed as dist

__all__ = ["init_from_env", "end_process_group"]


def init_from_env() -> tuple[int, int, torch.device]:
    """Initializes torch.distributed (NCCL where CUDA is available, else gloo) from torchrun's
    environment (RANK, WORLD_SIZE, LOCAL_RANK), or as a world of one process without it; sets
    this rank's GPU. Returns (rank, world size, device). End it with :func:`end_process_group`."""
    # torch._dynamo, once imported (DDP imports it), holds every process group that existed at its
    # import for good, and destroy_process_group then leaves the group's threads running: import it
    # before the group exists (see end_process_group)
    import torch._dynamo  # noqa: F401

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


def end_process_group() -> None:
    """Destroys the default process group while Python is still whole, joining its backend's threads.

    Call it after the objects that used the group (a DDP model) are out of scope. gloo's worker
    threads release the tensors of the last collectives a little after the caller has seen them
    complete; a group that outlives ``destroy_process_group`` (held by an object in a reference
    cycle, or by torch._dynamo imported after the group: :func:`init_from_env` imports it before)
    keeps them running into interpreter shutdown, where such a release aborts the process
    ("terminate called without an active exception": 5 exits of 151 under torchrun on a loaded
    2-core machine). Destroying the group, then collecting the cycles that still hold it, lets the
    group's destructor join the threads now."""
    if dist.is_initialized():
        dist.destroy_process_group()
        gc.collect()
